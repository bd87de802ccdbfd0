"""The training pipeline: a pure factory of the seven-step KFP DAG.

ingest_clean -> normalize_split -> augment -> hyperparameter_search -> train -> evaluate
-> deploy (only when evaluate blesses the model). Every tunable is a typed pipeline parameter
with a default; `kerasflow run` executes this very DAG under kfp.local and `kerasflow compile`
/ `submit` send it to a cluster.
"""

from typing import Any

from kfp import dsl

from kerasflow import constants as C
from kerasflow.components.augment.component import augment
from kerasflow.components.deploy.component import deploy
from kerasflow.components.evaluate.component import evaluate
from kerasflow.components.hyperparameter_search.component import (
    hyperparameter_search,
    hyperparameter_search_worker,
    search_worker_slots,
)
from kerasflow.components.ingest_clean.component import ingest_clean
from kerasflow.components.normalize_split.component import normalize_split
from kerasflow.components.train.component import train
from kerasflow.settings import RunConfig

_D = RunConfig()


def build_pipeline(step_settings: Any = None):
    """Returns the `kerasflow-training` pipeline function.

    Args:
        step_settings: optional cluster settings (kerasflow.pipelines.platform.ClusterSettings)
            applied to every task: resources, retries, caching, secrets, node selection.
    """

    def configure(task: Any, step: str) -> Any:
        task.set_display_name(step)
        if step_settings is not None:
            from kerasflow.pipelines import platform

            platform.apply_step_settings(task, step, step_settings)
        return task

    @dsl.pipeline(
        name=C.PIPELINE_NAME, description="Tune, train, evaluate and deploy a Keras model."
    )
    def training_pipeline(
        data: str = _D.data,
        label: str = _D.label,
        task: str = _D.task,
        modality: str = _D.modality,
        tuner: str = _D.tuner,
        max_trials: int = _D.max_trials,
        max_epochs: int = _D.max_epochs,
        final_epochs: int = _D.final_epochs,
        batch_size: int = _D.batch_size,
        patience: int = _D.patience,
        augment_factor: int = _D.augment_factor,
        augment_flip: bool = _D.augment_flip,
        augment_methods: str = _D.augment_methods,
        synonyms: str = _D.synonyms,
        val_fraction: float = _D.val_fraction,
        test_fraction: float = _D.test_fraction,
        image_size: str = _D.image_size,
        text_column: str = _D.text_column,
        time_column: str = _D.time_column,
        missing_values: str = _D.missing_values,
        outliers: str = _D.outliers,
        outlier_action: str = _D.outlier_action,
        drop_duplicates: bool = _D.drop_duplicates,
        drop_id_columns: bool = _D.drop_id_columns,
        schema: str = _D.schema,
        max_missing_share: float = _D.max_missing_share,
        max_anomaly_share: float = _D.max_anomaly_share,
        min_class_rows: int = _D.min_class_rows,
        scaling: str = _D.scaling,
        imbalance: str = _D.imbalance,
        folds: int = _D.folds,
        thresholds: dict = {},  # noqa: B006  (KFP reads the default; it is never mutated)
        model_name: str = _D.model_name,
        champion_tolerance: float = _D.champion_tolerance,
        slice_by: str = _D.slice_by,
        serving_dir: str = _D.serving_dir,
        tracking_uri: str = _D.tracking_uri,
        experiment: str = _D.experiment,
        tuner_dir: str = "",
        seed: int = _D.seed,
        search_space: dict = {},  # noqa: B006  (KFP reads the default; it is never mutated)
        build_model: str = _D.build_model,
        objective: str = _D.objective,
        direction: str = _D.direction,
        time_budget: str = _D.time_budget,
        max_consecutive_failures: int = _D.max_consecutive_failures,
        kfold: int = _D.kfold,
        tuner_workers: int = _D.tuner_workers,
        trials_per_process: int = _D.trials_per_process,
        worker_pods: int = 0,
        refit: bool = _D.refit,
        lr_schedule: str = _D.lr_schedule,
        warm_start: bool = _D.warm_start,
    ) -> str:
        ingest = configure(
            ingest_clean(
                data=data,
                label=label,
                task=task,
                modality=modality,
                text_column=text_column,
                time_column=time_column,
                image_size=image_size,
                missing_values=missing_values,
                outliers=outliers,
                outlier_action=outlier_action,
                drop_duplicates=drop_duplicates,
                drop_id_columns=drop_id_columns,
                expected_schema=schema,
                max_missing_share=max_missing_share,
                max_anomaly_share=max_anomaly_share,
                min_class_rows=min_class_rows,
                tracking_uri=tracking_uri,
                experiment=experiment,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "ingest_clean",
        )
        run_id = ingest.outputs["Output"]
        split = configure(
            normalize_split(
                dataset=ingest.outputs["dataset"],
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                seed=seed,
                scaling=scaling,
                imbalance=imbalance,
                time_column=time_column,
                folds=folds,
                tracking_uri=tracking_uri,
                parent_run_id=run_id,
            ),
            "normalize_split",
        )
        aug = configure(
            augment(
                splits=split.outputs["splits"],
                factor=augment_factor,
                seed=seed,
                flip=augment_flip,
                methods=augment_methods,
                synonyms=synonyms,
                tracking_uri=tracking_uri,
                parent_run_id=run_id,
            ),
            "augment",
        )
        search = configure(
            hyperparameter_search(
                splits=split.outputs["splits"],
                train_data=aug.outputs["train_data"],
                tuner=tuner,
                max_trials=max_trials,
                max_epochs=max_epochs,
                batch_size=batch_size,
                patience=patience,
                seed=seed,
                tuner_dir=tuner_dir,
                tracking_uri=tracking_uri,
                parent_run_id=run_id,
                search_space=search_space,
                build_model=build_model,
                objective=objective,
                direction=direction,
                time_budget=time_budget,
                max_consecutive_failures=max_consecutive_failures,
                kfold=kfold,
                tuner_workers=tuner_workers,
                trials_per_process=trials_per_process,
                worker_pods=worker_pods,
                pipeline_root=dsl.PIPELINE_ROOT_PLACEHOLDER,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "hyperparameter_search",
        )
        # On a cluster, trials can also run in worker pods beside the search step: they find its
        # chief oracle through a rendezvous file under the pipeline root.
        with dsl.If(worker_pods > 0, name="search-worker-pods"):
            slots = configure(search_worker_slots(count=worker_pods), "hyperparameter_search")
            slots.set_display_name("search_worker_slots")
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
                epochs=final_epochs,
                batch_size=batch_size,
                patience=patience,
                seed=seed,
                tracking_uri=tracking_uri,
                parent_run_id=run_id,
                objective=objective,
                direction=direction,
                refit=refit,
                lr_schedule=lr_schedule,
                warm_start=warm_start,
                serving_dir=serving_dir,
                model_name=model_name,
                build_model=build_model,
            ),
            "train",
        )
        gate = configure(
            evaluate(
                model=fit.outputs["model"],
                splits=split.outputs["splits"],
                thresholds=thresholds,
                model_name=model_name,
                champion_tolerance=champion_tolerance,
                slice_by=slice_by,
                tracking_uri=tracking_uri,
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
                    serving_dir=serving_dir,
                    model_name=model_name,
                    tracking_uri=tracking_uri,
                    parent_run_id=run_id,
                ),
                "deploy",
            )
        return run_id

    return training_pipeline


training_pipeline = build_pipeline()
