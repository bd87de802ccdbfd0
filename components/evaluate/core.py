"""Evaluation on the held-out test split and the promotion gate (the blessing).

Classification: accuracy, macro precision/recall/F1, ROC AUC, confusion matrix and per-class
report. Regression: MAE, RMSE, R2. A model is blessed when every threshold holds and, when a
champion serves, when it is not worse than the champion and its serving signature (inputs,
outputs, class labels) still answers the champion's clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.components.evaluate import members
from kerasflow.data import artifacts
from kerasflow.modeling import builders
from kerasflow.runtime import boundary
from kerasflow.runtime.errors import UserError
from kerasflow.settings import EvaluateSettings, default_thresholds
from kerasflow.tracking import registry, runs

STEP = "evaluate"
CLASSIFICATION_METRICS = C.CLASSIFICATION_METRICS
REGRESSION_METRICS = C.REGRESSION_METRICS
MAX_ROC_POINTS = 200
SIGNATURE_TAG = "kerasflow.signature_compatible"
"""true/false when the candidate's serving signature was compared with the champion's."""


@dataclass
class Evaluation:
    """Everything the step reports: metrics, plots' data, the decision and its reasons."""

    metrics: dict[str, float]
    blessed: bool
    reasons: list[str]
    class_names: list[str] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    roc: dict[str, list[float]] = field(default_factory=dict)
    per_class: str = ""
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    signature_changes: list[str] | None = None
    """How the serving signature differs from the champion's (None: not compared)."""
    ensemble: dict | None = None
    """An ensemble's comparison with its members (kerasflow.components.evaluate.members)."""
    deploy: bool = False
    """Whether deploy runs: blessed, and publishing is on."""


@dataclass(frozen=True)
class ExportSignature:
    """What a client of a SavedModel relies on.

    `signatures` maps each signature name to its inputs and outputs, each a name -> (dtype,
    shape) mapping as TF Serving prints them ('float', '[-1,1]'); `class_labels` are the names
    the `classify` signature answers with (None without one).
    """

    signatures: dict[str, dict[str, dict[str, tuple[str, str]]]]
    class_labels: list[str] | None = None


@dataclass
class ChampionEvaluation:
    """The champion's metrics on this run's test split and its serving signature."""

    registry_version: int
    metrics: dict[str, float]
    signature: ExportSignature


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> tuple[dict, Any, dict]:
    """Metrics, confusion matrix and (binary) ROC curve from class probabilities."""
    from sklearn import metrics as skm

    pred = proba.argmax(axis=1)
    labels = np.arange(proba.shape[1])
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
        "recall": skm.recall_score(y, pred, average="macro", zero_division=0),
        "f1": skm.f1_score(y, pred, average="macro", zero_division=0),
    }
    roc: dict = {}
    present = np.unique(y)
    if proba.shape[1] == 2 and len(present) == 2:
        out["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
        fpr, tpr, thr = skm.roc_curve(y, proba[:, 1])
        keep = np.linspace(0, len(fpr) - 1, min(len(fpr), MAX_ROC_POINTS)).astype(int)
        roc = {
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            "thresholds": np.nan_to_num(thr[keep], posinf=1.0).tolist(),
        }
    elif len(present) == proba.shape[1]:
        out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels)
    cm = skm.confusion_matrix(y, pred, labels=labels)
    return {k: float(v) for k, v in out.items()}, cm, roc


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R2."""
    from sklearn import metrics as skm

    pred = pred.reshape(-1)
    return {
        "mae": float(skm.mean_absolute_error(y, pred)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
        "r2": float(skm.r2_score(y, pred)),
    }


def check_thresholds(task: str, thresholds: dict[str, float]) -> None:
    """Raises UserError for a threshold on a metric the task does not report."""
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    for name in thresholds:
        if name not in known:
            raise UserError(
                f"threshold on unknown {task} metric '{name}' (choose from {', '.join(known)})"
            )


def decide_blessing(
    metrics: dict[str, float], thresholds: dict[str, float]
) -> tuple[bool, list[str]]:
    """Applies each threshold (lower-is-better metrics are upper bounds); returns the reasons."""
    reasons, blessed = [], True
    for name, limit in thresholds.items():
        value = metrics.get(name)
        if value is None:
            blessed = False
            reasons.append(f"{name}: not computed, cannot check threshold {limit}")
            continue
        lower = C.lower_is_better(name)
        ok = value <= limit if lower else value >= limit
        blessed &= ok
        sign = "<=" if lower else ">="
        reasons.append(f"{name} = {value:.4f} {'meets' if ok else 'FAILS'} {sign} {limit}")
    return blessed, reasons


def predict(model: Any, meta: dict, part: artifacts.Part, batch_size: int = 256) -> np.ndarray:
    """Model outputs for every row of `part`."""
    ds = builders.make_dataset(
        artifacts.model_inputs(meta, part), artifacts.targets(meta, part), batch_size
    )
    return np.asarray(model.predict(ds, verbose=0))


def evaluate(meta: dict, y: np.ndarray, outputs: np.ndarray, thresholds: dict) -> Evaluation:
    """Computes the metrics and the blessing from test labels and model outputs."""
    task = meta[C.META_TASK]
    thresholds = thresholds or default_thresholds(task)
    check_thresholds(task, thresholds)
    if task == "classification":
        from sklearn.metrics import classification_report

        metrics, cm, roc = classification_metrics(y.astype(int), outputs)
        names = meta[C.META_CLASS_NAMES]
        report = classification_report(
            y.astype(int),
            outputs.argmax(axis=1),
            labels=list(range(len(names))),
            target_names=names,
            zero_division=0,
        )
        blessed, reasons = decide_blessing(metrics, thresholds)
        return Evaluation(metrics, blessed, reasons, names, cm.tolist(), roc, report)
    metrics = regression_metrics(y, outputs)
    blessed, reasons = decide_blessing(metrics, thresholds)
    return Evaluation(metrics, blessed, reasons)


def task_metrics(meta: dict, y: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The task's headline metrics for labels `y` and model outputs."""
    if meta[C.META_TASK] == "classification":
        return classification_metrics(y.astype(int), outputs)[0]
    return regression_metrics(y, outputs)


def compare_with_champion(
    result: Evaluation,
    champion: dict[str, float],
    version: int,
    thresholds: dict[str, float],
    tolerance: float,
) -> None:
    """Blesses only when no gate metric is worse than the champion's beyond `tolerance`."""
    for name in thresholds:
        new, old = result.metrics.get(name), champion.get(name)
        if new is None or old is None:
            continue
        lower = C.lower_is_better(name)
        ok = new <= old + tolerance if lower else new >= old - tolerance
        result.blessed &= ok
        verdict = "no regression against" if ok else "REGRESSES against"
        result.reasons.append(
            f"{name} = {new:.4f} {verdict} champion v{version} ({old:.4f}, tolerance {tolerance})"
        )


def slice_metrics(meta: dict, part: artifacts.Part, outputs: np.ndarray, column: str) -> dict:
    """Metrics per value of a categorical column of the test split."""
    if part.frame is None or column not in part.frame.columns:
        raise UserError(f"cannot slice by '{column}': no such column in the test split")
    values = part.frame[column].astype(str).to_numpy()
    y = artifacts.targets(meta, part)
    out = {}
    for value in sorted(set(values)):
        rows = values == value
        if meta[C.META_TASK] == "classification" and len(np.unique(y[rows])) < 2:
            acc = float((outputs[rows].argmax(axis=1) == y[rows]).mean())
            out[value] = {"rows": int(rows.sum()), "accuracy": acc}
            continue
        out[value] = {"rows": int(rows.sum()), **task_metrics(meta, y[rows], outputs[rows])}
    return out


def render_report(result: Evaluation) -> str:
    """Markdown report: metrics, decision and reasons, per-class report, confusion matrix."""
    lines = ["# Evaluation on the test split", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" for k, v in result.metrics.items()]
    lines += ["", f"## Decision: {'BLESSED' if result.blessed else 'NOT BLESSED'}", ""]
    lines += [f"- {r}" for r in result.reasons]
    if result.per_class:
        lines += ["", "## Per-class report", "", "```", result.per_class, "```"]
    for column_value, metrics in result.slices.items():
        if column_value == next(iter(result.slices)):
            lines += ["", "## Slices", "", "| slice | rows | metrics |", "| --- | --- | --- |"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "rows")
        lines.append(f"| {column_value} | {metrics['rows']} | {shown} |")
    if result.confusion:
        names = result.class_names
        lines += [
            "",
            "## Confusion matrix (rows: true, columns: predicted)",
            "",
            "| | " + " | ".join(names) + " |",
            "|" + " --- |" * (len(names) + 1),
        ]
        lines += [
            f"| {n} | " + " | ".join(str(c) for c in row) + " |"
            for n, row in zip(names, result.confusion, strict=True)
        ]
    return "\n".join(lines) + "\n"


def fail_closed(result: Evaluation, exc: BaseException, *, allow_thresholds_only: bool) -> None:
    """The gate's decision when the champion could not be evaluated.

    A registry that cannot answer or a champion that cannot be loaded or scored says nothing
    about whether the candidate is better, so the candidate is not blessed unless the user
    allowed promotion on the thresholds alone.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = f"champion could not be evaluated ({type(exc).__name__}: {lines[0] if lines else ''})"
    if allow_thresholds_only:
        result.reasons.append(f"{why}; judged on the thresholds alone (allow_thresholds_only)")
        return
    result.blessed = False
    result.reasons.append(
        f"{why}: not blessed (set allow_thresholds_only to promote on the thresholds alone)"
    )


def _tensor_specs(infos: Any) -> dict[str, tuple[str, str]]:
    from kerasflow.serving import dtypes
    from kerasflow.serving.signature import TensorSpec

    specs = (TensorSpec.from_tensor_info(name, info) for name, info in infos.items())
    return {s.name: (dtypes.short_name(s.dtype), s.shape_text()) for s in specs}


def _example_inputs(infos: Any) -> dict[str, Any]:
    """One row of zeros (empty strings) that fits a signature's inputs, to ask it a question."""
    import tensorflow as tf

    from kerasflow.serving.signature import TensorSpec

    out = {}
    for name, info in infos.items():
        spec = TensorSpec.from_tensor_info(name, info)
        dims = [1 if d is None else d for d in (spec.shape or (1,))]
        dtype = spec.numpy_dtype
        row = np.full(dims, b"", dtype=object) if dtype.kind == "O" else np.zeros(dims, dtype)
        out[name] = tf.constant(row)
    return out


def read_export_signature(export_dir: str | Path) -> ExportSignature:
    """The signatures of a SavedModel and the class labels its `classify` signature names.

    Signatures come from saved_model.pb, the file TF Serving reads; the labels are a constant
    inside the `classify` function, so that signature is asked about one row of zeros.
    """
    from kerasflow.serving.servable import read_signature_defs

    defs = read_signature_defs(export_dir).signature_def
    signatures = {
        name: {"inputs": _tensor_specs(d.inputs), "outputs": _tensor_specs(d.outputs)}
        for name, d in defs.items()
        if not name.startswith("__")  # TF's own entries (__saved_model_init_op)
    }
    labels = None
    if C.CLASSIFY_SIGNATURE in signatures:
        import tensorflow as tf

        fn = tf.saved_model.load(str(export_dir)).signatures[C.CLASSIFY_SIGNATURE]
        answer = fn(**_example_inputs(defs[C.CLASSIFY_SIGNATURE].inputs))
        labels = [v.decode() for v in answer["class_names"].numpy()[0].tolist()]
    return ExportSignature(signatures, labels)


def _tensor_changes(kind: str, old: dict, new: dict) -> list[str]:
    changes = [f"{kind} '{n}' missing" for n in old if n not in new]
    changes += [f"{kind} '{n}' added" for n in new if n not in old]
    for name in (n for n in old if n in new):
        (old_dtype, old_shape), (new_dtype, new_shape) = old[name], new[name]
        if old_dtype != new_dtype:
            changes.append(f"{kind} '{name}' dtype changed from {old_dtype} to {new_dtype}")
        if old_shape != new_shape:
            changes.append(f"{kind} '{name}' shape changed from {old_shape} to {new_shape}")
    return changes


def signature_changes(champion: ExportSignature, candidate: ExportSignature) -> list[str]:
    """How `candidate` would break a client of `champion` (empty when it would not).

    Every signature of the champion must still exist with the same input and output names,
    dtypes and shapes, and the class labels must be the same names in the same order (the
    scores' columns mean them). A signature the candidate adds breaks no client.
    """
    changes: list[str] = []
    for name, old in champion.signatures.items():
        new = candidate.signatures.get(name)
        if new is None:
            changes.append(f"signature '{name}' removed")
            continue
        # serving_default and classify share their inputs: one difference, one line
        changes += _tensor_changes("input", old["inputs"], new["inputs"])
        kind = "output" if name == C.SERVING_SIGNATURE else f"{name} output"
        changes += _tensor_changes(kind, old["outputs"], new["outputs"])
    old_labels, new_labels = champion.class_labels, candidate.class_labels
    if old_labels is not None and new_labels is not None and old_labels != new_labels:
        changes.append(f"class labels changed from {old_labels} to {new_labels}")
    return list(dict.fromkeys(changes))


def check_signature(
    result: Evaluation,
    changes: list[str],
    version: int,
    *,
    allow_signature_change: bool,
) -> None:
    """Blesses only a candidate whose serving signature answers the champion's clients.

    A change the user declared (`allow_signature_change`) is reported and let through.
    """
    result.signature_changes = changes
    if not changes:
        result.reasons.append(f"serving signature compatible with champion v{version}")
        return
    what = "; ".join(changes)
    if allow_signature_change:
        result.reasons.append(
            f"serving signature differs from champion v{version} ({what}); declared "
            "(allow_signature_change)"
        )
        return
    result.blessed = False
    result.reasons.append(
        f"serving signature INCOMPATIBLE with champion v{version} ({what}): not blessed "
        "(set allow_signature_change to declare the change)"
    )


def champion_export_dir(local: Path) -> Path:
    """The SavedModel among a champion's downloaded artifacts (the folder itself when bare)."""
    return local / C.SAVED_MODEL_DIR if (local / C.SAVED_MODEL_DIR).is_dir() else local


def champion_evaluation(
    tracking_uri: str, model_name: str, meta: dict, test: artifacts.Part
) -> ChampionEvaluation | None:
    """The current champion's metrics on this run's test split and its serving signature.

    None when there is no champion yet.

    Raises:
        Exception: any failure to reach the registry, download the champion, load it, score
            it on this split or read its serving signature (the gate then fails closed).
    """
    found = registry.download_champion(tracking_uri, model_name)
    if found is None:
        return None
    champion, local = found
    export = champion_export_dir(local)
    if (local / C.KERAS_MODEL_FILE).is_file():
        outputs = predict(builders.load_model(local / C.KERAS_MODEL_FILE), meta, test)
    else:  # a registered SavedModel only (e.g. a serving version folder)
        import tensorflow as tf

        fn = tf.saved_model.load(str(export)).signatures[C.SERVING_SIGNATURE]
        inputs = {k: tf.constant(v) for k, v in artifacts.model_inputs(meta, test).items()}
        outputs = fn(**inputs)[C.SERVING_OUTPUT].numpy()
    metrics = task_metrics(meta, artifacts.targets(meta, test), outputs)
    return ChampionEvaluation(champion.registry_version, metrics, read_export_signature(export))


def judge_against_champion(
    result: Evaluation,
    found: ChampionEvaluation,
    candidate_export: Path,
    gate: dict[str, float],
    opts: EvaluateSettings,
) -> None:
    """The champion's part of the gate: no metric regression, a compatible serving signature."""
    version = found.registry_version
    compare_with_champion(result, found.metrics, version, gate, opts.champion_tolerance)
    changes = signature_changes(found.signature, read_export_signature(candidate_export))
    check_signature(result, changes, version, allow_signature_change=opts.allow_signature_change)


def log_pictures(meta: dict, y: np.ndarray, outputs: np.ndarray, html_path: str) -> dict:
    """Logs the test results' pictures as MLflow artifacts under `evaluation/` and writes them
    as one HTML page to `html_path`; returns the artifact folder's URI and the file names."""
    import mlflow

    from kerasflow.components.evaluate import plots

    if meta[C.META_TASK] == "classification":
        names = list(meta.get(C.META_CLASS_NAMES) or [])
        figures = plots.classification_figures(np.asarray(y).astype(int), outputs, names)
    else:
        figures = plots.regression_figures(y, outputs)
    try:
        for name, fig in figures.items():
            runs.log_figure(fig, f"evaluation/{name}")
        if html_path:
            Path(html_path).parent.mkdir(parents=True, exist_ok=True)
            Path(html_path).write_text(plots.figures_html(figures, "evaluation on the test split"))
    finally:
        plots.close_all(figures)
    return {"folder": mlflow.get_artifact_uri("evaluation"), "files": list(figures)}


@boundary.step_entry(STEP, heavy_imports=("tensorflow", "keras"))
def run(
    *,
    settings: EvaluateSettings | dict[str, Any],
    headline: dict[str, Any] | None = None,
    model_dir: str,
    splits_dir: str,
    report_path: str,
    predictions_dir: str,
    tracking_uri: str,
    parent_run_id: str,
    pictures_path: str = "",
) -> Evaluation:
    """Runs the step: evaluates on test, compares with the champion, logs, writes predictions.

    Args:
        settings: The step's settings (a mapping is validated into EvaluateSettings).
        headline: The headline pipeline parameters the step reads (not in `settings`).
        model_dir: The trained model.
        splits_dir: The splits from normalize_split (the test split).
        report_path: Output Markdown report.
        predictions_dir: Output folder of the test predictions.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
        pictures_path: Output HTML page of the pictures (none when empty).
    """
    opts = EvaluateSettings.from_parameters(settings, headline)
    model_name, slice_by = opts.model_name, opts.slice_by
    tracking_uri = runs.resolve_uri(tracking_uri)
    with runs.step_run(tracking_uri, parent_run_id, STEP, settings=opts):
        meta = artifacts.load_meta(splits_dir)
        test = artifacts.load_part(splits_dir, "test")
        model = builders.load_model(Path(model_dir, C.KERAS_MODEL_FILE))
        outputs = predict(model, meta, test)
        gate = opts.thresholds or default_thresholds(meta[C.META_TASK])
        y = artifacts.targets(meta, test)
        result = evaluate(meta, y, outputs, gate)
        if slice_by:
            result.slices = slice_metrics(meta, test, outputs, slice_by)
        info = members.read_ensemble(model_dir)
        if info is not None:
            scores = members.score_members(info, model_dir, meta, test, task_metrics)
            result.ensemble = members.comparison(info, scores, result.metrics, meta)
        if model_name:
            try:
                found = champion_evaluation(tracking_uri, model_name, meta, test)
            except Exception as exc:  # any failure to evaluate the champion closes the gate
                fail_closed(result, exc, allow_thresholds_only=opts.allow_thresholds_only)
            else:
                if found is None:
                    result.reasons.append("no champion yet: thresholds only")
                else:
                    export = Path(model_dir, C.SAVED_MODEL_DIR)
                    judge_against_champion(result, found, export, gate, opts)
        result.deploy = result.blessed and opts.publish
        if result.blessed and not opts.publish:
            result.reasons.append("publishing is off: the model is not deployed")
        text = render_report(result)
        if result.ensemble is not None:
            text += members.render(result.ensemble)
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(text)
        Path(predictions_dir).mkdir(parents=True, exist_ok=True)
        np.savez(Path(predictions_dir, C.PREDICTIONS_FILE), outputs=outputs)
        import mlflow

        mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
        mlflow.set_tag(C.TAG_BLESSED, str(result.blessed).lower())
        checks = {}
        if result.signature_changes is not None:
            checks[SIGNATURE_TAG] = str(not result.signature_changes).lower()
            mlflow.set_tag(SIGNATURE_TAG, checks[SIGNATURE_TAG])
        runs.log_text_artifact(text, "evaluation.md")
        pictures = log_pictures(meta, y, outputs, pictures_path)
        if result.slices:
            runs.log_dict_artifact(result.slices, "slices.json")
        if result.ensemble is not None:
            mlflow.log_metrics(members.tracked_metrics(result.ensemble))
            runs.log_dict_artifact(result.ensemble, "ensemble_comparison.json")
            checks[members.ENSEMBLE_TAG] = {
                k: v for k, v in result.ensemble.items() if k != "members"
            }
        runs.log_pipeline_metrics(
            parent_run_id, {f"test_{k}": v for k, v in result.metrics.items()}
        )
        runs.set_pipeline_tags(
            parent_run_id,
            {
                C.TAG_BLESSED: str(result.blessed).lower(),
                "kerasflow.blessing_reasons": result.reasons,
                C.TAG_PICTURES: pictures,
                **checks,
            },
        )
        verdict = "blessed" if result.blessed else "not blessed"
        boundary.progress(STEP, f"{result.metrics} -> {verdict}: {'; '.join(result.reasons)}")
    return result
