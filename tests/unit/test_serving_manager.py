"""ModelManager over real folders with a fake loader: policies, swaps, failures, labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from kerasflow.serving.config import ALL, ModelConfig, VersionPolicy
from kerasflow.serving.errors import Code, ServingError
from kerasflow.serving.manager import AVAILABLE, END, ModelManager

pytestmark = pytest.mark.unit


class FakeServable:
    def __init__(self, path, name, version):
        self.path, self.name, self.version = path, name, version
        self.closed = False

    def close(self):
        self.closed = True


class FakeLoader:
    """Loads any folder except those holding a file named BROKEN."""

    def __init__(self):
        self.loaded: list[int] = []

    def __call__(self, path, name, version, batching=None):
        broken = Path(path, "BROKEN")
        if broken.exists():
            raise ServingError(Code.DATA_LOSS, broken.read_text())
        self.loaded.append(version)
        return FakeServable(path, name, version)


def add_versions(base, *versions, broken=False):
    for v in versions:
        (base / str(v)).mkdir(parents=True)
        if broken:
            (base / str(v) / "BROKEN").write_text(f"version {v} is corrupt")


def manager_for(base, loader, **config):
    manager = ModelManager([ModelConfig("m", str(base), **config)], poll_seconds=0, loader=loader)
    manager.start()
    return manager


def states(manager):
    return {s.version: s.state for s in manager.model_status("m")}


def test_latest_policy_loads_the_newest_version_and_swaps_when_a_newer_one_appears(tmp_path):
    add_versions(tmp_path, 1, 2)
    (tmp_path / ".3.tmp-x").mkdir()
    loader = FakeLoader()
    manager = manager_for(tmp_path, loader)
    old = manager.get_servable("m")
    assert old.version == 2 and loader.loaded == [2]
    add_versions(tmp_path, 3)
    manager.reconcile()
    new = manager.get_servable("m")
    assert new.version == 3
    assert old.closed
    assert states(manager) == {3: AVAILABLE, 2: END}
    assert [s.version for s in manager.model_status("m")] == [3, 2]
    manager.stop()
    assert new.closed


def test_a_version_that_fails_to_load_is_reported_and_the_previous_keeps_serving(tmp_path):
    add_versions(tmp_path, 1)
    loader = FakeLoader()
    manager = manager_for(tmp_path, loader)
    add_versions(tmp_path, 2, broken=True)
    manager.reconcile()
    manager.reconcile()  # not retried while it stays on disk
    assert loader.loaded == [1]
    assert manager.get_servable("m").version == 1
    (failed,) = manager.model_status("m", version=2)
    assert (failed.state, failed.error_code) == (END, Code.DATA_LOSS)
    assert failed.error_message == "version 2 is corrupt"
    assert manager.model_status("m", version=1)[0].state == AVAILABLE
    manager.stop()


def test_specific_and_all_policies_and_labels(tmp_path):
    add_versions(tmp_path, 1, 2, 3)
    manager = manager_for(
        tmp_path, FakeLoader(), policy=VersionPolicy(ALL), labels={"stable": 1, "canary": 3}
    )
    assert manager.get_servable("m").version == 3
    assert manager.get_servable("m", version=2).version == 2
    assert manager.get_servable("m", label="stable").version == 1
    assert manager.model_status("m", label="canary")[0].version == 3
    manager.apply_configs(
        [ModelConfig("m", str(tmp_path), VersionPolicy("specific", versions=(2,)), {"old": 1})]
    )
    assert states(manager) == {3: END, 2: AVAILABLE, 1: END}
    with pytest.raises(ServingError, match=r"Servable not found for request: Specific\(m, 1\)"):
        manager.get_servable("m", label="old")
    manager.stop()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "nope"}, r"Servable not found for request: Latest\(nope\)"),
        ({"name": "m", "version": 7}, r"Servable not found for request: Specific\(m, 7\)"),
        ({"name": "m", "label": "gold"}, "Unrecognized servable version label: gold"),
    ],
)
def test_unknown_models_versions_and_labels_are_not_found(tmp_path, kwargs, match):
    add_versions(tmp_path, 1)
    manager = manager_for(tmp_path, FakeLoader())
    with pytest.raises(ServingError, match=match) as info:
        manager.get_servable(**kwargs)
    assert info.value.code == Code.NOT_FOUND
    manager.stop()


def test_status_of_unknown_models_and_versions_is_not_found(tmp_path):
    add_versions(tmp_path, 1)
    manager = manager_for(tmp_path, FakeLoader())
    with pytest.raises(ServingError, match="Could not find any versions of model other"):
        manager.model_status("other")
    with pytest.raises(ServingError, match="Could not find version 4 of model m"):
        manager.model_status("m", version=4)
    manager.stop()


def test_an_empty_or_missing_base_path_serves_nothing_without_failing(tmp_path):
    manager = manager_for(tmp_path / "missing", FakeLoader())
    with pytest.raises(ServingError, match="Could not find any versions"):
        manager.model_status("m")
    add_versions(tmp_path / "missing", 4)
    manager.reconcile()
    assert manager.get_servable("m").version == 4
    manager.stop()


def test_a_removed_model_is_unloaded_and_an_added_one_loaded(tmp_path):
    add_versions(tmp_path / "a", 1)
    add_versions(tmp_path / "b", 5)
    manager = ModelManager(
        [ModelConfig("a", str(tmp_path / "a"))], poll_seconds=0, loader=FakeLoader()
    )
    manager.start()
    a = manager.get_servable("a")
    manager.apply_configs([ModelConfig("b", str(tmp_path / "b"))])
    assert a.closed
    assert manager.get_servable("b").version == 5
    assert manager.model_names() == ["b"]
    with pytest.raises(ServingError):
        manager.get_servable("a")
    manager.stop()


def test_a_failed_version_is_tried_again_once_its_files_change(tmp_path):
    add_versions(tmp_path, 1)
    loader = FakeLoader()
    manager = manager_for(tmp_path, loader)
    add_versions(tmp_path, 2, broken=True)
    manager.reconcile()
    assert manager.model_status("m", version=2)[0].state == END
    (tmp_path / "2" / "BROKEN").unlink()
    manager.reconcile()
    assert manager.get_servable("m").version == 2
    assert manager.model_status("m", version=2)[0].state == AVAILABLE
    assert loader.loaded == [1, 2]
    manager.stop()
