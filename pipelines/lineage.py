"""The lineage of a served model, read back from what the pipeline recorded.

Forward, from a model: serving version -> registry version -> MLflow runs (train, pipeline) ->
KFP run -> data (source, digest, schema) -> code (kerasflow version, git commit, image) ->
hyperparameters, augmentation and seed. Backward, from a data digest: every registry version and
pipeline run trained on those data.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from kerasflow import constants as C
from kerasflow.components.deploy import core as deploy_core
from kerasflow.runtime import fileio
from kerasflow.runtime.errors import UserError
from kerasflow.tracking import lineage, registry

NOT_RECORDED = "(not recorded)"
# The registry tag deploy sets to the pipeline's MLflow run.
TAG_PIPELINE_RUN = "kerasflow.mlflow_run_id"


def _client(tracking_uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def served_versions(serving_dir: str, model_name: str) -> set[int]:
    """The versions of `model_name` that `<serving_dir>/models.config` serves or labels."""
    from kerasflow.serving.config import parse_model_config_text

    content = registry.read_serving_config(serving_dir)
    if content is None:
        return set()
    out: set[int] = set()
    for config in parse_model_config_text(content.decode("utf-8"), registry.CONFIG_FILE):
        if config.name != model_name:
            continue
        on_disk = deploy_core.existing_versions(config.base_path)
        out |= config.policy.select(on_disk) | {int(v) for v in config.labels.values()}
    return out


def find_version(tracking_uri: str, model_name: str, serving_version: int | None) -> Any:
    """The registry version of `model_name` published as `serving_version` (the champion's
    when None).

    Raises:
        UserError: unknown model, no champion, or no such serving version.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        raise UserError(f"no registered model named '{model_name}'") from None
    if serving_version is None:
        champion = registry.get_champion(tracking_uri, model_name)
        if champion is None:
            raise UserError(f"model '{model_name}' has no champion: pass --version N")
        return client.get_model_version(model_name, str(champion.registry_version))
    number = registry.registry_version_for(tracking_uri, model_name, serving_version)
    return client.get_model_version(model_name, str(number))


def _step_params(client: Any, pipeline_run_id: str, step: str) -> dict[str, str]:
    from kerasflow.tracking import runs

    with contextlib.suppress(Exception):
        found = runs.find_step_run(pipeline_run_id, step)
        if found:
            return dict(client.get_run(found).data.params)
    return {}


def describe_pipeline_run(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """The links of one pipeline run: KFP run, data, code, settings, hyperparameters, metrics."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = _client(tracking_uri)
    run = client.get_run(run_id)
    tags, params = run.data.tags, run.data.params
    settings = lineage.read_step_settings(tracking_uri, run_id)
    augment = settings.get("augment") or _step_params(client, run_id, "augment")
    train = settings.get("train", {})
    experiment = client.get_experiment(run.info.experiment_id)
    return {
        "pipeline_run": {
            "id": run_id,
            "name": run.info.run_name,
            "experiment": experiment.name if experiment else run.info.experiment_id,
            "status": run.info.status,
        },
        "train_run": runs_find(run_id, "train"),
        "kfp_run": {
            "id": tags.get(C.TAG_KFP_RUN_ID, ""),
            "pipeline": tags.get(C.TAG_KFP_PIPELINE, ""),
        },
        "data": {
            "source": tags.get(lineage.TAG_DATA_SOURCE) or params.get("data", ""),
            "digest": tags.get(lineage.TAG_DATA_HASH, ""),
            "schema": tags.get(lineage.TAG_SCHEMA_URI, ""),
        },
        "code": {
            "kerasflow": tags.get(lineage.TAG_CODE_VERSION, ""),
            "git_commit": tags.get(lineage.TAG_GIT_COMMIT, ""),
            "image": tags.get(lineage.TAG_IMAGE, ""),
        },
        "hyperparameters": json.loads(tags.get(C.TAG_BEST_HPARAMS, "{}")),
        "augmentation": {k: v for k, v in augment.items() if k != "seed"},
        "seed": train.get("seed", params.get("seed")),
        "deterministic": bool(train.get("deterministic", False)),
        "reproduces": tags.get(lineage.TAG_REPRODUCES, ""),
        "test_metrics": {
            k[len("test_") :]: v
            for k, v in sorted(run.data.metrics.items())
            if k.startswith("test_")
        },
        "settings": settings,
    }


def runs_find(pipeline_run_id: str, step: str) -> str:
    """The id of the pipeline run's finished `step` run ('' when none)."""
    from kerasflow.tracking import runs

    try:
        return runs.find_step_run(pipeline_run_id, step)
    except Exception:  # noqa: BLE001 - a missing link is shown as such
        return ""


def trace_model(
    tracking_uri: str, model_name: str, serving_version: int | None, serving_dir: str
) -> dict[str, Any]:
    """Every link from a served version of `model_name` back to its data and code.

    Raises:
        UserError: unknown model or version.
    """
    mv = find_version(tracking_uri, model_name, serving_version)
    tags = mv.tags or {}
    serving = tags.get(registry.SERVING_VERSION_TAG)
    path = tags.get(registry.SERVING_PATH_TAG, "")
    marker = deploy_core.read_marker(path) if path else None
    champion = registry.get_champion(tracking_uri, model_name)
    out: dict[str, Any] = {
        "model_name": model_name,
        "serving": {
            "version": int(serving) if serving else None,
            "path": path,
            "export_digest": (marker or {}).get("digest", ""),
            "on_disk": bool(path) and fileio.exists(path),
            "served": bool(serving) and int(serving) in served_versions(serving_dir, model_name),
        },
        "registry": {
            "name": model_name,
            "version": int(mv.version),
            "aliases": list(mv.aliases or []),
            "champion": champion is not None and champion.registry_version == int(mv.version),
            "source": mv.source,
            "train_run": mv.run_id or "",
        },
    }
    pipeline_run = tags.get(TAG_PIPELINE_RUN, "")
    if pipeline_run:
        out.update(describe_pipeline_run(tracking_uri, pipeline_run))
    else:
        out["pipeline_run"] = {"id": ""}
    if "data" in out and not out["data"]["digest"]:
        out["data"]["digest"] = tags.get(lineage.TAG_DATA_HASH, "")
    return out


def models_for_digest(tracking_uri: str, digest: str) -> dict[str, Any]:
    """The registry versions and pipeline runs trained on data with content digest `digest`
    (a prefix of at least 6 characters matches)."""
    if len(digest) < 6:
        raise UserError(f"data digest '{digest}' is too short: give at least 6 characters")
    client = _client(tracking_uri)
    versions = []
    for model in client.search_registered_models():
        champion = model.aliases.get(registry.CHAMPION) if model.aliases else None
        for mv in client.search_model_versions(f"name = '{model.name}'"):
            found = (mv.tags or {}).get(lineage.TAG_DATA_HASH, "")
            if found and found.startswith(digest):
                serving = (mv.tags or {}).get(registry.SERVING_VERSION_TAG)
                versions.append(
                    {
                        "model_name": model.name,
                        "registry_version": int(mv.version),
                        "serving_version": int(serving) if serving else None,
                        "champion": champion is not None and str(champion) == str(mv.version),
                        "pipeline_run": (mv.tags or {}).get(TAG_PIPELINE_RUN, ""),
                        "data_digest": found,
                    }
                )
    pipeline_runs = []
    experiments = [e.experiment_id for e in client.search_experiments()]
    if experiments:
        for run in client.search_runs(
            experiments,
            filter_string=f"tags.`{C.TAG_KIND}` = '{C.KIND_PIPELINE}'",
            order_by=["attributes.start_time ASC"],
        ):
            found = run.data.tags.get(lineage.TAG_DATA_HASH, "")
            if found.startswith(digest):
                pipeline_runs.append(
                    {
                        "id": run.info.run_id,
                        "status": run.info.status,
                        "data_digest": found,
                        "model_version": run.data.tags.get(C.TAG_MODEL_VERSION),
                        "blessed": run.data.tags.get(C.TAG_BLESSED) == "true",
                    }
                )
    versions.sort(key=lambda v: (v["model_name"], v["registry_version"]))
    return {"digest": digest, "versions": versions, "pipeline_runs": pipeline_runs}


def _show(value: Any) -> str:
    if value in (None, "", {}, []):
        return NOT_RECORDED
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def format_trace(trace: dict[str, Any]) -> str:
    """The chain as aligned lines, one link a line."""
    serving, reg = trace["serving"], trace["registry"]
    data, code = trace.get("data", {}), trace.get("code", {})
    pipeline, kfp = trace.get("pipeline_run", {}), trace.get("kfp_run", {})
    state = ", ".join(
        s
        for s, on in (
            ("served", serving["served"]),
            ("champion", reg["champion"]),
            ("deleted from disk", not serving["on_disk"]),
        )
        if on
    )
    code_text = ", ".join(
        f"{k} {v}"
        for k, v in (
            ("kerasflow", code.get("kerasflow")),
            ("git", code.get("git_commit")),
            ("image", code.get("image")),
        )
        if v
    )
    rows = [
        (
            "serving version",
            f"{serving['version']} at {serving['path'] or NOT_RECORDED}"
            + (f" ({state})" if state else ""),
        ),
        ("export digest", _show(serving["export_digest"])),
        (
            "registry version",
            f"{reg['name']} v{reg['version']}"
            + (f" [{', '.join(reg['aliases'])}]" if reg["aliases"] else "")
            + f" from {reg['source']}",
        ),
        ("train run", _show(trace.get("train_run") or reg["train_run"])),
        (
            "pipeline run",
            _show(pipeline.get("id"))
            + (
                f" ({pipeline.get('status')}, experiment '{pipeline.get('experiment')}')"
                if pipeline.get("id")
                else ""
            ),
        ),
        (
            "KFP run",
            _show(kfp.get("id"))
            + (f" (pipeline {kfp['pipeline']})" if kfp.get("pipeline") else ""),
        ),
        ("data source", _show(data.get("source"))),
        ("data digest", _show(data.get("digest"))),
        ("schema", _show(data.get("schema"))),
        ("code", code_text or NOT_RECORDED),
        ("hyperparameters", _show(trace.get("hyperparameters"))),
        ("augmentation", _show(trace.get("augmentation"))),
        ("seed", _show(trace.get("seed"))),
        (
            "test metrics",
            ", ".join(f"{k} {v:.4f}" for k, v in trace.get("test_metrics", {}).items())
            or NOT_RECORDED,
        ),
    ]
    if trace.get("reproduces"):
        rows.append(("reproduces", trace["reproduces"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def format_digest(found: dict[str, Any]) -> str:
    """The models and runs trained on one data digest, as lines."""
    lines = [f"data digest {found['digest']}:"]
    if not found["versions"] and not found["pipeline_runs"]:
        lines.append("  no model version or pipeline run was trained on these data")
        return "\n".join(lines)
    for v in found["versions"]:
        flags = " (champion)" if v["champion"] else ""
        lines.append(
            f"  model {v['model_name']} v{v['registry_version']} (serving version "
            f"{v['serving_version']}){flags}: pipeline run {v['pipeline_run']}"
        )
    for r in found["pipeline_runs"]:
        deployed = (
            f"deployed version {r['model_version']}"
            if r["model_version"]
            else ("blessed, not deployed" if r["blessed"] else "not deployed")
        )
        lines.append(f"  pipeline run {r['id']} ({r['status']}): {deployed}")
    return "\n".join(lines)
