"""MLflow: the pipeline, step and trial runs, and the model registry with its champion."""
