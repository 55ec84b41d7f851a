"""The end of ``./dev run``'s cycle: the latest reconciliation kept (correctness reads it)
and the pipeline's status printed, as ``python -m ops status`` shows it."""

from __future__ import annotations

from shared.app import FunctionApp
from shared.billing.reconcile import Reconciliation
from shared.core.config import Settings
from shared.core.hours import utc_now
from shared.core.telemetry import Telemetry
from shared.status.observer import remember
from shared.status.view import History, document, screen


def print_status(settings: Settings, reconciliation: Reconciliation | None) -> None:
    app = FunctionApp(settings, telemetry=Telemetry())  # reads only
    if reconciliation is not None:
        remember(app.account, reconciliation, utc_now())
    status = app.status_reader.read()
    doc = document(status, History.read(app.account, status.at))
    print(f"\nStatus (python -m ops status):\n{screen(doc)}")
