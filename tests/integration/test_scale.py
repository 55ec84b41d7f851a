"""Cost follows the answer at scale: provider pages touch only tenants with usage, and
billing reads one summary per hour that equals what the rows say."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from devstack.fleet import FleetOptions, SimulatedFleet
from shared.billing.charges import hour_charges, hour_charges_from_rows
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import hour_key
from shared.core.meters import ChargeableMeters
from shared.query.arguments import parse_path, parse_query
from shared.query.auth import Caller
from shared.query.caller_scope import resolve_scope
from shared.query.continuation import PageState
from shared.query.reader import UsageReader, visible_bound
from shared.storage.account import StorageAccount
from shared.storage.activity import active_tenants
from shared.storage.hour_manifest import read_hour
from shared.storage.subscriptions import Subscription, SubscriptionState, SubscriptionStore
from shared.storage.watermark import Watermark
from tests.integration.test_report_support import every_meter_chargeable
from tests.scripted_source import PROVIDER, ScriptedSource, subscription, vm_record

T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)
ADMIN = Caller(object_id="admin", tenant_id=None, roles=frozenset({"UsageAdmin"}), is_admin=True)
TABLE_IN_URL = re.compile(r"/devstoreaccount1/([A-Za-z0-9]+)(?:\(|\?|$)")


class CountingAccount(StorageAccount):
    """The real storage account, recording the table of every request it sends."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, request_hook=self._record)
        self.tables_requested: list[str] = []

    def _record(self, request: Any) -> None:
        match = TABLE_IN_URL.search(request.http_request.url)
        if match:
            self.tables_requested.append(match.group(1))


def idle(count: int) -> list[Subscription]:
    return [
        Subscription(
            subscription_id=str(uuid.UUID(int=(n + 1) << 64 | 0x1D1E)),
            display_name=f"idle {n}",
            tenant_id="33333333-3333-3333-3333-333333333333",
            provider_subscription_id=PROVIDER,
            owners=(),
            state=SubscriptionState.ACTIVE,
        )
        for n in range(count)
    ]


def test_a_provider_page_reads_only_the_tables_of_tenants_with_usage(
    make_settings: Callable[..., Settings],
) -> None:
    """5,000 tenants of which 10 have usage: the page queries exactly those 10 tables."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    busy = [str(uuid.UUID(int=(n + 1) << 32 | 0xB05E)) for n in range(10)]
    quiet = idle(4_990)
    source = ScriptedSource(
        by_hour={T0: [vm_record(sid, T0, quantity=1.0 + n) for n, sid in enumerate(busy)]},
        listed=[subscription(PROVIDER, provider=None), *map(subscription, busy), *quiet],
    )
    account = StorageAccount(settings)
    account.ensure_tables()
    Collector(settings, account, source).collect_due_hours(T0 + HOUR + timedelta(minutes=5))
    assert Watermark(account, source.name).read() == T0

    counting = CountingAccount(settings)
    path = parse_path(f"/{PROVIDER}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates")
    params = {
        "api-version": "2015-06-01-preview",
        "reportedStartTime": T0.isoformat(),
        "reportedEndTime": (T0 + HOUR).isoformat(),
        "aggregationGranularity": "Hourly",
    }
    query = parse_query(path, params, T0 + 2 * HOUR)

    def with_usage(provider: str) -> set[str]:
        return active_tenants(counting, provider, T0, T0)

    scope = resolve_scope(ADMIN, query, SubscriptionStore(counting), with_usage)
    assert scope.subscription_ids == tuple(sorted(busy))
    page = UsageReader(counting).read_page(
        scope, query, PageState(visible_bound(query.granularity, T0), None)
    )
    assert sorted({row.subscription_id for row in page.rows}) == sorted(busy)
    usage_tables = {
        t for t in counting.tables_requested if t.startswith(settings.table_prefix + "u")
    }
    expected = {f"{settings.table_prefix}u{sid.replace('-', '')}" for sid in busy}
    assert usage_tables == expected
    # Scope and narrowing: one read of the provider's index, one of the day's activity.
    others = [t for t in counting.tables_requested if t not in usage_tables]
    assert sorted(set(others)) == [
        settings.table_name("activity"),
        settings.table_name("subscriptions"),
    ]
    assert len(others) == 3  # the target's entity, one activity day, one index lookup


@hypothesis_settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(min_value=0, max_value=10_000), hour_offset=st.integers(0, 23))
def test_billing_from_summaries_equals_billing_from_rows(
    make_settings: Callable[..., Settings], seed: int, hour_offset: int
) -> None:
    """For any fleet and hour, the summary's sums are exactly the rows' sums, per resource."""
    settings = make_settings(BILLING_CHARGEABLE_OVERRIDES=every_meter_chargeable())
    fleet = SimulatedFleet(FleetOptions(seed=seed, tenants=3))
    hour = T0 + hour_offset * HOUR
    account = StorageAccount(settings)
    account.ensure_tables()
    store = SubscriptionStore(account)
    listed = fleet.subscriptions(hour)
    store.sync(listed, store.all())
    for n, sub in enumerate(sorted(listed, key=lambda s: s.subscription_id)):
        if n % 2:  # half the tenants on a second billing resource, on another plan
            store.set_billing(sub.subscription_id, "resource-b", "plan-b")
    collector = Collector(settings, account, fleet)
    collector.collect_hour(hour)
    entries = read_hour(account, hour)
    resources = sorted({entry.billing_resource_id or "registration-local" for entry in entries})
    meters = ChargeableMeters(settings)
    with ThreadPoolExecutor(4) as pool:
        from_summary = hour_charges(account, hour, entries, resources, meters, pool)
        from_rows = hour_charges_from_rows(account, hour, entries, resources, meters, pool)
    assert from_summary.keys() == from_rows.keys()
    for resource_id, owed in from_rows.items():
        assert from_summary[resource_id].plan_id == owed.plan_id
        assert from_summary[resource_id].quantities == owed.quantities  # exact, not close
    assert any(owed.quantities for owed in from_rows.values())


@pytest.mark.parametrize("shrink", [False, True])
def test_a_recollected_hour_replaces_its_summary(
    make_settings: Callable[..., Settings], shrink: bool
) -> None:
    """Collecting an hour again leaves exactly the summary of what is stored now."""
    from shared.storage.hour_summary import read_hour_summary
    from tests.scripted_source import TENANT_A, TENANT_B

    settings = make_settings()
    source = ScriptedSource(
        by_hour={T0: [vm_record(TENANT_A, T0, quantity=2.0), vm_record(TENANT_B, T0)]}
    )
    account = StorageAccount(settings)
    account.ensure_tables()
    collector = Collector(settings, account, source)
    collector.collect_hour(T0)
    first = read_hour_summary(account, T0)
    assert first is not None
    collector.collect_hour(T0)
    assert read_hour_summary(account, T0) == first
    if shrink:
        store = SubscriptionStore(account)
        store.set_billing(TENANT_B, "resource-b", "plan-b")
        collector = Collector(settings, account, source)
        collector.collect_hour(T0)
        again = read_hour_summary(account, T0)
        assert again is not None
        assert set(again) == {"registration-local", "resource-b"}
        assert again["resource-b"].plan_id == "plan-b"


def test_reconciliation_names_a_summary_that_differs_from_the_rows(
    make_settings: Callable[..., Settings],
) -> None:
    """A summary entry that no longer equals its rows' sum is a summary-differs difference."""
    from devstack.commerce_emulator import CommerceEmulator
    from shared.billing.reconcile import reconcile
    from shared.storage.hour_summary import ROLE
    from tests.integration.test_report_support import fast_client
    from tests.scripted_source import TENANT_A

    settings = make_settings()
    source = ScriptedSource(by_hour={T0: [vm_record(TENANT_A, T0, quantity=2.0)]})
    account = StorageAccount(settings)
    account.ensure_tables()
    Collector(settings, account, source).collect_hour(T0)
    with CommerceEmulator() as emulator, fast_client(emulator) as client:
        clean = reconcile(account, client, T0, T0)
        assert not [d for d in clean.differences if d.kind == "summary-differs"]
        table = account.table(ROLE)
        (entry,) = [e for e in table.list_entities() if "~" not in e["RowKey"]]
        table.update_entity({**entry, "Quantity": 3.0, "Exact": "3/1"})
        found = reconcile(account, client, T0, T0)
    differs = [d for d in found.differences if d.kind == "summary-differs"]
    assert len(differs) == 1
    assert "summary 3.0, rows 2.0" in differs[0].detail


def test_a_work_items_summary_read_follows_its_resources_not_the_hour(
    make_settings: Callable[..., Settings],
) -> None:
    """An item's read is one request for its resources' keys, equals the whole summary's
    answer for them, and a part read mid-rewrite is read again, then left to the rows."""
    from fractions import Fraction

    from shared.storage.hour_summary import (
        PART_START,
        ROLE,
        TORN_READ_ATTEMPTS,
        ResourceSums,
        complete_hour_summary,
        read_hour_summary,
        read_resource_sums,
        resource_digest,
        write_hour_summary,
    )

    settings = make_settings()
    account = StorageAccount(settings)
    account.ensure_tables()

    def sums(count: int, scale: int) -> dict[str, ResourceSums]:
        return {
            f"resource-{n:03d}": ResourceSums(
                f"resource-{n:03d}",
                "plan",
                1 + n % 3,
                {"cpu": Fraction(n * scale, 7), "gb": Fraction(1, 3)} if n % 5 else {},
            )
            for n in range(count)
        }

    write_hour_summary(account, T0, "east.0of1", sums(150, 1))
    write_hour_summary(account, T0, "west.0of1", sums(40, 2))
    complete_hour_summary(account, T0, ["east.0of1", "west.0of1"])
    whole = read_hour_summary(account, T0)
    assert whole is not None
    # An item as the planner makes them: neighbours in digest order (one without sums).
    by_digest = sorted([*sums(150, 1), "missing"], key=resource_digest)
    start = max(0, by_digest.index("missing") - 2)
    wanted = by_digest[start : start + 5]
    digests = {resource_digest(r) for r in wanted}
    requests: list[str] = []
    counted = StorageAccount(settings, request_hook=lambda r: requests.append(r.http_request.url))
    assert read_resource_sums(counted, T0, wanted) == {r: whole[r] for r in wanted if r in whole}
    # One request for the hour marker, both parts' markers and the item's sums ...
    assert len(requests) == 1
    # ... whose range is the item's resources' digests and no wider.
    bounds = re.findall(r"Digest (?:ge|le) '([^']*)'", unquote(requests[0]))
    assert bounds == [min(digests), max(digests)]
    # Resources that are not neighbours are read right too (their range holds others).
    apart = [by_digest[0], by_digest[-1]]
    assert read_resource_sums(account, T0, apart) == {r: whole[r] for r in apart if r in whole}

    table = account.table(ROLE)
    partition = hour_key(T0)
    sample = next(r for r in wanted if r in whole and whole[r].quantities)
    row = table.get_entity(partition, f"east.0of1|{resource_digest(sample)}_cpu")

    def torn_states() -> Iterator[str]:
        """Each state a rewrite leaves a part in while under way: a sum of the next
        generation beside the markers of the last, the markers' generations apart, the
        done marker deleted (a rewrite too large for one transaction)."""
        table.upsert_entity({**row, "Generation": "next"})
        yield "a sum of another generation"
        write_hour_summary(account, T0, "east.0of1", sums(150, 1))
        start = table.get_entity(partition, f"west.0of1|{PART_START}")
        table.upsert_entity({**start, "Generation": "next"})
        yield "two generations"
        write_hour_summary(account, T0, "west.0of1", sums(40, 2))
        table.delete_entity(partition, "west.0of1|~done")
        yield "a marker missing"
        write_hour_summary(account, T0, "west.0of1", sums(40, 2))

    for state in torn_states():
        requests.clear()
        assert read_resource_sums(counted, T0, wanted) is None, state
        assert len(requests) == TORN_READ_ATTEMPTS, state

    # A torn read is read again, and the read after the rewrite ended is whole.
    table.upsert_entity({**row, "Generation": "next"})
    requests.clear()

    def rewrite_ends(request: Any) -> None:
        requests.append(request.http_request.url)
        if len(requests) == 2:  # the second read: the rewrite is over by then
            write_hour_summary(account, T0, "east.0of1", sums(150, 1))

    racing = StorageAccount(settings, request_hook=rewrite_ends)
    assert read_resource_sums(racing, T0, wanted) == {r: whole[r] for r in wanted if r in whole}
    assert len(requests) == 2
