"""The training pipeline: a pure factory of the seven-step KFP DAG.

ingest_clean -> normalize_split -> augment -> hyperparameter_search -> train -> evaluate
-> deploy (only when evaluate blesses the model), all inside an exit handler whose `finalize`
task ends the pipeline's MLflow run whatever happened (kerasflow.tracking.lifecycle). A few
headline settings are pipeline parameters of their own; every other setting travels in its
step's settings structure, a `dict` parameter whose default holds the declared defaults
(kerasflow.settings). `kerasflow run` executes this very DAG under kfp.local and `kerasflow
compile` / `submit` send it to a cluster.
"""

import inspect
from collections.abc import Callable
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

# What each parameter of the pipelines means (KFP shows it beside the parameter).
_HELP = {
    "data": "Data URI: builtin:NAME, a file or class folder, local or gs://.",
    "label": "Label column of table data.",
    "task": "classification or regression (inferred when empty).",
    "tuner": "random, grid, bayesian or hyperband.",
    "max_trials": "Trials of random, grid and bayesian search.",
    "final_epochs": "Most epochs of the final fit.",
    "seed": "Random seed of the split, augmentation, search and fits.",
    "build_model": "Your own model, module:function taking hp (empty: kerasflow's).",
    "thresholds": "Blessing thresholds, metric -> value.",
    "model_name": "Name of the served model.",
    "serving_dir": "TF Serving model base directory (local path or gs://).",
    "tracking_uri": "MLflow tracking URI (else the steps' MLFLOW_TRACKING_URI).",
    "experiment": "MLflow experiment name.",
    "worker_pods": "Extra pods that run search trials beside the search step.",
    **{f"{step}_settings": f"The {step} step's other settings." for step in _STRUCTURES},
    "drift_check_settings": "The drift tests' thresholds (alpha, min_psi...).",
}
# The pipeline's parameters, declared once for both pipelines: (name, type, default, help).
_PARAMETERS: tuple[tuple[str, type, Any, str], ...] = tuple(
    (name, kind, default, _HELP[name])
    for name, kind, default in (
        ("data", str, _INGEST.data),
        ("label", str, _INGEST.label),
        ("task", str, _INGEST.task),
        ("tuner", str, _SEARCH.tuner),
        ("max_trials", int, _SEARCH.max_trials),
        ("final_epochs", int, _TRAIN.final_epochs),
        ("seed", int, _SEARCH.seed),
        ("build_model", str, _SEARCH.build_model),
        ("thresholds", dict, _EVALUATE.thresholds),
        ("model_name", str, _TRAIN.model_name),
        ("serving_dir", str, _TRAIN.serving_dir),
        ("tracking_uri", str, ""),
        ("experiment", str, C.DEFAULT_EXPERIMENT),
        ("worker_pods", int, _SEARCH.worker_pods),
        *((f"{step}_settings", dict, _STRUCTURES[step]) for step in _STRUCTURES),
    )
)
_DRIFT = "drift_check_settings"
_DRIFT_PARAMETER = (_DRIFT, dict, _DRIFT_DEFAULTS, _HELP[_DRIFT])
_ALWAYS_SUMMARY = "Tune, train, evaluate and deploy a Keras model."
_DRIFTED_SUMMARY = (
    "Check the data for drift from the champion's; when drifted, tune, train, evaluate and "
    "deploy a Keras model."
)


def _pipeline_function(
    name: str,
    summary: str,
    parameters: tuple[tuple[str, type, Any, str], ...],
    body: Callable[[dict[str, Any]], None],
) -> Callable[..., None]:
    """A function KFP reads as a pipeline: `parameters` as its signature and its docstring's
    Args (KFP's parameter types, defaults and descriptions); calling it calls `body` with the
    arguments by name (KFP passes them positionally)."""
    names = [entry[0] for entry in parameters]

    def pipeline_function(*args: Any, **kwargs: Any) -> None:
        body({**dict(zip(names[: len(args)], args, strict=True)), **kwargs})

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    pipeline_function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, kind, default=d, annotation=t) for n, t, d, _ in parameters]
    )
    pipeline_function.__name__ = pipeline_function.__qualname__ = name
    args = "\n".join(f"    {n}: {text}" for n, _, _, text in parameters)
    pipeline_function.__doc__ = f"{summary}\n\nArgs:\n{args}\n"
    return pipeline_function


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

    def start_finalize(p: dict[str, Any]) -> None:
        """The exit handler that ends the pipeline's MLflow run whatever happens inside."""
        final = configure(
            finalize(
                tracking_uri=p["tracking_uri"],
                experiment=p["experiment"],
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "finalize",
        )
        final.set_caching_options(enable_caching=False)
        return final

    def train_always(p: dict[str, Any]) -> None:
        with dsl.ExitHandler(start_finalize(p), name="run"):
            _add_training(configure, p)

    def train_when_drifted(p: dict[str, Any]) -> None:
        with dsl.ExitHandler(start_finalize(p), name="run"):
            check = configure(
                drift_check(
                    settings=p["drift_check_settings"],
                    data=p["data"],
                    model_name=p["model_name"],
                    tracking_uri=p["tracking_uri"],
                    experiment=p["experiment"],
                    kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                ),
                DRIFT_STEP,
            )
            # Never cached: the same data are checked against whichever model is champion now.
            check.set_caching_options(enable_caching=False)
            # As for the gate: a condition on the return value itself, which kfp.local resolves.
            with dsl.If(check.outputs["Output"] == True, name="drifted"):  # noqa: E712
                _add_training(configure, p)

    if when == "always":
        return dsl.pipeline(name=C.PIPELINE_NAME, description=_ALWAYS_SUMMARY)(
            _pipeline_function("training_pipeline", _ALWAYS_SUMMARY, _PARAMETERS, train_always)
        )
    return dsl.pipeline(name=C.PIPELINE_NAME, description=_DRIFTED_SUMMARY)(
        _pipeline_function(
            "drift_triggered_pipeline",
            _DRIFTED_SUMMARY,
            (*_PARAMETERS, _DRIFT_PARAMETER),
            train_when_drifted,
        )
    )


training_pipeline = build_pipeline()
