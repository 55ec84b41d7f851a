"""Run an export now: one month, or every month of a range, with a progress bar.

    python -m ops export --name focus-admin --month 2026-11
    python -m ops export --name focus-admin --from 2026-09 --to 2026-11
    python -m ops export --all --month 2026-11

Each month is written as ``export_usage`` writes it (its rows reported so far, the
manifest last, the previous run of the month removed after it), marked
``executionType: OnDemand``. Prints where each run is and how many rows it holds.
"""

from __future__ import annotations

import argparse
import sys

from ops.actions import month_argument
from shared.app import FunctionApp
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.export.configs import ExportConfigs
from shared.export.exporter import Progress
from shared.rating.engine import Month

HELP = "export a month (or a range of months) now, for one or every configured export"
BAR = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="the configured export to run")
    which.add_argument("--all", action="store_true", help="every configured export")
    parser.add_argument("--month", type=month_argument, help="yyyy-MM")
    parser.add_argument("--from", dest="first", type=month_argument, help="first month (yyyy-MM)")
    parser.add_argument("--to", dest="last", type=month_argument, help="last month (yyyy-MM)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def months(args: argparse.Namespace) -> list[Month]:
    if args.month is not None:
        if args.first or args.last:
            raise BadInputError("give --month, or --from and --to, not both")
        return [args.month]
    if args.first is None or args.last is None:
        raise BadInputError("give --month, or --from and --to")
    if args.last < args.first:
        raise BadInputError("--to is before --from")
    found = [args.first]
    while found[-1] < args.last:
        found.append(found[-1].next)
    if len(found) > 120:
        raise BadInputError("at most 120 months at once")
    return found


def progress_bar(label: str) -> Progress:
    """A one-line bar on stderr, redrawn after each subscription."""

    def show(done: int, of: int, rows: int) -> None:
        filled = BAR * done // max(of, 1)
        sys.stderr.write(
            f"\r{label} [{'#' * filled}{'.' * (BAR - filled)}] {done}/{of} subscriptions, "
            f"{rows:,} rows"
        )
        if done == of:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def run(args: argparse.Namespace, settings: Settings) -> int:
    wanted = months(args)
    app = FunctionApp(settings)
    app.account.ensure_tables(["exports"])
    configs = ExportConfigs(app.account).all()
    if args.name:
        configs = [c for c in configs if c.name.lower() == args.name.lower()]
        if not configs:
            raise BadInputError(f"no export named {args.name!r} (python -m ops exports list)")
    if not configs:
        raise BadInputError("no exports configured (python -m ops exports set ...)")
    exporter = app.exporter()
    for config in configs:
        for month in wanted:
            show = None if args.quiet else progress_bar(f"{config.name} {month}")
            run = exporter.run(config, month, execution="OnDemand", progress=show)
            print(run.summary_line())
    return 0
