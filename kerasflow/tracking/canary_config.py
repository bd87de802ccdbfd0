"""The canary states of a model in `<serving_dir>/models.config`, and the moves between them.

A canary is a new version served beside the current one, which keeps taking the traffic that
asks for the version label `stable`. TF Serving refuses a config that gives a label to a
version it has not loaded (a new label only with --allow_version_labels_for_unavailable_models,
an existing one never), so every move changes labels only between loaded versions:

    pinned          versions [S]          labels {}                        (a plain deploy)
    staged          versions [S, C]       labels {stable: S}               (deploy as canary)
    labelled        versions [S, C]       labels {stable: S, canary: C}    (C has loaded)
    promoting       versions [S, C]       labels {stable: C, canary: C}
    promoted        versions [C]          labels {stable: C}
    rolled back     versions [S]          labels {stable: S}

`stable` moves only to a version that serves, and a version leaves only after no label names
it, so a client asking for `stable` is answered at every step.
"""

from __future__ import annotations

import dataclasses

from kerasflow.runtime.errors import UserError
from kerasflow.serving.canary import CANARY, STABLE
from kerasflow.tracking import registry

__all__ = ["CANARY", "STABLE", "Served", "keep_only", "label", "move_stable", "read", "stage"]


@dataclasses.dataclass(frozen=True)
class Served:
    """What the config serves for one model."""

    versions: tuple[int, ...]
    labels: dict[str, int]

    @property
    def stable(self) -> int | None:
        """The version `stable` names, or the only pinned version before any canary."""
        if STABLE in self.labels:
            return self.labels[STABLE]
        return self.versions[0] if len(self.versions) == 1 else None

    @property
    def canary(self) -> int | None:
        """The version on trial: the one beside `stable` (None when there is none)."""
        if CANARY in self.labels and self.labels[CANARY] != self.stable:
            return self.labels[CANARY]
        others = [v for v in self.versions if v != self.stable]
        return others[0] if len(others) == 1 and self.stable is not None else None


def read(serving_dir: str, model_name: str) -> Served:
    """The model's served versions and labels (empty when nothing is pinned)."""
    versions, labels = registry.served_versions(serving_dir, model_name)
    return Served(tuple(versions), labels)


def stage(serving_dir: str, model_name: str, version: int) -> str | None:
    """Serves `version` beside the stable version, which keeps the `stable` label.

    Returns the config's path, or None when the model serves nothing yet or already serves
    `version` as stable (then a plain pin, or nothing, is the right move). A canary already on
    trial is replaced.
    """
    served = read(serving_dir, model_name)
    stable = served.stable
    if stable is None or stable == version:
        return None
    return registry.write_served_versions(
        serving_dir, model_name, [stable, version], {STABLE: stable}
    )


def label(serving_dir: str, model_name: str) -> Served:
    """Gives the canary (loaded by now) the `canary` label.

    Raises:
        UserError: when the model has no canary on trial.
    """
    served = on_trial(serving_dir, model_name)
    labels = {STABLE: served.stable, CANARY: served.canary}
    registry.write_served_versions(serving_dir, model_name, list(served.versions), labels)
    return Served(served.versions, labels)


def on_trial(serving_dir: str, model_name: str) -> Served:
    """The model's served state, which must have a canary beside `stable`.

    Raises:
        UserError: when it has none.
    """
    served = read(serving_dir, model_name)
    if served.canary is None:
        raise UserError(
            f"model '{model_name}' has no canary in {serving_dir}/{registry.CONFIG_FILE}: "
            "deploy one with the deploy setting canary=true"
        )
    return served


def move_stable(serving_dir: str, model_name: str, served: Served) -> None:
    """Points `stable` at the canary while both versions still serve."""
    registry.write_served_versions(
        serving_dir,
        model_name,
        list(served.versions),
        {STABLE: served.canary, CANARY: served.canary},
    )


def keep_only(serving_dir: str, model_name: str, version: int) -> str:
    """Serves `version` alone as `stable` (the end of a promotion or a rollback)."""
    return registry.write_served_versions(serving_dir, model_name, [version], {STABLE: version})
