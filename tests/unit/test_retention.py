"""Retention's selection: what is kept, what goes, and the reason given for each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kerasflow.pipelines import retention
from kerasflow.pipelines.retention import ModelFacts, select_log_files, select_versions
from kerasflow.runtime.errors import UserError
from kerasflow.serving import request_log

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.unit


def decided(decisions, kind):
    return {d.version: (d.keep, d.reason) for d in decisions if d.kind == kind}


def test_the_newest_versions_stay_and_older_ones_go():
    facts = ModelFacts("m", on_disk=[1, 2, 3, 4, 5], registered={r: r for r in range(1, 6)})
    serving = decided(select_versions(facts, keep=2), "serving version")
    assert {v for v, (keep, _) in serving.items() if keep} == {4, 5}
    assert serving[1] == (False, "older than the newest 2")
    assert serving[5] == (True, "among the newest 2")
    registry = decided(select_versions(facts, keep=2), "registry version")
    assert {v for v, (keep, _) in registry.items() if keep} == {4, 5}


def test_champion_served_and_claimed_versions_stay_whatever_their_age():
    facts = ModelFacts(
        "m",
        on_disk=[1, 2, 3, 4, 5, 6],
        # registry versions are numbered apart from serving versions
        registered={10: 1, 11: 2, 12: 3, 13: 4, 14: 5, 15: 6},
        champion=11,
        served={3},
        claimed={4},
    )
    decisions = select_versions(facts, keep=1)
    serving = decided(decisions, "serving version")
    assert serving[2] == (True, retention.CHAMPION)
    assert serving[3] == (True, retention.SERVED)
    assert serving[4] == (True, retention.CLAIMED)
    assert serving[6] == (True, "among the newest 1")
    assert serving[1][0] is False and serving[5][0] is False
    registry = decided(decisions, "registry version")
    assert registry[11] == (True, retention.CHAMPION)
    assert registry[12] == (True, f"serving version 3: {retention.SERVED}")
    assert registry[10] == (False, "serving version 1: older than the newest 1")
    assert registry[14][0] is False and registry[15][0] is True


def test_a_champion_folder_that_is_also_served_names_the_champion_first():
    facts = ModelFacts("m", on_disk=[1, 2], registered={1: 1, 2: 2}, champion=1, served={1})
    assert decided(select_versions(facts, keep=1), "serving version")[1] == (
        True,
        retention.CHAMPION,
    )


def test_registry_versions_published_elsewhere_or_never_served_are_judged_on_their_own():
    facts = ModelFacts(
        "m",
        on_disk=[1, 2],
        registered={1: 1, 2: 2, 3: None, 4: None, 5: 9},
        elsewhere={5},
    )
    registry = decided(select_versions(facts, keep=1), "registry version")
    assert registry[5] == (True, retention.ELSEWHERE)
    assert registry[3] == (False, "never served; older than the newest 1")
    assert registry[4] == (True, "never served; among the newest 1")
    # only folders on disk are serving decisions; a registered serving version 9 elsewhere
    # has no folder here
    assert set(decided(select_versions(facts, keep=1), "serving version")) == {1, 2}


def test_keep_must_leave_the_newest_version():
    with pytest.raises(UserError, match="at least 1"):
        select_versions(ModelFacts("m", on_disk=[1], registered={}), keep=0)


def test_request_logs_older_than_the_cutoff_go_and_files_being_written_stay():
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    old = request_log.file_name(now - timedelta(days=8), 7, 1)
    young = request_log.file_name(now - timedelta(days=6), 7, 2)
    writing = old.replace(request_log.SUFFIX, request_log.PART_SUFFIX)
    decisions = {d.name: (d.keep, d.reason) for d in select_log_files(
        [old, young, writing, "notes.txt", "requests-garbage.jsonl"], now, 7
    )}  # fmt: skip
    assert decisions[old] == (False, "older than 7 days")
    assert decisions[young] == (True, "younger than 7 days")
    assert decisions[writing] == (True, retention.WRITING)
    assert "notes.txt" not in decisions and "requests-garbage.jsonl" not in decisions


def test_log_file_time_reads_the_format_request_log_writes():
    when = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    assert retention.log_file_time(request_log.file_name(when, 1, 1)) == when


def test_work_folders_keep_the_newest_and_what_a_running_pipeline_may_use():
    entries = {"a": 100.0, "b": 200.0, "c": 300.0, "d": 400.0}
    decisions = {
        d.name: (d.keep, d.reason)
        for d in retention.select_work_entries("pipeline root", entries, 1, in_use_after=250.0)
    }
    assert decisions["d"] == (True, "among the newest 1")
    assert decisions["c"] == (True, retention.RUNNING)
    assert decisions["a"] == (False, "older than the newest 1")
    assert decisions["b"][0] is False


def test_the_plan_lists_deletions_and_keeps_with_reasons():
    facts = ModelFacts("m", on_disk=[1, 2], registered={1: 1, 2: 2}, champion=2)
    plan = retention.Plan(select_versions(facts, keep=1))
    text = retention.format_plan(plan, [], dry_run=True)
    assert "would delete serving version m/1: older than the newest 1" in text
    assert "kept serving version m/2: champion" in text
    assert text.splitlines()[-1] == "kerasflow gc: would delete 2, kept 2"


def test_on_an_object_store_gc_keeps_served_and_claimed_versions_and_deletes_through_fileio(
    tmp_path, s3
):
    """Versions, a claim of a deploy in progress, the serving config and request logs on S3."""
    from kerasflow.components.deploy import core as deploy
    from kerasflow.runtime import fileio
    from kerasflow.tracking import registry

    serving = f"s3://{s3.bucket}/serving"
    base = fileio.join(serving, "m")
    for version in (1, 2, 3, 4):
        folder = fileio.join(base, str(version))
        fileio.write_bytes_atomic(fileio.join(folder, "saved_model.pb"), b"pb")
        fileio.write_bytes_atomic(fileio.join(folder, deploy.MARKER_FILE), b'{"digest": "d"}')
    # version 5 is being uploaded: claimed, no marker yet
    fileio.create_exclusive(fileio.join(base, deploy.CLAIMS_DIR, "5"), b"d5")
    fileio.write_bytes_atomic(fileio.join(base, "5", "saved_model.pb"), b"pb")
    registry.pin_serving_version(serving, "m", 2)
    logs = f"s3://{s3.bucket}/logs"
    now = datetime.now(UTC)
    old = request_log.file_name(now - timedelta(days=3), 1, 1)
    young = request_log.file_name(now, 1, 2)
    for name in (old, young):
        fileio.write_bytes_atomic(fileio.join(logs, "m", name), b"{}\n")
    plan, done = retention.run_retention(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",  # this test's own registry
        serving_dir=serving,
        keep=1,
        log_uri=logs,
        log_days=1,
    )
    reasons = {d.name: (d.keep, d.reason) for d in plan.decisions}
    assert reasons["m/2"] == (True, retention.SERVED)
    assert reasons["m/5"] == (True, retention.CLAIMED)
    assert reasons["m/4"] == (False, "older than the newest 1")
    assert {d.name for d in done} == {"m/1", "m/3", "m/4", f"m/{old}"}
    assert deploy.existing_versions(base) == [2, 5]
    assert s3.names("logs/") == [f"logs/m/{young}"]
