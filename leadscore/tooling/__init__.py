"""Development and evaluation tools: the simulator, the benchmark, the demo and the embedded
broker and Redis. Nothing in the worker, the integrations or the jobs imports this room."""
