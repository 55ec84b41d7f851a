"""The simulated fleet: determinism, grouping, units, lifecycle, lateness and sizing."""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.fleet import (
    APP_SERVICE_METERS,
    COMPUTE_METERS,
    DISK_METERS,
    EPOCH,
    METER_IDS,
    FleetOptions,
    M,
    ResourceKind,
    SimulatedFleet,
    VirtualMachine,
    VmState,
    options_for_rows,
)
from shared.core.hours import HOUR, is_on_hour
from shared.core.meters import catalogue
from shared.core.usage import UsageRecord
from shared.storage.subscriptions import Subscription, SubscriptionState

REPO = Path(__file__).resolve().parents[2]
HOUR_R = datetime(2026, 3, 10, 14, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def fleet() -> SimulatedFleet:
    return SimulatedFleet(FleetOptions(seed=7, tenants=12))


@pytest.fixture(scope="module")
def punctual() -> SimulatedFleet:
    """No late usage: usage(R) holds exactly usage hour R, which makes state checks direct."""
    return SimulatedFleet(FleetOptions(seed=3, tenants=18, late_share=0.0))


def _digest(records: Iterable[UsageRecord]) -> str:
    return hashlib.sha256("\n".join(repr(r) for r in records).encode()).hexdigest()


def _identity(record: UsageRecord) -> tuple[str, str, datetime, str, float]:
    return (
        record.subscription_id,
        record.meter_id,
        record.usage_start,
        record.resource_uri,
        record.quantity,
    )


def _tenant_subscriptions(fleet: SimulatedFleet, hour: datetime) -> list[Subscription]:
    return [s for s in fleet.subscriptions(hour) if not s.is_provider]


def _by_uri(records: Iterable[UsageRecord]) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for record in records:
        found.setdefault(record.resource_uri, {})[record.meter_id] = record.quantity
    return found


# --- determinism -------------------------------------------------------------------------


def test_same_hour_twice_gives_identical_records(fleet: SimulatedFleet) -> None:
    """Asking for one reported hour twice, with other hours in between, gives the same list."""
    first = list(fleet.usage(HOUR_R))
    list(fleet.usage(HOUR_R + 5 * DAY))
    list(fleet.usage(HOUR_R - 3 * HOUR))
    assert first
    assert list(fleet.usage(HOUR_R)) == first


def test_fresh_instance_in_another_order_gives_identical_records(fleet: SimulatedFleet) -> None:
    """A new instance that was asked other hours first answers the same, in the same order."""
    other = SimulatedFleet(FleetOptions(seed=7, tenants=12))
    other.subscriptions(HOUR_R + 40 * DAY)
    list(other.usage(HOUR_R + 2 * HOUR))
    assert list(other.usage(HOUR_R)) == list(fleet.usage(HOUR_R))
    assert other.subscriptions(HOUR_R) == fleet.subscriptions(HOUR_R)


def test_another_process_gives_identical_records(fleet: SimulatedFleet) -> None:
    """Nothing depends on Python's per-process string hash salt."""
    script = (
        "import hashlib; from datetime import datetime, UTC\n"
        "from devstack.fleet import FleetOptions, SimulatedFleet\n"
        "f = SimulatedFleet(FleetOptions(seed=7, tenants=12))\n"
        "r = f.usage(datetime(2026, 3, 10, 14, tzinfo=UTC))\n"
        "print(hashlib.sha256('\\n'.join(repr(x) for x in r).encode()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    result = subprocess.run(  # noqa: S603 (our own interpreter, a fixed script)
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == _digest(fleet.usage(HOUR_R))


def test_different_seeds_differ(fleet: SimulatedFleet) -> None:
    """Another seed is another fleet: other subscriptions, other records."""
    other = SimulatedFleet(FleetOptions(seed=8, tenants=12))
    ours = {s.subscription_id for s in fleet.subscriptions(HOUR_R)}
    theirs = {s.subscription_id for s in other.subscriptions(HOUR_R)}
    assert not ours & theirs
    assert _digest(other.usage(HOUR_R)) != _digest(fleet.usage(HOUR_R))
    assert other.admin_object_id != fleet.admin_object_id


def test_usage_is_streamed_and_rejects_bad_hours(fleet: SimulatedFleet) -> None:
    """usage() returns a generator; naive or off-the-hour reported hours are refused."""
    assert inspect.isgenerator(fleet.usage(HOUR_R))
    with pytest.raises(ValueError, match="naive"):
        fleet.usage(datetime(2026, 3, 10, 14))
    with pytest.raises(ValueError, match="on the hour"):
        fleet.usage(HOUR_R + timedelta(minutes=30))


def test_options_are_validated() -> None:
    """Impossible options fail at construction, not hours later."""
    with pytest.raises(ValueError, match="tenant"):
        FleetOptions(tenants=0)
    with pytest.raises(ValueError, match="late_share"):
        FleetOptions(late_share=1.5)
    with pytest.raises(ValueError, match="scale"):
        FleetOptions(scale=0)
    with pytest.raises(ValueError, match="on the hour"):
        FleetOptions(epoch=EPOCH + timedelta(minutes=1))


# --- grouping and listing ----------------------------------------------------------------


def test_records_are_grouped_by_subscription(fleet: SimulatedFleet) -> None:
    """All records of one subscription are contiguous, in several reported hours."""
    for hour in (HOUR_R, HOUR_R + 17 * DAY, HOUR_R + 130 * DAY):
        finished: set[str] = set()
        current = None
        for record in fleet.usage(hour):
            if record.subscription_id != current:
                assert record.subscription_id not in finished
                if current is not None:
                    finished.add(current)
                current = record.subscription_id
        assert len(finished) > 5


def test_every_subscription_with_records_is_listed(fleet: SimulatedFleet) -> None:
    """Every record's subscription is in subscriptions(hour), including deleted ones."""
    for day in range(0, 200, 9):
        hour = EPOCH + day * DAY + 13 * HOUR
        listed = {s.subscription_id for s in fleet.subscriptions(hour)}
        assert {r.subscription_id for r in fleet.usage(hour)} <= listed


def test_records_come_only_from_tenant_subscriptions(fleet: SimulatedFleet) -> None:
    """Provider subscriptions consume nothing; usage starts at the epoch."""
    providers = {s.subscription_id for s in fleet.subscriptions(HOUR_R) if s.is_provider}
    assert not {r.subscription_id for r in fleet.usage(HOUR_R)} & providers
    assert list(fleet.usage(EPOCH - HOUR)) == []
    assert all(r.usage_start >= EPOCH for r in fleet.usage(EPOCH + 2 * HOUR))


# --- units --------------------------------------------------------------------------------


def _demo_vm(fleet: SimulatedFleet, hour: datetime) -> tuple[Subscription, VirtualMachine]:
    """The always-on Windows Standard_A4 of the first directory's first slot."""
    for subscription in _tenant_subscriptions(fleet, hour):
        if subscription.state is not SubscriptionState.ACTIVE:
            continue
        for resource in fleet.resources(subscription.subscription_id):
            if (
                isinstance(resource, VirtualMachine)
                and resource.size == "Standard_A4"
                and resource.windows
                and fleet.vm_state(resource, hour) is VmState.RUNNING
                and resource.start <= hour.timestamp() // 3600
            ):
                return subscription, resource
    raise AssertionError("no running Windows Standard_A4 in the fleet")


def test_windows_standard_a4_full_hour_units(punctual: SimulatedFleet) -> None:
    """A running Windows Standard_A4 gives 8 Windows and 8 Base VM Size Hours and 1 VM hour."""
    for day in range(0, 300, 5):
        hour = EPOCH + day * DAY + 10 * HOUR
        try:
            _, vm = _demo_vm(punctual, hour)
        except AssertionError:
            continue
        meters = _by_uri(punctual.usage(hour))[vm.resource_uri]
        assert meters == {M.WINDOWS_VM: 8.0, M.BASE_VM: 8.0, M.VM_HOURS: 1.0}
        assert vm.info == {"ServiceType": "Standard_A4", "ImageType": vm.image}
        assert vm.image.startswith("Windows Server")
        return
    raise AssertionError("the demo VM was never running in an active subscription")


def test_every_vm_reports_its_vcpus_and_linux_has_no_windows_meter(
    punctual: SimulatedFleet,
) -> None:
    """Each emitting VM: Base = vCPUs, VM hours = 1; Windows meter = vCPUs only on Windows."""
    hour = HOUR_R
    usage = _by_uri(punctual.usage(hour))
    linux = windows = 0
    for subscription in _tenant_subscriptions(punctual, hour):
        for vm in punctual.resources(subscription.subscription_id):
            if not isinstance(vm, VirtualMachine) or vm.resource_uri not in usage:
                continue
            meters = usage[vm.resource_uri]
            assert meters[M.BASE_VM] == vm.vcpus
            assert meters[M.VM_HOURS] == 1.0
            if vm.windows:
                windows += 1
                assert meters[M.WINDOWS_VM] == vm.vcpus
            else:
                linux += 1
                assert M.WINDOWS_VM not in meters
                assert not vm.image.startswith("Windows")
    assert linux > 3
    assert windows > 3


def test_deallocated_vms_emit_nothing_running_and_stopped_do(punctual: SimulatedFleet) -> None:
    """Deallocated VMs are silent; running and stopped VMs of active subscriptions emit."""
    seen: Counter[VmState] = Counter()
    for offset in range(0, 72, 5):
        hour = HOUR_R + offset * HOUR
        usage = _by_uri(punctual.usage(hour))
        for subscription in _tenant_subscriptions(punctual, hour):
            if subscription.state is not SubscriptionState.ACTIVE:
                continue
            for vm in punctual.resources(subscription.subscription_id):
                if not isinstance(vm, VirtualMachine) or vm.start > hour.timestamp() // 3600:
                    continue
                state = punctual.vm_state(vm, hour)
                seen[state] += 1
                emitted = vm.resource_uri in usage
                assert emitted == (state is not VmState.DEALLOCATED), (vm.name, state)
    assert all(seen[state] > 0 for state in VmState)


def test_suspended_subscription_emits_no_compute_but_storage(punctual: SimulatedFleet) -> None:
    """While suspended, no VM or App Service meters; capacity, disks and IPs still accrue."""
    checked = 0
    for day in range(0, 320, 2):
        hour = EPOCH + day * DAY + 12 * HOUR
        suspended = [
            s
            for s in _tenant_subscriptions(punctual, hour)
            if s.state is SubscriptionState.SUSPENDED
        ]
        if not suspended:
            continue
        records = list(punctual.usage(hour))
        for subscription in suspended:
            mine = [r for r in records if r.subscription_id == subscription.subscription_id]
            meters = {r.meter_id for r in mine}
            assert not meters & (COMPUTE_METERS | APP_SERVICE_METERS)
            assert M.BLOCK_BLOB_CAPACITY in meters
            checked += 1
    assert checked >= 3


def test_deleted_subscription_emits_nothing_after_deletion() -> None:
    """No usage hour at or after deletion is ever reported; late earlier hours still arrive."""
    fleet = SimulatedFleet(FleetOptions(seed=5, tenants=24, late_share=0.5))
    end = EPOCH + 200 * DAY
    deleted = [s for s in _tenant_subscriptions(fleet, end) if s.state is SubscriptionState.DELETED]
    assert len(deleted) >= 5
    late_after_deletion = 0
    for subscription in deleted[:8]:
        life = fleet.lifecycle(subscription.subscription_id)
        if life.deleted <= EPOCH:
            continue
        for offset in range(0, 10):
            reported = life.deleted + offset * HOUR
            sid = subscription.subscription_id
            mine = [r for r in fleet.usage(reported) if r.subscription_id == sid]
            assert all(r.usage_end <= life.deleted for r in mine)
            late_after_deletion += len(mine)
            assert not [
                r
                for r in fleet.usage_of_hour(reported)
                if r.subscription_id == subscription.subscription_id
            ]
        assert fleet.state_at(subscription.subscription_id, life.deleted) is (
            SubscriptionState.DELETED
        )
    assert late_after_deletion > 0


# --- lateness -----------------------------------------------------------------------------


@pytest.mark.parametrize("late_share", [0.1, 0.35])
def test_share_of_late_records_is_about_late_share(late_share: float) -> None:
    """Over a day, the share of records reported after their usage hour is ~late_share."""
    fleet = SimulatedFleet(FleetOptions(seed=2, tenants=12, late_share=late_share))
    late = total = 0
    for offset in range(24):
        hour = HOUR_R + offset * HOUR
        for record in fleet.usage(hour):
            total += 1
            late += record.usage_start != hour
    assert total > 10_000
    assert abs(late / total - late_share) < 0.04


def test_late_records_keep_their_true_window(fleet: SimulatedFleet) -> None:
    """Late records carry a one-hour window 1..6 hours before the reported hour."""
    delays: Counter[int] = Counter()
    for offset in range(12):
        hour = HOUR_R + offset * HOUR
        for record in fleet.usage(hour):
            assert record.usage_end - record.usage_start == HOUR
            delay = (hour - record.usage_start) // HOUR
            assert 0 <= delay <= 6
            delays[delay] += 1
    assert set(delays) == set(range(7))


def test_each_usage_hour_is_reported_exactly_once(fleet: SimulatedFleet) -> None:
    """Records of usage hour U over reported hours U..U+6 are exactly the full usage of U."""
    for usage_hour in (HOUR_R, HOUR_R + 45 * DAY + 3 * HOUR):
        reported: Counter[tuple[str, str, datetime, str, float]] = Counter()
        for delay in range(7):
            for record in fleet.usage(usage_hour + delay * HOUR):
                if record.usage_start == usage_hour:
                    reported[_identity(record)] += 1
        truth = Counter(_identity(r) for r in fleet.usage_of_hour(usage_hour))
        assert truth
        assert reported == truth


def test_without_lateness_reported_hour_is_usage_hour(punctual: SimulatedFleet) -> None:
    """With late_share 0 a reported hour holds exactly the full usage of that hour."""
    assert list(punctual.usage(HOUR_R)) == list(punctual.usage_of_hour(HOUR_R))


# --- hierarchy and lifecycle --------------------------------------------------------------


def test_provider_hierarchy(fleet: SimulatedFleet) -> None:
    """One default provider, delegated ones offered by it, every tenant under a provider."""
    listed = fleet.subscriptions(HOUR_R)
    providers = {s.subscription_id: s for s in listed if s.is_provider}
    roots = [s for s in providers.values() if s.provider_subscription_id is None]
    assert len(roots) == 1
    root = roots[0]
    assert root.owners == (fleet.admin_object_id,)
    delegated = [s for s in providers.values() if s is not root]
    assert len(delegated) == max(1, 12 // 6)
    for provider in delegated:
        assert provider.provider_subscription_id == root.subscription_id
        assert provider.tenant_id != root.tenant_id
        assert fleet.admin_object_id not in provider.owners
    tenants = [s for s in listed if not s.is_provider]
    assert {s.provider_subscription_id for s in tenants} <= set(providers)
    direct = {s.tenant_id for s in tenants if s.provider_subscription_id == root.subscription_id}
    assert 0 < len(direct) < len({s.tenant_id for s in tenants})
    for subscription in tenants:
        assert 1 <= len(subscription.owners) <= 2
        assert len(subscription.readers) <= 1
        assert not set(subscription.readers) & set(subscription.owners)
        assert subscription.display_name
        assert subscription.offer


def test_lifecycle_suspends_deletes_and_creates(fleet: SimulatedFleet) -> None:
    """Over ~120 days, subscriptions get suspended, deleted and newly created."""
    start = {s.subscription_id for s in _tenant_subscriptions(fleet, EPOCH)}
    states: dict[SubscriptionState, set[str]] = {state: set() for state in SubscriptionState}
    seen: set[str] = set()
    for hour in range(0, 120 * 24, 6):
        for subscription in _tenant_subscriptions(fleet, EPOCH + hour * HOUR):
            states[subscription.state].add(subscription.subscription_id)
            seen.add(subscription.subscription_id)
    assert states[SubscriptionState.SUSPENDED]
    assert len(states[SubscriptionState.DELETED] & start) >= 2
    assert len(seen - start) >= 2
    for subscription_id in seen - start:
        life = fleet.lifecycle(subscription_id)
        assert EPOCH < life.created < life.deleted
        assert all(life.created <= s < e <= life.deleted for s, e in life.suspended)


# --- records ------------------------------------------------------------------------------


def test_meter_ids_exist_in_catalogue_with_same_spelling(fleet: SimulatedFleet) -> None:
    """Every meter id the fleet knows or emits is a current catalogue id, spelled alike."""
    meters = catalogue()
    for meter_id in METER_IDS:
        meter = meters.lookup(meter_id)
        assert meter is not None, meter_id
        assert meter.meter_id == meter_id
        assert not meter.deprecated
    emitted = Counter(r.meter_id for r in fleet.usage(HOUR_R))
    assert set(emitted) <= METER_IDS
    assert len(emitted) >= 20


def test_records_are_well_formed(fleet: SimulatedFleet) -> None:
    """Quantities finite and > 0, one-hour windows on the hour, ARM resource URIs."""
    namespaces = {
        ResourceKind.VIRTUAL_MACHINE: "/providers/Microsoft.Compute/virtualMachines/",
        ResourceKind.DISK: "/providers/Microsoft.Compute/disks/",
        ResourceKind.STORAGE_ACCOUNT: "/providers/Microsoft.Storage/storageAccounts/",
        ResourceKind.PUBLIC_IP: "/providers/Microsoft.Network/publicIPAddresses/",
        ResourceKind.SQL_DATABASE: "/providers/Microsoft.SQLAdapter/databases/",
        ResourceKind.MYSQL_DATABASE: "/providers/Microsoft.MySQLAdapter/databases/",
        ResourceKind.APP_SERVICE_PLAN: "/providers/Microsoft.Web/serverfarms/",
        ResourceKind.WEB_APP: "/providers/Microsoft.Web/sites/",
        ResourceKind.FUNCTION_APP: "/providers/Microsoft.Web/sites/",
    }
    tags: Counter[bool] = Counter()
    for offset in (0, 7, 30):
        for record in fleet.usage(HOUR_R + offset * HOUR):
            assert isinstance(record.quantity, float)
            assert math.isfinite(record.quantity)
            assert record.quantity > 0
            assert is_on_hour(record.usage_start)
            assert record.usage_start.tzinfo is not None
            assert record.usage_end - record.usage_start == HOUR
            assert record.location == "local"
            assert record.resource_uri.startswith(f"/subscriptions/{record.subscription_id}/")
            assert "/resourceGroups/rg-" in record.resource_uri
            tags[record.tags is None] += 1
    assert tags[True]
    assert tags[False]
    for subscription in _tenant_subscriptions(fleet, HOUR_R)[:6]:
        for resource in fleet.resources(subscription.subscription_id):
            assert namespaces[resource.kind] in resource.resource_uri
            assert resource.resource_uri.endswith("/" + resource.name)


def test_capacity_and_point_in_time_quantities(fleet: SimulatedFleet) -> None:
    """Disks accrue 1/730 of a disk-month per hour and IPs 1.0 per hour."""
    disk_meters = set(DISK_METERS.values())
    records = list(fleet.usage(HOUR_R))
    disks = [r for r in records if r.meter_id in disk_meters]
    ips = [r for r in records if r.meter_id in (M.STATIC_IP, M.DYNAMIC_IP)]
    assert disks
    assert ips
    assert all(r.quantity == pytest.approx(1 / 730) for r in disks)
    assert all(r.quantity == 1.0 for r in ips)


# --- sizing -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [1_500, 25_000])
def test_options_for_rows_hits_its_target(target: int) -> None:
    """A fleet sized by options_for_rows reports the target rows per hour within 20%."""
    options = options_for_rows(target, seed=4)
    fleet = SimulatedFleet(options)
    for hour in (EPOCH + 75 * DAY + 2 * HOUR, EPOCH + 200 * DAY + 15 * HOUR):
        rows = sum(1 for _ in fleet.usage(hour))
        assert abs(rows - target) <= 0.2 * target, (options.tenants, rows)


def test_scale_multiplies_rows_roughly_linearly() -> None:
    """Doubling scale roughly doubles the rows of a reported hour."""
    one = SimulatedFleet(FleetOptions(seed=9, tenants=30, scale=1.0))
    two = SimulatedFleet(FleetOptions(seed=9, tenants=30, scale=2.0))
    rows_one = sum(1 for _ in one.usage(HOUR_R))
    rows_two = sum(1 for _ in two.usage(HOUR_R))
    assert 1.6 < rows_two / rows_one < 2.4
