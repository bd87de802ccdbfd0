"""The training pipeline: a pure factory of the seven-step KFP DAG.

ingest_clean -> normalize_split -> augment -> hyperparameter_search -> train -> evaluate
-> deploy (only when evaluate blesses the model), all inside an exit handler whose `finalize`
task ends the pipeline's MLflow run whatever happened (kerasflow.tracking.lifecycle). A few
headline settings are pipeline parameters of their own; every other setting travels in its
step's settings structure, a `dict` parameter whose default holds the declared defaults
(kerasflow.settings). `kerasflow run` executes this very DAG under kfp.local and `kerasflow
compile` / `submit` send it to a cluster.
"""

from typing import Any

from kfp import dsl

from kerasflow import constants as C
from kerasflow.components.augment.component import augment
from kerasflow.components.deploy.component import deploy
from kerasflow.components.drift_check.component import drift_check
from kerasflow.components.evaluate.component import evaluate
from kerasflow.components.finalize.component import finalize
from kerasflow.components.hyperparameter_search.component import (
    hyperparameter_search,
    hyperparameter_search_worker,
    search_worker_slots,
)
from kerasflow.components.ingest_clean.component import ingest_clean
from kerasflow.components.normalize_split.component import normalize_split
from kerasflow.components.train.component import train
from kerasflow.settings import (
    DRIFT_STEP,
    STEP_SETTINGS,
    WHEN_CHOICES,
    DriftSettings,
    EvaluateSettings,
    IngestSettings,
    SearchSettings,
    TrainSettings,
)

_INGEST, _SEARCH, _TRAIN, _EVALUATE = (
    IngestSettings(),
    SearchSettings(),
    TrainSettings(),
    EvaluateSettings(),
)
# The default of each step's settings structure: every setting that is not a headline one.
_STRUCTURES = {step: model.kfp_defaults() for step, model in STEP_SETTINGS.items()}
_DRIFT_DEFAULTS = DriftSettings.kfp_defaults()


def _add_training(configure: Any, p: dict[str, Any]) -> None:
    """Adds the seven training steps (and the search's worker pods) to the pipeline being
    defined; `p` holds the pipeline's parameters by name."""
    ingest = configure(
        ingest_clean(
            settings=p["ingest_clean_settings"],
            data=p["data"],
            label=p["label"],
            task=p["task"],
            tracking_uri=p["tracking_uri"],
            experiment=p["experiment"],
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ),
        "ingest_clean",
    )
    run_id = ingest.outputs["Output"]
    split = configure(
        normalize_split(
            dataset=ingest.outputs["dataset"],
            settings=p["normalize_split_settings"],
            seed=p["seed"],
            tracking_uri=p["tracking_uri"],
            parent_run_id=run_id,
        ),
        "normalize_split",
    )
    aug = configure(
        augment(
            splits=split.outputs["splits"],
            settings=p["augment_settings"],
            seed=p["seed"],
            tracking_uri=p["tracking_uri"],
            parent_run_id=run_id,
        ),
        "augment",
    )
    search = configure(
        hyperparameter_search(
            splits=split.outputs["splits"],
            train_data=aug.outputs["train_data"],
            settings=p["hyperparameter_search_settings"],
            tuner=p["tuner"],
            max_trials=p["max_trials"],
            seed=p["seed"],
            build_model=p["build_model"],
            worker_pods=p["worker_pods"],
            tracking_uri=p["tracking_uri"],
            parent_run_id=run_id,
            pipeline_root=dsl.PIPELINE_ROOT_PLACEHOLDER,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ),
        "hyperparameter_search",
    )
    # On a cluster, trials can also run in worker pods beside the search step: they find its
    # chief oracle through a rendezvous file under the pipeline root.
    with dsl.If(p["worker_pods"] > 0, name="search-worker-pods"):
        # A list helper: it takes the default resources, never the search step's GPU.
        slots = configure(search_worker_slots(count=p["worker_pods"]), "search_worker_slots")
        with dsl.ParallelFor(slots.output, name="search-workers") as slot:
            worker = configure(
                hyperparameter_search_worker(
                    splits=split.outputs["splits"],
                    train_data=aug.outputs["train_data"],
                    pipeline_root=dsl.PIPELINE_ROOT_PLACEHOLDER,
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    worker_index=slot,
                ),
                "hyperparameter_search",
            )
            worker.set_display_name("hyperparameter_search_worker")
    fit = configure(
        train(
            splits=split.outputs["splits"],
            train_data=aug.outputs["train_data"],
            best_hyperparameters=search.outputs["best_hyperparameters"],
            trials=search.outputs["trials"],
            settings=p["train_settings"],
            final_epochs=p["final_epochs"],
            seed=p["seed"],
            build_model=p["build_model"],
            model_name=p["model_name"],
            serving_dir=p["serving_dir"],
            tracking_uri=p["tracking_uri"],
            parent_run_id=run_id,
        ),
        "train",
    )
    gate = configure(
        evaluate(
            model=fit.outputs["model"],
            splits=split.outputs["splits"],
            settings=p["evaluate_settings"],
            thresholds=p["thresholds"],
            model_name=p["model_name"],
            tracking_uri=p["tracking_uri"],
            parent_run_id=run_id,
        ),
        "evaluate",
    )
    # The condition reads the return value ("Output") directly: kfp.local cannot resolve a
    # condition on a NamedTuple field and would silently skip the deploy step.
    with dsl.If(gate.outputs["Output"] == True, name="blessed"):  # noqa: E712
        configure(
            deploy(
                model=fit.outputs["model"],
                splits=split.outputs["splits"],
                predictions=gate.outputs["predictions"],
                settings=p["deploy_settings"],
                model_name=p["model_name"],
                serving_dir=p["serving_dir"],
                tracking_uri=p["tracking_uri"],
                parent_run_id=run_id,
            ),
            "deploy",
        )


def build_pipeline(step_settings: Any = None, image: str = "", when: str = "always"):
    """Returns the `kerasflow-training` pipeline function.

    The pipeline's parameters are a few headline settings (data, tuner, budgets, the served
    model...) plus one structure per step holding the rest of that step's settings
    (`<step>_settings`, keys as in kerasflow.settings), each editable in the KFP UI.

    Args:
        step_settings: optional cluster settings
            (kerasflow.pipelines.cluster_settings.ClusterSettings) applied to every task:
            resources, retries, caching, secrets, node selection.
        image: run every task in this image (`kerasflow run --runner docker`); the cluster
            settings' image wins when both are given.
        when: "always" trains on every run; "drifted" runs the drift_check step first and
            the training steps only when it finds the data drifted from the champion's (or
            there is no champion); that pipeline has one more parameter,
            `drift_check_settings`.
    """
    if when not in WHEN_CHOICES:
        raise ValueError(f"when must be one of {WHEN_CHOICES}, got {when!r}")

    def configure(task: Any, step: str) -> Any:
        task.set_display_name(step)
        if image:
            task.set_container_image(image)
        if step_settings is not None:
            from kerasflow.pipelines import cluster_settings

            cluster_settings.apply_step_settings(task, step, step_settings)
        return task

    @dsl.pipeline(
        name=C.PIPELINE_NAME, description="Tune, train, evaluate and deploy a Keras model."
    )
    def training_pipeline(
        data: str = _INGEST.data,
        label: str = _INGEST.label,
        task: str = _INGEST.task,
        tuner: str = _SEARCH.tuner,
        max_trials: int = _SEARCH.max_trials,
        final_epochs: int = _TRAIN.final_epochs,
        seed: int = _SEARCH.seed,
        build_model: str = _SEARCH.build_model,
        thresholds: dict = _EVALUATE.thresholds,
        model_name: str = _TRAIN.model_name,
        serving_dir: str = _TRAIN.serving_dir,
        tracking_uri: str = "",
        experiment: str = C.DEFAULT_EXPERIMENT,
        worker_pods: int = _SEARCH.worker_pods,
        ingest_clean_settings: dict = _STRUCTURES["ingest_clean"],
        normalize_split_settings: dict = _STRUCTURES["normalize_split"],
        augment_settings: dict = _STRUCTURES["augment"],
        hyperparameter_search_settings: dict = _STRUCTURES["hyperparameter_search"],
        train_settings: dict = _STRUCTURES["train"],
        evaluate_settings: dict = _STRUCTURES["evaluate"],
        deploy_settings: dict = _STRUCTURES["deploy"],
    ):
        """Tunes, trains, evaluates and deploys a Keras model.

        Args:
            data: Data URI: builtin:NAME, a file or class folder, local or gs://.
            label: Label column of table data.
            task: classification or regression (inferred when empty).
            tuner: random, grid, bayesian or hyperband.
            max_trials: Trials of random, grid and bayesian search.
            final_epochs: Most epochs of the final fit.
            seed: Random seed of the split, augmentation, search and fits.
            build_model: Your own model, module:function taking hp (empty: kerasflow's).
            thresholds: Blessing thresholds, metric -> value.
            model_name: Name of the served model.
            serving_dir: TF Serving model base directory (local path or gs://).
            tracking_uri: MLflow tracking URI (else the steps' MLFLOW_TRACKING_URI).
            experiment: MLflow experiment name.
            worker_pods: Extra pods that run search trials beside the search step.
            ingest_clean_settings: The ingest_clean step's other settings.
            normalize_split_settings: The normalize_split step's other settings.
            augment_settings: The augment step's other settings.
            hyperparameter_search_settings: The hyperparameter_search step's other settings.
            train_settings: The train step's other settings.
            evaluate_settings: The evaluate step's other settings.
            deploy_settings: The deploy step's other settings.
        """
        params = dict(locals())
        # The exit handler ends the pipeline's MLflow run whatever happens inside.
        final = configure(
            finalize(
                tracking_uri=tracking_uri,
                experiment=experiment,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "finalize",
        )
        final.set_caching_options(enable_caching=False)
        with dsl.ExitHandler(final, name="run"):
            _add_training(configure, params)

    if when == "always":
        return training_pipeline

    @dsl.pipeline(
        name=C.PIPELINE_NAME,
        description="Check the data for drift from the champion's; when drifted, tune, train, "
        "evaluate and deploy a Keras model.",
    )
    def drift_triggered_pipeline(
        data: str = _INGEST.data,
        label: str = _INGEST.label,
        task: str = _INGEST.task,
        tuner: str = _SEARCH.tuner,
        max_trials: int = _SEARCH.max_trials,
        final_epochs: int = _TRAIN.final_epochs,
        seed: int = _SEARCH.seed,
        build_model: str = _SEARCH.build_model,
        thresholds: dict = _EVALUATE.thresholds,
        model_name: str = _TRAIN.model_name,
        serving_dir: str = _TRAIN.serving_dir,
        tracking_uri: str = "",
        experiment: str = C.DEFAULT_EXPERIMENT,
        worker_pods: int = _SEARCH.worker_pods,
        ingest_clean_settings: dict = _STRUCTURES["ingest_clean"],
        normalize_split_settings: dict = _STRUCTURES["normalize_split"],
        augment_settings: dict = _STRUCTURES["augment"],
        hyperparameter_search_settings: dict = _STRUCTURES["hyperparameter_search"],
        train_settings: dict = _STRUCTURES["train"],
        evaluate_settings: dict = _STRUCTURES["evaluate"],
        deploy_settings: dict = _STRUCTURES["deploy"],
        drift_check_settings: dict = _DRIFT_DEFAULTS,
    ):
        """Checks the data for drift from the champion's training data, then (only when they
        drifted, or there is no champion) tunes, trains, evaluates and deploys a Keras model.

        Args:
            data: Data URI: builtin:NAME, a file or class folder, local or gs://.
            label: Label column of table data.
            task: classification or regression (inferred when empty).
            tuner: random, grid, bayesian or hyperband.
            max_trials: Trials of random, grid and bayesian search.
            final_epochs: Most epochs of the final fit.
            seed: Random seed of the split, augmentation, search and fits.
            build_model: Your own model, module:function taking hp (empty: kerasflow's).
            thresholds: Blessing thresholds, metric -> value.
            model_name: Name of the served model.
            serving_dir: TF Serving model base directory (local path or gs://).
            tracking_uri: MLflow tracking URI (else the steps' MLFLOW_TRACKING_URI).
            experiment: MLflow experiment name.
            worker_pods: Extra pods that run search trials beside the search step.
            ingest_clean_settings: The ingest_clean step's other settings.
            normalize_split_settings: The normalize_split step's other settings.
            augment_settings: The augment step's other settings.
            hyperparameter_search_settings: The hyperparameter_search step's other settings.
            train_settings: The train step's other settings.
            evaluate_settings: The evaluate step's other settings.
            deploy_settings: The deploy step's other settings.
            drift_check_settings: The drift tests' thresholds (alpha, min_psi...).
        """
        params = dict(locals())
        final = configure(
            finalize(
                tracking_uri=tracking_uri,
                experiment=experiment,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "finalize",
        )
        final.set_caching_options(enable_caching=False)
        with dsl.ExitHandler(final, name="run"):
            check = configure(
                drift_check(
                    settings=drift_check_settings,
                    data=data,
                    model_name=model_name,
                    tracking_uri=tracking_uri,
                    experiment=experiment,
                    kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                ),
                DRIFT_STEP,
            )
            # Never cached: the same data are checked against whichever model is champion now.
            check.set_caching_options(enable_caching=False)
            # As for the gate: a condition on the return value itself, which kfp.local resolves.
            with dsl.If(check.outputs["Output"] == True, name="drifted"):  # noqa: E712
                _add_training(configure, params)

    return drift_triggered_pipeline


training_pipeline = build_pipeline()
