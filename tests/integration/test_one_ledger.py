"""One ledger of money, as a property: for random fleets, price sheets, usage and
adjustments, every surface shows the same charges to the cent.

Each example is a fresh world in Azurite (its own tables): a default provider and up to two
delegated providers with one or two tenants each; usage reported in November's last hours,
its usage spread over the month and late from October; a default sheet with tiers and an
included quantity, a second default version from a random hour of November (a meter added
or dropped mid-month: partial pricing), a resale sheet per delegated provider that may start
mid-month without some meters, maybe a discount override; and a few credits, corrections and
one-off charges at both levels. The real collector stores the usage, the real rater rates it,
and then, for every subscription-month and level:

- the statement's total = the sum of its rounded lines + its adjustments;
- = the sum of the FOCUS ``BilledCost`` of its ``InvoiceId`` (the admin's export, and each
  delegated provider's);
- = the statement route's answer over HTTP (what the portal's charges view reads) and
  ``python -m ops statements``'s, document for document;
- each provider's roll-up = the sum of its tenants' statements (retail, and wholesale for a
  delegated provider; the default provider's resellers = their tenants' wholesale);
- the admin's whole-cloud total = the sum of every provider's direct tenants, once = the
  sum of every subscription's retail statement.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.azurite import Azurite
from devstack.host import LocalFunctionsHost
from devstack.tokens import LocalIssuer
from shared.app import FunctionApp
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.meters import catalogue
from shared.core.usage import UsageRecord
from shared.export.configs import make_config
from shared.export.exporter import Exporter
from shared.rating.adjustments import AdjustmentStore, Category
from shared.rating.engine import Level, Month
from shared.rating.sheet_files import read_json_sheet
from shared.rating.sheet_store import SheetStore
from shared.storage.account import StorageAccount
from shared.storage.blobs import BlobStore
from shared.storage.subscriptions import Subscription, SubscriptionState, SubscriptionStore
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_ops_cli import run_ops, settings_file_for
from tests.integration.test_query_support import REPO
from tests.scripted_source import ScriptedSource

MONTH = Month(2026, 11)
HOUR = timedelta(hours=1)
API = {"api-version": "2015-06-01-preview"}
ADMIN = "00000000-0000-4000-8000-0000000000ad"
METERS = {
    "win": "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A",  # Windows VM hours
    "vm": "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5",  # base VM hours
    "ip": "F271A8A388C44D93956A063E1D2FA80B",  # static IP
    "blob": "B5C15376-6C94-4FDD-B655-1A69D138ACA3",  # page blob GB-hours
}
PRICES = ["0.0036", "0.046", "1.25", "0.008", "0.0000082", "2"]


def guid(kind: int, n: int) -> str:
    return f"{kind:08x}-0000-4000-8000-{n:012x}"


@dataclass
class Spec:
    """A random world (see the module docstring)."""

    tenants: dict[str, str | None]  # tenant -> its delegated provider (None: the default's)
    delegated: list[str]
    records: list[tuple[str, str, int, int, int, int]]  # tenant, meter, hour, back, qty, res
    default_v1: dict[str, dict[str, Any]]
    default_v2: tuple[int, dict[str, dict[str, Any]]]  # (hour of November, meters)
    resale: dict[str, tuple[int | None, dict[str, dict[str, Any]]]]  # provider -> (hour, m)
    discount: str | None  # a discount override of the first tenant
    adjustments: list[tuple[str, Level, Category, int]] = field(default_factory=list)


def price_entry(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["unit", "tiers", "included"]))
    low = draw(st.sampled_from(PRICES))
    if kind == "unit":
        return {"unitPrice": low}
    if kind == "tiers":
        high = draw(st.sampled_from(PRICES))
        return {"tiers": {"0": low, str(draw(st.sampled_from([5, 40, 300]))): high}}
    return {"unitPrice": low, "includedQuantity": str(draw(st.sampled_from([2, 30, 500])))}


def meters_of(draw: st.DrawFn, *, at_least: int = 0) -> dict[str, dict[str, Any]]:
    chosen = draw(st.sets(st.sampled_from(sorted(METERS)), min_size=at_least))
    return {name: price_entry(draw) for name in sorted(chosen)}


@st.composite
def worlds(draw: st.DrawFn) -> Spec:
    delegated = [guid(0xD, n) for n in range(draw(st.integers(0, 2)))]
    tenants: dict[str, str | None] = {}
    for n in range(draw(st.integers(1, 2))):
        tenants[guid(0xA, n)] = None
    for index, provider in enumerate(delegated):
        for n in range(draw(st.integers(1, 2))):
            tenants[guid(0xB + index, n)] = provider
    names = sorted(tenants)
    records = draw(
        st.lists(
            st.tuples(
                st.sampled_from(names),
                st.sampled_from(sorted(METERS)),
                st.integers(0, 2),  # reported hour: November's last three
                st.integers(0, 31 * 24 + 30),  # hours before it the usage was (into October)
                st.integers(1, 90_000),  # thousandths
                st.integers(0, 2),  # which resource
            ),
            min_size=1,
            max_size=10,
        )
    )
    resale = {
        provider: (draw(st.one_of(st.none(), st.integers(0, 29 * 24))), meters_of(draw))
        for provider in delegated
    }
    adjustments = draw(
        st.lists(
            st.tuples(
                st.sampled_from(names),
                st.sampled_from(list(Level)),
                st.sampled_from(list(Category)),
                st.integers(1, 50_000),  # cents
            ),
            max_size=3,
        )
    )
    return Spec(
        tenants=tenants,
        delegated=delegated,
        records=[(t, METERS[m], h, b, q, r) for t, m, h, b, q, r in records],
        default_v1=meters_of(draw, at_least=1),
        default_v2=(draw(st.integers(1, 29 * 24)), meters_of(draw)),
        resale=resale,
        discount=draw(st.one_of(st.none(), st.sampled_from(["10", "33.5"]))),
        adjustments=[
            (t, level if tenants[t] else Level.RETAIL, c, cents)
            for t, level, c, cents in adjustments
        ],
    )


def subscription(subscription_id: str, provider: str | None, *, is_provider: bool) -> Subscription:
    return Subscription(
        subscription_id, f"sub {subscription_id[:4]}{subscription_id[-2:]}", guid(0x7, 1),
        provider, (guid(0x0, 1),), SubscriptionState.ACTIVE, is_provider=is_provider,
    )  # fmt: skip


def sheet(scope: str, effective: datetime, meters: dict[str, dict[str, Any]], **extra: Any) -> Any:
    document = {
        "scope": scope,
        "effectiveFrom": f"{effective:%Y-%m-%dT%H:00Z}",
        "meters": [{"meterId": METERS[name], **entry} for name, entry in meters.items()],
        **extra,
    }
    return read_json_sheet(json.dumps(document), catalogue())


@dataclass
class Built:
    settings: Settings
    values: dict[str, str]
    root: str
    subscriptions: dict[str, Subscription]


def build(spec: Spec, azurite: Azurite, folder: Path) -> Built:
    """Store the world: subscriptions and usage (the real collector), sheets, adjustments;
    then rate it (the rate_usage timer's work)."""
    issuer = LocalIssuer(folder / "auth")
    values = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": azurite.connection_string,
        "USAGE_TABLE_PREFIX": "l" + uuid.uuid4().hex[:12],
        "AUTH_JWKS_URI": str(issuer.jwks_path),
        "FUNCTIONS_WORKER_RUNTIME": "python",
        **{f"AzureWebJobs.{name}.Disabled": "true" for name in (
            "collect_usage", "collect_slice", "report_to_azure", "rate_usage",
            "finalise_statements", "export_usage")},
    }  # fmt: skip
    settings = Settings.from_environ(values)
    root = guid(0xF, 0)
    listed = [subscription(root, None, is_provider=True)]
    listed += [subscription(p, root, is_provider=True) for p in spec.delegated]
    listed += [subscription(t, p or root, is_provider=False) for t, p in spec.tenants.items()]
    scripted = ScriptedSource(listed=listed, name="simulated")
    last = MONTH.last_hour
    for tenant, meter, hour, back, quantity, resource in spec.records:
        reported = last - (2 - hour) * HOUR
        start = reported - back * HOUR
        scripted.by_hour.setdefault(reported, []).append(
            UsageRecord(
                tenant, meter, start, start + HOUR, quantity / 1000,
                f"/subscriptions/{tenant}/resourceGroups/rg/providers/Microsoft.Compute/"
                f"virtualMachines/vm{resource}", "local", {"n": str(resource)},
            )
        )  # fmt: skip
    account = StorageAccount(settings)
    account.ensure_tables()
    collector = Collector(settings, account, scripted)
    for reported in (last - 2 * HOUR, last - HOUR, last):
        collector.collect_hour(reported)
    store, known = SheetStore(account), SubscriptionStore(account)
    january = datetime(2026, 1, 1, tzinfo=MONTH.first_hour.tzinfo)
    store.put(sheet("default", january, spec.default_v1, currency="USD"), known)
    hour, meters = spec.default_v2
    if meters:
        store.put(sheet("default", MONTH.first_hour + hour * HOUR, meters, currency="USD"), known)
    for provider, (start_hour, resale) in spec.resale.items():
        if resale:
            effective = january if start_hour is None else MONTH.first_hour + start_hour * HOUR
            store.put(sheet(f"provider:{provider}", effective, resale, currency="USD"), known)
    if spec.discount:
        first = sorted(spec.tenants)[0]
        store.put(sheet(f"subscription:{first}", january, {}, discountPercent=spec.discount),
                  known)  # fmt: skip
    adjustments = AdjustmentStore(account)
    for tenant, level, category, cents in spec.adjustments:
        amount = Decimal(cents) / 100 * (-1 if category is Category.CREDIT else 1)
        adjustments.add(subscription_id=tenant, level=level, month=MONTH, category=category,
                        amount=amount, currency="USD", reason="property", created_by="t",
                        corrects=MONTH.previous if cents % 2 else None)  # fmt: skip
    assert FunctionApp(settings).rate_usage().rated_through == last
    return Built(settings, values, root, known.all())


def get(base: str, path: str, token: str, **params: str) -> dict[str, Any]:
    response = requests.get(
        base + path, params={**API, **params}, headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text[:500]
    found: dict[str, Any] = response.json()
    return found


def without_time(document: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if document is None else {k: v for k, v in document.items() if k != "computedAt"}


def exported(built: Built, scope: str) -> dict[str, Decimal]:
    """BilledCost per InvoiceId of one export of November (``scope``: admin or a provider)."""
    blobs = BlobStore(built.settings)
    container = "p" + uuid.uuid4().hex[:12]
    run = Exporter(StorageAccount(built.settings), blobs).run(
        make_config("property-" + uuid.uuid4().hex[:6], scope, container=container), MONTH
    )
    sums: dict[str, Decimal] = {}
    for blob in run.blobs:
        table = pq.read_table(io.BytesIO(blobs.read(container, blob.name) or b""))
        for row in table.select(["InvoiceId", "BilledCost"]).to_pylist():
            sums[row["InvoiceId"]] = sums.get(row["InvoiceId"], Decimal(0)) + row["BilledCost"]
    return sums


@pytest.fixture
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    return lambda: tmp_path_factory.mktemp("ledger")


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=worlds())
def test_every_surface_shows_the_same_money_to_the_cent(
    spec: Spec, azurite: Azurite, folders: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Statement total = its lines + adjustments = its InvoiceId's FOCUS BilledCost = the
    statement route = the CLI, per subscription-month and level; roll-ups = their tenants'
    statements; the whole cloud = every provider's direct tenants once."""
    folder = folders()
    built = build(spec, azurite, folder)
    app = FunctionApp(built.settings)
    known = built.subscriptions
    statements: dict[tuple[str, Level], dict[str, Any]] = {}
    for tenant, provider in spec.tenants.items():
        for level in (Level.RETAIL, Level.WHOLESALE) if provider else (Level.RETAIL,):
            document = app.statements.statement(tenant, MONTH, level, known)
            assert document is not None
            lines = sum((Decimal(x["amount"]) for x in document["lines"]), Decimal(0))
            adjusted = sum((Decimal(a["amount"]) for a in document["adjustments"]), Decimal(0))
            assert Decimal(document["usageTotal"]) == lines
            assert Decimal(document["total"]) == lines + adjusted
            for line in document["lines"]:
                assert line["priced"] or Decimal(line["amount"]) == 0
            statements[(tenant, level)] = document

    # FOCUS: the admin bills a delegated provider's tenant at wholesale, every other at
    # retail; each delegated provider's export bills its tenants at retail.
    billed = exported(built, "admin")
    for provider in spec.delegated:
        billed |= exported(built, f"provider:{provider}")
    for (tenant, level), document in statements.items():
        invoice = f"{MONTH.key}-{tenant}-{level.value}"
        assert billed.get(invoice, Decimal(0)) == Decimal(document["total"]), invoice
    assert set(billed) <= {f"{MONTH.key}-{t}-{lvl.value}" for t, lvl in statements}

    # The statement route (the portal's charges view) and the CLI, document for document.
    admin = LocalIssuer(folder / "auth").mint(ADMIN, roles=[built.settings.auth_admin_role])
    settings_file = str(settings_file_for(built.settings, folder))
    with LocalFunctionsHost(REPO, built.values, run_timers_at_start=False) as host:
        for (tenant, level), document in statements.items():
            if level is Level.RETAIL:
                served = get(host.base_url, f"/subscriptions/{tenant}/providers/"
                             f"Microsoft.Commerce/statements/{MONTH}", admin)  # fmt: skip
            else:
                provider = spec.tenants[tenant]
                served = get(host.base_url, f"/subscriptions/{provider}/providers/Microsoft."
                             f"Commerce.Admin/subscriberStatements/{MONTH}", admin,
                             subscriberId=tenant)["wholesaleStatement"]  # fmt: skip
            assert without_time(served) == without_time(document)
            flags = ["--wholesale"] if level is Level.WHOLESALE else []
            code, out, err = run_ops(capsys, "statements", "--subscription", tenant, "--month",
                                     str(MONTH), "--output", "json", *flags,
                                     "--settings-file", settings_file)  # fmt: skip
            assert code == 0, err
            assert without_time(json.loads(out)) == without_time(document)
        rollups = {
            provider: get(
                host.base_url,
                f"/subscriptions/{provider}/providers/Microsoft."
                f"Commerce.Admin/subscriberStatements/{MONTH}",
                admin,
            )
            for provider in [built.root, *spec.delegated]
        }

    def total(tenant: str, level: Level) -> Decimal:
        document = statements.get((tenant, level))
        return Decimal(document["total"]) if document else Decimal(0)

    for provider, rollup in rollups.items():
        tenants = [t for t, p in spec.tenants.items() if (p or built.root) == provider]
        assert Decimal(rollup["directTenantsTotal"]) == sum(
            (total(t, Level.RETAIL) for t in tenants), Decimal(0)
        )
        for item in rollup["tenants"]:
            assert Decimal(item["total"]) == total(item["subscriptionId"], Level.RETAIL)
        if provider in spec.delegated:
            assert Decimal(rollup["wholesaleTotal"]) == sum(
                (total(t, Level.WHOLESALE) for t in tenants), Decimal(0)
            )
        else:
            resold = [t for t, p in spec.tenants.items() if p is not None]
            assert Decimal(rollup["resellersTotal"]) == sum(
                (total(t, Level.WHOLESALE) for t in resold), Decimal(0)
            )
    cloud = rollups[built.root]["cloud"]
    every_tenant_once = sum((total(t, Level.RETAIL) for t in spec.tenants), Decimal(0))
    assert Decimal(cloud["cloudTotal"]) == every_tenant_once
    assert Decimal(cloud["cloudTotal"]) == sum(
        (Decimal(r["directTenantsTotal"]) for r in rollups.values()), Decimal(0)
    )
