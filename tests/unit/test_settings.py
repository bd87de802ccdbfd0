import argparse

import pytest

from kerasflow import settings
from kerasflow.runtime.errors import UserError
from kerasflow.settings import RunSettings
from kerasflow.settings.cli import add_run_arguments, overrides_from_args
from kerasflow.settings.run import fold_flat_parameters, step_of_keys

pytestmark = pytest.mark.unit


def make(**values):
    return RunSettings.from_values(values)


def test_defaults_are_valid_and_resolve_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cfg = make(work_dir=str(tmp_path))
    assert cfg.ingest_clean.data == "builtin:digits"
    assert cfg.resolved_serving_dir() == str(tmp_path / "models")
    assert cfg.resolved_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_tracking_uri_prefers_flag_then_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert make().resolved_tracking_uri() == "http://mlflow:5000"
    assert make(tracking_uri="file:/x").resolved_tracking_uri() == "file:/x"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tuner", "genetic", "unknown tuner 'genetic'"),
        ("max_trials", -1, "'max_trials' must be >= 1"),
        ("max_epochs", "ten", "'max_epochs' must be an integer"),
        ("max_epochs", 2.5, "'max_epochs' must be an integer"),
        ("max_epochs", True, "'max_epochs' must be an integer"),
        ("task", "ranking", "unknown task 'ranking'"),
        ("val_fraction", 0.7, "'val_fraction' must be between 0.0 and 0.5"),
        ("model_name", "bad/name", "model name 'bad/name'"),
        ("thresholds", {"accuracy": "high"}, "threshold for 'accuracy' must be a number"),
        ("thresholds", {"accurcy": 0.9}, "threshold on unknown metric 'accurcy'"),
        ("augment_flip", "yes", "'augment_flip' must be true or false"),
        ("data", "", "'data' must not be empty"),
        ("kfold", 1, "'kfold' must be 0"),
        ("time_budget", "soon", "time budget"),
        ("label_smoothing", 1.0, "'label_smoothing' must be between 0.0 and 1.0"),
        (
            "lr_schedule",
            "linear",
            r"unknown lr_schedule 'linear' \(choose from cosine, exponential\)",
        ),
    ],
)
def test_bad_values_name_the_field_in_one_line(field, value, message):
    with pytest.raises(UserError, match=message) as caught:
        make(**{field: value})
    assert "\n" not in str(caught.value)


def test_integral_floats_from_kfp_are_integers():
    cfg = make(max_trials=6.0, time_budget=90)
    assert cfg.hyperparameter_search.max_trials == 6
    assert isinstance(cfg.hyperparameter_search.max_trials, int)
    assert cfg.hyperparameter_search.time_budget == "90s"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kfold": 3, "imbalance": "smote"}, "'kfold' cannot be combined with imbalance 'smote'"),
        ({"folds": 4, "augment_methods": "noise,mixup"}, "augment method 'mixup'"),
        ({"kfold": 3, "augment_methods": "smote"}, "augment method 'smote'"),
        ({"folds": 3, "time_column": "t"}, "cannot be combined with a time-ordered split"),
        ({"kfold": 3, "time_column": "t"}, r"'kfold'\) cannot be combined with a time-ordered"),
    ],
)
def test_settings_of_different_steps_that_do_not_go_together(values, message):
    with pytest.raises(UserError, match=message):
        make(**values)
    # Without augmentation copies the methods are never used, so nothing leaks.
    if "augment_methods" in values:
        make(**values, augment_factor=0)
    make(kfold=3, augment_methods="noise", imbalance="class_weights")


def test_a_key_several_steps_read_sets_each_of_them():
    cfg = make(seed=7, batch_size=64, time_column="when")
    assert {cfg.normalize_split.seed, cfg.augment.seed, cfg.train.seed} == {7}
    assert cfg.hyperparameter_search.batch_size == cfg.train.batch_size == 64
    assert cfg.ingest_clean.time_column == cfg.normalize_split.time_column == "when"
    assert set(step_of_keys()["seed"]) == {
        "normalize_split",
        "augment",
        "hyperparameter_search",
        "train",
    }


def test_a_step_section_sets_that_step_alone():
    cfg = RunSettings.from_values({"batch_size": 16, "train": {"batch-size": 64}})
    assert (cfg.hyperparameter_search.batch_size, cfg.train.batch_size) == (16, 64)
    flagged = RunSettings.from_values({"train": {"batch_size": 64}}, {"batch_size": 8})
    assert (flagged.hyperparameter_search.batch_size, flagged.train.batch_size) == (8, 8)
    with pytest.raises(UserError, match="unknown config key 'tuner' for step train"):
        RunSettings.from_values({"train": {"tuner": "grid"}})
    with pytest.raises(UserError, match="set it at the top level"):
        RunSettings.from_values({"train": {"seed": 3}})


def test_a_shared_key_is_declared_once():
    # A key several steps read is declared in one class (a mixin they inherit): one default,
    # one help text, one range.
    declaring: dict[str, set[str]] = {}
    for model in settings.STEP_SETTINGS.values():
        for cls in model.__mro__:
            for key in vars(cls).get("__annotations__", {}):
                if key in model.model_fields:
                    declaring.setdefault(key, set()).add(cls.__qualname__)
    assert set(declaring) == set(step_of_keys())
    assert {k: v for k, v in declaring.items() if len(v) > 1} == {}


def test_a_headline_key_inside_a_steps_structure_is_refused():
    args = make().pipeline_arguments()
    args["train_settings"] = {**args["train_settings"], "final_epochs": 5}
    with pytest.raises(UserError, match="'final_epochs' is a pipeline parameter of its own"):
        RunSettings.from_pipeline_arguments(args)
    with pytest.raises(UserError, match="'seed' is a pipeline parameter of its own"):
        settings.TrainSettings.from_parameters({"seed": 1}, {"seed": 2, "final_epochs": 3})
    # Without headline parameters a mapping holds every key (a direct call of a step).
    assert settings.TrainSettings.from_parameters({"seed": 1}).seed == 1


def test_cluster_only_keys_are_refused_in_a_local_run():
    with pytest.raises(UserError, match="'worker_pods' only means something on a cluster"):
        make(worker_pods=2)
    with pytest.raises(UserError, match="'tuner_dir' only means something on a cluster"):
        RunSettings.from_values({"tuner_dir": "/shared"})


def test_config_file_round_trip_and_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("tuner: bayesian\nmax-trials: 4\nthresholds: {accuracy: 0.9}\n")
    values = settings.load_config_file(str(path))
    cfg = RunSettings.from_values(values, {"max_trials": 6, "seed": None})
    search = cfg.hyperparameter_search
    assert (search.tuner, search.max_trials, cfg.evaluate.thresholds) == (
        "bayesian",
        6,
        {"accuracy": 0.9},
    )


def test_config_file_unknown_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("tuner: random\nlearning_rat: 0.1\n")
    with pytest.raises(UserError, match="unknown config key 'learning_rat'"):
        RunSettings.from_values(settings.load_config_file(str(path)))


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


def run_parser():
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return parser


def test_every_flagged_setting_has_a_flag_in_its_steps_group():
    parser = run_parser()
    groups = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
    for model in settings.STEP_SETTINGS.values():
        for key, field in model.model_fields.items():
            extra = field.json_schema_extra or {}
            owner = step_of_keys()[key][0]
            if extra.get("flag", True):
                assert key in groups[f"{owner} settings"], key
            else:
                assert all(key not in dests for dests in groups.values()), key


def test_flags_parse_to_typed_overrides():
    args = run_parser().parse_args(
        ["--max-trials", "4", "--tuner", "grid", "--refit", "--no-drop-duplicates"]
    )
    overrides = overrides_from_args(args)
    assert overrides["max_trials"] == 4 and overrides["tuner"] == "grid"
    assert overrides["refit"] is True and overrides["drop_duplicates"] is False
    assert overrides["seed"] is None  # not given: the file or the default decides
    cfg = RunSettings.from_values({}, overrides)
    assert cfg.hyperparameter_search.tuner == "grid" and cfg.train.refit
    with pytest.raises(UserError, match="unknown tuner 'genetic'"):
        RunSettings.from_values(
            {}, overrides_from_args(run_parser().parse_args(["--tuner", "genetic"]))
        )


def test_pipeline_arguments_round_trip():
    cfg = make(tuner="grid", max_trials=3, seed=5, augment_factor=2, thresholds={"f1": 0.5})
    args = cfg.pipeline_arguments()
    assert args["tuner"] == "grid" and args["seed"] == 5
    assert args["augment_settings"]["augment_factor"] == 2
    assert (
        "seed" not in args["augment_settings"]
        and "tuner" not in args["hyperparameter_search_settings"]
    )
    back = RunSettings.from_pipeline_arguments(args)
    assert back.augment == cfg.augment and back.evaluate == cfg.evaluate
    assert back.hyperparameter_search == cfg.hyperparameter_search


def test_a_bad_value_inside_a_step_structure_fails_in_one_line():
    with pytest.raises(UserError, match="unknown scaling 'robust'"):
        settings.SplitSettings.parse({"scaling": "robust", "seed": 1})
    with pytest.raises(UserError, match="unknown config key 'scalling'"):
        settings.SplitSettings.parse({"scalling": "zscore"})


def test_old_flat_pipeline_parameters_fold_into_their_structures_with_a_warning():
    declared = dict.fromkeys(make().pipeline_arguments())
    with pytest.warns(FutureWarning, match="'augment_factor' is now the key"):
        out = fold_flat_parameters({"augment_factor": 3, "tuner": "grid"}, declared)
    assert out == {"tuner": "grid", "augment_settings": {"augment_factor": 3}}
    with pytest.warns(FutureWarning):
        out = fold_flat_parameters({"patience": 5, "train_settings": {"refit": True}}, declared)
    assert out["train_settings"] == {"refit": True, "patience": 5}
    assert out["hyperparameter_search_settings"] == {"patience": 5}
    with pytest.raises(UserError, match="unknown pipeline parameter 'bogus'"):
        fold_flat_parameters({"bogus": 1}, declared)
