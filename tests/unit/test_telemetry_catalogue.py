"""No alert on a name nothing sends: the metrics infra/ names are the ones the code emits.

The alert rules and the workbook (``infra/app/alerts.bicep``) query Application Insights'
``customMetrics`` by name; a typo there, or a metric renamed in the code, would leave an
alert that can never fire. These checks tie both sides to ``shared/core/telemetry.py``'s
catalogue, and the catalogue to the code that records each metric.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.core.telemetry import METRICS, ROWS_STORED, Kind, Telemetry
from shared.status.objectives import MEASURED_BY_AZURE_MONITOR, Objective

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "infra" / "app" / "alerts.bicep"
NAMES = {metric.name for metric in METRICS}
# A metric name as the queries spell it, quoted inside a Bicep string: \'usage.<family>.<name>\'.
METRIC_NAME = re.compile(r"\\?'(usage(?:\.[a-z_]+)+)\\?'")
# Labels whose values are bounded by construction (shared/core/telemetry.py's docstring).
BOUNDED_LABELS = {
    "stamp", "reason", "outcome", "queue", "kind", "export", "objective", "route", "status",
}  # fmt: skip


def _infra_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in (REPO / "infra").rglob("*.bicep"))


def test_every_metric_infra_names_is_one_the_code_emits() -> None:
    """Every usage.* name in an alert query or the workbook is in the catalogue."""
    named = set(METRIC_NAME.findall(_infra_text()))
    assert named, "the alerts and workbook name no metric at all"
    assert named <= NAMES, f"named in infra/ but emitted by nothing: {sorted(named - NAMES)}"


def test_the_workbook_shows_every_metric_of_the_catalogue() -> None:
    """The dashboard has every metric the code emits (the issue's list)."""
    text = ALERTS.read_text(encoding="utf-8")
    workbook = text[text.index("var charts = [") :]
    shown = set(METRIC_NAME.findall(workbook))
    assert shown == NAMES, f"missing from the workbook: {sorted(NAMES - shown)}"


def test_every_objective_of_stored_state_has_its_alert_rule() -> None:
    """One breach alert per objective the observer judges; the API's two have their own."""
    text = ALERTS.read_text(encoding="utf-8")
    alerted = set(re.findall(r"objective: '([a-z-]+)'", text))
    assert alerted == {o.value for o in Objective} - {o.value for o in MEASURED_BY_AZURE_MONITOR}
    assert "usage-api-5xx" in text
    assert "usage-api-latency" in text


def _recorded_constants() -> set[str]:
    """Names of catalogue constants passed to ``record`` anywhere in shared/."""
    found: set[str] = set()
    for path in (REPO / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "record"
                and node.args
                and isinstance(node.args[0], ast.Name)
            ):
                found.add(node.args[0].id)
    return found


def test_every_catalogue_metric_is_recorded_by_the_code() -> None:
    """Each metric's constant is passed to ``Telemetry.record`` by some code in shared/."""
    import shared.core.telemetry as telemetry

    constants = {
        name for name, value in vars(telemetry).items() if isinstance(value, telemetry.Metric)
    }
    assert {vars(telemetry)[name].name for name in constants} == NAMES
    assert constants <= _recorded_constants(), sorted(constants - _recorded_constants())


@pytest.mark.parametrize("metric", METRICS, ids=lambda metric: metric.name)
def test_labels_are_bounded_and_units_given(metric) -> None:
    """No subscription, resource, caller or hour as a label; every metric has a unit."""
    assert set(metric.labels) <= BOUNDED_LABELS
    assert metric.unit
    assert metric.name.startswith("usage.")


def test_a_label_the_catalogue_does_not_declare_is_refused() -> None:
    """``record`` refuses an undeclared label, so an unbounded one cannot slip in."""
    reader = InMemoryMetricReader()
    telemetry = Telemetry(MeterProvider(metric_readers=[reader]))
    with pytest.raises(ValueError, match="takes labels"):
        telemetry.record(ROWS_STORED, 1, stamp="east", subscription="1111")
    telemetry.record(ROWS_STORED, 3, stamp="east")
    (point,) = [
        point
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    assert (point.value, dict(point.attributes)) == (3, {"stamp": "east"})


def test_without_a_provider_nothing_is_recorded_and_nothing_fails() -> None:
    """The default (no telemetry configured) is the API's no-op: every kind records fine."""
    telemetry = Telemetry()
    for metric in METRICS:
        telemetry.record(metric, 1, **dict.fromkeys(metric.labels, "x"))
    assert {metric.kind for metric in METRICS} == set(Kind)
