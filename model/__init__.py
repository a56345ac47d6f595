"""Training, evaluation, calibration, the model registry, explanations and the rule baseline."""
