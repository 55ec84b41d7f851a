"""Collect (backfill or re-collect) a range of closed reported hours from the configured
usage source, oldest first, exactly as the timer does one hour: rows, manifest, daily rows
when the hour closes a UTC day, then the hour's billing work items.

Idempotent: re-collecting an hour rewrites the same rows (upserts keyed by the record), and
its work items, enqueued again, change nothing in billing (the ledger settles each event
once). The watermark moves only to the hour right after it, so a backfill never jumps it
over an hour that is still missing. An hour that has not ended yet is refused.
"""

from __future__ import annotations

import argparse
import sys
import time

from ops.reconcile import MAX_HOURS, parse_hour
from shared.billing.work_items import work_item_enqueuer
from shared.collection.collector import Collector
from shared.collection.sources import SOURCES
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.hours import HOUR, hours_between, utc_now
from shared.storage.account import StorageAccount
from shared.storage.watermark import Watermark

HELP = "backfill or re-collect a range of closed reported hours (idempotent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="first", required=True, type=parse_hour, help="first reported hour (UTC)"
    )
    parser.add_argument(
        "--to", dest="last", required=True, type=parse_hour, help="last reported hour (UTC)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    first, last = args.first, args.last
    if last < first:
        raise BadInputError("--to is before --from")
    count = (last - first) // HOUR + 1
    if count > MAX_HOURS:
        raise BadInputError(f"at most {MAX_HOURS} hours at a time")
    now = utc_now()
    if last + HOUR > now:
        raise BadInputError(
            f"reported hour {last:%Y-%m-%dT%H}Z is not closed yet "
            f"(it ends at {last + HOUR:%H:%M}Z); collect only hours that have ended"
        )
    account = StorageAccount(settings)
    account.ensure_tables()
    source = SOURCES.create(settings)
    collector = Collector(
        settings, account, source, after_hour_written=work_item_enqueuer(settings)
    )
    print(
        f"collecting reported hours {first:%Y-%m-%dT%H}Z..{last:%Y-%m-%dT%H}Z "
        f"from the {source.name} source",
        file=sys.stderr,
    )
    started = time.monotonic()
    rows = quarantined = 0
    for done, hour in enumerate(hours_between(first, last), 1):
        result = collector.collect_hour(hour)
        rows += result.rows
        quarantined += result.quarantined
        print(
            f"  [{done}/{count}] {hour:%Y-%m-%dT%H}Z: {result.rows} rows, "
            f"{result.subscriptions} subscriptions, {result.quarantined} quarantined "
            f"({result.seconds:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    watermark = Watermark(account, source.name).read()
    where = f"{watermark:%Y-%m-%dT%H}Z" if watermark is not None else "not set"
    print(
        f"collected {count} reported hours ({first:%Y-%m-%dT%H}..{last:%Y-%m-%dT%H}Z): "
        f"{rows} rows, {quarantined} quarantined, watermark {where}, "
        f"{time.monotonic() - started:.1f}s"
    )
    return 0
