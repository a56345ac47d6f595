"""Feature definitions, the Redis feature store and the offline (replay) computation.

One set of declarative specs (:mod:`leadscore.features.definitions`) drives both the Lua script that
keeps live state in Redis and the Python replay used for training sets, so the two agree
exactly.
"""
