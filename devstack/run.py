"""The README's run command: the whole app running locally, as Azure Functions would run it.

Starts three child processes, each logging to ``.local/{azurite,commerce,host}.log``:
Azurite (data kept in ``.local/azurite``; ``--fresh`` starts empty; Node's heap sized from
the machine's memory), the commerce emulator (what it accepted kept in ``.local/commerce``,
as the real endpoint keeps it) and the local Functions host (``devstack.host``) over the
real function folders:
the ``collect_usage`` timer plans the last 24 closed hours at start (and then every hour),
``collect_slice`` collects them from the collection queue, several at once, as instances
would (``--stamps N`` runs N simulated stamps, each with its own watermark),
``report_to_azure`` bills the work items collection enqueues, and
``query_usage`` answers on localhost, with the usage portal at ``/portal/`` and its local
"sign in as" endpoint (``devstack.sign_in``) beside it. Once the catch-up is collected and
billed it prints what is stored, what was billed and the reconciliation, then where the API
and the portal listen, tokens for the admin, a delegated provider and a tenant, and
copy-paste example requests; and it keeps running until Ctrl-C. ``--once`` stops after
that first cycle and exits non-zero if reconciliation found a difference (for scripts).

What the catch-up writes must fit in the local Azurite (``devstack.capacity``): without
``--hours`` the window shrinks to what fits, saying so in one line; hours given that do not
fit, or a fleet too large for one hour, are refused (exit 2) naming the largest that fits.
The children are supervised (``devstack.supervision``): one that exits ends the run (exit
3) naming it, its status and its log's last lines; SIGINT and SIGTERM stop every child
within seconds whatever the run is doing (exit 0 while serving, 128 + the signal before).

Everything a script needs to talk to the running stack is written to
``{state dir}/run.json`` once it is ready, and the app settings in use to
``{state dir}/local.settings.json`` (for ``python -m ops ... --settings-file``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack.azurite import REPO_ROOT, Azurite
from devstack.capacity import (
    CHARS_PER_ENTITY,
    DEFAULT_HOURS,
    LOCAL_CONCURRENCY,
    DoesNotFitError,
    StoreLimit,
    available_memory_mb,
    node_heap_mb,
    node_max_string_length,
    plan_catch_up,
    store_limit,
)
from devstack.demo_tokens import mint_demo_token
from devstack.emulator_process import EmulatorProcess
from devstack.example_prices import load_example_prices
from devstack.fleet import register_simulated_source
from devstack.host.process import HostProcess
from devstack.local_settings import local_values
from devstack.sign_in import DEFAULT_PATH as SIGN_IN_PATH
from devstack.status_screen import print_status
from devstack.supervision import Child, Supervisor
from devstack.tokens import LocalIssuer
from shared.app import FunctionApp
from shared.billing.reconcile import Reconciliation, reconcile
from shared.billing.reporter import commerce_client
from shared.core.config import Settings
from shared.core.errors import ConfigurationError, TransientError
from shared.core.hours import HOUR, last_closed_hour, utc_now
from shared.core.meters import catalogue
from shared.export.configs import ExportConfigs, make_config
from shared.rating.engine import Month
from shared.rating.rollups import LABELS
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import read_manifest
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.usage_rows import read_hourly_rows
from shared.storage.watermark import collected_through

log = logging.getLogger("devstack.run")
# Azurite loads a store kept from earlier runs before it listens: 37-63 s for 450-475 MB here.
AZURITE_START_SECONDS = 300.0
# The first cycle's default deadline: this, plus a second per CATCH_UP_FLOOR_RATE entities the
# catch-up writes. On this machine loaded five times over, a 300-tenant catch-up wrote ~320
# entities a second into an empty store and ~110 near 340 MB (each save serialises the whole
# store), ~140 on average; a quiet machine writes several times more.
FIRST_CYCLE_SECONDS = 900.0
CATCH_UP_FLOOR_RATE = 100


def wait_for(
    condition: Callable[[], bool], what: str, deadline_seconds: float, every: float = 1.0
) -> bool:
    """Poll ``condition`` until it holds or the deadline passes; print progress now and then."""
    started = time.monotonic()
    announced = started
    while not condition():
        now = time.monotonic()
        if now - started > deadline_seconds:
            return False
        if now - announced > 15:
            print(f"  ... still waiting for {what} ({now - started:.0f}s)", flush=True)
            announced = now
        time.sleep(every)
    return True


def print_usage_summary(account: StorageAccount, first: datetime, last: datetime) -> None:
    """What storage holds for reported hours ``first``..``last``, per hour and per provider."""
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

    print(f"\nUsage stored for reported hours {first:%Y-%m-%d %H:00}..{last:%Y-%m-%d %H:00} UTC:")
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


def print_billing(result: Reconciliation, calls: int) -> None:
    """The ledger's states per event key, and the reconciliation: storage against the ledger
    per hour, the ledger against the endpoint's daily rows per (resource, dimension, day)."""
    states = result.states
    print("\nBilling (report_to_azure -> commerce emulator):")
    print(f"  event keys            {result.keys}")
    print(f"  HTTP calls            {calls}")
    for state in (
        "accepted",
        "duplicate-confirmed",
        "carried-forward",
        "expired",
        "mismatch",
        "rejected",
        "unresolved",
        "pending",
    ):
        print(f"  {state:<21} {states.get(state, 0)}")
    print(f"  endpoint days         {result.days} (resource, dimension, UTC day) compared")
    for difference in result.differences[:20]:
        print(f"  difference: {difference.line()}")
    print(f"  {result.summary_line()}")


def print_month_to_date(settings: Settings, month: Month) -> None:
    """Each provider's month so far, read from the ledger and labelled as the CLI, the API
    roll-up and the portal label it (``shared.rating.rollups``); then the whole cloud once.
    Provisional until the month is finalised."""
    app = FunctionApp(settings)
    subscriptions = SubscriptionStore(app.account).all()
    cloud = app.rollups.cloud(month, subscriptions)
    currency = cloud["currency"] or ""
    print(
        f"\nChargeback, {month} so far ({cloud['status']}; python -m ops statements --cloud "
        f"--month {month}, or --provider ID):"
    )
    for provider in cloud["providers"]:
        print(f"  {provider['displayName']} ({provider['kind']} provider, "
              f"{provider['tenants']} tenants charged)")  # fmt: skip
        for key in ("directTenantsTotal", "wholesaleTotal", "margin", "resellersTotal",
                    "grandTotal"):  # fmt: skip
            if provider[key] is not None:
                print(f"      {LABELS[key] + ':':<44} {provider[key]:>12} {currency}")
    print(f"  {LABELS['cloudTotal'] + ':':<48} {cloud['cloudTotal']:>12} {currency}")


def export_first_cycle(settings: Settings, first: datetime, last: datetime) -> None:
    """The admin's FOCUS export (configured if missing) of the months the catch-up covers."""
    app = FunctionApp(settings)
    configs = ExportConfigs(app.account)
    config = configs.get("focus-admin")
    if config is None:
        config = make_config("focus-admin", "admin")
        configs.put(config)
    print(f"\nFOCUS export ({app.blobs.account_url}, container {config.container}):")
    for month in sorted({Month.of(first), Month.of(last)}):
        run = app.exporter().run(config, month)
        print(f"  {run.period}: {run.rows} rows in {len(run.blobs)} file(s) at {run.folder}/")


def print_access(
    base_url: str, tokens: dict[str, tuple[str, str, str]], insecure: bool, settings_file: Path
) -> None:
    """Where the API listens, a token per role, and three requests to paste."""
    print(f"\nThe usage API listens on {base_url}  (Ctrl-C stops everything)")
    print(f"The usage portal: {base_url}/portal/  (sign in as any principal listed below)")
    print(f"Operator commands: python -m ops --help  (--settings-file {settings_file})")
    for role, (description, subscription_id, _) in tokens.items():
        print(f"  {role:<9} {description}: subscription {subscription_id}")
    print("Tokens (valid for an hour; `python -m ops token ROLE` mints fresh ones):")
    for role, (_, _, token) in tokens.items():
        print(f"  export {role.upper()}_TOKEN={token}")
    end = last_closed_hour(utc_now()) + HOUR
    start = end - 24 * HOUR
    window = (
        f"reportedStartTime={start:%Y-%m-%dT%H:00:00Z}&reportedEndTime={end:%Y-%m-%dT%H:00:00Z}"
        "&aggregationGranularity=Hourly&api-version=2015-06-01-preview"
    )
    flag = "-k " if insecure else ""
    admin_sub = tokens["admin"][1]
    delegated_sub = tokens["delegated"][1]
    tenant_sub = tokens["tenant"][1]
    month = f"{end - HOUR:%Y-%m}"
    print("Try:")
    print(
        f'  curl -s {flag}-H "Authorization: Bearer $ADMIN_TOKEN" "{base_url}/subscriptions/'
        f'{admin_sub}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates?{window}"'
    )
    print(
        f'  curl -s {flag}-H "Authorization: Bearer $DELEGATED_TOKEN" "{base_url}/subscriptions/'
        f'{delegated_sub}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates?{window}"'
    )
    print(
        f'  curl -s {flag}-H "Authorization: Bearer $TENANT_TOKEN" -H "Accept: text/csv" '
        f'"{base_url}/subscriptions/{tenant_sub}/providers/Microsoft.Commerce/usageAggregates'
        f'?{window}"'
    )
    print(
        f'  curl -s {flag}-H "Authorization: Bearer $TENANT_TOKEN" "{base_url}/subscriptions/'
        f'{tenant_sub}/providers/Microsoft.Commerce/statements/{month}?api-version=2015-06-01-preview"'
    )
    print(
        f'  curl -s {flag}-H "Authorization: Bearer $DELEGATED_TOKEN" "{base_url}/subscriptions/'
        f"{delegated_sub}/providers/Microsoft.Commerce.Admin/subscriberStatements/{month}"
        '?api-version=2015-06-01-preview"'
    )


def stamp_values(stamps: int) -> dict[str, str]:
    """Settings for ``stamps`` simulated stamps (``stamp1``...), each a fleet of its own
    seed; none for one stamp (the plain ``simulated`` source)."""
    if stamps <= 1:
        return {}
    names = [f"stamp{n}" for n in range(1, stamps + 1)]
    values = {"USAGE_STAMPS": ",".join(names)}
    for n, name in enumerate(names, start=1):
        values[f"STAMP_{name.upper()}__FLEET_SEED"] = str(n)
    return values


def reconcile_now(settings: Settings, first: datetime, last: datetime) -> Reconciliation | None:
    """Reconciliation of the caught-up hours, or None while storage or endpoint is busy."""
    try:
        with commerce_client(settings) as client:
            return reconcile(StorageAccount(settings), client, first, last)
    except TransientError:
        return None


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./dev run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="wipe local Azurite data first")
    parser.add_argument("--once", action="store_true", help="run one cycle, print, and exit")
    parser.add_argument("--port", type=int, default=7071, help="API port (0: any free port)")
    parser.add_argument("--tls", action="store_true", help="serve https (self-signed)")
    parser.add_argument(
        "--hours",
        type=int,
        default=None,
        help=f"hours to catch up at start (default {DEFAULT_HOURS}, or fewer if the fleet "
        "would not fit in the local Azurite)",
    )
    parser.add_argument(
        "--tenants",
        type=int,
        default=None,
        help="directory tenants of the simulated fleet (default: FLEET_TENANTS, 12)",
    )
    parser.add_argument(
        "--stamps",
        type=int,
        default=1,
        help="simulated Azure Stack Hub stamps, each its own fleet and watermark (default 1)",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=REPO_ROOT / ".local", help="data, keys, logs, run.json"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"seconds to wait for the catch-up, and then for its billing (default "
        f"{FIRST_CYCLE_SECONDS:.0f}, plus a second per {CATCH_UP_FLOOR_RATE} table entities "
        "it writes)",
    )
    parser.add_argument(
        "--console-metrics",
        action="store_true",
        help="print the app's metrics to the console every 10 s (TELEMETRY_CONSOLE=true)",
    )
    args = parser.parse_args(argv)
    if args.hours is not None and args.hours < 1:
        parser.error("--hours must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    register_simulated_source()  # the run reads what the simulated fleet wrote
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)

    state_dir: Path = args.state_dir
    data = state_dir / "azurite"
    accepted = state_dir / "commerce" / "accepted.json"
    if args.fresh:
        shutil.rmtree(data, ignore_errors=True)
        accepted.unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    limit = store_limit(node_heap_mb(available_memory_mb()), node_max_string_length())
    # Both keep their data between runs, as storage and the real endpoint do.
    azurite = Azurite(
        location=data,
        log_path=state_dir / "azurite.log",
        heap_mb=limit.heap_mb,
        die_with_parent=True,
    )
    emulator = EmulatorProcess(state_file=accepted, log_path=state_dir / "commerce.log")
    issuer = LocalIssuer(state_dir / "auth")
    values = local_values(
        azurite.connection_string,
        COMMERCE_BASE_URL=emulator.base_url,
        COMMERCE_STATIC_TOKEN=emulator.token,
        AUTH_JWKS_URI=str(issuer.jwks_path),
        PORTAL_LOCAL_SIGN_IN_URL=SIGN_IN_PATH,
        **LOCAL_CONCURRENCY,
        **({} if args.tenants is None else {"FLEET_TENANTS": str(args.tenants)}),
        **stamp_values(args.stamps),
        **({"TELEMETRY_CONSOLE": "true"} if args.console_metrics else {}),
    )
    try:
        settings = Settings.from_environ(values)
        plan = plan_catch_up(
            tenants=settings.fleet_tenants,
            stamps=args.stamps,
            hours=args.hours,
            last=last_closed_hour(utc_now()),
            limit=limit,
        )
    except (ConfigurationError, DoesNotFitError) as refused:
        print(f"./dev run: {refused}", file=sys.stderr)
        return 2
    print(plan.line, flush=True)
    values["COLLECT_LOOKBACK_HOURS"] = str(plan.hours)
    settings = Settings.from_environ(values)
    if args.timeout is None:
        args.timeout = FIRST_CYCLE_SECONDS + plan.entities / CATCH_UP_FLOOR_RATE
    stored = azurite.table_store_chars() // CHARS_PER_ENTITY  # kept from earlier runs

    supervisor = Supervisor()
    with supervisor, supervisor.handling_signals():
        start_storage(supervisor, azurite, emulator, limit)
        if stored and not fits_beside_stored(settings, stored, plan.hours, args.stamps, limit):
            return 2
        # What the Bicep provisions in Azure: every table, before the first timer runs
        # (data kept from an older version gets the tables added since).
        StorageAccount(settings).ensure_tables()
        # Prices before the first hour is collected: a month the catch-up closes is rated
        # and finalised with them, never before them (a sheet cannot enter a final month).
        price_lines = load_example_prices(settings, subscriptions_first=True)
        host = start_host(supervisor, values, args)
        code = first_cycle(
            settings,
            args,
            plan.hours,
            supervisor,
            host.base_url,
            emulator,
            issuer,
            started,
            price_lines,
        )
        print_local_storage(azurite, limit)
        if args.once or code != 0:
            return code
        supervisor.phase = "serving"
        print("\nRunning; Ctrl-C stops.", flush=True)
        threading.Event().wait()  # until a signal (or a child's death) ends the process
    return 0


def start_storage(
    supervisor: Supervisor, azurite: Azurite, emulator: EmulatorProcess, limit: StoreLimit
) -> None:
    """Azurite and the commerce emulator, watched from their launch; the emulator starts
    while Azurite loads (a kept store takes a while)."""
    azurite_log, emulator_log = azurite.log_path, emulator.log_path
    assert azurite_log is not None
    assert emulator_log is not None
    azurite.launch()
    supervisor.watch(Child("Azurite", azurite.process, azurite_log, azurite.stop))
    emulator.launch()
    supervisor.watch(
        Child("The commerce emulator", emulator.process, emulator_log, emulator.stop, 1.0)
    )
    print(
        f"Azurite on 127.0.0.1:{azurite.table_port} (tables), data in {azurite.location}, "
        f"Node heap {limit.heap_mb:,} MB, log {azurite_log}",
        flush=True,
    )
    azurite.wait_until_serving(AZURITE_START_SECONDS)
    emulator.wait_until_serving()
    print(f"Commerce emulator on {emulator.base_url}, log {emulator_log}", flush=True)


def start_host(
    supervisor: Supervisor, values: dict[str, str], args: argparse.Namespace
) -> HostProcess:
    """The host over the app settings ``values`` (written to ``local.settings.json`` for it
    and for operator commands), watched from its launch."""
    state_dir: Path = args.state_dir
    settings_file = state_dir / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2))
    host = HostProcess(
        REPO_ROOT,
        settings_file,
        port=args.port,
        tls=args.tls,
        tls_dir=state_dir / "tls",
        log_path=state_dir / "host.log",
        echo=sys.stderr.buffer,
    )
    host.launch()
    supervisor.watch(Child("The local host", host.process, host.log_path, host.stop, 1.5))
    host.wait_until_serving()
    return host


def print_local_storage(azurite: Azurite, limit: StoreLimit) -> None:
    """How full the local Azurite is and the most memory it took (docs/scale.md quotes it)."""
    resident, peak = azurite.memory_mb()
    chars = azurite.table_store_chars()
    print(
        f"Azurite: peak memory {peak:,} MB (now {resident:,} MB); table store saved at "
        f"{chars / 1e6:,.1f} MB, ~{chars // CHARS_PER_ENTITY:,} of the ~{limit.entities:,} "
        "table entities it holds",
        flush=True,
    )


def fits_beside_stored(
    settings: Settings, stored: int, hours: int, stamps: int, limit: StoreLimit
) -> bool:
    """Whether this run's catch-up fits beside the ``stored`` entities of a store kept from
    earlier runs; says what it adds, or why it does not fit. A store with a watermark
    resumes there (``hours`` are for a store without one)."""
    last = last_closed_hour(utc_now())
    try:
        mark = collected_through(StorageAccount(settings), settings.source_names())
    except TransientError:
        mark = None
    pending = hours if mark is None else max(1, int((last - mark) / HOUR))
    try:
        plan = plan_catch_up(
            tenants=settings.fleet_tenants,
            stamps=stamps,
            hours=pending,
            last=last,
            limit=limit,
            stored_entities=stored,
        )
    except DoesNotFitError as refused:
        print(f"./dev run: {refused}", file=sys.stderr)
        return False
    print(plan.line, flush=True)
    return True


def first_cycle(
    settings: Settings,
    args: argparse.Namespace,
    hours: int,
    supervisor: Supervisor,
    base_url: str,
    emulator: EmulatorProcess,
    issuer: LocalIssuer,
    started: float,
    price_lines: list[str],
) -> int:
    """Wait until the catch-up is collected and billed; print it all; write run.json."""
    account = StorageAccount(settings)
    last = last_closed_hour(utc_now())
    first = last - (hours - 1) * HOUR
    supervisor.phase = "catching up"
    print(
        f"Catching up reported hours {first:%Y-%m-%d %H:00}..{last:%Y-%m-%d %H:00} UTC "
        f"(the host's log: {args.state_dir / 'host.log'})",
        flush=True,
    )

    def caught_up() -> bool:
        try:
            mark = collected_through(account, settings.source_names())
        except TransientError:
            return False
        return mark is not None and mark >= last

    if not wait_for(caught_up, "the catch-up collection", args.timeout):
        print("collection did not catch up in time; see the log above", file=sys.stderr)
        return 1
    supervisor.phase = "billing"
    print("Collected; waiting for the billing of the caught-up hours", flush=True)
    result: list[Reconciliation] = []

    def billed() -> bool:
        outcome = reconcile_now(settings, first, last)
        if outcome is None or outcome.states.get("pending", 0):
            return False
        result[:] = [outcome]
        return outcome.ok

    reconciled = wait_for(billed, "billing of the caught-up hours", args.timeout, every=3)
    supervisor.phase = "printing the summary"
    print_usage_summary(account, first, last)
    if result:
        print_billing(result[0], emulator.total_calls)
    print("\nPrice sheets (devstack/prices/, loaded before collection started):")
    for line in price_lines:
        print(f"  {line}")
    # The rate_usage timer runs every ten minutes; rate what is due now so the money
    # below includes the hours just collected (a concurrent timer run is harmless).
    print(f"\n{FunctionApp(settings).rate_usage().summary_line()}")
    print_month_to_date(settings, Month.of(last))
    export_first_cycle(settings, first, last)
    tokens: dict[str, tuple[str, str, str]] = {}
    for role in ("admin", "provider", "delegated", "tenant"):
        principal, token = mint_demo_token(settings, role, directory=issuer.directory)
        tokens[role] = (principal.description, principal.subscription_id, token)
    print_access(base_url, tokens, args.tls, args.state_dir / "local.settings.json")
    state: dict[str, Any] = {
        "api": base_url,
        "portal": f"{base_url}/portal/",
        "commerce": emulator.base_url,
        "storage": settings.storage_connection_string.get_secret_value()  # type: ignore[union-attr]
        if settings.storage_connection_string
        else None,
        "tokens": {
            role: {"subscription": sub, "token": tok} for role, (_, sub, tok) in tokens.items()
        },
        "first_hour": f"{first:%Y-%m-%dT%H}",
        "last_hour": f"{last:%Y-%m-%dT%H}",
        "reconciled": reconciled,
    }
    (args.state_dir / "run.json").write_text(json.dumps(state, indent=2))
    print_status(settings, result[0] if result else None)
    print(f"\nFirst cycle done in {time.monotonic() - started:.1f}s; reconciled: {reconciled}.")
    return 0 if reconciled else 1


if __name__ == "__main__":
    raise SystemExit(main())
