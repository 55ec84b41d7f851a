"""The README's run command: collect the simulated fleet's last 24 hours locally, end to end.

Starts Azurite (data kept in ``.local/azurite`` between runs; ``--fresh`` starts empty),
points the app settings at it, runs the real ``collect_usage`` entry point with a real
``TimerRequest`` (it catches up from the watermark, so a second run only adds new hours),
then reads back what is stored and prints it per reported hour and per resource provider.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections import defaultdict
from datetime import datetime

from devstack.azurite import REPO_ROOT, Azurite

LOCAL_DIR = REPO_ROOT / ".local"
EXAMPLE_SETTINGS = REPO_ROOT / "local.settings.example.json"


def local_settings(connection_string: str) -> dict[str, str]:
    """The example settings file's values, pointed at our Azurite."""
    values: dict[str, str] = json.loads(EXAMPLE_SETTINGS.read_text())["Values"]
    values["AzureWebJobsStorage"] = connection_string
    return values


def print_summary(settings_values: dict[str, str], hours: int, now: datetime) -> None:
    """What storage holds for the last ``hours`` reported hours, per hour and per provider."""
    from shared.config import Settings
    from shared.hours import HOUR, hour_key, last_closed_hour
    from shared.meters import catalogue
    from shared.storage import StorageAccount

    settings = Settings.from_environ(settings_values)
    account = StorageAccount(settings)
    last = last_closed_hour(now)
    first = last - (hours - 1) * HOUR
    entities = account.table("hourly").query_entities(
        "PartitionKey ge @first and PartitionKey lt @end",
        parameters={"first": hour_key(first), "end": hour_key(last + HOUR)},
        select=["PartitionKey", "SubscriptionId", "MeterId", "Quantity", "UsageStartTime"],
    )
    per_hour: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    subscriptions_per_hour: dict[str, set[str]] = defaultdict(set)
    per_provider: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    provider_rows: dict[str, int] = defaultdict(int)
    provider_subscriptions: dict[str, set[str]] = defaultdict(set)
    meters = catalogue()
    for entity in entities:
        reported = entity["PartitionKey"][:10]
        late = entity["UsageStartTime"] < datetime.strptime(reported, "%Y%m%d%H").replace(
            tzinfo=first.tzinfo
        )
        per_hour[reported][0] += 1
        per_hour[reported][1] += int(late)
        subscriptions_per_hour[reported].add(entity["SubscriptionId"])
        meter = meters.lookup(entity["MeterId"])
        provider = meter.provider if meter else "?"
        unit = meter.unit if meter else "?"
        per_provider[provider][unit] += entity["Quantity"]
        provider_rows[provider] += 1
        provider_subscriptions[provider].add(entity["SubscriptionId"])

    print(f"\nReported hours {first:%Y-%m-%d %H:00}..{last:%Y-%m-%d %H:00} UTC, as stored:")
    print(f"  {'reported hour':<18}{'rows':>8}{'subs':>7}{'late rows':>11}")
    for key in sorted(per_hour):
        rows, late_rows = per_hour[key]
        hour = datetime.strptime(key, "%Y%m%d%H")
        print(
            f"  {hour:%Y-%m-%d %H:00}  {rows:>8}{len(subscriptions_per_hour[key]):>7}"
            f"{late_rows:>11}"
        )
    total_rows = sum(rows for rows, _ in per_hour.values())
    total_late = sum(late for _, late in per_hour.values())
    print(f"  {'total':<18}{total_rows:>8}{'':>7}{total_late:>11}")
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
        values = local_settings(azurite.connection_string)
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
