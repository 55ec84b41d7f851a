"""Helpers the report_to_azure tests share (no tests here): fleet, clock, queue, truth."""

from __future__ import annotations

import base64
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.commerce_emulator import CommerceEmulator
from devstack.fleet import FleetOptions, SimulatedFleet
from shared.billing.commerce import COMMERCE_POLICY, CommerceClient
from shared.billing.ledger import Ledger, LedgerEntry
from shared.billing.tokens import static_token_provider
from shared.billing.work_items import work_item_enqueuer
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import parse_hour_key
from shared.core.meters import ChargeableMeters, catalogue
from shared.storage.account import StorageAccount
from shared.storage.queues import ensure_queue, queue_client
from shared.storage.subscriptions import SubscriptionStore
from tests.scripted_source import usage_entities

HOUR = timedelta(hours=1)
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)  # a weekday morning: VMs running
TOKEN = "local-emulator-token"
PLAN = "plan-a"
Key = tuple[str, str, datetime]


class Killed(BaseException):
    """The process dying between a POST's answer and its ledger write."""


def every_meter_chargeable() -> str:
    """BILLING_CHARGEABLE_OVERRIDES making every catalogue meter chargeable (many dimensions)."""
    return ";".join(f"{meter.meter_id}=true" for meter in catalogue())


def fast_client(
    emulator: CommerceEmulator,
    max_attempts: int = 8,
    *,
    base_url: str | None = None,
    **options: Any,
) -> CommerceClient:
    """A client for the emulator (or ``base_url``) that never sleeps (the retry waits are
    skipped)."""
    policy = replace(COMMERCE_POLICY, max_attempts=max_attempts, sleep=lambda _: None)
    return CommerceClient(
        base_url or emulator.base_url,
        static_token_provider(emulator.token),
        retry=policy,
        **options,
    )


def fleet(tenants: int = 3) -> SimulatedFleet:
    return SimulatedFleet(FleetOptions(seed=3, tenants=tenants))


def map_subscriptions(
    account: StorageAccount, source: SimulatedFleet, hour: datetime, resources: int
) -> dict[str, str]:
    """Store the source's subscriptions and bill the active tenants' round-robin to
    ``resources`` resources, every third left unmapped (the default); subscription -> resource."""
    store = SubscriptionStore(account)
    listed = source.subscriptions(hour)
    store.sync(listed, store.all())
    mapping: dict[str, str] = {}
    tenants = sorted(
        s.subscription_id for s in listed if not s.is_provider and s.state.value == "active"
    )
    for index, subscription in enumerate(tenants):
        if index % 3 == 2:
            mapping[subscription] = account.settings.billing_default_resource_id
            continue
        resource = f"saas-{index % resources}"
        store.set_billing(subscription, resource, PLAN)
        mapping[subscription] = resource
    return mapping


def collect(settings: Settings, source: Any, hours: list[datetime]) -> Collector:
    """Collect ``hours`` with the production wiring: work items enqueued per hour."""
    collector = Collector(
        settings, StorageAccount(settings), source, after_hour_written=work_item_enqueuer(settings)
    )
    collector.account.ensure_tables()
    for hour in hours:
        collector.collect_hour(hour)
    return collector


def drain(settings: Settings, queue_name: str | None = None) -> list[bytes]:
    """Every message body on the queue (base64-decoded, as the trigger would pass it)."""
    client = queue_client(settings, queue_name or settings.usage_queue_name)
    ensure_queue(client)
    bodies = []
    while True:
        batch = list(client.receive_messages(messages_per_page=32, max_messages=32))
        if not batch:
            return bodies
        for message in batch:
            bodies.append(base64.b64decode(message.content))
            client.delete_message(message)


def owed_from_rows(account: StorageAccount, mapping: dict[str, str]) -> dict[Key, float]:
    """What should be billed, computed independently of shared.billing.charges from every stored
    hourly row: chargeable rows summed per (billing resource, dimension, reported hour)."""
    meters = ChargeableMeters(account.settings)
    parts: dict[Key, list[float]] = defaultdict(list)
    for entity in usage_entities(account):
        if not entity["PartitionKey"].startswith("H"):
            continue
        dimension = meters.dimension_of(entity["MeterId"])
        if dimension is None:
            continue
        resource = mapping.get(
            entity["SubscriptionId"].lower(), account.settings.billing_default_resource_id
        )
        hour = parse_hour_key(entity["PartitionKey"][1:])
        parts[(resource, dimension, hour)].append(float(entity["Quantity"]))
    return {key: math.fsum(values) for key, values in parts.items()}


def accepted_by_key(emulator: CommerceEmulator) -> dict[Key, dict[str, Any]]:
    """The emulator's accepted events by key (it holds at most one per key)."""
    found = {}
    for event in emulator.accepted_events():
        hour = datetime.fromisoformat(event["effectiveStartTime"].replace("Z", "+00:00"))
        found[(event["resourceId"], event["dimension"], hour)] = event
    return found


def ledger_entries(account: StorageAccount, resources: set[str], first: datetime, last: datetime
                   ) -> dict[Key, LedgerEntry]:  # fmt: skip
    return {
        entry.key: entry
        for resource in resources
        for entry in Ledger(account, resource).entries(first, last)
    }


def deliver_until_done(
    deliveries: list[bytes],
    handle: Callable[[bytes], object],
    *,
    rounds: int = 60,
) -> int:
    """Deliver each body; a delivery that raises is delivered again (as the host would).

    Returns how many deliveries failed on the way. Fails the test if some never succeed.
    """
    failures = 0
    pending = list(deliveries)
    for _ in range(rounds):
        retry = []
        for body in pending:
            try:
                handle(body)
            except BaseException as error:  # the host catches everything too
                if isinstance(error, KeyboardInterrupt):
                    raise
                failures += 1
                retry.append(body)
        if not retry:
            return failures
        pending = retry
    raise AssertionError(f"{len(pending)} deliveries still failing after {rounds} rounds")


def hours_from(start: datetime, count: int) -> Iterator[datetime]:
    for offset in range(count):
        yield start + offset * HOUR
