"""Hyperparameter search with KerasTuner: tuners and oracles, and trials in worker processes."""
