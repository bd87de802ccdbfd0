"""kerasflow: tune, train, evaluate and serve Keras models as a Kubeflow Pipelines DAG."""

__version__ = "0.1.0"
