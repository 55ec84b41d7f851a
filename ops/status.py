"""The pipeline's status on one screen: each objective of docs/operations.md now and over
the last 24 hours and 30 days, each stamp's watermark and lag, the hours waiting for
billing, pending and unresolved events, the carry backlog, the poison queues, the latest
reconciliation, each export's last run, the hour usage is rated through and the month
statements are final through. ``--json`` prints the document the admin status route serves.
Exit 0 when no objective is breached, 1 when one is (for cron and pipelines), 3 when storage
cannot be read."""

from __future__ import annotations

import argparse
import json

from shared.app import FunctionApp
from shared.core.config import Settings
from shared.core.telemetry import Telemetry
from shared.status.view import History, document, screen

HELP = "each objective's state now, 24 h and 30 d; watermarks, billing, queues (exit 1: breached)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the status route's document")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Reads only: no metrics are recorded from the operator's shell.
    app = FunctionApp(settings, telemetry=Telemetry())
    status = app.status_reader.read()
    doc = document(status, History.read(app.account, status.at))
    print(json.dumps(doc, indent=2) if args.json else screen(doc))
    return 1 if status.breached else 0
