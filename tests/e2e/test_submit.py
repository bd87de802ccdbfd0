"""`kerasflow submit` and `kerasflow schedule` driving the real kfp.Client against a local stub."""

import json
import socket
import sys
from pathlib import Path

import pytest

from kerasflow.pipelines.cli import main
from kerasflow.settings import STEPS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kfp_api_stub import KfpApiStub  # noqa: E402

pytestmark = pytest.mark.e2e

TOKEN = "test-token-123"
STANDIN = "kfp_api_stub:build_standin_pipeline"
SERVING_DIR = "s3://mlpipeline/kerasflow/models"


def run_cli(argv: list[str]) -> int:
    """Runs the kerasflow CLI in-process and returns its exit code."""
    return main(argv)


@pytest.fixture
def stub():
    with KfpApiStub(token=TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def no_ambient_kfp(monkeypatch, tmp_path):
    for name in ("KF_PIPELINES_TOKEN", "KERASFLOW_KFP_TOKEN", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    # kfp.Client reads ~/.config/kfp/context.json; keep a developer's own out of the tests.
    monkeypatch.setenv("HOME", str(tmp_path))


def base(stub: KfpApiStub, *extra: str, pipeline: str = STANDIN) -> list[str]:
    return ["--host", stub.url, "--token", TOKEN, "--pipeline", pipeline, *extra]


def spec_task_steps(pipeline_spec: dict) -> set[str]:
    """Step names of the tasks in an inline pipeline spec, sub-DAGs included."""
    spec = pipeline_spec.get("pipeline_spec", pipeline_spec)
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name.replace("-", "_") for dag in dags for name in dag["tasks"]}


def assert_one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("kerasflow: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_submit_creates_a_run_with_typed_params_and_cluster_settings(stub, tmp_path, capsys):
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "pipeline_root: gs://kf-bucket/root\n"
        "service_account: kerasflow-pipeline-runner\n"
        "steps:\n  train:\n    memory_limit: 12Gi\n"
    )
    code = run_cli(
        [
            "submit",
            *base(stub),
            "--experiment",
            "nightly-exp",
            "--run-name",
            "first run",
            "--image",
            "reg.example/kerasflow:1.2.3",
            "--cluster-config",
            str(config),
            "--param",
            "max_trials=3",
            "--param",
            'thresholds={"accuracy": 0.9}',
            "--param",
            "tuning_enabled=false",
        ]
    )
    assert code == 0
    assert "submitted run" in capsys.readouterr().out

    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in stub.requests)
    created = stub.find("POST", "/experiments")
    assert [r.body["display_name"] for r in created] == ["nightly-exp"]
    (run_request,) = stub.find("POST", "/runs")
    body = run_request.body
    assert body["display_name"] == "first run"
    assert body["experiment_id"] == next(iter(stub.experiments))
    assert body["service_account"] == "kerasflow-pipeline-runner"
    runtime = body["runtime_config"]
    assert runtime["pipeline_root"] == "gs://kf-bucket/root"
    assert runtime["parameters"] == {
        "max_trials": 3,
        "thresholds": {"accuracy": 0.9},
        "tuning_enabled": False,
    }
    spec = body["pipeline_spec"]
    assert spec_task_steps(spec) >= set(STEPS)
    executors = spec["pipeline_spec"]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"reg.example/kerasflow:1.2.3"}
    train = executors["exec-train"]["container"]["resources"]
    assert train["resourceMemoryLimit"] == "12Gi"
    k8s = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train"]["secretAsEnv"][0]["secretName"] == "mlflow-client-credentials"


def test_submit_sends_the_real_training_dag(stub):
    code = run_cli(
        [
            "submit",
            "--host",
            stub.url,
            "--token",
            TOKEN,
            "--param",
            "max_trials=2",
            "--param",
            "tuner=random",
            "--param",
            f"serving_dir={SERVING_DIR}",
        ]
    )
    assert code == 0
    (run_request,) = stub.find("POST", "/runs")
    spec = run_request.body["pipeline_spec"]
    assert spec_task_steps(spec) >= set(STEPS)
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "kerasflow-training"
    executors = spec["pipeline_spec"]["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["resources"]["resourceCpuLimit"] == "4"
    assert run_request.body["runtime_config"]["parameters"] == {
        "max_trials": 2,
        "tuner": "random",
        "serving_dir": SERVING_DIR,
    }


def test_submit_rejects_a_bad_real_parameter_before_calling_the_server(stub, capsys):
    code = run_cli(["submit", "--host", stub.url, "--param", "tuner=annealing"])
    assert code == 2
    assert_one_line_error(capsys, "tuner")
    assert stub.requests == []


def test_wait_follows_the_run_to_success(stub, capsys):
    code = run_cli(["submit", *base(stub), "--wait", "--poll-interval", "0.01"])
    assert code == 0
    out = capsys.readouterr().out
    assert "RUNNING" in out
    assert "tasks done" in out
    assert out.strip().endswith("succeeded")
    run_id = next(iter(stub.runs))
    assert len(stub.find("GET", f"/runs/{run_id}")) >= 2


def test_wait_exits_non_zero_when_the_run_fails():
    with KfpApiStub(run_states=("PENDING", "RUNNING", "FAILED")) as server:
        code = run_cli(
            [
                "submit",
                "--host",
                server.url,
                "--pipeline",
                STANDIN,
                "--wait",
                "--poll-interval",
                "0.01",
            ]
        )
        assert code == 1
        assert not any(r.header("Authorization") for r in server.requests)


def test_wait_gives_up_after_the_timeout(capsys):
    with KfpApiStub(run_states=("RUNNING",)) as server:
        argv = ["submit", "--host", server.url, "--pipeline", STANDIN, "--wait"]
        code = run_cli([*argv, "--timeout", "0.05", "--poll-interval", "0.01"])
    assert code == 2
    assert_one_line_error(capsys, "still RUNNING")


def test_failed_run_reports_the_server_error(capsys):
    with KfpApiStub(run_states=("FAILED",)) as server:
        argv = ["submit", "--host", server.url, "--pipeline", STANDIN, "--wait"]
        assert run_cli([*argv, "--poll-interval", "0.01"]) == 1
    assert "ended FAILED: stub: a task failed" in capsys.readouterr().out


@pytest.mark.parametrize("source", ["KF_PIPELINES_TOKEN", "KERASFLOW_KFP_TOKEN", "file"])
def test_token_from_env_or_file(stub, monkeypatch, tmp_path, source):
    argv = ["submit", "--host", stub.url, "--pipeline", STANDIN]
    if source == "file":
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        argv += ["--token-file", str(token_file)]
    else:
        monkeypatch.setenv(source, TOKEN)
    assert run_cli(argv) == 0
    assert stub.find("POST", "/runs")
    assert {r.header("Authorization") for r in stub.requests} == {f"Bearer {TOKEN}"}


def test_schedule_creates_a_recurring_run(stub, capsys):
    code = run_cli(
        [
            "schedule",
            *base(stub),
            "--cron",
            "0 3 * * *",
            "--name",
            "nightly",
            "--max-concurrency",
            "2",
            "--no-catchup",
            "--param",
            "max_trials=4",
        ]
    )
    assert code == 0
    assert "created recurring run" in capsys.readouterr().out
    (request,) = stub.find("POST", "/recurringruns")
    body = request.body
    assert body["display_name"] == "nightly"
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(body["max_concurrency"]) == 2
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == {"max_trials": 4}
    assert spec_task_steps(body["pipeline_spec"]) >= set(STEPS)
    assert request.header("Authorization") == f"Bearer {TOKEN}"


def test_schedule_list_pause_resume_delete(stub, capsys):
    connect = ["--host", stub.url, "--token", TOKEN]
    for name in ("nightly", "weekly"):
        argv = ["schedule", *base(stub), "--cron", "0 3 * * 1", "--name", name]
        assert run_cli(argv) == 0
    nightly = next(r for r in stub.recurring_runs.values() if r["display_name"] == "nightly")
    capsys.readouterr()

    assert run_cli(["schedule", *connect, "--list"]) == 0
    listing = capsys.readouterr().out
    assert "nightly" in listing and "weekly" in listing and "0 0 3 * * 1" in listing

    assert run_cli(["schedule", *connect, "--pause", "nightly"]) == 0
    assert nightly["status"] == "DISABLED"
    assert stub.find("POST", f"/recurringruns/{nightly['recurring_run_id']}:disable")
    assert run_cli(["schedule", *connect, "--resume", nightly["recurring_run_id"]]) == 0
    assert nightly["status"] == "ENABLED"
    assert run_cli(["schedule", *connect, "--delete", "nightly"]) == 0
    assert [r["display_name"] for r in stub.recurring_runs.values()] == ["weekly"]

    assert run_cli(["schedule", *connect, "--pause", "nightly"]) == 2
    assert_one_line_error(capsys, "no recurring run", "nightly")


def test_schedule_refuses_a_bad_cron_before_calling_the_server(stub, capsys):
    assert run_cli(["schedule", *base(stub), "--cron", "every night"]) == 2
    assert_one_line_error(capsys, "cron")
    assert stub.requests == []


def test_unknown_param_is_refused_before_calling_the_server(stub, capsys):
    assert run_cli(["submit", *base(stub), "--param", "max_trails=3"]) == 2
    assert_one_line_error(capsys, "unknown pipeline parameter 'max_trails'")
    assert stub.requests == []


def test_wrong_token_is_one_clear_401_line(stub, capsys):
    code = run_cli(["submit", "--host", stub.url, "--token", "wrong", "--pipeline", STANDIN])
    assert code == 2
    assert_one_line_error(capsys, "401", "--token")
    assert not stub.find("POST", "/runs")


def test_missing_token_file_is_a_user_error(stub, tmp_path, capsys):
    argv = ["submit", "--host", stub.url, "--pipeline", STANDIN]
    assert run_cli([*argv, "--token-file", str(tmp_path / "nope")]) == 2
    assert_one_line_error(capsys, "token file not found")


def test_not_found_is_one_clear_404_line(stub, capsys):
    stub.fail(404, message="page not found")
    assert run_cli(["submit", *base(stub)]) == 2
    assert_one_line_error(capsys, "404", "page not found", "--host")


def test_server_error_on_run_create_is_one_clear_500_line(stub, capsys):
    stub.fail(500, method="POST", path="/runs", message="database is locked")
    assert run_cli(["submit", *base(stub)]) == 2
    assert_one_line_error(capsys, "500", "database is locked", "create the run")


def test_server_error_on_pause_is_reported(stub, capsys):
    assert run_cli(["schedule", *base(stub), "--cron", "0 3 * * *", "--name", "n"]) == 0
    stub.fail(500, method="POST", path="/recurringruns/", message="scheduler down")
    connect = ["--host", stub.url, "--token", TOKEN]
    assert run_cli(["schedule", *connect, "--pause", "n"]) == 2
    assert_one_line_error(capsys, "500", "scheduler down", "pause")


def test_unreachable_host_is_one_clear_line(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = run_cli(["submit", "--host", f"http://127.0.0.1:{port}", "--pipeline", STANDIN])
    assert code == 2
    assert_one_line_error(capsys, "cannot reach Kubeflow Pipelines")


def test_missing_host_is_a_user_error(capsys):
    assert run_cli(["schedule", "--list"]) == 2
    assert_one_line_error(capsys, "--host", "KF_PIPELINES_ENDPOINT")


def test_stub_records_json_bodies(stub):
    """The stub itself: bodies are parsed JSON, so the assertions above read real payloads."""
    assert run_cli(["submit", *base(stub)]) == 0
    (run_request,) = stub.find("POST", "/runs")
    assert isinstance(run_request.body, dict)
    json.dumps(run_request.body)


def test_an_old_flat_parameter_goes_into_its_steps_structure_with_a_warning(stub, capsys):
    code = run_cli(
        [
            "submit",
            "--host",
            stub.url,
            "--token",
            TOKEN,
            "--param",
            "augment_factor=2",
            "--param",
            'train_settings={"lr_schedule": "cosine"}',
            "--param",
            "patience=4",
            "--param",
            f"serving_dir={SERVING_DIR}",
        ]
    )
    assert code == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 2 and "'augment_factor' is now the key" in warnings[0]
    (run_request,) = stub.find("POST", "/runs")
    assert run_request.body["runtime_config"]["parameters"] == {
        "serving_dir": SERVING_DIR,
        "augment_settings": {"augment_factor": 2},
        "train_settings": {"lr_schedule": "cosine", "patience": 4},
        "hyperparameter_search_settings": {"patience": 4},
    }


def test_a_bad_value_inside_a_settings_structure_is_refused_before_the_server(stub, capsys):
    code = run_cli(
        [
            "submit",
            "--host",
            stub.url,
            "--param",
            'normalize_split_settings={"scaling": "robust"}',
        ]
    )
    assert code == 2
    assert_one_line_error(capsys, "unknown scaling 'robust'")
    assert stub.requests == []


def test_submit_without_a_serving_dir_fails_before_calling_the_server(stub, capsys):
    code = run_cli(["submit", "--host", stub.url, "--token", TOKEN])
    assert code == 2
    assert_one_line_error(capsys, "serving_dir is empty", "--param serving_dir=")
    assert stub.requests == []


def test_schedule_with_a_bad_cron_field_fails_before_calling_the_server(stub, capsys):
    code = run_cli(["schedule", *base(stub), "--cron", "0 25 * * *"])
    assert code == 2
    assert_one_line_error(capsys, "hour field must lie in 0-23")
    assert stub.requests == []


def test_schedule_list_without_a_namespace_names_the_fix(stub, capsys):
    # Multi-user Kubeflow refuses to list recurring runs outside a namespace.
    stub.fail(400, "GET", "/recurringruns", "Invalid input error: namespace is required")
    code = run_cli(["schedule", "--host", stub.url, "--token", TOKEN, "--list"])
    assert code == 2
    assert_one_line_error(capsys, "lists recurring runs per namespace: pass --namespace")


def test_schedule_list_uses_the_namespace_kfp_remembers(stub, tmp_path, monkeypatch):
    import kfp

    context = tmp_path / "context.json"
    context.write_text(json.dumps({"namespace": "team-a"}))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(context))
    assert run_cli(["schedule", "--host", stub.url, "--token", TOKEN, "--list"]) == 0
    (listing,) = stub.find("GET", "/recurringruns")
    assert listing.query["namespace"] == ["team-a"]


def test_iap_login_sends_its_id_token_to_the_health_check(stub, monkeypatch, capsys):
    from kfp.client import auth

    audiences = []

    def get_auth_token(client_id, other_client_id, other_client_secret):
        audiences.append(client_id)
        return TOKEN, False

    monkeypatch.setattr(auth, "get_auth_token", get_auth_token)
    argv = ["schedule", "--host", stub.url, "--iap-client-id", "backend.apps", "--list"]
    assert run_cli(argv) == 0
    assert audiences and set(audiences) == {"backend.apps"}
    assert stub.find("GET", "/healthz")
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in stub.requests)


def test_iap_and_a_token_are_not_mixed(stub, capsys):
    argv = ["schedule", *base(stub), "--iap-client-id", "backend.apps", "--list"]
    assert run_cli(argv) == 2
    assert_one_line_error(capsys, "not both")


def condition_tasks(spec: dict) -> dict[str, tuple[str, set[str]]]:
    """Each condition of an inline pipeline spec: its trigger condition and the step names of
    the tasks inside it (nested conditions and loops included)."""
    spec = spec.get("pipeline_spec", spec)
    components = spec["components"]

    def steps(component: str) -> set[str]:
        tasks = components[component].get("dag", {}).get("tasks", {})
        found = set()
        for name, task in tasks.items():
            found.add(name.replace("-", "_"))
            found |= steps(task["componentRef"]["name"]) if "dag" in components[
                task["componentRef"]["name"]] else set()  # fmt: skip
        return found

    out = {}
    for component in components.values():
        for task in component.get("dag", {}).get("tasks", {}).values():
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition:
                out[task["taskInfo"]["name"]] = (condition, steps(task["componentRef"]["name"]))
    return out


def test_schedule_when_drifted_trains_under_the_drift_checks_verdict(stub, capsys):
    argv = ["schedule", "--host", stub.url, "--token", TOKEN, "--cron", "0 3 * * *",
            "--param", f"serving_dir={SERVING_DIR}"]  # fmt: skip
    assert run_cli([*argv, "--name", "plain"]) == 0
    assert run_cli([*argv, "--name", "on-drift", "--when", "drifted", "--param",
                    'drift_check_settings={"alpha": 0.01}']) == 0  # fmt: skip
    plain, drifted = (r.body for r in stub.find("POST", "/recurringruns"))
    assert "drift_check" not in spec_task_steps(plain["pipeline_spec"])
    assert "drifted" not in condition_tasks(plain["pipeline_spec"])
    assert drifted["runtime_config"]["parameters"]["drift_check_settings"] == {"alpha": 0.01}
    conditions = condition_tasks(drifted["pipeline_spec"])
    condition, guarded = conditions["drifted"]
    # Every training step runs only when the drift check said so; the check itself does not.
    assert "drift-check-Output" in condition and condition.endswith("== true")
    assert guarded >= set(STEPS)
    assert "drift_check" in spec_task_steps(drifted["pipeline_spec"]) - guarded


def test_when_drifted_needs_a_factory_that_knows_it(stub, capsys):
    code = run_cli(["submit", *base(stub), "--when", "drifted"])
    assert code == 2
    assert_one_line_error(capsys, "--when drifted needs a pipeline factory taking `when`")
