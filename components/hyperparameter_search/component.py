"""KFP components: hyperparameter search with KerasTuner, and its worker pods on a cluster."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def hyperparameter_search(
    splits: Input[Dataset],
    train_data: Input[Dataset],
    tuner: str,
    max_trials: int,
    max_epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    tuner_dir: str,
    tracking_uri: str,
    parent_run_id: str,
    best_hyperparameters: Output[Artifact],
    summary: Output[Markdown],
    search_space: dict = {},  # noqa: B006  (KFP reads the default; it is never mutated)
    build_model: str = "",
    objective: str = "",
    direction: str = "",
    time_budget: str = "",
    max_consecutive_failures: int = 3,
    kfold: int = 0,
    tuner_workers: int = 1,
    worker_pods: int = 0,
    pipeline_root: str = "",
    run_id: str = "",
    trials_per_process: int = 5,
):
    """Searches the model space (resuming a killed search); writes the best hyperparameters."""
    from kerasflow.components.hyperparameter_search import core

    core.run(
        splits.path,
        train_data.path,
        tuner,
        max_trials,
        max_epochs,
        batch_size,
        patience,
        seed,
        tuner_dir,
        best_hyperparameters.path,
        summary.path,
        tracking_uri,
        parent_run_id,
        search_space=search_space,
        build_model=build_model,
        objective=objective,
        direction=direction,
        time_budget=time_budget,
        max_consecutive_failures=max_consecutive_failures,
        kfold=kfold,
        tuner_workers=tuner_workers,
        worker_pods=worker_pods,
        pipeline_root=pipeline_root,
        run_id=run_id,
        trials_per_process=trials_per_process,
    )


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def search_worker_slots(count: int) -> list[str]:
    """The indices of the worker pods to start (one ParallelFor item each)."""
    return [str(i) for i in range(int(count))]


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def hyperparameter_search_worker(
    splits: Input[Dataset],
    train_data: Input[Dataset],
    pipeline_root: str,
    run_id: str,
    worker_index: str,
):
    """One worker pod: joins the search step's chief oracle and runs trials until it is done."""
    from kerasflow.components.hyperparameter_search import core

    core.run_pod_worker(splits.path, train_data.path, pipeline_root, run_id, worker_index)
