"""Reconcile billing: per event key (billing resource, dimension, reported hour), the
chargeable totals in storage against the billing ledger; per (billing resource, dimension,
UTC day), the ledger against the commerce endpoint's daily rows (GET usageEvents, the only
read it offers; the days the hours fall in are compared whole). Print every difference,
named (``shared.billing.reconcile``), and keep the result as the latest reconciliation
(``ops status``'s correctness). Exit 0 when all is in order, 1 when anything differs."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from shared.billing.reconcile import reconcile
from shared.billing.reporter import commerce_client
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.hours import HOUR, floor_hour, is_on_hour, utc_now
from shared.status.observer import remember
from shared.storage.account import StorageAccount

HELP = "compare storage and ledger per hour, ledger and endpoint per day, for a range of hours"
MAX_HOURS = 24 * 62


def parse_hour(text: str) -> datetime:
    """``2026-11-20T09``, ``2026-11-20T09:00Z``, ``2026112009`` or a date (its midnight), UTC."""
    text = text.strip()
    try:
        if text.isdigit() and len(text) == 10:
            moment = datetime.strptime(text, "%Y%m%d%H").replace(tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if len(text) == 13 and text[10] == "T":  # 2026-11-20T09
                moment = datetime.fromisoformat(text + ":00")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an hour like 2026-11-20T09 (UTC)"
        ) from None
    if not is_on_hour(moment):
        raise argparse.ArgumentTypeError(f"{text!r} is not on the hour")
    return floor_hour(moment)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="first", required=True, type=parse_hour, help="first reported hour (UTC)"
    )
    parser.add_argument(
        "--to", dest="last", required=True, type=parse_hour, help="last reported hour (UTC)"
    )


def _progress(stage: str, done: int, total: int) -> None:
    """Progress on stderr: a line every tenth of the work (and the last)."""
    step = max(1, total // 10)
    if done == total or done % step == 0:
        print(f"  {stage}: {done}/{total}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    first, last = args.first, args.last
    if last < first:
        raise BadInputError("--to is before --from")
    if (last - first) // HOUR + 1 > MAX_HOURS:
        raise BadInputError(f"at most {MAX_HOURS} hours at a time")
    print(f"reconciling reported hours {first:%Y-%m-%dT%H}Z..{last:%Y-%m-%dT%H}Z", file=sys.stderr)
    account = StorageAccount(settings)
    with commerce_client(settings) as client:
        result = reconcile(account, client, first, last, progress=_progress)
    remember(account, result, utc_now())
    for difference in result.differences:
        print(difference.line())
    print(result.summary_line())
    return 0 if result.ok else 1
