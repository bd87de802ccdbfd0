"""Retention: which serving versions, registry versions, request logs and work folders go.

The policy keeps, for each model, the newest `keep` serving versions (and the registry versions
published as them) plus, whatever their age, the champion, every version the serving config
serves or labels, and a version a deploy in progress has claimed; request log files younger
than `log_days`; and in the work directory the newest `keep` pipeline roots, tuner directories,
run logs and reproductions, plus whatever a pipeline run still in progress may be using. The
selection is pure (`select_*`); `collect` reads the facts and `apply` deletes through
kerasflow.runtime.fileio (local, gs://, s3://) and the MLflow registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kerasflow.components.deploy import core as deploy_core
from kerasflow.runtime import fileio
from kerasflow.runtime.errors import UserError
from kerasflow.serving import request_log
from kerasflow.tracking import registry

CHAMPION = "champion"
SERVED = "served (models.config)"
CLAIMED = "claimed by a deploy in progress"
ELSEWHERE = "published to another serving directory"
RUNNING = "a pipeline run in progress may use it"
WRITING = "being written"


def newest(count: int) -> str:
    """The reason a kept item gives when it is among the newest `count`."""
    return f"among the newest {count}"


def older(count: int) -> str:
    """The reason a deleted item gives."""
    return f"older than the newest {count}"


@dataclasses.dataclass
class Decision:
    """What happens to one item and why."""

    kind: str
    """serving version, registry version, request log, pipeline root, tuner dir, run log,
    reproduction."""
    name: str
    keep: bool
    reason: str
    path: str = ""
    model: str = ""
    version: int | None = None

    def describe(self) -> str:
        """One line: what, where, why."""
        where = f" ({self.path})" if self.path and self.path != self.name else ""
        return f"{self.kind} {self.name}{where}: {self.reason}"


@dataclasses.dataclass
class ModelFacts:
    """What retention needs to know about one model."""

    name: str
    on_disk: list[int]
    registered: dict[int, int | None]
    """Registry version -> the serving version it was published as (None: never published)."""
    champion: int | None = None
    """The champion's registry version."""
    served: set[int] = dataclasses.field(default_factory=set)
    claimed: set[int] = dataclasses.field(default_factory=set)
    elsewhere: set[int] = dataclasses.field(default_factory=set)
    """Registry versions published into another serving directory."""


def select_versions(facts: ModelFacts, keep: int) -> list[Decision]:
    """Decides every serving and registry version of one model.

    A serving version is kept when it is among the newest `keep`, the champion's, served or
    labelled by the serving config, or claimed by a deploy in progress; a registry version goes
    with its serving version (the champion's always stays, as do versions published elsewhere);
    a registry version never published is kept when among the newest `keep` of those.
    """
    if keep < 1:
        raise UserError(f"--keep must be at least 1 (got {keep}): the newest version always stays")
    champion_serving = facts.registered.get(facts.champion) if facts.champion else None
    numbers = sorted(set(facts.on_disk) | {s for s in facts.registered.values() if s is not None})
    recent = set(numbers[-keep:])
    reasons: dict[int, str] = {}
    for number in numbers:
        if number == champion_serving:
            reasons[number] = CHAMPION
        elif number in facts.served:
            reasons[number] = SERVED
        elif number in facts.claimed:
            reasons[number] = CLAIMED
        elif number in recent:
            reasons[number] = newest(keep)
    out = [
        Decision(
            "serving version",
            f"{facts.name}/{number}",
            number in reasons,
            reasons.get(number, older(keep)),
            model=facts.name,
            version=number,
        )
        for number in numbers
        if number in facts.on_disk
    ]
    unpublished = sorted(r for r, s in facts.registered.items() if s is None)
    for reg, serving in sorted(facts.registered.items()):
        if reg == facts.champion:
            keep_it, why = True, CHAMPION
        elif reg in facts.elsewhere:
            keep_it, why = True, ELSEWHERE
        elif serving is None:
            keep_it = reg in unpublished[-keep:]
            why = f"never served; {newest(keep) if keep_it else older(keep)}"
        else:
            keep_it = serving in reasons
            why = f"serving version {serving}: {reasons.get(serving, older(keep))}"
        out.append(
            Decision(
                "registry version", f"{facts.name} v{reg}", keep_it, why, model=facts.name,
                version=reg,
            )
        )  # fmt: skip
    return out


_LOG_TIME = re.compile(r"^requests-(\d{8}T\d{12})Z-")


def log_file_time(name: str) -> datetime | None:
    """The UTC time a request log file's name holds (None when it holds none)."""
    found = _LOG_TIME.match(name)
    if not found:
        return None
    return datetime.strptime(found.group(1), "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)


def select_log_files(names: Iterable[str], now: datetime, days: float) -> list[Decision]:
    """Keeps request log files written less than `days` days before `now`; a file still being
    written and a name that is not a log file's are left alone."""
    cutoff = now - timedelta(days=days)
    out = []
    for name in sorted(names):
        if name.endswith(request_log.PART_SUFFIX):
            out.append(Decision("request log", name, True, WRITING))
            continue
        when = log_file_time(name) if name.endswith(request_log.SUFFIX) else None
        if when is None:
            continue  # not ours
        young = when >= cutoff
        reason = f"younger than {days:g} days" if young else f"older than {days:g} days"
        out.append(Decision("request log", name, young, reason))
    return out


def select_work_entries(
    kind: str, entries: dict[str, float], keep: int, in_use_after: float | None
) -> list[Decision]:
    """Keeps the newest `keep` of `entries` (name -> time) and any at or after `in_use_after`
    (the start of a pipeline run still in progress)."""
    ranked = sorted(entries, key=lambda n: (entries[n], n))
    recent = set(ranked[-keep:]) if keep > 0 else set()
    out = []
    for name in ranked:
        if name in recent:
            out.append(Decision(kind, name, True, newest(keep)))
        elif in_use_after is not None and entries[name] >= in_use_after:
            out.append(Decision(kind, name, True, RUNNING))
        else:
            out.append(Decision(kind, name, False, older(keep)))
    return out


# --- reading the facts --------------------------------------------------------------------


def _client(tracking_uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def model_names(serving_dir: str) -> list[str]:
    """Models with version folders under `serving_dir` or entries in its serving config."""
    names = {
        n
        for n in fileio.list_dir_names(serving_dir)
        if not n.startswith(".") and deploy_core.existing_versions(fileio.join(serving_dir, n))
    }
    content = registry.read_serving_config(serving_dir)
    if content is not None:
        from kerasflow.serving.config import parse_model_config_text

        names |= {c.name for c in parse_model_config_text(content.decode(), registry.CONFIG_FILE)}
    return sorted(names)


def claimed_versions(base: str) -> set[int]:
    """Versions a deploy has claimed (on object stores) and not yet marked published."""
    claims = fileio.join(base, deploy_core.CLAIMS_DIR)
    out = set()
    for name in fileio.list_dir_names(claims):
        if name.isdigit() and deploy_core.read_marker(fileio.join(base, name)) is None:
            out.add(int(name))
    return out


def model_facts(tracking_uri: str, serving_dir: str, model_name: str) -> ModelFacts:
    """The versions of one model on disk, in the registry and in the serving config."""
    from mlflow.exceptions import MlflowException

    from kerasflow.pipelines.lineage import served_versions

    base = fileio.join(serving_dir, model_name)
    client = _client(tracking_uri)
    registered: dict[int, int | None] = {}
    elsewhere: set[int] = set()
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        versions = []
    for mv in versions:
        tags = mv.tags or {}
        serving = tags.get(registry.SERVING_VERSION_TAG)
        path = tags.get(registry.SERVING_PATH_TAG, "")
        registered[int(mv.version)] = int(serving) if serving else None
        if path and fileio.parent(path).rstrip("/") != base.rstrip("/"):
            elsewhere.add(int(mv.version))
    champion = registry.get_champion(tracking_uri, model_name)
    return ModelFacts(
        name=model_name,
        on_disk=deploy_core.existing_versions(base),
        registered=registered,
        champion=champion.registry_version if champion else None,
        served=served_versions(serving_dir, model_name),
        claimed=claimed_versions(base),
        elsewhere=elsewhere,
    )


def running_since(tracking_uri: str) -> float | None:
    """The start (epoch seconds) of the oldest pipeline run still RUNNING, else None."""
    from kerasflow import constants as C

    client = _client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    found = client.search_runs(
        experiments,
        filter_string=f"tags.`{C.TAG_KIND}` = '{C.KIND_PIPELINE}' "
        "and attributes.status = 'RUNNING'",
    )
    starts = [r.info.start_time / 1000 for r in found]
    # The run folder is made a little before the step that opens the MLflow run starts.
    return min(starts) - 600 if starts else None


_ROOT_TIME = re.compile(r"-(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})-\d+$")


def _folder_time(path: Path) -> float:
    # kfp.local names a run's folder by its local start time; other folders by their mtime.
    found = _ROOT_TIME.search(path.name)
    if found:
        return time.mktime(time.strptime(found.group(1), "%Y-%m-%d-%H-%M-%S"))
    return path.stat().st_mtime


def _entries(folder: Path, pattern: str = "*", dirs: bool = True) -> dict[str, float]:
    if not folder.is_dir():
        return {}
    return {
        p.name: _folder_time(p)
        for p in folder.glob(pattern)
        if not p.name.startswith(".") and (p.is_dir() if dirs else p.is_file())
    }


def _tuner_in_use(folder: Path, name: str) -> bool:
    import fcntl

    lock = folder / f".{name}.lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def work_decisions(work_dir: str, keep: int, in_use_after: float | None) -> list[Decision]:
    """Decisions on the work directory's pipeline roots, tuner dirs, run logs and
    reproductions."""
    work = Path(work_dir).absolute()
    root = work / "pipeline_root"
    out: list[Decision] = []
    groups = [
        ("pipeline root", root, {k: v for k, v in _entries(root).items() if k != "tuning"}),
        ("tuner dir", root / "tuning", _entries(root / "tuning")),
        ("run log", work / "logs", _entries(work / "logs", "run-*.log", dirs=False)),
        ("reproduction", work / "reproduce", _entries(work / "reproduce")),
    ]
    for kind, folder, entries in groups:
        for decision in select_work_entries(kind, entries, keep, in_use_after):
            decision.path = str(folder / decision.name)
            if kind == "tuner dir" and not decision.keep and _tuner_in_use(folder, decision.name):
                decision.keep, decision.reason = True, "a search is using it"
            out.append(decision)
    return out


def log_decisions(log_uri: str, models: Iterable[str], days: float) -> list[Decision]:
    """Decisions on every request log file of `models` under `log_uri`."""
    out = []
    names = set(models) | {n for n in fileio.list_dir_names(log_uri) if not n.startswith(".")}
    for model in sorted(names):
        folder = request_log.model_folder(log_uri, model)
        for decision in select_log_files(fileio.list_dir_names(folder), datetime.now(UTC), days):
            decision.path = fileio.join(folder, decision.name)
            decision.name = f"{model}/{decision.name}"
            decision.model = model
            out.append(decision)
    return out


@dataclasses.dataclass
class Plan:
    """Every decision of one retention pass."""

    decisions: list[Decision]

    @property
    def deleted(self) -> list[Decision]:
        """What goes."""
        return [d for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[Decision]:
        """What stays."""
        return [d for d in self.decisions if d.keep]

    def to_json(self) -> dict[str, Any]:
        """The plan as a JSON document."""
        return {
            "deleted": [dataclasses.asdict(d) for d in self.deleted],
            "kept": [dataclasses.asdict(d) for d in self.kept],
        }


def collect(
    *,
    tracking_uri: str,
    serving_dir: str,
    work_dir: str = "",
    keep: int = 3,
    model_name: str = "",
    log_uri: str = "",
    log_days: float | None = None,
) -> Plan:
    """Reads the facts and decides; deletes nothing."""
    models = [model_name] if model_name else model_names(serving_dir)
    decisions: list[Decision] = []
    for model in models:
        facts = model_facts(tracking_uri, serving_dir, model)
        for decision in select_versions(facts, keep):
            if decision.kind == "serving version":
                decision.path = fileio.join(serving_dir, model, str(decision.version))
            decisions.append(decision)
    if log_uri and log_days is not None:
        decisions += log_decisions(log_uri, models, log_days)
    if work_dir:
        decisions += work_decisions(work_dir, keep, running_since(tracking_uri))
    return Plan(decisions)


def apply(plan: Plan, *, tracking_uri: str) -> list[Decision]:
    """Deletes what the plan lets go; returns what was deleted.

    A serving version loses its publish marker first, so a deploy never reuses a half-deleted
    version; registry versions are deleted and dropped from the champion history.
    """
    done = []
    dropped: dict[str, set[int]] = {}
    for d in plan.deleted:
        if d.kind == "serving version":
            fileio.remove(fileio.join(d.path, deploy_core.MARKER_FILE))
            fileio.remove_dir(d.path)
        elif d.kind == "registry version":
            _client(tracking_uri).delete_model_version(d.model, str(d.version))
            dropped.setdefault(d.model, set()).add(int(d.version))
        elif d.kind in ("request log", "run log"):
            fileio.remove(d.path)
        else:
            fileio.remove_dir(d.path)
            if d.kind == "tuner dir":
                fileio.remove(str(Path(d.path).parent / f".{d.name}.lock"))
        done.append(d)
    for model, versions in dropped.items():
        with contextlib.suppress(Exception):
            history = registry.champion_history(tracking_uri, model)
            _client(tracking_uri).set_registered_model_tag(
                model,
                registry.HISTORY_TAG,
                json.dumps([v for v in history if v not in versions]),
            )
    return done


def run_retention(
    *,
    tracking_uri: str,
    serving_dir: str,
    work_dir: str = "",
    keep: int = 3,
    model_name: str = "",
    log_uri: str = "",
    log_days: float | None = None,
    dry_run: bool = False,
) -> tuple[Plan, list[Decision]]:
    """Decides and (unless `dry_run`) deletes, holding the serving directory's publish lock so
    that no deploy or rollback changes the versions meanwhile; returns the plan and what went."""
    with fileio.exclusive_lock(serving_dir):
        plan = collect(
            tracking_uri=tracking_uri,
            serving_dir=serving_dir,
            work_dir=work_dir,
            keep=keep,
            model_name=model_name,
            log_uri=log_uri,
            log_days=log_days,
        )
        done = [] if dry_run else apply(plan, tracking_uri=tracking_uri)
    return plan, done


def format_plan(plan: Plan, done: list[Decision], dry_run: bool) -> str:
    """What went (or would go) and what was kept and why, one line each."""
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{verb} {d.describe()}" for d in (plan.deleted if dry_run else done)]
    lines += [f"kept {d.describe()}" for d in plan.kept]
    gone = len(plan.deleted) if dry_run else len(done)
    lines.append(f"kerasflow gc: {verb} {gone}, kept {len(plan.kept)}")
    return "\n".join(lines)
