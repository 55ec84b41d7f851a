"""The app's metrics: every name, unit and label in one catalogue, recorded through one object.

Operators alert on these (``infra/app/alerts.bicep``, ``docs/operations.md``), so a name here
is a contract: ``tests/unit/test_telemetry_catalogue.py`` fails when an alert or the workbook
names a metric that is not in :data:`METRICS`, and the integration tests read each one back
from the OpenTelemetry SDK's in-memory reader.

The code calls the OpenTelemetry API only. :class:`Telemetry` creates its instruments once,
from the meter provider it is given: the composition root (``shared.app``) gives it the
process's provider (Azure Monitor in production, the console for a developer who asks), a
test gives it an SDK provider with an in-memory reader, and without either it gets the API's
no-op provider, which records nothing at no cost. Nothing here is a process-wide object a
test must reset: the only process-wide act is :func:`configure_process`, which sets the
OpenTelemetry global provider once, as the Functions Python worker expects an app to.

Labels are bounded by construction (stamp names, reason codes, ledger states, queue roles,
difference kinds, export names, objectives, route families, HTTP status codes): never a
subscription, a resource, a caller or an hour. :meth:`Telemetry.record` refuses a label the
catalogue does not declare, so an unbounded one cannot slip in by a typo.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider

from shared.core.config import AppMode, Settings

log = logging.getLogger(__name__)

METER_NAME = "usage_reporter"


class Kind(StrEnum):
    COUNTER = "counter"  # a running total; alerts read its increase
    HISTOGRAM = "histogram"  # a distribution (latency)
    GAUGE = "gauge"  # a value observed from stored state (``shared.status``)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    unit: str
    description: str
    labels: tuple[str, ...] = ()


COLLECTION_LAG = Metric(
    "usage.collection.lag",
    Kind.GAUGE,
    "min",
    "How long the stamp's oldest collectable hour has waited to be stored (0: caught up)",
    ("stamp",),
)
ROWS_STORED = Metric(
    "usage.collection.rows", Kind.COUNTER, "{row}", "Usage rows stored", ("stamp",)
)
ROWS_QUARANTINED = Metric(
    "usage.collection.quarantined",
    Kind.COUNTER,
    "{row}",
    "Source records quarantined instead of stored, by reason code",
    ("stamp", "reason"),
)
BILLING_EVENTS = Metric(
    "usage.billing.events",
    Kind.COUNTER,
    "{event}",
    "Billing events brought to a ledger state by a work item, by state",
    ("outcome",),
)
BILLING_LATENCY = Metric(
    "usage.billing.latency",
    Kind.GAUGE,
    "min",
    "Age of the oldest stored hour with chargeable events not yet settled, from when the hour "
    "became collectable (0: every stored hour settled)",
)
BILLING_PENDING = Metric(
    "usage.billing.pending", Kind.GAUGE, "{event}", "Ledger events pending (posted or about to be)"
)
BILLING_UNRESOLVED = Metric(
    "usage.billing.unresolved",
    Kind.GAUGE,
    "{event}",
    "Ledger events unresolved (answer lost, the daily sums could not tell)",
)
CARRY_BACKLOG = Metric(
    "usage.billing.carry_backlog",
    Kind.GAUGE,
    "{event}",
    "Expired events waiting to be carried into a later event",
)
CARRY_AGE = Metric(
    "usage.billing.carry_age",
    Kind.GAUGE,
    "h",
    "Age of the oldest expired event waiting to be carried",
)
POISON_DEPTH = Metric(
    "usage.queue.poison_depth",
    Kind.GAUGE,
    "{message}",
    "Messages waiting in a poison queue for python -m ops requeue-poison",
    ("queue",),
)
RECONCILIATION_DIFFERENCES = Metric(
    "usage.reconciliation.differences",
    Kind.GAUGE,
    "{difference}",
    "Differences the latest reconciliation found, by kind",
    ("kind",),
)
EXPORT_AGE = Metric(
    "usage.export.age", Kind.GAUGE, "h", "Age of the latest complete run of an export", ("export",)
)
EXPORT_ROWS = Metric(
    "usage.export.rows", Kind.COUNTER, "{row}", "FOCUS rows written by export runs", ("export",)
)
STATEMENTS_FINAL_THROUGH = Metric(
    "usage.statements.final_through",
    Kind.GAUGE,
    "{month}",
    "The newest month whose statements are final, as YYYYMM (0: none yet)",
)
STATEMENTS_OVERDUE = Metric(
    "usage.statements.overdue",
    Kind.GAUGE,
    "h",
    "How long a closed month's statements have been past their deadline without being final",
)
OBJECTIVE_BREACHED = Metric(
    "usage.objective.breached",
    Kind.GAUGE,
    "1",
    "1 while an objective of docs/operations.md is breached, else 0",
    ("objective",),
)
API_REQUESTS = Metric(
    "usage.api.requests",
    Kind.COUNTER,
    "{request}",
    "API answers by route family and HTTP status",
    ("route", "status"),
)
API_DURATION = Metric(
    "usage.api.duration", Kind.HISTOGRAM, "s", "Time to answer an API request", ("route",)
)

METRICS: tuple[Metric, ...] = (
    COLLECTION_LAG,
    ROWS_STORED,
    ROWS_QUARANTINED,
    BILLING_EVENTS,
    BILLING_LATENCY,
    BILLING_PENDING,
    BILLING_UNRESOLVED,
    CARRY_BACKLOG,
    CARRY_AGE,
    POISON_DEPTH,
    RECONCILIATION_DIFFERENCES,
    EXPORT_AGE,
    EXPORT_ROWS,
    STATEMENTS_FINAL_THROUGH,
    STATEMENTS_OVERDUE,
    OBJECTIVE_BREACHED,
    API_REQUESTS,
    API_DURATION,
)

# Buckets of usage.api.duration (seconds): a page takes 0.1-0.3 s here, the objective is 2 s.
API_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Telemetry:
    """The app's instruments, created once from one meter provider."""

    def __init__(self, provider: MeterProvider | None = None) -> None:
        self.provider = provider or NoOpMeterProvider()
        meter = self.provider.get_meter(METER_NAME)
        self._instruments: dict[str, Any] = {}
        for metric in METRICS:
            create = {
                Kind.COUNTER: meter.create_counter,
                Kind.GAUGE: meter.create_gauge,
            }.get(metric.kind)
            if create is not None:
                instrument = create(metric.name, unit=metric.unit, description=metric.description)
            else:
                instrument = meter.create_histogram(
                    metric.name,
                    unit=metric.unit,
                    description=metric.description,
                    explicit_bucket_boundaries_advisory=list(API_DURATION_BUCKETS),
                )
            self._instruments[metric.name] = instrument

    def record(self, metric: Metric, value: float, **labels: str) -> None:
        """Add to a counter, set a gauge or record into a histogram; ``labels`` must be
        exactly the ones the catalogue declares for ``metric``."""
        if tuple(sorted(labels)) != tuple(sorted(metric.labels)):
            raise ValueError(f"{metric.name} takes labels {metric.labels}, not {tuple(labels)}")
        instrument = self._instruments[metric.name]
        if metric.kind is Kind.COUNTER:
            instrument.add(value, labels)
        elif metric.kind is Kind.GAUGE:
            instrument.set(value, labels)
        else:
            instrument.record(value, labels)

    # What the composition root records after each piece of work (thin, one call each).

    def hour_collected(
        self, stamp: str, rows: int, quarantined_by_reason: Mapping[str, int]
    ) -> None:
        self.record(ROWS_STORED, rows, stamp=stamp)
        for reason, count in quarantined_by_reason.items():
            self.record(ROWS_QUARANTINED, count, stamp=stamp, reason=reason)

    def billing_reported(self, states: Mapping[str, int]) -> None:
        for state, count in states.items():
            self.record(BILLING_EVENTS, count, outcome=state)

    def api_answered(self, route: str, status: int, seconds: float) -> None:
        self.record(API_REQUESTS, 1, route=route, status=str(status))
        self.record(API_DURATION, seconds, route=route)

    def export_written(self, export: str, rows: int) -> None:
        self.record(EXPORT_ROWS, rows, export=export)

    def flush(self) -> None:
        """Export what is recorded now (a timer's instance may be frozen right after it)."""
        force_flush = getattr(self.provider, "force_flush", None)
        if callable(force_flush):
            force_flush()


# The libraries the Azure Monitor distro instruments unless told not to (its 1.8 list).
_DISTRO_LIBRARIES = (
    "azure_sdk", "django", "fastapi", "flask", "httpx", "httpx2", "psycopg2", "requests",
    "urllib", "urllib3",
)  # fmt: skip

_configure_lock = threading.Lock()
_configured = False


def configure_process(settings: Settings) -> MeterProvider:
    """The meter provider of this process, configured on first call from ``settings``:

    - ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set: the Azure Monitor distro, metrics only
      (the Functions host already sends requests and logs), ingesting as the app's managed
      identity (Application Insights refuses local auth; ``AzureWebJobsStorage__clientId``
      names the identity);
    - ``TELEMETRY_CONSOLE`` (local mode only): the SDK's console exporter every 10 s;
    - neither: the API's default, which records nothing.

    OpenTelemetry's global provider can be set once per process, and every function of a
    worker shares the process, so the first app to load configures it and the others get it.
    """
    global _configured
    with _configure_lock:
        if not _configured:
            _configure(settings)
            _configured = True
    return metrics.get_meter_provider()


def _configure(settings: Settings) -> None:
    if settings.applicationinsights_connection_string is not None:
        from azure.identity import ManagedIdentityCredential
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=settings.applicationinsights_connection_string.get_secret_value(),
            credential=ManagedIdentityCredential(client_id=settings.storage_client_id),
            disable_tracing=True,
            disable_logging=True,
            enable_live_metrics=False,
            # No library is patched: an instrumented requests or azure-core would record a
            # metric per storage and endpoint request, a cost per request for figures the
            # host's own telemetry already has.
            instrumentation_options={name: {"enabled": False} for name in _DISTRO_LIBRARIES},
        )
        log.info("telemetry: metrics go to Azure Monitor")
    elif settings.telemetry_console and settings.app_mode is AppMode.LOCAL:
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )

        reader = PeriodicExportingMetricReader(
            ConsoleMetricExporter(), export_interval_millis=10_000
        )
        metrics.set_meter_provider(SdkMeterProvider(metric_readers=[reader]))
        log.info("telemetry: metrics go to the console every 10 s (TELEMETRY_CONSOLE)")
