"""Replays requests against the `stable` and `canary` labels and judges the canary.

Each request goes to both labels, in alternating order so that neither always runs on a warm
cache. The figures: each label's error rate and p50/p99 latency, the canary's p50 latency over
stable's, and the agreement, the share of rows both answered alike (the same arg-max class for
outputs with several columns, values within `VALUE_TOLERANCE` of stable's otherwise).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping

import numpy as np

from kerasflow.runtime.errors import UserError
from kerasflow.serving import request_log
from kerasflow.serving.signature import DEFAULT_SIGNATURE, TensorSpec

STABLE = "stable"
CANARY = "canary"
# Regression answers agree when |canary - stable| <= VALUE_TOLERANCE * max(1, |stable|).
VALUE_TOLERANCE = 0.1


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a canary must meet to be promoted."""

    max_error_rate: float = 0.01
    max_latency_ratio: float = 1.5
    min_agreement: float = 0.95


@dataclasses.dataclass
class Figures:
    """What a replay measured."""

    requests: int
    stable_errors: int
    canary_errors: int
    stable_p50_ms: float
    stable_p99_ms: float
    canary_p50_ms: float
    canary_p99_ms: float
    rows_compared: int
    rows_agreeing: int

    @classmethod
    def nothing_replayed(cls) -> Figures:
        """The figures of a trial that replayed nothing."""
        nan = float("nan")
        return cls(0, 0, 0, nan, nan, nan, nan, 0, 0)

    @property
    def stable_error_rate(self) -> float:
        """Share of requests stable failed."""
        return self.stable_errors / self.requests if self.requests else 0.0

    @property
    def canary_error_rate(self) -> float:
        """Share of requests the canary failed."""
        return self.canary_errors / self.requests if self.requests else 0.0

    @property
    def latency_ratio(self) -> float:
        """Canary's p50 latency over stable's (inf when stable answered nothing)."""
        if not self.stable_p50_ms or np.isnan(self.stable_p50_ms):
            return float("inf")
        return self.canary_p50_ms / self.stable_p50_ms

    @property
    def agreement(self) -> float:
        """Share of rows answered alike by both (0 when no row was answered by both)."""
        return self.rows_agreeing / self.rows_compared if self.rows_compared else 0.0

    def metrics(self) -> dict[str, float]:
        """Every figure by name, for MLflow."""
        fields = {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}
        derived = ("stable_error_rate", "canary_error_rate", "latency_ratio", "agreement")
        return {**fields, **{name: float(getattr(self, name)) for name in derived}}


def judge(figures: Figures, limits: Limits) -> list[str]:
    """The limits the canary missed, one line each (empty: promote)."""
    missed = []
    if figures.canary_error_rate > limits.max_error_rate:
        missed.append(
            f"error rate {figures.canary_error_rate:.3f} > {limits.max_error_rate:g} "
            f"({figures.canary_errors} of {figures.requests} requests failed)"
        )
    if figures.latency_ratio > limits.max_latency_ratio:
        missed.append(
            f"p50 latency ratio {figures.latency_ratio:.2f} > {limits.max_latency_ratio:g} "
            f"({figures.canary_p50_ms:.2f} ms vs {figures.stable_p50_ms:.2f} ms)"
        )
    if figures.agreement < limits.min_agreement:
        missed.append(
            f"agreement {figures.agreement:.3f} < {limits.min_agreement:g} "
            f"({figures.rows_agreeing} of {figures.rows_compared} rows)"
        )
    return missed


def _typed(values, spec: TensorSpec | None) -> np.ndarray:
    if spec is None:
        return np.asarray(values)
    if spec.numpy_dtype.kind == "O":
        return np.asarray(
            [v.encode() if isinstance(v, str) else v for v in np.ravel(values)], object
        ).reshape(np.shape(values))
    return np.asarray(values, dtype=spec.numpy_dtype)


def requests_from_log(
    log_uri: str, model_name: str, specs: Mapping[str, TensorSpec], limit: int
) -> list[dict[str, np.ndarray]]:
    """The newest logged predict requests of the model (up to `limit`), typed as `specs` says.

    Raises:
        UserError: when the log holds no request of the model.
    """
    records = [
        r
        for r in request_log.iter_records(log_uri, model_name)
        if r.get("method", "predict") == "predict"
        and r.get("signature", DEFAULT_SIGNATURE) == DEFAULT_SIGNATURE
    ][-limit:]
    if not records:
        raise UserError(f"--requests {log_uri}: no logged predict request of '{model_name}'")
    return [
        {name: _typed(value, specs.get(name)) for name, value in r["inputs"].items()}
        for r in records
    ]


def split_rows(inputs: Mapping[str, np.ndarray], limit: int) -> list[dict[str, np.ndarray]]:
    """One batch-1 request per row of a batch (up to `limit`)."""
    rows = len(next(iter(inputs.values())))
    return [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(min(rows, limit))]


def rows_alike(stable: Mapping[str, np.ndarray], canary: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per row, whether the two answers agree on every output both gave."""
    names = sorted(set(stable) & set(canary))
    if not names:
        return np.zeros(0, bool)
    alike = None
    for name in names:
        a, b = np.asarray(stable[name]), np.asarray(canary[name])
        if a.shape != b.shape or a.dtype.kind not in "fiub":
            same = np.array([np.array_equal(x, y) for x, y in zip(a, b, strict=False)])
            same = same if a.shape[:1] == b.shape[:1] else np.zeros(len(a), bool)
        elif a.ndim >= 2 and a.shape[-1] > 1:
            flat_a, flat_b = a.reshape(len(a), -1, a.shape[-1]), b.reshape(len(b), -1, b.shape[-1])
            same = np.all(flat_a.argmax(-1) == flat_b.argmax(-1), axis=1)
        else:
            diff = np.abs(a - b).reshape(len(a), -1)
            scale = np.maximum(1.0, np.abs(a)).reshape(len(a), -1)
            same = np.all(diff <= VALUE_TOLERANCE * scale, axis=1)
        alike = same if alike is None else alike & same
    return alike


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def replay(client, model_name: str, requests: Iterable[Mapping[str, np.ndarray]]) -> Figures:
    """Sends every request to `stable` and `canary`; returns what was measured.

    Args:
        client: a kerasflow.serving.client RestClient or GrpcClient.
        model_name: the served model.
        requests: the requests' inputs.
    """
    latency: dict[str, list[float]] = {STABLE: [], CANARY: []}
    errors = {STABLE: 0, CANARY: 0}
    compared = agreeing = count = 0
    for i, inputs in enumerate(requests):
        count += 1
        answers = {}
        for label in (STABLE, CANARY) if i % 2 == 0 else (CANARY, STABLE):
            started = time.perf_counter()
            try:
                answers[label] = client.predict_outputs(model_name, inputs, label=label)
            except UserError:
                errors[label] += 1
                continue
            latency[label].append((time.perf_counter() - started) * 1000.0)
        if STABLE in answers and CANARY in answers:
            alike = rows_alike(answers[STABLE], answers[CANARY])
            compared += len(alike)
            agreeing += int(alike.sum())
    return Figures(
        requests=count,
        stable_errors=errors[STABLE],
        canary_errors=errors[CANARY],
        stable_p50_ms=_percentile(latency[STABLE], 50),
        stable_p99_ms=_percentile(latency[STABLE], 99),
        canary_p50_ms=_percentile(latency[CANARY], 50),
        canary_p99_ms=_percentile(latency[CANARY], 99),
        rows_compared=compared,
        rows_agreeing=agreeing,
    )
