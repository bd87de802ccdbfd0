"""One drift check: the champion's reference, the data to compare, the tests, the MLflow record.

`kerasflow drift` and the pipeline's drift_check step both call `check_champion`; they differ
in the MLflow run they record it in (a drift run of its own, or the step's run).
"""

from __future__ import annotations

import json
from typing import Any

from kerasflow.monitoring import current, drift, report
from kerasflow.monitoring.reference import champion_reference
from kerasflow.runtime.errors import UserError

REPORT_HTML = "drift_report.html"
REPORT_JSON = "drift_report.json"
TAG_DRIFTED = "kerasflow.drifted"


def options_of(settings: Any) -> drift.DriftOptions:
    """The test thresholds of a DriftSettings (or a mapping of its keys)."""
    from kerasflow.settings import DriftSettings

    opts = DriftSettings.parse(settings)
    return drift.DriftOptions(
        alpha=opts.alpha,
        min_psi=opts.min_psi,
        min_oov_increase=opts.min_oov_increase,
        correction=opts.correction,
    )


def check_champion(
    tracking_uri: str,
    model_name: str,
    *,
    data: str = "",
    requests: str = "",
    options: drift.DriftOptions | None = None,
    max_requests: int = current.DEFAULT_MAX_REQUESTS,
) -> tuple[drift.DriftReport, dict]:
    """Tests `data` (a data URI) or `requests` (a request log) against the champion's training
    data; returns the report and facts about the champion.

    Raises:
        UserError: no champion or reference, unreadable data, too few rows.
    """
    if bool(data) == bool(requests):
        raise UserError("give the data to check: either a data URI or a request log, not both")
    reference, facts = champion_reference(tracking_uri, model_name)
    if data:
        found = current.from_data(data, reference)
    else:
        found = current.from_requests(requests, model_name, reference, limit=max_requests)
    return drift.run_tests(reference, found, options), facts


def log_to_active_run(result: drift.DriftReport, facts: dict, title: str) -> str:
    """Logs the report's metrics, tags and pages to the active MLflow run; returns the HTML."""
    import mlflow

    page = report.render_html(result, title)
    mlflow.log_metrics(report.metrics(result))
    mlflow.set_tags(
        {
            TAG_DRIFTED: str(result.drifted).lower(),
            "kerasflow.drifted_features": json.dumps(result.drifted_features)[:5000],
            "kerasflow.champion_version": str(facts.get("registry_version", "")),
        }
    )
    mlflow.log_text(page, REPORT_HTML)
    mlflow.log_dict({**result.as_dict(), "champion": facts}, REPORT_JSON)
    return page
