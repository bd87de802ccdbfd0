"""KFP component: the final fit as a multi-worker TFJob (Kubeflow Training Operator v1)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_workers(
    splits: Input[Dataset],
    train_data: Input[Dataset],
    best_hparams: Input[Artifact],
    workers: int,
    epochs: int,
    batch_size: int,
    seed: int,
    namespace: str,
    image: str,
    run_id: str,
    model: Output[Model],
):
    """Creates a TFJob whose `workers` pods fit the model together, and waits for it.

    Args:
        splits: The splits from normalize_split.
        train_data: The augmented train split.
        best_hparams: The search's best hyperparameters.
        workers: Worker pods (MultiWorkerMirroredStrategy replicas), at least 2.
        epochs: Epochs of the fit.
        batch_size: The global batch size.
        seed: Random seed.
        namespace: The namespace the TFJob runs in (the pipeline's).
        image: The component image the workers run.
        run_id: The KFP run id, which names the job.
        model: Output folder: worker 0 writes model.keras and history.json there.
    """
    from kerasflow.components.train_workers import core

    args = core.worker_args(
        splits_uri=splits.uri, train_uri=train_data.uri, hparams_uri=best_hparams.uri,
        model_uri=model.uri, epochs=epochs, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    core.run(
        run_id=run_id, namespace=namespace, image=image, workers=workers, args=args,
    )  # fmt: skip
