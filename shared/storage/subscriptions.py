"""Subscriptions: who consumed, who may read it, and where it is billed.

Two partitions of one table: ``subscription`` holds every subscription (read whole by the
collector once per run), and an index by provider, ``p_{provider subscription id}`` (``p_``
alone for the root of the hierarchy), holds one small entity per direct tenant, so whether
a subscription is a provider's direct tenant is a point lookup, whatever the number of
subscriptions (the provider route's scope, invariant 6). The collector keeps the index: it
writes a tenant's entry when the tenant is new, moved to another provider, or not indexed
yet (an index that is missing or stale heals on the next run), and removes the entry under
a former provider.

A tenant subscription is offered by a provider subscription (the default provider
subscription, or a delegated provider's). Sources report the fields they own (display name,
directory tenant, provider, owners, state), and the collector rewrites them when they
change; operators own the billing mapping and the extra readers (``python -m ops
subscriptions``), which the collector never writes. An unmapped subscription bills to the
settings' default resource and plan (``billing_target``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount
from shared.storage.table_writer import PartitionWriter


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    display_name: str
    tenant_id: str
    # The provider subscription that offered this one; None for the default provider
    # subscription itself (the root of the hierarchy).
    provider_subscription_id: str | None
    owners: tuple[str, ...]
    state: SubscriptionState
    # True for provider subscriptions (the default one and delegated providers'): they
    # can call the provider route for their direct tenants.
    is_provider: bool = False
    readers: tuple[str, ...] = ()
    offer: str = ""
    billing_resource_id: str = ""
    billing_plan_id: str = ""
    # The usage source (stamp) that lists it; "" for entries written before sources were
    # recorded. A rerun of one source's hour only cleans its own subscriptions' partitions.
    source: str = ""


@dataclass(frozen=True, slots=True)
class BillingTarget:
    """Where usage is billed: the commerce resource id and its plan."""

    resource_id: str
    plan_id: str


def billing_target(settings: Settings, subscription: Subscription | None) -> BillingTarget:
    """A subscription's billing target; unmapped (or unknown) ones bill to the default."""
    if subscription is not None and subscription.billing_resource_id:
        return BillingTarget(subscription.billing_resource_id, subscription.billing_plan_id)
    return BillingTarget(settings.billing_default_resource_id, settings.billing_default_plan_id)


ROLE = "subscriptions"
PARTITION = "subscription"
INDEX_PREFIX = "p_"
INDEX_LOOKUPS_PER_QUERY = 14
INDEX_PAGE = 1_000  # a query page's most entities
_INDEX_END = "p`"  # just after every "p_..." key
# Fields the usage source owns; the collector rewrites them when the source changes them.
# Billing mapping and operator-added readers are the operator's and are never overwritten.
SOURCE_FIELDS = ("DisplayName", "TenantId", "ProviderSubscriptionId", "Owners", "State",
                 "IsProvider", "Offer", "Source")  # fmt: skip


def _source_entity(subscription: Subscription) -> dict[str, Any]:
    return {
        "PartitionKey": PARTITION,
        "RowKey": subscription.subscription_id.lower(),
        "DisplayName": subscription.display_name,
        "TenantId": subscription.tenant_id,
        "ProviderSubscriptionId": (subscription.provider_subscription_id or "").lower(),
        "Owners": json.dumps(sorted(subscription.owners)),
        "State": subscription.state.value,
        "IsProvider": subscription.is_provider,
        "Offer": subscription.offer,
        "Source": subscription.source,
    }


def _from_entity(entity: dict[str, Any]) -> Subscription:
    return Subscription(
        subscription_id=entity["RowKey"],
        display_name=entity.get("DisplayName", ""),
        tenant_id=entity.get("TenantId", ""),
        provider_subscription_id=entity.get("ProviderSubscriptionId") or None,
        owners=tuple(json.loads(entity.get("Owners") or "[]")),
        state=SubscriptionState(entity.get("State", SubscriptionState.ACTIVE.value)),
        is_provider=bool(entity.get("IsProvider", False)),
        readers=tuple(json.loads(entity.get("Readers") or "[]")),
        offer=entity.get("Offer", ""),
        billing_resource_id=entity.get("BillingResourceId", ""),
        billing_plan_id=entity.get("BillingPlanId", ""),
        source=entity.get("Source", ""),
    )


# (low inclusive, high exclusive) of subscription ids (RowKeys); None leaves that end open.
KeyRange = tuple[str | None, str | None]


def _within(ids: KeyRange) -> tuple[str, dict[str, str]]:
    """The filter clause and parameters keeping RowKeys inside ``ids``."""
    low, high = ids
    where, parameters = "", {}
    if low is not None:
        where += " and RowKey ge @first"
        parameters["first"] = low
    if high is not None:
        where += " and RowKey lt @end"
        parameters["end"] = high
    return where, parameters


def index_partition(provider_subscription_id: str | None) -> str:
    """The index partition listing the direct tenants of a provider subscription."""
    return INDEX_PREFIX + (provider_subscription_id or "").lower()


def _pages_left(read: int, last_key: str) -> float:
    """About how many pages of an index partition are left after ``read`` keys up to
    ``last_key``: ids are GUIDs, spread evenly, so the share of the id space read so far is
    the share of the partition (infinite when ``last_key`` is not hexadecimal)."""
    try:
        reached = (int(last_key.replace("-", "")[:8], 16) + 1) / 2**32
    except ValueError:
        return float("inf")
    return read * (1 - reached) / reached / INDEX_PAGE


class SubscriptionStore:
    """The subscriptions table: one partition read whole, written on change, and the index
    of direct tenants by provider."""

    def __init__(self, account: StorageAccount):
        self._account = account

    def all(
        self, ids: KeyRange = (None, None), source: str | None = None
    ) -> dict[str, Subscription]:
        """Every stored subscription by (lower-case) id; only ids in ``ids`` (low
        inclusive, high exclusive, None = open) when given: a slice's range read; only
        those ``source`` lists when given (entries from before sources were recorded have
        none, so they are not read: ``sync`` with ``complete=False`` looks them up)."""

        def read() -> dict[str, Subscription]:
            table = self._account.table(ROLE)
            where, parameters = _within(ids)
            if source is not None:
                where += " and Source eq @source"
                parameters["source"] = source
            entities = table.query_entities(
                "PartitionKey eq @pk" + where, parameters={"pk": PARTITION, **parameters}
            )
            return {entity["RowKey"]: _from_entity(entity) for entity in entities}

        return call_with_retry(read, what="read subscriptions")

    def indexed(self, ids: KeyRange = (None, None)) -> dict[str, str]:
        """Every index entry: subscription id -> its index partition (one range read; only
        ids in ``ids`` when given)."""

        def read() -> dict[str, str]:
            table = self._account.table(ROLE)
            where, parameters = _within(ids)
            entities = table.query_entities(
                "PartitionKey ge @low and PartitionKey lt @high" + where,
                parameters={"low": INDEX_PREFIX, "high": _INDEX_END, **parameters},
                select=["PartitionKey", "RowKey"],
            )
            return {entity["RowKey"]: entity["PartitionKey"] for entity in entities}

        return call_with_retry(read, what="read the subscriptions index")

    def tenants_among(self, provider_subscription_id: str, candidates: Iterable[str]) -> list[str]:
        """Which of ``candidates`` are direct tenants of the provider now (sorted, lower-case).

        Two reads answer, and each call takes the cheaper: point lookups in the provider's
        index partition, ``INDEX_LOOKUPS_PER_QUERY`` to a query (a Table filter holds at
        most 15 comparisons), ceil(candidates / 14) queries that follow the candidates; or
        the partition read in key order, a page per 1,000 tenants, that follows the
        provider's size. Up to 14 candidates take one lookup query. More read the
        partition's first page, which answers a provider of up to 1,000 tenants whole; for
        a bigger one, how far into the id space that page reached (ids are GUIDs, spread
        evenly) estimates the pages left, and the candidates past it are looked up unless
        reading on is the cheaper, page by page.
        """
        wanted = sorted({candidate.lower() for candidate in candidates})
        partition = index_partition(provider_subscription_id)
        if len(wanted) <= INDEX_LOOKUPS_PER_QUERY:
            return self._look_up(partition, wanted)
        found: list[str] = []
        token: Any = None
        read = 0
        while True:
            keys, token = self._index_page(partition, token)
            read += len(keys)
            looked_for = set(wanted)
            found += [key for key in keys if key in looked_for]
            if token is None:
                return sorted(found)
            if not keys:
                continue  # the service may end a page early, even empty: read on
            wanted = [key for key in wanted if key > keys[-1]]
            lookups = -(-len(wanted) // INDEX_LOOKUPS_PER_QUERY)
            if lookups == 0:
                return sorted(found)
            if lookups <= _pages_left(read, keys[-1]):
                return sorted(found + self._look_up(partition, wanted))

    def _index_page(self, partition: str, token: Any) -> tuple[list[str], Any]:
        """One page of the index partition's keys from ``token`` (None: the first), and the
        next page's token (None: none left)."""

        def read() -> tuple[list[str], Any]:
            pages = (
                self._account.table(ROLE)
                .query_entities(
                    "PartitionKey eq @pk",
                    parameters={"pk": partition},
                    select=["RowKey"],
                    results_per_page=INDEX_PAGE,
                )
                .by_page(continuation_token=token)
            )
            page = [entity["RowKey"] for entity in next(pages, [])]
            return page, pages.continuation_token  # type: ignore[attr-defined]

        return call_with_retry(read, what="read a provider's tenants")

    def _look_up(self, partition: str, wanted: list[str]) -> list[str]:
        """Which of ``wanted`` the index partition holds, by key, 14 to a query."""
        found = self._by_key(partition, wanted, ["RowKey"], "look up a provider's tenants")
        return sorted(entity["RowKey"] for entity in found)

    def _by_key(
        self, partition: str, wanted: list[str], select: list[str] | None, what: str
    ) -> list[Any]:
        """The entities of ``partition`` whose RowKey is one of ``wanted``, 14 to a query."""
        found: list[Any] = []
        for start in range(0, len(wanted), INDEX_LOOKUPS_PER_QUERY):
            chunk = wanted[start : start + INDEX_LOOKUPS_PER_QUERY]
            names = [f"r{n}" for n in range(len(chunk))]
            # The SDK substitutes @names split on spaces: keep them apart from parentheses.
            condition = (
                "PartitionKey eq @pk and ( "
                + " or ".join(f"RowKey eq @{name}" for name in names)
                + " )"
            )

            parameters = {"pk": partition, **dict(zip(names, chunk, strict=True))}

            def read(
                condition: str = condition, parameters: dict[str, str] = parameters
            ) -> list[Any]:
                return list(
                    self._account.table(ROLE).query_entities(
                        condition, parameters=parameters, select=select
                    )
                )

            found += call_with_retry(read, what=what)
        return found

    def among(self, ids: Iterable[str]) -> dict[str, Subscription]:
        """The stored subscriptions among ``ids``, by (lower-case) id, in the fewer requests
        of two reads: up to ``INDEX_LOOKUPS_PER_QUERY`` ids in one query by key; more in the
        partition's whole read (a page per 1,000), which a second lookup query would already
        cost as much as at the smallest fleet. So a tenant's answer costs one request
        whatever the fleet's size, and a big answer no more than the fleet's pages."""
        wanted = sorted({subscription_id.lower() for subscription_id in ids})
        if not wanted:
            return {}
        if len(wanted) > INDEX_LOOKUPS_PER_QUERY:
            keep = set(wanted)
            return {key: found for key, found in self.all().items() if key in keep}
        entities = self._by_key(PARTITION, wanted, None, "read subscriptions by id")
        return {entity["RowKey"]: _from_entity(entity) for entity in entities}

    def get(self, subscription_id: str) -> Subscription | None:
        def read() -> Subscription | None:
            try:
                entity = self._account.table(ROLE).get_entity(PARTITION, subscription_id.lower())
            except ResourceNotFoundError:
                return None
            return _from_entity(entity)

        return call_with_retry(read, what="read subscription")

    def sync(
        self,
        reported: Iterable[Subscription],
        stored: dict[str, Subscription],
        indexed: dict[str, str] | None = None,
        *,
        complete: bool = True,
    ) -> int:
        """Write the source-owned fields of new or changed subscriptions and their index
        entries; return how many subscriptions changed.

        ``stored`` and ``indexed`` are what the table held (from ``all`` and ``indexed``;
        the index is read here when not given); both are updated in place so a run that
        collects many hours reads the table once. ``complete=False`` says ``stored`` may
        miss subscriptions the table holds (``all`` read one source's): one missing from it
        is looked up before it is taken for new, so its operator-owned fields are kept.
        The index is written before the entries it replaces are removed, so a provider's
        listing never misses a tenant that moved to it.
        """
        if indexed is None:
            indexed = self.indexed()
        changed: list[dict[str, Any]] = []
        index_writes: dict[str, list[dict[str, Any]]] = {}
        stale: list[tuple[str, str]] = []
        for subscription in reported:
            key = subscription.subscription_id.lower()
            entity = _source_entity(subscription)
            previous = stored.get(key)
            if previous is None and not complete:
                previous = self.get(key)
                if previous is not None:
                    stored[key] = previous
            if previous is None or _source_view(previous) != _source_view_of(entity):
                changed.append(entity)
                stored[key] = _merge(previous, entity)
            wanted = index_partition(subscription.provider_subscription_id)
            held = indexed.get(key)
            if held != wanted:
                index_writes.setdefault(wanted, []).append({"PartitionKey": wanted, "RowKey": key})
                if held is not None:
                    stale.append((held, key))
                indexed[key] = wanted
        table_name = self._account.settings.table_name(ROLE)
        if changed or index_writes:
            with PartitionWriter(self._account, parallelism=1, mode=UpdateMode.MERGE) as writer:
                if changed:
                    writer.write_partition(table_name, changed)
                for entities in index_writes.values():
                    writer.write_partition(table_name, entities)
        for partition, key in stale:
            self._remove_index_entry(partition, key)
        return len(changed)

    def _remove_index_entry(self, partition: str, key: str) -> None:
        def delete() -> None:
            # Gone already (a rerun after a crash): that is what we wanted.
            with contextlib.suppress(ResourceNotFoundError):
                self._account.table(ROLE).delete_entity(partition, key)

        call_with_retry(delete, what="remove a stale subscriptions index entry")

    def set_billing(self, subscription_id: str, resource_id: str, plan_id: str) -> Subscription:
        """Map a subscription to a billing resource and plan ('' and '' = the default)."""
        if bool(resource_id) != bool(plan_id):
            raise BadInputError("give both a billing resource id and a plan id, or neither")
        return self._edit(
            subscription_id, lambda e: {"BillingResourceId": resource_id, "BillingPlanId": plan_id}
        )

    def grant_reader(self, subscription_id: str, object_id: str) -> Subscription:
        """Let ``object_id`` read the subscription's usage (besides its source-owned owners)."""
        return self._edit(
            subscription_id,
            lambda e: {"Readers": json.dumps(sorted({*_readers(e), object_id.lower()}))},
        )

    def revoke_reader(self, subscription_id: str, object_id: str) -> Subscription:
        """Withdraw an operator-granted reader."""
        return self._edit(
            subscription_id,
            lambda e: {"Readers": json.dumps(sorted(set(_readers(e)) - {object_id.lower()}))},
        )

    def _edit(
        self, subscription_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Subscription:
        """Apply ``change`` to the stored entity, guarded by its ETag (retried on a race)."""
        table = self._account.table(ROLE)
        key = subscription_id.lower()

        def edit() -> Subscription:
            while True:
                try:
                    entity = table.get_entity(PARTITION, key)
                except ResourceNotFoundError:
                    raise BadInputError(
                        f"subscription {subscription_id} is not known", code="SubscriptionNotFound"
                    ) from None
                update = {"PartitionKey": PARTITION, "RowKey": key, **change(entity)}
                try:
                    table.update_entity(
                        update,
                        mode=UpdateMode.MERGE,
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                except ResourceModifiedError:
                    continue  # the collector or another operator changed it: apply again
                return _from_entity({**entity, **update})

        return call_with_retry(edit, what=f"edit subscription {key}")


def _readers(entity: dict[str, Any]) -> list[str]:
    return list(json.loads(entity.get("Readers") or "[]"))


def _source_view(subscription: Subscription) -> dict[str, Any]:
    entity = _source_entity(subscription)
    return {name: entity[name] for name in SOURCE_FIELDS}


def _source_view_of(entity: dict[str, Any]) -> dict[str, Any]:
    return {name: entity[name] for name in SOURCE_FIELDS}


def _merge(previous: Subscription | None, entity: dict[str, Any]) -> Subscription:
    merged = _from_entity(entity)
    if previous is None:
        return merged
    return replace(
        merged,
        readers=previous.readers,
        billing_resource_id=previous.billing_resource_id,
        billing_plan_id=previous.billing_plan_id,
    )
