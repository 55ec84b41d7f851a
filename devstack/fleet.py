"""The simulated fleet: a deterministic Azure Stack Hub-like cloud that reports usage hourly.

Why it exists: the demos, the query API and billing need realistic usage without a real
stamp. The fleet behaves like one in the ways the pipeline has to get right, and answers
the same reported hour identically every time it is asked (in any process, in any order of
calls), because the collector's idempotency rests on it.

The model
---------
Hierarchy. One default provider subscription (owned by the service admin,
``admin_object_id``), ``max(1, tenants // 6)`` delegated provider subscriptions offered by
it (each owned by its own provider admin in its own directory tenant), and ``tenants``
directory tenants (companies). About half of the directories are direct tenants of the
default provider; the rest are spread over the delegated providers. Each directory has 1-3
subscription *slots* ("Contoso dev", "Contoso prod"); owners are 1-2 of the directory's
users, readers 0-1.

Lifecycle. A slot goes through generations: a subscription is created, lives for weeks to
months, is now and then suspended for 1-3 days (often just before it is deleted), is
deleted, and a successor with a new subscription id is created days or weeks later. Slot
histories start up to five months before ``epoch``, so the fleet is in a steady state from
the first reported hour; usage is only reported for usage hours at or after ``epoch``, and
subscriptions deleted before it are never listed (the pipeline never saw them).
Provider subscriptions are always active and consume nothing. States change on hour
boundaries; ``subscriptions(hour)`` reports the state that held during that hour.

Resources. Each subscription generation gets an inventory (deterministic per subscription
id, cached): Windows and Linux VMs of real sizes with their true vCPU counts, managed disks,
storage accounts, static and dynamic public IPs, SQL and MySQL databases, App Service plans
with web apps and function apps. Counts are multiplied by ``FleetOptions.scale``. The first
slot of the first directory always holds an always-on Windows ``Standard_A4`` (the demo VM).

Units (per full usage hour; every record covers exactly one hour):

- VMs run, stop and deallocate on schedules (always on, office hours with auto-shutdown,
  stopped at night, deallocated for days at a time, nightly batch). Running *and* stopped
  VMs emit; deallocated ones emit nothing. Per VM-hour: ``Base VM Size Hours`` = vCPUs,
  ``Windows VM Size Hours`` = vCPUs (Windows only), ``VM size hours`` = 1. A Windows
  Standard_A4 (8 vCPUs) running a full hour is 8 + 8 + 1.
- Managed disks: the current ``Count of Disks*month`` meter of the disk's tier, 1/730 per
  hour (a month is 730 hours), whatever the VM's state.
- Storage accounts: Block blob, page blob, table and queue capacity in GB*hours (the size
  in GB for a full hour, drifting slowly); transactions in 10,000s and data in/out in GB,
  emitted only in hours where they are above zero.
- Public IPs: 1.0 per IP per hour (point in time). Databases: size in MB per hour.
- App Service plans: ``App Service`` = worker vCPUs x workers, the tier's hours = workers;
  ``Web Process`` = 1 per web app; function apps report requests (in 10s) and GB-s.
- Suspended subscriptions: compute and App Service emit nothing; disks, storage, IPs and
  databases keep accruing. Deleted subscriptions emit nothing for usage hours from the
  deletion on.

Lateness (the time semantics of spec/usage-api.md). The usage of resource r in usage hour U
has a delay ``d(r, U)``: 0 with probability ``1 - late_share``, else uniform in 1..6 hours,
drawn from a hash of (r, U). It is reported in reported hour ``U + d`` with its true usage
window ``[U, U + 1h)``. So ``usage(R)`` holds, for each resource, the usage of the hours
U in ``[R - 6, R]`` whose delay is exactly ``R - U``: every usage hour is reported exactly
once, late usage of a deleted subscription can still arrive after its deletion, and
``usage_of_hour(U)`` is the full usage of U (what R..R+6 add up to).

Size and speed. At scale 1 a directory tenant yields about ``ROWS_PER_TENANT_HOUR`` (~68)
records per reported hour on average (single tenants differ a lot; the fleet total moves
by a few percent over a day); ``options_for_rows`` picks ``tenants`` for a target.
Generation runs at ~200,000 records/s on one core once inventories are cached (~110,000/s in
the first hour asked, which builds them): inventories and lifecycles are built once per
subscription; the per-hour work is seven integer mixes per resource (its lateness) plus
one ``UsageRecord`` per row. Records of one resource share their
``tags`` and ``additional_info`` dicts: treat them as read-only.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any, NamedTuple

from shared.collection.sources import SOURCES, SourceRegistry
from shared.core.config import Settings
from shared.core.hours import HOUR, as_utc, is_on_hour
from shared.core.usage import UsageRecord
from shared.storage.subscriptions import Subscription, SubscriptionState

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
MAX_DELAY_HOURS = 6
# Approximate records per directory tenant per reported hour at scale 1 (1,000 tenants of
# the default seed, sampled over weeks in January, April and November: 66-72).
ROWS_PER_TENANT_HOUR = 68

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_HOURS_PER_MONTH = 730.0
_DAY = 24


# Meter ids exactly as shared/core/meters.csv spells them (validated against it in the tests).
class M:
    """Meter ids the fleet emits."""

    BASE_VM = "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5"
    WINDOWS_VM = "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A"
    VM_HOURS = "6DAB500F-A4FD-49C4-956D-229BB9C8C793"
    STATIC_IP = "F271A8A388C44D93956A063E1D2FA80B"
    DYNAMIC_IP = "9E2739BA86744796B465F64674B822BA"
    BLOCK_BLOB_CAPACITY = "09F8879E-87E9-4305-A572-4B7BE209F857"
    PAGE_BLOB_CAPACITY = "B5C15376-6C94-4FDD-B655-1A69D138ACA3"
    TABLE_CAPACITY = "B4438D5D-453B-4EE1-B42A-DC72E377F1E4"
    QUEUE_CAPACITY = "B03C6AE7-B080-4BFA-84A3-22C800F315C6"
    BLOB_TRANSACTIONS = "43DAF82B-4618-444A-B994-40C23F7CD438"
    BLOB_IN = "9764F92C-E44A-498E-8DC1-AAD66587A810"
    BLOB_OUT = "3023FEF4-ECA5-4D7B-87B3-CFBC061931E8"
    TABLE_TRANSACTIONS = "B9FF3CD0-28AA-4762-84BB-FF8FBAEA6A90"
    TABLE_IN = "50A1AEAF-8ECA-48A0-8973-A5B3077FEE0D"
    TABLE_OUT = "1B8C1DEC-EE42-414B-AA36-6229CF199370"
    QUEUE_TRANSACTIONS = "EB43DD12-1AA6-4C4B-872C-FAF15A6785EA"
    QUEUE_IN = "E518E809-E369-4A45-9274-2017B29FFF25"
    QUEUE_OUT = "DD0A10BA-A5D6-4CB6-88C0-7D585CEF9FC2"
    SQL_SIZE = "CBCFEF9A-B91F-4597-A4D3-01FE334BED82"
    MYSQL_SIZE = "E6D8CFCD-7734-495E-B1CC-5AB0B9C24BD3"
    APP_SERVICE = "190C935E-9ADA-48FF-9AB8-56EA1CF9ADAA"
    SMALL_STANDARD = "88039D51-A206-3A89-E9DE-C5117E2D10A6"
    MEDIUM_STANDARD = "83A2A13E-4788-78DD-5D55-2831B68ED825"
    LARGE_STANDARD = "1083B9DB-E9BB-24BE-A5E9-D6FDD0DDEFE6"
    WEB_PROCESS = "73215A6C-FA54-4284-B9C1-7E8EC871CC5B"
    FUNCTIONS_REQUESTS = "67CC4AFC-0691-48E1-A4B8-D744D1FEDBDE"
    FUNCTIONS_COMPUTE = "D1D04836-075C-4F27-BF65-0A1130EC60ED"


# Current "Count of Disks*month" meters by disk tier.
DISK_METERS: dict[str, str] = {
    "S4": "380874f9-300c-48e0-95a0-d2d9a21ade8f",
    "S6": "1b77d90f-427b-4435-b4f1-d78adec53222",
    "S10": "d5f7731b-f639-404a-89d0-e46186e22c8d",
    "S15": "ff85ef31-da5b-4eac-95dd-a69d6f97b18a",
    "S20": "88ea9228-457a-4091-adc9-ad5194f30b6e",
    "S30": "5b1db88a-8596-4002-8052-347947c26940",
    "S40": "14496322-39cb-4d33-b67d-39b0c2de0c8e",
    "S50": "8c003d25-afb4-4f21-b1fa-86a5b0f001c7",
    "P4": "7660b45b-b29d-49cb-b816-59f30fbab011",
    "P6": "817007fd-a077-477f-bc01-b876f27205fd",
    "P10": "e554b6bc-96cd-4938-a5b5-0da990278519",
    "P15": "cdc0f53a-62a9-4472-a06c-e99a23b02907",
    "P20": "b9cb2d1a-84c2-4275-aa8b-70d2145d59aa",
    "P30": "06bde724-9f94-43c0-84c3-d0fc54538369",
    "P40": "eecb2657-e7e6-47f9-9b00-7f58fa8839cb",
    "P50": "43626c21-849b-40fe-8c01-e19666059c38",
}

# Every meter id the fleet can emit.
METER_IDS: frozenset[str] = frozenset(
    [value for name, value in vars(M).items() if name.isupper()] + list(DISK_METERS.values())
)
COMPUTE_METERS: frozenset[str] = frozenset({M.BASE_VM, M.WINDOWS_VM, M.VM_HOURS})
APP_SERVICE_METERS: frozenset[str] = frozenset(
    {
        M.APP_SERVICE,
        M.SMALL_STANDARD,
        M.MEDIUM_STANDARD,
        M.LARGE_STANDARD,
        M.WEB_PROCESS,
        M.FUNCTIONS_REQUESTS,
        M.FUNCTIONS_COMPUTE,
    }
)

# Real Azure sizes and their vCPU counts; premium-capable sizes get premium disks.
VM_SIZES: dict[str, int] = {
    "Standard_A1": 1,
    "Standard_A2": 2,
    "Standard_A3": 4,
    "Standard_A4": 8,
    "Standard_D1_v2": 1,
    "Standard_D2_v2": 2,
    "Standard_D3_v2": 4,
    "Standard_D4_v2": 8,
    "Standard_DS1_v2": 1,
    "Standard_DS2_v2": 2,
    "Standard_DS3_v2": 4,
    "Standard_F2s": 2,
    "Standard_F4s": 4,
    "Standard_D2s_v3": 2,
    "Standard_D4s_v3": 4,
    "Standard_D8s_v3": 8,
}
_SIZE_NAMES = tuple(VM_SIZES)
_PREMIUM_SIZES = frozenset(s for s in VM_SIZES if "DS" in s or s.endswith(("s", "s_v3")))
_WINDOWS_IMAGES = ("Windows Server 2022", "Windows Server 2019", "Windows Server 2016")
_LINUX_IMAGES = (
    "Ubuntu Server 22.04 LTS",
    "Ubuntu Server 20.04 LTS",
    "Red Hat Enterprise Linux 9",
    "SUSE Linux Enterprise Server 15",
    "Debian 12",
)
_DATA_DISK_TIERS = ("6", "10", "10", "15", "20", "30", "40", "50")
# App Service worker tiers: (tier meter, worker vCPUs, size name).
_APP_TIERS = (
    (M.SMALL_STANDARD, 1, "S1"),
    (M.SMALL_STANDARD, 1, "S1"),
    (M.MEDIUM_STANDARD, 2, "S2"),
    (M.MEDIUM_STANDARD, 2, "S2"),
    (M.LARGE_STANDARD, 4, "S3"),
)

# Relative activity by local hour of day (storage traffic, function calls).
_DIURNAL = (
    0.12, 0.08, 0.06, 0.05, 0.06, 0.1, 0.25, 0.5, 0.8, 0.95, 1.0, 1.0,
    0.95, 1.0, 1.0, 0.95, 0.85, 0.7, 0.55, 0.45, 0.38, 0.3, 0.22, 0.16,
)  # fmt: skip

_COMPANIES = (
    "Contoso", "Fabrikam", "Northwind Traders", "Tailspin Toys", "Woodgrove Bank",
    "Adventure Works", "Litware", "Proseware", "Wide World Importers", "Alpine Ski House",
    "Coho Winery", "Fourth Coffee", "Lamna Healthcare", "Margie's Travel", "Relecloud",
    "Trey Research", "Wingtip Toys", "Humongous Insurance", "Blue Yonder Airlines",
    "Lucerne Publishing", "Graphic Design Institute", "Consolidated Messenger", "VanArsdel",
    "Bellows College", "Best For You Organics", "A. Datum", "Munson's Pickles", "Southridge Video",
    "City Power & Light", "First Up Consultants", "Nod Publishers", "Liberty's Delightful Sinful",
)  # fmt: skip
_RESELLERS = (
    "Fabrikam Cloud Services", "Tailspin Hosting", "Northwind IT Partners",
    "Woodgrove Managed Cloud", "Contoso Reseller", "Litware Cloud",
)  # fmt: skip
_PURPOSES = ("prod", "dev", "test", "web", "data", "staging", "analytics", "erp")
_DEFAULT_OFFERS = ("Standard IaaS", "Dev/Test", "Web + SQL", "Enterprise IaaS + PaaS")


class ResourceKind(StrEnum):
    VIRTUAL_MACHINE = "virtualMachine"
    DISK = "disk"
    STORAGE_ACCOUNT = "storageAccount"
    PUBLIC_IP = "publicIPAddress"
    SQL_DATABASE = "sqlDatabase"
    MYSQL_DATABASE = "mysqlDatabase"
    APP_SERVICE_PLAN = "appServicePlan"
    WEB_APP = "webApp"
    FUNCTION_APP = "functionApp"


class VmState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    DEALLOCATED = "deallocated"


class VmSchedule(StrEnum):
    ALWAYS_ON = "always-on"
    OFFICE_HOURS = "office-hours"  # weekdays 08-18 local, auto-shutdown deallocates
    STOPPED_AT_NIGHT = "stopped-at-night"  # stopped (not deallocated) 22-07 local
    DEALLOCATED_SPELLS = "deallocated-spells"  # off for days at a time
    NIGHTLY_BATCH = "nightly-batch"  # runs 01-06 UTC, deallocated otherwise


_SCHEDULES = tuple(VmSchedule)
_SCHEDULE_WEIGHTS = (35, 55, 70, 90, 100)  # cumulative: 35/20/15/20/10 %


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """What shapes the fleet; the same options give the same fleet in every process."""

    seed: int = 1
    tenants: int = 12  # directory tenants
    late_share: float = 0.1  # share of resource-hours reported 1-6 hours late
    scale: float = 1.0  # multiplies resources per subscription
    epoch: datetime = EPOCH  # first usage hour the fleet reports
    region: str = "local"

    def __post_init__(self) -> None:
        if self.tenants < 1:
            raise ValueError("a fleet needs at least one directory tenant")
        if not 0.0 <= self.late_share <= 1.0:
            raise ValueError("late_share is a share between 0 and 1")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError("scale must be a positive finite number")
        if not is_on_hour(as_utc(self.epoch)):
            raise ValueError("epoch must be on the hour")


def _derive(*parts: object) -> int:
    """A stable 64-bit integer from ``parts`` (never Python's salted ``hash``)."""
    text = "\x1f".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _uuid(*parts: object) -> str:
    text = "\x1f".join(str(part) for part in parts).encode()
    return str(uuid.UUID(bytes=hashlib.blake2b(text, digest_size=16).digest(), version=4))


def _mix(x: int) -> int:
    """SplitMix64's finaliser: a cheap, well-spread 64-bit hash of an integer."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _unix_hour(moment: datetime) -> int:
    moment = as_utc(moment)
    if not is_on_hour(moment):
        raise ValueError(f"{moment.isoformat()} is not on the hour")
    return int(moment.timestamp()) // 3600


def _hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)


def _scaled(rng: random.Random, count: float, scale: float) -> int:
    """``count x scale`` rounded up or down at random, so the mean scales linearly."""
    exact = count * scale
    whole = int(exact)
    return whole + (1 if rng.random() < exact - whole else 0)


_Quantities = Sequence[tuple[str, float]]


class _Common(NamedTuple):
    kind: ResourceKind
    key: int
    name: str
    resource_uri: str
    start: int
    tags: dict[str, Any] | None
    info: dict[str, Any] | None


class FleetResource(ABC):
    """One resource instance of a subscription generation's inventory."""

    __slots__ = ("info", "key", "kind", "name", "resource_uri", "start", "tags")

    def __init__(self, common: _Common) -> None:
        self.kind = common.kind
        self.key = common.key  # 64-bit hash: drives lateness and hourly noise
        self.name = common.name
        self.resource_uri = common.resource_uri
        self.start = common.start  # first unix hour the resource exists
        self.tags = common.tags
        self.info = common.info

    @abstractmethod
    def emit(self, hour: int, suspended: bool) -> _Quantities:
        """(meter id, quantity) of one full usage hour; empty when it consumed nothing."""


class FixedResource(FleetResource):
    """Disks, IPs: the same quantities every hour of its life, suspended or not."""

    __slots__ = ("quantities",)

    def __init__(self, common: _Common, quantities: _Quantities) -> None:
        super().__init__(common)
        self.quantities = quantities

    def emit(self, hour: int, suspended: bool) -> _Quantities:
        return self.quantities


class VirtualMachine(FleetResource):
    __slots__ = ("image", "quantities", "schedule", "size", "tz", "vcpus", "windows")

    def __init__(
        self,
        common: _Common,
        size: str,
        windows: bool,
        image: str,
        schedule: VmSchedule,
        tz: int,
    ) -> None:
        super().__init__(common)
        self.size = size
        self.vcpus = VM_SIZES[size]
        self.windows = windows
        self.image = image
        self.schedule = schedule
        self.tz = tz  # the owner's UTC offset in hours, for office-hours schedules
        cores = float(self.vcpus)
        self.quantities: _Quantities = (
            ((M.BASE_VM, cores), (M.WINDOWS_VM, cores), (M.VM_HOURS, 1.0))
            if windows
            else ((M.BASE_VM, cores), (M.VM_HOURS, 1.0))
        )

    def state(self, hour: int) -> VmState:
        """The VM's power state throughout unix hour ``hour`` (its schedule alone)."""
        schedule = self.schedule
        if schedule is VmSchedule.ALWAYS_ON:
            return VmState.RUNNING
        local = hour + self.tz
        hod = local % 24
        if schedule is VmSchedule.OFFICE_HOURS:
            weekday = (local // 24 + 3) % 7  # 1970-01-01 was a Thursday
            working = weekday < 5 and 8 <= hod < 18
            return VmState.RUNNING if working else VmState.DEALLOCATED
        if schedule is VmSchedule.STOPPED_AT_NIGHT:
            return VmState.RUNNING if 7 <= hod < 22 else VmState.STOPPED
        if schedule is VmSchedule.NIGHTLY_BATCH:
            return VmState.RUNNING if 1 <= hour % 24 < 6 else VmState.DEALLOCATED
        block = _mix(self.key ^ ((hour + self.tz) // 72))  # three-day blocks
        if block & 0xFF < 90:
            return VmState.DEALLOCATED
        if (block >> 8) & 0xFF < 40:
            return VmState.STOPPED
        return VmState.RUNNING

    def emit(self, hour: int, suspended: bool) -> _Quantities:
        if suspended or self.state(hour) is VmState.DEALLOCATED:
            return ()
        return self.quantities


class StorageAccount(FleetResource):
    __slots__ = ("blob_gb", "growth", "page_gb", "phase", "queue_gb", "table_gb", "traffic")

    def __init__(
        self,
        common: _Common,
        sizes: tuple[float, float, float, float],
        growth: float,
        traffic: tuple[float, float, float],
    ) -> None:
        super().__init__(common)
        self.blob_gb, self.page_gb, self.table_gb, self.queue_gb = sizes
        self.growth = growth  # relative growth per day
        self.traffic = traffic  # transactions per busy hour: blob, table, queue
        self.phase = (self.key & 0xFFFF) / 1000.0

    def emit(self, hour: int, suspended: bool) -> _Quantities:
        days = (hour - self.start) / 24.0
        drift = (1.0 + self.growth * days) * (1.0 + 0.02 * math.sin(hour * 0.0437 + self.phase))
        out: list[tuple[str, float]] = [(M.BLOCK_BLOB_CAPACITY, round(self.blob_gb * drift, 6))]
        if self.page_gb:
            out.append((M.PAGE_BLOB_CAPACITY, round(self.page_gb * drift, 6)))
        if self.table_gb:
            out.append((M.TABLE_CAPACITY, round(self.table_gb * drift, 6)))
        if self.queue_gb:
            out.append((M.QUEUE_CAPACITY, round(self.queue_gb * drift, 6)))
        noise = _mix(self.key ^ (hour * _GOLDEN & _MASK))
        activity = _DIURNAL[hour % 24]
        counters = zip(self.traffic, _STORAGE_COUNTERS, strict=True)
        for index, (per_hour, meters) in enumerate(counters):
            if not per_hour:
                continue
            bits = noise >> (index * 20)
            count = int(per_hour * activity * (0.4 + (bits & 0xFF) / 213.0))
            if count <= 0:
                continue
            out.append((meters[0], count / 10_000))
            # ~2-40 KB in and out per request
            kb_in = count * (2 + ((bits >> 8) & 0x1F))
            kb_out = count * (4 + ((bits >> 13) & 0x3F) // 2)
            gb_in = round(kb_in / 1_048_576, 6)
            gb_out = round(kb_out / 1_048_576, 6)
            if gb_in > 0:
                out.append((meters[1], gb_in))
            if gb_out > 0:
                out.append((meters[2], gb_out))
        return out


_STORAGE_COUNTERS = (
    (M.BLOB_TRANSACTIONS, M.BLOB_IN, M.BLOB_OUT),
    (M.TABLE_TRANSACTIONS, M.TABLE_IN, M.TABLE_OUT),
    (M.QUEUE_TRANSACTIONS, M.QUEUE_IN, M.QUEUE_OUT),
)


class Database(FleetResource):
    """A SQL or MySQL adapter database: its size in MB each hour (point in time)."""

    __slots__ = ("growth", "meter_id", "size_mb")

    def __init__(self, common: _Common, meter_id: str, size_mb: float, growth: float) -> None:
        super().__init__(common)
        self.meter_id = meter_id
        self.size_mb = size_mb
        self.growth = growth

    def emit(self, hour: int, suspended: bool) -> _Quantities:
        days = (hour - self.start) / 24.0
        return ((self.meter_id, round(self.size_mb * (1.0 + self.growth * days), 2)),)


class AppServicePlan(FleetResource):
    __slots__ = ("autoscale", "tier_meter", "vcpus", "workers")

    def __init__(
        self, common: _Common, tier_meter: str, vcpus: int, workers: int, autoscale: bool
    ) -> None:
        super().__init__(common)
        self.tier_meter = tier_meter
        self.vcpus = vcpus
        self.workers = workers
        self.autoscale = autoscale  # one more worker on weekday business hours (UTC)

    def emit(self, hour: int, suspended: bool) -> _Quantities:
        if suspended:
            return ()
        workers = self.workers
        if self.autoscale and 8 <= hour % 24 < 18 and (hour // 24 + 3) % 7 < 5:
            workers += 1
        return ((M.APP_SERVICE, float(self.vcpus * workers)), (self.tier_meter, float(workers)))


class WebApp(FleetResource):
    __slots__ = ()

    def emit(self, hour: int, suspended: bool) -> _Quantities:
        return () if suspended else _WEB_PROCESS


_WEB_PROCESS: _Quantities = ((M.WEB_PROCESS, 1.0),)


class FunctionApp(FleetResource):
    __slots__ = ("memory_gb", "requests")

    def __init__(self, common: _Common, requests: float, memory_gb: float) -> None:
        super().__init__(common)
        self.requests = requests  # requests per busy hour
        self.memory_gb = memory_gb

    def emit(self, hour: int, suspended: bool) -> _Quantities:
        if suspended:
            return ()
        noise = _mix(self.key ^ (hour * _GOLDEN & _MASK))
        count = int(self.requests * _DIURNAL[hour % 24] * (0.5 + (noise & 0xFF) / 256.0))
        if count <= 0:
            return ()
        seconds = count * (0.05 + ((noise >> 8) & 0xFF) / 512.0)
        return (
            (M.FUNCTIONS_REQUESTS, count / 10),
            (M.FUNCTIONS_COMPUTE, round(seconds * self.memory_gb, 3) or 0.001),
        )


@dataclass(frozen=True, slots=True)
class SubscriptionLifecycle:
    """One subscription's life: created, suspended spells [start, end), deleted."""

    subscription_id: str
    created: datetime
    deleted: datetime
    suspended: tuple[tuple[datetime, datetime], ...]


class _Directory:
    __slots__ = ("company", "index", "provider_id", "slots", "tenant_id", "users")

    def __init__(
        self, index: int, company: str, tenant_id: str, users: tuple[str, ...], provider_id: str
    ) -> None:
        self.index = index
        self.company = company
        self.tenant_id = tenant_id
        self.users = users
        self.provider_id = provider_id
        self.slots: list[_Slot] = []


class _Slot:
    __slots__ = ("directory", "generations", "index", "offer", "purpose")

    def __init__(self, directory: _Directory, index: int, purpose: str, offer: str) -> None:
        self.directory = directory
        self.index = index
        self.purpose = purpose
        self.offer = offer
        self.generations: list[_Generation] = []


class _Generation:
    __slots__ = (
        "_listed",
        "created",
        "deleted",
        "index",
        "owners",
        "readers",
        "slot",
        "spells",
        "subscription_id",
    )

    def __init__(
        self,
        slot: _Slot,
        index: int,
        subscription_id: str,
        created: int,
        deleted: int,
        spells: tuple[tuple[int, int], ...],
        owners: tuple[str, ...],
        readers: tuple[str, ...],
    ) -> None:
        self.slot = slot
        self.index = index
        self.subscription_id = subscription_id
        self.created = created
        self.deleted = deleted
        self.spells = spells
        self.owners = owners
        self.readers = readers
        self._listed: dict[SubscriptionState, Subscription] = {}

    def suspended(self, hour: int) -> bool:
        return any(start <= hour < end for start, end in self.spells)

    def state(self, hour: int) -> SubscriptionState | None:
        if hour < self.created:
            return None
        if hour >= self.deleted:
            return SubscriptionState.DELETED
        return SubscriptionState.SUSPENDED if self.suspended(hour) else SubscriptionState.ACTIVE

    def as_subscription(self, state: SubscriptionState) -> Subscription:
        listed = self._listed.get(state)
        if listed is None:
            slot = self.slot
            name = f"{slot.directory.company} {slot.purpose}"
            listed = Subscription(
                subscription_id=self.subscription_id,
                display_name=name if self.index == 0 else f"{name} ({self.index + 1})",
                tenant_id=slot.directory.tenant_id,
                provider_subscription_id=slot.directory.provider_id,
                owners=self.owners,
                state=state,
                readers=self.readers,
                offer=slot.offer,
            )
            self._listed[state] = listed
        return listed


# Inventories kept per subscription generation (~18 KB each at scale 1). When full, those
# not alive around the hour asked for are dropped; if that frees nothing, new ones are
# built per call and not kept (a FIFO would miss every time on a sequential scan of a
# fleet larger than the cache). Rebuilt inventories are identical.
_INVENTORY_CACHE = 60_000


class SimulatedFleet:
    """A deterministic usage source: see the module docstring for the model."""

    name = "simulated"

    def __init__(self, options: FleetOptions | None = None) -> None:
        self.options = options or FleetOptions()
        self._seed = self.options.seed
        self._epoch = _unix_hour(self.options.epoch)
        # delay(r, U) > 0 iff mix(r, U) < threshold; late_share 1.0 makes every hour late.
        self._late_threshold = min(int(self.options.late_share * 2**64), 2**64)
        self._inventories: dict[_Generation, tuple[FleetResource, ...]] = {}
        self._by_id: dict[str, _Generation] = {}
        self._purged_at: int | None = None

    # --- identities and hierarchy -------------------------------------------------------

    @property
    def admin_object_id(self) -> str:
        """The service admin's Entra object id: owns the default provider subscription."""
        return _uuid(self._seed, "admin")

    @cached_property
    def default_provider(self) -> Subscription:
        return Subscription(
            subscription_id=_uuid(self._seed, "provider", 0),
            display_name="Default Provider Subscription",
            tenant_id=_uuid(self._seed, "admin-tenant"),
            provider_subscription_id=None,
            owners=(self.admin_object_id,),
            state=SubscriptionState.ACTIVE,
            is_provider=True,
            offer="Default Provider Offer",
        )

    @cached_property
    def delegated_providers(self) -> tuple[Subscription, ...]:
        count = max(1, self.options.tenants // 6)
        providers = []
        for index in range(1, count + 1):
            reseller = _RESELLERS[(index - 1) % len(_RESELLERS)]
            if index > len(_RESELLERS):
                reseller = f"{reseller} {(index - 1) // len(_RESELLERS) + 1}"
            providers.append(
                Subscription(
                    subscription_id=_uuid(self._seed, "provider", index),
                    display_name=f"{reseller} (delegated provider)",
                    tenant_id=_uuid(self._seed, "provider-tenant", index),
                    provider_subscription_id=self.default_provider.subscription_id,
                    owners=(_uuid(self._seed, "provider-admin", index),),
                    state=SubscriptionState.ACTIVE,
                    is_provider=True,
                    offer="Delegated Provider Offer",
                )
            )
        return tuple(providers)

    @cached_property
    def _directories(self) -> tuple[_Directory, ...]:
        seed = self._seed
        delegated = self.delegated_providers
        directories = []
        for index in range(self.options.tenants):
            # A directory's slots and usage never depend on how many directories or
            # providers the fleet has (options_for_rows relies on it): only the provider
            # it sits under and the offer names do, drawn from their own hashes.
            rng = random.Random(_derive(seed, "directory", index))
            company = _COMPANIES[index % len(_COMPANIES)]
            if index >= len(_COMPANIES):
                company = f"{company} {index // len(_COMPANIES) + 1}"
            placement = _derive(seed, "placement", index)
            offers: tuple[str, ...] = _DEFAULT_OFFERS
            provider = self.default_provider
            if placement & 1:
                provider = delegated[(placement >> 1) % len(delegated)]
                reseller = provider.display_name.removesuffix(" (delegated provider)")
                offers = (f"{reseller} Standard", f"{reseller} Premium")
            users = tuple(_uuid(seed, "user", index, n) for n in range(3))
            directory = _Directory(
                index, company, _uuid(seed, "tenant", index), users, provider.subscription_id
            )
            purposes = rng.sample(_PURPOSES, rng.choice((1, 2, 2, 3)))
            for slot_index, purpose in enumerate(purposes):
                offer = offers[(placement >> (8 + slot_index * 4)) % len(offers)]
                directory.slots.append(_Slot(directory, slot_index, purpose, offer))
            directories.append(directory)
        return tuple(directories)

    # --- lifecycle --------------------------------------------------------------------

    def _extend(self, slot: _Slot, hour: int) -> list[_Generation]:
        """The slot's generations, built until one is created after ``hour``."""
        generations = slot.generations
        while not generations or generations[-1].created <= hour:
            index = len(generations)
            directory = slot.directory
            key = _derive(self._seed, "generation", directory.index, slot.index, index)
            rng = random.Random(key)
            if generations:
                created = generations[-1].deleted + rng.randint(2 * _DAY, 30 * _DAY)
            else:
                created = self._epoch - rng.randint(0, 150 * _DAY)
            if rng.random() < 0.3:
                lifetime = rng.randint(14 * _DAY, 42 * _DAY)
            else:
                lifetime = rng.randint(60 * _DAY, 240 * _DAY)
            deleted = created + lifetime
            spells: list[tuple[int, int]] = []
            block_start = created + 7 * _DAY
            while block_start + 33 * _DAY < deleted:
                if rng.random() < 0.3:
                    start = block_start + rng.randint(0, 27 * _DAY)
                    spells.append((start, start + rng.randint(_DAY, 3 * _DAY)))
                block_start += 30 * _DAY
            if rng.random() < 0.4:  # suspended for non-payment, then deleted
                final_start = deleted - rng.randint(_DAY, 3 * _DAY)
                if not spells or spells[-1][1] <= final_start:
                    spells.append((final_start, deleted))
            owners = tuple(rng.sample(directory.users, rng.choice((1, 1, 2))))
            others = [user for user in directory.users if user not in owners]
            readers = (rng.choice(others),) if rng.random() < 0.5 else ()
            generation = _Generation(
                slot,
                index,
                _uuid(self._seed, "subscription", directory.index, slot.index, index),
                created,
                deleted,
                tuple(spells),
                owners,
                readers,
            )
            generations.append(generation)
            self._by_id[generation.subscription_id] = generation
        return generations

    def _generation(self, subscription_id: str) -> _Generation:
        generation = self._by_id.get(subscription_id)
        if generation is None:
            raise KeyError(f"{subscription_id} is not a tenant subscription seen so far")
        return generation

    def lifecycle(self, subscription_id: str) -> SubscriptionLifecycle:
        """When a tenant subscription (already listed by ``subscriptions``) lives."""
        generation = self._generation(subscription_id)
        return SubscriptionLifecycle(
            subscription_id,
            _hour_start(generation.created),
            _hour_start(generation.deleted),
            tuple((_hour_start(s), _hour_start(e)) for s, e in generation.spells),
        )

    def state_at(self, subscription_id: str, hour: datetime) -> SubscriptionState | None:
        """A tenant subscription's state during ``hour``; None before it was created."""
        return self._generation(subscription_id).state(_unix_hour(hour))

    # --- inventory --------------------------------------------------------------------

    def resources(self, subscription_id: str) -> tuple[FleetResource, ...]:
        """The inventory of a tenant subscription (cached; rebuilt identically if evicted)."""
        return self._inventory(self._generation(subscription_id))

    def vm_state(self, vm: VirtualMachine, hour: datetime) -> VmState:
        """A VM's power state by its schedule during ``hour`` (suspension aside)."""
        return vm.state(_unix_hour(hour))

    def _inventory(
        self, generation: _Generation, hour: int | None = None
    ) -> tuple[FleetResource, ...]:
        inventory = self._inventories.get(generation)
        if inventory is None:
            inventory = self._build_inventory(generation)
            cache = self._inventories
            if len(cache) >= _INVENTORY_CACHE and hour is not None and hour != self._purged_at:
                self._purged_at = hour  # purge at most once per hour asked for
                cache = {
                    alive: kept
                    for alive, kept in cache.items()
                    if alive.created <= hour < alive.deleted + MAX_DELAY_HOURS
                }
                self._inventories = cache
            if len(cache) < _INVENTORY_CACHE:
                cache[generation] = inventory
        return inventory

    def _build_inventory(self, generation: _Generation) -> tuple[FleetResource, ...]:
        """A subscription generation's resources: counts x scale, all drawn from one rng."""
        slot = generation.slot
        sid = generation.subscription_id
        rng = random.Random(
            _derive(self._seed, "inventory", slot.directory.index, slot.index, generation.index)
        )
        scale = self.options.scale
        purpose = slot.purpose
        created = generation.created
        tz = rng.choice((-8, -5, 0, 0, 1, 2, 8))
        env = "prod" if purpose in ("prod", "erp", "web") else purpose
        # One tags dict shared by the subscription's tagged resources (read-only).
        tags = {"env": env, "costCenter": f"cc-{rng.randint(1000, 9999)}"}
        resources: list[FleetResource] = []

        def common(
            group: str,
            kind: ResourceKind,
            path: str,
            info: dict[str, Any] | None = None,
            after: int | None = None,
        ) -> _Common:
            """Identity, tags and start; a resource starts at ``after`` or a few days in."""
            uri = f"/subscriptions/{sid}/resourceGroups/{group}/providers/{path}"
            start = created if rng.random() < 0.6 else created + rng.randint(1, 10 * _DAY)
            if after is not None:
                start = after
            tagged = tags if rng.random() < 0.6 else None
            name = path.rsplit("/", 1)[-1]
            return _Common(kind, rng.getrandbits(64), name, uri, start, tagged, info)

        compute_rg = f"rg-{purpose}-compute"
        demo_vm = slot.directory.index == 0 and slot.index == 0
        vm_count = _scaled(rng, rng.choice((1, 2, 3, 4, 5, 6, 8)), scale)
        for number in range(max(vm_count, 1 if demo_vm else 0)):
            windows = rng.random() < 0.5
            size = rng.choice(_SIZE_NAMES)
            schedule = rng.choices(_SCHEDULES, cum_weights=_SCHEDULE_WEIGHTS)[0]
            first_vm = demo_vm and number == 0
            if first_vm:
                windows, size, schedule = True, "Standard_A4", VmSchedule.ALWAYS_ON
            image = rng.choice(_WINDOWS_IMAGES if windows else _LINUX_IMAGES)
            vm_name = f"{purpose}-{'win' if windows else 'lnx'}-vm{number + 1:02d}"
            vm = VirtualMachine(
                common(
                    compute_rg,
                    ResourceKind.VIRTUAL_MACHINE,
                    f"Microsoft.Compute/virtualMachines/{vm_name}",
                    {"ServiceType": size, "ImageType": image},
                    created if first_vm else None,
                ),
                size,
                windows,
                image,
                schedule,
                tz,
            )
            resources.append(vm)
            prefix = "P" if size in _PREMIUM_SIZES else "S"
            tiers = ["10" if windows else "4"]
            tiers += [rng.choice(_DATA_DISK_TIERS) for _ in range(rng.choice((0, 0, 1, 1, 2)))]
            for disk_number, tier in enumerate(tiers):
                disk_name = (
                    f"{vm_name}_OsDisk_1"
                    if disk_number == 0
                    else f"{vm_name}_DataDisk_{disk_number - 1}"
                )
                disk = common(
                    compute_rg,
                    ResourceKind.DISK,
                    f"Microsoft.Compute/disks/{disk_name}",
                    {"ServiceType": prefix + tier},
                    vm.start,
                )
                monthly = ((DISK_METERS[prefix + tier], 1.0 / _HOURS_PER_MONTH),)
                resources.append(FixedResource(disk, monthly))
            if rng.random() < 0.5:
                ip = common(
                    compute_rg,
                    ResourceKind.PUBLIC_IP,
                    f"Microsoft.Network/publicIPAddresses/{vm_name}-ip",
                    after=vm.start,
                )
                resources.append(FixedResource(ip, ((M.DYNAMIC_IP, 1.0),)))
        for number in range(_scaled(rng, rng.choice((0, 1, 1, 2)), scale)):
            ip = common(
                f"rg-{purpose}-network",
                ResourceKind.PUBLIC_IP,
                f"Microsoft.Network/publicIPAddresses/{purpose}-pip-{number + 1:02d}",
            )
            resources.append(FixedResource(ip, ((M.STATIC_IP, 1.0),)))
        for _ in range(_scaled(rng, rng.choice((1, 1, 2, 2, 3, 4)), scale)):
            account = f"st{purpose}{rng.getrandbits(40):010x}"[:24]
            sizes = (
                round(math.exp(rng.uniform(math.log(0.5), math.log(2000))), 3),
                round(rng.uniform(20, 600), 3) if rng.random() < 0.5 else 0.0,
                round(rng.uniform(0.01, 8), 4) if rng.random() < 0.4 else 0.0,
                round(rng.uniform(0.001, 0.5), 4) if rng.random() < 0.3 else 0.0,
            )
            busy = math.exp(rng.uniform(math.log(5), math.log(50_000)))
            traffic = (
                busy,
                busy * rng.uniform(0.2, 2) if sizes[2] else 0.0,
                busy * rng.uniform(0.5, 3) if sizes[3] else 0.0,
            )
            resource = common(
                f"rg-{purpose}-data",
                ResourceKind.STORAGE_ACCOUNT,
                f"Microsoft.Storage/storageAccounts/{account}",
            )
            resources.append(StorageAccount(resource, sizes, rng.uniform(0, 0.01), traffic))
        for meter, provider, kind, engine in (
            (M.SQL_SIZE, "Microsoft.SQLAdapter", ResourceKind.SQL_DATABASE, "sql"),
            (M.MYSQL_SIZE, "Microsoft.MySQLAdapter", ResourceKind.MYSQL_DATABASE, "mysql"),
        ):
            for number in range(_scaled(rng, rng.choice((0, 0, 1, 1, 2)), scale)):
                resource = common(
                    f"rg-{purpose}-data",
                    kind,
                    f"{provider}/databases/{purpose}{engine}db{number + 1:02d}",
                )
                size_mb = round(math.exp(rng.uniform(math.log(20), math.log(50_000))), 1)
                resources.append(Database(resource, meter, size_mb, rng.uniform(0, 0.02)))
        for number in range(_scaled(rng, rng.choice((0, 0, 1, 1, 2)), scale)):
            web_rg = f"rg-{purpose}-web"
            tier_meter, vcpus, tier_name = rng.choice(_APP_TIERS)
            plan = AppServicePlan(
                common(
                    web_rg,
                    ResourceKind.APP_SERVICE_PLAN,
                    f"Microsoft.Web/serverfarms/asp-{purpose}-{number + 1:02d}",
                    {"ServiceType": tier_name},
                ),
                tier_meter,
                vcpus,
                rng.randint(1, 3),
                rng.random() < 0.3,
            )
            resources.append(plan)
            for site in range(rng.randint(1, 4)):
                app = common(
                    web_rg,
                    ResourceKind.WEB_APP,
                    f"Microsoft.Web/sites/{purpose}-app-{number + 1}{site + 1}",
                    after=plan.start,
                )
                resources.append(WebApp(app))
            if rng.random() < 0.5:
                app = common(
                    web_rg,
                    ResourceKind.FUNCTION_APP,
                    f"Microsoft.Web/sites/{purpose}-func-{number + 1}",
                    after=plan.start,
                )
                requests = math.exp(rng.uniform(math.log(20), math.log(200_000)))
                resources.append(FunctionApp(app, requests, rng.choice((0.125, 0.25, 0.5, 1.0))))
        return tuple(resources)

    # --- the UsageSource protocol ---------------------------------------------------------

    def subscriptions(self, reported_hour: datetime) -> list[Subscription]:
        """Every subscription as it stood during ``reported_hour`` (deleted ones kept)."""
        hour = _unix_hour(reported_hour)
        listed = [self.default_provider, *self.delegated_providers]
        for directory in self._directories:
            for slot in directory.slots:
                for generation in self._extend(slot, hour):
                    state = generation.state(hour)
                    if state is None:
                        break
                    if generation.deleted > self._epoch:
                        listed.append(generation.as_subscription(state))
        return listed

    def usage(
        self, reported_hour: datetime, within: Callable[[str], bool] | None = None
    ) -> Iterator[UsageRecord]:
        """The records reported in ``reported_hour``, grouped by subscription, streamed
        (only subscriptions ``within`` holds, when given: the others are not generated)."""
        return self._usage(_unix_hour(reported_hour), within=within)

    def usage_of_hour(self, usage_hour: datetime) -> Iterator[UsageRecord]:
        """The full usage of one usage hour, whichever reported hours it lands in."""
        return self._usage(_unix_hour(usage_hour), reported=False)

    def _usage(
        self, hour: int, reported: bool = True, within: Callable[[str], bool] | None = None
    ) -> Iterator[UsageRecord]:
        first = max(hour - MAX_DELAY_HOURS if reported else hour, self._epoch)
        if first > hour:
            return
        starts = {u: _hour_start(u) for u in range(first, hour + 1)}
        windows = {u: (start, start + HOUR) for u, start in starts.items()}
        for directory in self._directories:
            for slot in directory.slots:
                for generation in self._extend(slot, hour):
                    if generation.created > hour:
                        break
                    if generation.deleted <= first:
                        continue
                    if within is not None and not within(generation.subscription_id):
                        continue
                    yield from self._records(generation, hour, windows, reported)

    def _records(
        self,
        generation: _Generation,
        hour: int,
        windows: dict[int, tuple[datetime, datetime]],
        reported: bool,
    ) -> Iterator[UsageRecord]:
        """One generation's records for reported hour ``hour`` (or usage hour, if not reported)."""
        first = max(min(windows), generation.created)
        last = min(hour, generation.deleted - 1)
        suspended = {u: generation.suspended(u) for u in range(first, last + 1)}
        sid = generation.subscription_id
        region = self.options.region
        threshold = self._late_threshold
        record = UsageRecord
        for resource in self._inventory(generation, hour):
            key = resource.key
            for u in range(max(first, resource.start), last + 1):
                if reported:
                    # Lateness: delay(r, U) from one mix; reported here iff U + delay == hour.
                    x = key ^ (u * _GOLDEN & _MASK)
                    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
                    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
                    x ^= x >> 31
                    delay = 1 + x % MAX_DELAY_HOURS if x < threshold else 0
                    if u + delay != hour:
                        continue
                quantities = resource.emit(u, suspended[u])
                if not quantities:
                    continue
                start, end = windows[u]
                uri = resource.resource_uri
                tags = resource.tags
                info = resource.info
                for meter_id, quantity in quantities:
                    yield record(sid, meter_id, start, end, quantity, uri, region, tags, info)


def options_for_rows(
    target_rows: int,
    *,
    seed: int = 1,
    late_share: float = 0.1,
    scale: float = 1.0,
    epoch: datetime = EPOCH,
    region: str = "local",
    at: datetime | None = None,
    sample_tenants: int = 250,
) -> FleetOptions:
    """Options whose fleet reports about ``target_rows`` records per reported hour.

    A directory's usage does not depend on how many directories the fleet has, so the
    first ``sample_tenants`` directories are measured (at ``at``, or averaged over six
    hours spread over the eight months after ``epoch`` and over the day): targets they
    cover are met by counting directories exactly, larger ones by extrapolating their
    mean. Small fleets swing more from hour to hour (one deleted subscription is a big
    share of them), so pass ``at`` when a small fleet must hit its target at one hour.
    """
    if target_rows < 1:
        raise ValueError("target_rows must be positive")
    spread = [epoch + timedelta(days=20 + 41 * n, hours=(3 + 7 * n) % 24) for n in range(6)]
    hours = [at] if at is not None else spread
    probe = SimulatedFleet(FleetOptions(seed, sample_tenants, late_share, scale, epoch, region))
    directory_of = {
        generation.subscription_id: directory.index
        for directory in probe._directories
        for slot in directory.slots
        for generation in probe._extend(slot, max(_unix_hour(h) for h in hours))
    }
    per_directory = [0.0] * sample_tenants
    for hour in hours:
        for record in probe.usage(hour):
            per_directory[directory_of[record.subscription_id]] += 1 / len(hours)
    total = 0.0
    for index, rows in enumerate(per_directory):
        if total + rows >= target_rows:
            closer = index + 1 if total + rows - target_rows < target_rows - total else index
            return FleetOptions(seed, max(1, closer), late_share, scale, epoch, region)
        total += rows
    mean = max(total / sample_tenants, 1e-9)
    tenants = sample_tenants + round((target_rows - total) / mean)
    return FleetOptions(seed, tenants, late_share, scale, epoch, region)


def fleet_from_settings(settings: Settings) -> SimulatedFleet:
    """The simulated fleet the settings' ``FLEET_*`` values describe."""
    return SimulatedFleet(
        FleetOptions(
            seed=settings.fleet_seed,
            tenants=settings.fleet_tenants,
            late_share=settings.fleet_late_share,
            scale=settings.fleet_scale,
        )
    )


def register_simulated_source(registry: SourceRegistry = SOURCES) -> None:
    """Make ``USAGE_SOURCE=simulated`` available in this process (local stack only)."""
    registry.register("simulated", fleet_from_settings)


__all__ = [
    "APP_SERVICE_METERS",
    "COMPUTE_METERS",
    "DISK_METERS",
    "EPOCH",
    "METER_IDS",
    "ROWS_PER_TENANT_HOUR",
    "VM_SIZES",
    "FleetOptions",
    "FleetResource",
    "M",
    "ResourceKind",
    "SimulatedFleet",
    "SubscriptionLifecycle",
    "VirtualMachine",
    "VmSchedule",
    "VmState",
    "fleet_from_settings",
    "options_for_rows",
    "register_simulated_source",
]
