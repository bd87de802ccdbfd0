"""Prometheus metrics of the model server, exposed as TF Serving does.

With `--monitoring_config_file` naming a MonitoringConfig whose `prometheus_config` is enabled,
the REST port answers `GET /monitoring/prometheus/metrics` (or the config's `path`) in the
Prometheus text format: requests counted by model, version, signature, API and status, request
latency histograms, the state of every version the manager knows, and the records the request
log wrote or dropped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from kerasflow.serving.manager import ModelManager

# TF Serving's default path (PrometheusExporter::kPrometheusPath).
DEFAULT_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latency buckets from 0.5 ms to 10 s: batch-1 calls of small models answer in about a
# millisecond, large batches and cold versions in seconds.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _VersionStates:
    """Reads the manager's version states at scrape time (no bookkeeping on the request path)."""

    def __init__(self, manager: ModelManager):
        self._manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kerasflow_serving_model_version_state",
            "1 for the state each known model version is in (AVAILABLE when it serves)",
            labels=["model_name", "version", "state"],
        )
        for config in self._manager.configs:
            try:
                statuses = self._manager.model_status(config.name)
            except Exception:  # no version found yet: nothing to report for this model
                continue
            for status in statuses:
                family.add_metric([config.name, str(status.version), status.state], 1)
        yield family


class ServingMetrics:
    """Request counters and latency histograms of one server, in a registry of its own.

    Args:
        manager: the model manager whose version states are reported.
    """

    def __init__(self, manager: ModelManager):
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "kerasflow_serving_requests",
            "Requests answered, by model, version, signature, API and status",
            ["model_name", "version", "signature_name", "api", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "kerasflow_serving_request_latency_seconds",
            "Time from a request's arrival to its answer, by model, API and status",
            ["model_name", "api", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._logged = Counter(
            "kerasflow_serving_request_log_records",
            "Sampled requests written to the request log, by model",
            ["model_name"],
            registry=self.registry,
        )
        self._log_dropped = Counter(
            "kerasflow_serving_request_log_dropped",
            "Sampled requests the request log dropped (queue_full: the writer was behind; "
            "write_error: the file could not be written), by model and reason",
            ["model_name", "reason"],
            registry=self.registry,
        )
        self.registry.register(_VersionStates(manager))

    def count_logged(self, model: str) -> None:
        """Counts one request written to the request log."""
        self._logged.labels(model).inc()

    def count_log_dropped(self, model: str, reason: str, count: int = 1) -> None:
        """Counts requests the request log dropped and why."""
        self._log_dropped.labels(model, reason).inc(count)

    def observe(
        self,
        *,
        model: str,
        version: int | None,
        signature: str,
        api: str,
        status: str,
        started: float,
    ) -> None:
        """Counts one answered request that arrived at `started` (time.perf_counter())."""
        elapsed = time.perf_counter() - started
        model = model or "unknown"
        self._requests.labels(
            model, "" if version is None else str(version), signature, api, status
        ).inc()
        self._latency.labels(model, api, status).observe(elapsed)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
