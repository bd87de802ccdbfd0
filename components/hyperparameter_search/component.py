"""KFP components: hyperparameter search with KerasTuner, and its worker pods on a cluster."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def hyperparameter_search(
    splits: Input[Dataset],
    train_data: Input[Dataset],
    settings: dict,
    tuner: str,
    max_trials: int,
    seed: int,
    build_model: str,
    worker_pods: int,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_root: str,
    run_id: str,
    best_hyperparameters: Output[Artifact],
    summary: Output[Markdown],
    trials: Output[Artifact],
):
    """Searches the model space (resuming a killed search); writes the best hyperparameters.

    Args:
        splits: The splits from normalize_split (validation data).
        train_data: The augmented train split.
        settings: The step's other settings (kerasflow.settings.SearchSettings keys).
        tuner: random, grid, bayesian or hyperband.
        max_trials: Trials of random, grid and bayesian search.
        seed: Random seed of the search.
        build_model: Your own model, module:function taking hp (empty: kerasflow's).
        worker_pods: Extra pods running trials beside this step.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
        pipeline_root: The pipeline root, home of resumable tuner directories.
        run_id: The KFP run id, which names the worker pods' rendezvous.
        best_hyperparameters: The best trial's hyperparameters as JSON.
        summary: The trials table and the plot of the objective.
        trials: The finished trials best first (JSON) and their TensorBoard logs, if asked.
    """
    from kerasflow.components.hyperparameter_search import core

    core.run(
        settings=settings,
        headline={
            "tuner": tuner,
            "max_trials": max_trials,
            "seed": seed,
            "build_model": build_model,
            "worker_pods": worker_pods,
        },
        splits_dir=splits.path,
        train_dir=train_data.path,
        hparams_path=best_hyperparameters.path,
        summary_path=summary.path,
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
        pipeline_root=pipeline_root,
        run_id=run_id,
        trials_dir=trials.path,
    )


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def search_worker_slots(count: int) -> list[str]:
    """The indices of the worker pods to start (one ParallelFor item each).

    Args:
        count: How many worker pods.
    """
    return [str(i) for i in range(int(count))]


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def hyperparameter_search_worker(
    splits: Input[Dataset],
    train_data: Input[Dataset],
    pipeline_root: str,
    run_id: str,
    worker_index: str,
):
    """One worker pod: joins the search step's chief oracle and runs trials until it is done.

    Args:
        splits: The splits from normalize_split.
        train_data: The augmented train split.
        pipeline_root: The pipeline root, where the chief's rendezvous file is.
        run_id: The KFP run id, which names the rendezvous.
        worker_index: This worker's index.
    """
    from kerasflow.components.hyperparameter_search import core

    core.run_pod_worker(
        splits_dir=splits.path,
        train_dir=train_data.path,
        pipeline_root=pipeline_root,
        run_id=run_id,
        worker_index=worker_index,
    )
