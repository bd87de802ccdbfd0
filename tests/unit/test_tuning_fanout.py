"""The search's place under the pipeline root, and its worker pods on a cluster (compiled)."""

from __future__ import annotations

import pytest
import yaml

from kerasflow.components.hyperparameter_search import core
from kerasflow.tuning import parallel

pytestmark = pytest.mark.unit


def test_search_directory_is_keyed_by_data_and_shape_not_budget():
    shape = {"algorithm": "random", "seed": 1, "search_space": {"units": [8]}}
    key = core.search_key("abc", shape)
    assert key == core.search_key("abc", dict(shape))
    assert key != core.search_key("abd", shape)
    assert key != core.search_key("abc", {**shape, "seed": 2})
    assert (
        core.resolve_tuner_dir("", "/w/pipeline_root", key, "/fb")
        == f"/w/pipeline_root/tuning/{key}"
    )
    assert core.resolve_tuner_dir("/mine", "/w/pipeline_root", key, "/fb") == "/mine"
    assert core.resolve_tuner_dir("", "", key, "/fb") == "/fb"
    assert core.tuning_root("gs://bucket/root") == "gs://bucket/root/tuning"
    assert core.tuning_root("minio://b/x") == "minio://b/x/tuning"
    assert core.rendezvous_path("gs://b/r", "run-1") == "gs://b/r/tuning/rendezvous/run-1.json"


def test_worker_pods_fan_out_beside_the_search_step(tmp_path):
    from kerasflow.pipelines.compiling import compile_pipeline

    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text()))
    # Every step runs inside the pipeline's exit handler, whose inputs are the pipeline's.
    handler = spec["root"]["dag"]["tasks"]["exit-handler-1"]
    channel = handler["inputs"]["parameters"]["pipelinechannel--worker_pods"]
    assert channel["componentInputParameter"] == "worker_pods"
    root = spec["components"][handler["componentRef"]["name"]]["dag"]["tasks"]
    search = root["hyperparameter-search"]["inputs"]["parameters"]
    assert search["pipeline_root"]["runtimeValue"]["constant"] == "{{$.pipeline_root}}"
    assert search["worker_pods"]["componentInputParameter"] == "pipelinechannel--worker_pods"
    (gate,) = [
        t for t in root.values() if "worker_pods" in t.get("triggerPolicy", {}).get("condition", "")
    ]
    assert "> 0" in gate["triggerPolicy"]["condition"]
    branch = spec["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    loop = next(t for name, t in branch.items() if name.startswith("for-loop"))
    assert "search-worker-slots" in branch
    workers = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    params = workers["hyperparameter-search-worker"]["inputs"]["parameters"]
    assert params["pipeline_root"]["runtimeValue"]["constant"] == "{{$.pipeline_root}}"
    assert "loop-item" in params["worker_index"]["componentInputParameter"]
    assert spec["root"]["inputDefinitions"]["parameters"]["worker_pods"]["defaultValue"] == 0


def test_rendezvous_round_trip_and_a_finished_search_releases_pods(tmp_path, capsys):
    path = core.rendezvous_path(str(tmp_path), "run-1")
    assert parallel.read_rendezvous(path) is None
    parallel.write_rendezvous(path, {"address": "10.0.0.5:4000", "finished": True})
    assert parallel.read_rendezvous(path)["address"] == "10.0.0.5:4000"
    core.run_pod_worker(
        splits_dir="unused",
        train_dir="unused",
        pipeline_root=str(tmp_path),
        run_id="run-1",
        worker_index="0",
    )
    assert "search already finished" in capsys.readouterr().out
