"""The KFP client helpers: tokens, hosts, parameters, cron, error messages, run following."""

import types

import kfp_server_api
import pytest
import urllib3

from kerasflow.pipelines import cluster
from kerasflow.pipelines.cluster_commands import load_pipeline
from kerasflow.pipelines.cluster_settings import ClusterSettings
from kerasflow.runtime.errors import UserError

pytestmark = pytest.mark.unit


def test_token_precedence(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  from-file \n")
    env = {"KF_PIPELINES_TOKEN": "generic", "KERASFLOW_KFP_TOKEN": "ours"}
    assert cluster.resolve_token("flag", str(token_file), env) == "flag"
    assert cluster.resolve_token(None, str(token_file), env) == "from-file"
    assert cluster.resolve_token(None, None, env) == "ours"
    assert cluster.resolve_token(None, None, {"KF_PIPELINES_TOKEN": "generic"}) == "generic"
    assert cluster.resolve_token(None, None, {}) is None
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(UserError, match="empty"):
        cluster.resolve_token(None, str(empty), {})


def test_host_from_flag_or_env():
    assert cluster.resolve_host("https://kfp.example.com/", {}) == "https://kfp.example.com"
    env = {"KF_PIPELINES_ENDPOINT": "http://localhost:8080"}
    assert cluster.resolve_host(None, env) == "http://localhost:8080"
    with pytest.raises(UserError, match="--host"):
        cluster.resolve_host(None, {})
    with pytest.raises(UserError, match="http"):
        cluster.resolve_host("kfp.example.com", {})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("30 0 3 * * 1-5", "30 0 3 * * 1-5"),
        ("*/15 * * * *", "0 */15 * * * *"),
    ],
)
def test_cron_becomes_six_fields(given, expected):
    assert cluster.to_kfp_cron(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0 3 * * MON-FRI", "0 0 3 * * MON-FRI"),
        ("0 0 3 ? JAN,JUL *", "0 0 3 ? JAN,JUL *"),
        ("59 59 23 31 12 6", "59 59 23 31 12 6"),
    ],
)
def test_cron_accepts_what_kfp_parses(given, expected):
    assert cluster.to_kfp_cron(given) == expected


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("61 * * * *", "minute field must lie in 0-59"),
        ("0 24 * * *", "hour field"),
        ("0 3 0 * *", "day of month field"),
        ("0 3 * 13 *", "month field"),
        ("0 3 * * 7", "day of week field"),
        ("60 0 3 * * *", "second field"),
        ("0 3 L * *", "day of month field"),
        ("0 3 * * 5#2", "day of week field"),
        ("0 3 * * 5-1", "backwards range"),
        ("*/0 * * * *", "bad step"),
        ("? 3 * * *", "only allowed in the day fields"),
    ],
)
def test_cron_fields_are_checked_as_kfp_parses_them(bad, fragment):
    with pytest.raises(UserError, match=fragment):
        cluster.to_kfp_cron(bad)


@pytest.mark.parametrize("bad", ["", "0 3 * *", "nightly", "0 3 * * * * *", "0 3 * * $"])
def test_bad_cron_is_refused(bad):
    with pytest.raises(UserError, match="cron"):
        cluster.to_kfp_cron(bad)


DECLARED = {
    "data": "STRING",
    "max_trials": "NUMBER_INTEGER",
    "val_fraction": "NUMBER_DOUBLE",
    "augment_flip": "BOOLEAN",
    "thresholds": "STRUCT",
    "layers": "LIST",
}


def test_params_are_typed_by_declaration():
    params = cluster.parse_params(
        [
            "data=gs://b/data.csv",
            "max-trials=7",
            "val_fraction=0.2",
            "augment_flip=yes",
            'thresholds={"accuracy": 0.8}',
            "layers=[1, 2]",
        ],
        DECLARED,
    )
    assert params == {
        "data": "gs://b/data.csv",
        "max_trials": 7,
        "val_fraction": 0.2,
        "augment_flip": True,
        "thresholds": {"accuracy": 0.8},
        "layers": [1, 2],
    }
    assert cluster.parse_params(["data=a=b"], DECLARED) == {"data": "a=b"}


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("max_trials", "key=value"),
        ("=3", "key=value"),
        ("nope=1", "unknown pipeline parameter 'nope'"),
        ("max_trials=many", "integer"),
        ("val_fraction=x", "number"),
        ("augment_flip=maybe", "true or false"),
        ("thresholds=[1]", "JSON object"),
        ("layers={", "JSON list"),
        ("max_trials=0", "max_trials"),
        ("val_fraction=0.9", "val_fraction"),
    ],
)
def test_bad_params_name_the_problem(item, fragment):
    with pytest.raises(UserError) as info:
        cluster.parse_params([item], DECLARED)
    assert fragment in str(info.value)


def _api_exception(status, body):
    exc = kfp_server_api.ApiException(status=status, reason="Reason")
    exc.body = body
    return exc


@pytest.mark.parametrize(
    ("raised", "fragments"),
    [
        (
            _api_exception(401, b'{"error": "bad token", "code": 16}'),
            ["401", "bad token", "--token"],
        ),
        (_api_exception(404, "<html><body>Not Found</body></html>"), ["404", "--host"]),
        (_api_exception(500, '{"message": "boom\\nstack"}'), ["HTTP 500 boom"]),
        (_api_exception(0, None), ["cannot reach"]),
        (
            urllib3.exceptions.MaxRetryError(None, "/x", reason="refused"),
            ["cannot reach", "refused"],
        ),
        (ValueError("Multiple experiments is found with name x."), ["Multiple experiments"]),
    ],
)
def test_api_errors_become_one_line(raised, fragments):
    with pytest.raises(UserError) as info, cluster.api_errors("http://kfp", "do it"):
        raise raised
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def _task(name, state):
    return types.SimpleNamespace(display_name=name, state=state)


def _run(state, tasks=(), error=None):
    details = types.SimpleNamespace(task_details=list(tasks))
    return types.SimpleNamespace(state=state, run_details=details, error=error)


def test_describe_run_hides_bookkeeping_tasks():
    run = _run(
        "RUNNING",
        [
            _task("root", "RUNNING"),
            _task("train-driver", "SUCCEEDED"),
            _task("augment", "SUCCEEDED"),
            _task("train", "RUNNING"),
            _task("evaluate", "PENDING"),
        ],
    )
    assert cluster.describe_run(run) == "RUNNING (1/3 tasks done; running: train)"
    assert cluster.describe_run(_run(None)) == "PENDING"


class FakeClient:
    def __init__(self, runs):
        self.runs = list(runs)

    def get_run(self, run_id):
        return self.runs.pop(0) if len(self.runs) > 1 else self.runs[0]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_follow_run_prints_only_changes_and_returns_the_final_run():
    runs = [
        _run("PENDING"),
        _run("RUNNING", [_task("train", "RUNNING")]),
        _run("RUNNING", [_task("train", "RUNNING")]),
        _run("FAILED", [_task("train", "FAILED")], types.SimpleNamespace(message="OOMKilled")),
    ]
    lines, clock = [], FakeClock()
    final = cluster.follow_run(
        FakeClient(runs),
        "http://kfp",
        "r1",
        timeout_s=100,
        poll_interval_s=5,
        echo=lines.append,
        clock=clock,
        sleep=clock.sleep,
    )
    assert final.state == "FAILED"
    assert cluster.run_error(final) == "OOMKilled"
    assert len(lines) == 3
    assert "failed: train" in lines[-1]


def test_follow_run_times_out_with_a_user_error():
    clock = FakeClock()
    with pytest.raises(UserError, match="still RUNNING after 20s"):
        cluster.follow_run(
            FakeClient([_run("RUNNING")]),
            "http://kfp",
            "r1",
            timeout_s=20,
            poll_interval_s=5,
            echo=lambda _: None,
            clock=clock,
            sleep=clock.sleep,
        )


def test_schedule_row_shows_cron_or_interval():
    cron = types.SimpleNamespace(
        recurring_run_id="id1",
        display_name="n",
        status="ENABLED",
        max_concurrency="2",
        no_catchup=True,
        trigger=types.SimpleNamespace(
            cron_schedule=types.SimpleNamespace(cron="0 0 3 * * *"), periodic_schedule=None
        ),
    )
    row = cluster.schedule_row(cron)
    assert (row["schedule"], row["catchup"], row["max_concurrency"]) == ("0 0 3 * * *", "no", "2")
    cron.trigger = types.SimpleNamespace(
        cron_schedule=None, periodic_schedule=types.SimpleNamespace(interval_second=3600)
    )
    assert cluster.schedule_row(cron)["schedule"] == "every 3600s"


def test_load_pipeline_reports_bad_references():
    settings = ClusterSettings()
    with pytest.raises(UserError, match="package.module:name"):
        load_pipeline("no_colon", settings)
    with pytest.raises(UserError, match="cannot import"):
        load_pipeline("kerasflow_no_such_module:x", settings)
    with pytest.raises(UserError, match="has no"):
        load_pipeline("kerasflow.settings:nothing_here", settings)
    with pytest.raises(UserError, match="neither"):
        load_pipeline("kerasflow.settings:DEFAULT_IMAGE", settings)
    with pytest.raises(UserError, match="neither"):
        load_pipeline("kerasflow.pipelines.cluster_settings:ClusterSettings", settings)
    with pytest.raises(UserError, match="did not return a pipeline"):
        load_pipeline(f"{__name__}:not_a_factory", settings)


def not_a_factory(step_settings=None):
    return "not a pipeline"


# --- arguments checked before a run is created ----------------------------------------------


@pytest.fixture
def package(tmp_path):
    """A compiled package declaring the parameters the checks read, with empty defaults."""
    import yaml

    params = {
        name: {"parameterType": "STRING", "defaultValue": default, "isOptional": True}
        for name, default in {
            "data": "builtin:digits",
            "serving_dir": "",
            "tracking_uri": "",
            "model_name": "kerasflow-model",
        }.items()
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"root": {"inputDefinitions": {"parameters": params}}}))
    return path


@pytest.mark.parametrize(
    "params",
    [
        {"serving_dir": "gs://bucket/models"},
        {"serving_dir": "s3://mlpipeline/kerasflow/models", "data": "s3://mlpipeline/d.csv"},
        {"serving_dir": "minio://mlpipeline/models", "tracking_uri": "http://mlflow:5000"},
        {"serving_dir": "/models", "data": "gs://bkt/data/train.csv"},
    ],
)
def test_cluster_arguments_that_pods_can_use_pass(package, params):
    cluster.check_cluster_arguments(params, package)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "serving_dir is empty: pass --param serving_dir="),
        ({"serving_dir": "  "}, "serving_dir is empty"),
        ({"serving_dir": "models"}, "a path on this machine"),
        ({"serving_dir": "gs://"}, "not a valid object-store URI"),
        ({"serving_dir": "gs://Bad_Bucket/m"}, "not a valid object-store URI"),
        ({"serving_dir": "hdfs://nn/models"}, "must be gs://, s3://, minio://"),
        ({"serving_dir": "gs://bkt/m", "data": "data/train.csv"}, "data 'data/train.csv'"),
        ({"serving_dir": "gs://bkt/m", "tracking_uri": "sqlite:///mlflow.db"}, "tracking_uri"),
        ({"serving_dir": "gs://bkt/m", "model_name": ""}, "model_name is empty"),
    ],
)
def test_cluster_arguments_a_step_would_fail_on_are_refused_first(package, params, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
        cluster.check_cluster_arguments(params, package)


# --- IAP ---------------------------------------------------------------------------------------


def test_iap_login_needs_the_client_id_and_a_whole_desktop_client():
    assert cluster.resolve_iap_login(None, None, None, environ={}) is None
    login = cluster.resolve_iap_login("backend.apps", None, None, environ={})
    assert login.client_kwargs() == {
        "client_id": "backend.apps",
        "other_client_id": None,
        "other_client_secret": None,
    }
    login = cluster.resolve_iap_login(
        "backend.apps", "desktop.apps", None, environ={cluster.IAP_SECRET_ENV_VAR: "s3cret"}
    )
    assert login.client_kwargs()["other_client_secret"] == "s3cret"
    with pytest.raises(UserError, match="go together"):
        cluster.resolve_iap_login("backend.apps", "desktop.apps", None, environ={})
    with pytest.raises(UserError, match="need --iap-client-id"):
        cluster.resolve_iap_login(None, "desktop.apps", "s", environ={})


def test_iap_token_is_asked_for_the_client_id_audience():
    calls = []

    def get_token(client_id, other_client_id, other_client_secret):
        calls.append((client_id, other_client_id, other_client_secret))
        return "id-token", False

    login = cluster.IapLogin("backend.apps", "desktop.apps", "s")
    assert cluster.iap_token(login, get_token) == "id-token"
    assert calls == [("backend.apps", "desktop.apps", "s")]


def test_iap_failures_are_one_line():
    def no_token(*_):
        return None, False

    def refused(*_):
        raise RuntimeError("invalid_grant: Bad Request\nmore")

    login = cluster.IapLogin("backend.apps")
    with pytest.raises(UserError, match="gave no token"):
        cluster.iap_token(login, no_token)
    with pytest.raises(UserError, match="failed: invalid_grant: Bad Request$"):
        cluster.iap_token(login, refused)
