import pytest

from kerasflow import settings
from kerasflow.errors import UserError

pytestmark = pytest.mark.unit


def test_defaults_are_valid_and_resolve_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cfg = settings.RunConfig(work_dir=str(tmp_path))
    assert cfg.data == "builtin:digits"
    assert cfg.resolved_serving_dir() == str(tmp_path / "models")
    assert cfg.resolved_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_tracking_uri_prefers_flag_then_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert settings.RunConfig().resolved_tracking_uri() == "http://mlflow:5000"
    assert settings.RunConfig(tracking_uri="file:/x").resolved_tracking_uri() == "file:/x"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tuner", "genetic", "unknown tuner 'genetic'"),
        ("max_trials", -1, "'max_trials' must be >= 1"),
        ("max_epochs", "ten", "'max_epochs' must be an integer"),
        ("task", "ranking", "unknown task 'ranking'"),
        ("val_fraction", 0.7, "'val_fraction' must be between 0 and 0.5"),
        ("model_name", "bad/name", "model name 'bad/name'"),
        ("thresholds", {"accuracy": "high"}, "threshold for 'accuracy' must be a number"),
        ("augment_flip", "yes", "'augment_flip' must be true or false"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(UserError, match=message):
        settings.RunConfig(**{field: value})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kfold": 3, "imbalance": "smote"}, "'kfold' cannot be combined with imbalance 'smote'"),
        ({"folds": 4, "augment_methods": "noise,mixup"}, "augment method 'mixup'"),
        ({"kfold": 3, "augment_methods": "smote"}, "augment method 'smote'"),
    ],
)
def test_cross_validation_refuses_rows_synthesized_from_two_rows(values, message):
    with pytest.raises(UserError, match=message):
        settings.RunConfig(**values)
    # Without augmentation copies the methods are never used, so nothing leaks.
    if "augment_methods" in values:
        settings.RunConfig(**values, augment_factor=0)
    settings.RunConfig(kfold=3, augment_methods="noise", imbalance="class_weights")


def test_config_file_round_trip_and_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("tuner: bayesian\nmax-trials: 4\nthresholds: {accuracy: 0.9}\n")
    values = settings.load_config_file(str(path))
    cfg = settings.build_config(values, {"max_trials": 6, "seed": None})
    assert (cfg.tuner, cfg.max_trials, cfg.thresholds) == ("bayesian", 6, {"accuracy": 0.9})


def test_config_file_unknown_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("tuner: random\nlearning_rat: 0.1\n")
    with pytest.raises(UserError, match="unknown config key 'learning_rat'"):
        settings.load_config_file(str(path))


@pytest.mark.parametrize("text", ["- a\n- b\n", "a: [unclosed\n"])
def test_config_file_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="run.yaml"):
        settings.load_config_file(str(path))


def test_missing_config_file():
    with pytest.raises(UserError, match="config file not found"):
        settings.load_config_file("/nonexistent/run.yaml")


def test_parse_thresholds():
    assert settings.parse_thresholds(["accuracy=0.9", "rmse=3"]) == {"accuracy": 0.9, "rmse": 3.0}
    with pytest.raises(UserError, match="metric=number"):
        settings.parse_thresholds(["accuracy>0.9"])
