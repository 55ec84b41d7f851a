"""The README's run command: collect the simulated fleet's last 24 hours locally, end to end.

Starts Azurite (data kept in ``.local/azurite`` between runs; ``--fresh`` starts empty),
points the app settings at it, runs the real ``collect_usage`` entry point with a real
``TimerRequest`` (it catches up from the watermark, so a second run only adds new hours),
then reads back what is stored and prints it per reported hour and per resource provider.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections import defaultdict
from datetime import datetime

from devstack.azurite import REPO_ROOT, Azurite
from devstack.local_settings import local_values

LOCAL_DIR = REPO_ROOT / ".local"


def print_summary(settings_values: dict[str, str], hours: int, now: datetime) -> None:
    """What storage holds for the last ``hours`` reported hours, per hour and per provider."""
    from shared.config import Settings
    from shared.daily import read_hourly_rows
    from shared.hour_manifest import read_manifest
    from shared.hours import HOUR, last_closed_hour
    from shared.meters import catalogue
    from shared.storage import StorageAccount

    account = StorageAccount(Settings.from_environ(settings_values))
    last = last_closed_hour(now)
    first = last - (hours - 1) * HOUR
    subscriptions = sorted(
        {entry.subscription_id for _, entry in read_manifest(account, first, last)}
    )
    per_hour: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    subscriptions_per_hour: dict[datetime, set[str]] = defaultdict(set)
    per_provider: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    provider_rows: dict[str, int] = defaultdict(int)
    provider_subscriptions: dict[str, set[str]] = defaultdict(set)
    meters = catalogue()
    for subscription_id in subscriptions:
        for reported, row in read_hourly_rows(account, subscription_id, first, last):
            per_hour[reported][0] += 1
            per_hour[reported][1] += int(row.usage_start < reported)
            subscriptions_per_hour[reported].add(subscription_id)
            meter = meters.lookup(row.meter_id)
            provider = meter.provider if meter else "?"
            per_provider[provider][meter.unit if meter else "?"] += row.quantity
            provider_rows[provider] += 1
            provider_subscriptions[provider].add(subscription_id)

    print(f"\nReported hours {first:%Y-%m-%d %H:00}..{last:%Y-%m-%d %H:00} UTC, as stored:")
    print(f"  {'reported hour':<18}{'rows':>8}{'subs':>7}{'late rows':>11}")
    for hour in sorted(per_hour):
        rows, late_rows = per_hour[hour]
        subscriptions_in_hour = len(subscriptions_per_hour[hour])
        print(f"  {hour:%Y-%m-%d %H:00}  {rows:>8}{subscriptions_in_hour:>7}{late_rows:>11}")
    total_rows = sum(rows for rows, _ in per_hour.values())
    total_late = sum(late for _, late in per_hour.values())
    print(f"  {'total':<18}{total_rows:>8}{len(subscriptions):>7}{total_late:>11}")
    print("\nPer resource provider:")
    for provider in sorted(per_provider):
        print(
            f"  {provider:<24} {provider_rows[provider]:>7} rows, "
            f"{len(provider_subscriptions[provider])} subscriptions"
        )
        for unit, quantity in sorted(per_provider[provider].items()):
            print(f"      {quantity:>14,.2f}  {unit}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev run", description=__doc__)
    parser.add_argument("--fresh", action="store_true", help="wipe local Azurite data first")
    parser.add_argument("--hours", type=int, default=24, help="hours to show (default 24)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)

    data = LOCAL_DIR / "azurite"
    if args.fresh and data.exists():
        shutil.rmtree(data)
    started = time.monotonic()
    with Azurite(location=data) as azurite:
        print(f"Azurite: tables on 127.0.0.1:{azurite.table_port}, data in {data}")
        values = local_values(azurite.connection_string)
        os.environ.update(values)
        sys.path.insert(0, str(REPO_ROOT))
        from azure.functions.timer import TimerRequest

        import collect_usage
        from shared.hours import utc_now

        now = utc_now()
        collect_usage.main(TimerRequest(past_due=True))
        print_summary(values, args.hours, now)
    print(f"\nDone in {time.monotonic() - started:.1f}s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
