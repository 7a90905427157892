"""Hyperparameter search with Optuna: the space file, one trial as a tunesmith run, the study."""
