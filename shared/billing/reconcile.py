"""Reconciliation: what was collected, what the ledger says, what the endpoint accepted.

For a window of reported hours, every event key (billing resource, dimension, reported
hour) is looked at from three independent sides:

- storage: the chargeable rows summed again from the hourly partitions (``shared.billing.charges``);
- the ledger: the key's state, its own quantity and what was sent (own + carried in);
- the endpoint: ``GET /api/usageEvents`` (the accepted events and their quantities).

A key is in order when storage's total equals the ledger's own quantity and either the
ledger holds it as billed with the endpoint accepting exactly the quantity sent, or it was
carried forward into a key that is billed. Everything else is a :class:`Difference`:
unreported usage, pending or expired-and-waiting events, rejections (with the reason),
mismatches (accepted quantity differs from ours), events missing at the endpoint or
accepted there without a ledger record.

The endpoint side assumes one reconciliation row per accepted event (the emulator's
answer). The production service answers daily aggregates; matching those needs day-level
grouping, which this module does not do yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.billing.charges import ChargeKey, range_charges
from shared.billing.commerce import CommerceClient
from shared.billing.events import QUANTITY_REL_TOLERANCE
from shared.billing.ledger import Ledger, LedgerEntry, LedgerState
from shared.core.hours import HOUR, parse_hour_key
from shared.core.meters import ChargeableMeters
from shared.storage.account import StorageAccount

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Difference:
    """One key that is not in order; ``kind`` is stable (scripts match on it)."""

    kind: str
    resource_id: str
    dimension: str
    hour: datetime
    detail: str

    def line(self) -> str:
        return (
            f"{self.kind:<22} {self.hour:%Y-%m-%dT%H}Z  {self.resource_id}  "
            f"{self.dimension}  {self.detail}"
        )


@dataclass
class Reconciliation:
    first_hour: datetime
    last_hour: datetime
    keys: int = 0
    collected: float = 0.0
    billed: float = 0.0
    states: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary_line(self) -> str:
        states = ", ".join(f"{n} {state}" for state, n in sorted(self.states.items()))
        verdict = "in order" if self.ok else f"{len(self.differences)} difference(s)"
        return (
            f"reconcile {self.first_hour:%Y-%m-%dT%H}Z..{self.last_hour:%Y-%m-%dT%H}Z: "
            f"{self.keys} event keys, collected {self.collected:,.6f}, accepted at the "
            f"endpoint {self.billed:,.6f}; ledger: {states or 'empty'}; {verdict}"
        )


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=QUANTITY_REL_TOLERANCE, abs_tol=1e-12)


def _endpoint_rows(
    client: CommerceClient, first_hour: datetime, last_hour: datetime
) -> dict[ChargeKey, dict[str, Any]]:
    rows: dict[ChargeKey, dict[str, Any]] = {}
    for row in client.usage_events(first_hour, last_hour + HOUR):
        resource = str(row.get("resourceId") or row.get("resourceUri") or "")
        moment = datetime.fromisoformat(str(row["usageDate"]).replace("Z", "+00:00"))
        rows[(resource, str(row.get("dimension")), moment)] = row
    return rows


def reconcile(
    account: StorageAccount,
    client: CommerceClient,
    first_hour: datetime,
    last_hour: datetime,
    *,
    progress: Progress | None = None,
) -> Reconciliation:
    """Compare storage, ledger and endpoint for reported hours ``first_hour``..``last_hour``."""
    meters = ChargeableMeters(account.settings)

    def storage_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("storage: subscriptions read", done, total)

    owed, _ = range_charges(account, first_hour, last_hour, meters, progress=storage_progress)
    endpoint = _endpoint_rows(client, first_hour, last_hour)
    resources = sorted({key[0] for key in owed} | {key[0] for key in endpoint})
    ledger: dict[ChargeKey, LedgerEntry] = {}
    for done, resource_id in enumerate(resources, start=1):
        for recorded in Ledger(account, resource_id).entries(first_hour, last_hour):
            ledger[recorded.key] = recorded
        if progress is not None:
            progress("ledger: billing resources read", done, len(resources))

    result = Reconciliation(first_hour, last_hour)
    keys = sorted(set(owed) | set(ledger) | set(endpoint))
    result.keys = len(keys)
    result.collected = math.fsum(owed.values())
    result.billed = math.fsum(float(row.get("processedQuantity", 0)) for row in endpoint.values())
    for key in keys:
        entry = ledger.get(key)
        if entry is not None:
            result.states[entry.state.value] = result.states.get(entry.state.value, 0) + 1
        for kind, detail in _check(account, key, owed.get(key), entry, endpoint.get(key), ledger):
            result.differences.append(Difference(kind, key[0], key[1], key[2], detail))
    return result


def _check(
    account: StorageAccount,
    key: ChargeKey,
    collected: float | None,
    entry: LedgerEntry | None,
    accepted: dict[str, Any] | None,
    ledger: dict[ChargeKey, LedgerEntry],
) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    at_endpoint = None if accepted is None else float(accepted.get("processedQuantity", 0))
    if entry is None:
        if collected:
            found.append(("unreported", f"collected {collected!r}, no ledger record"))
        if at_endpoint is not None:
            found.append(("unexpected-at-endpoint", f"accepted {at_endpoint!r}, no ledger record"))
        return found
    if not _same(entry.own_quantity, collected or 0.0):
        found.append(
            ("storage-differs", f"collected {collected or 0.0!r}, ledger {entry.own_quantity!r}")
        )
    state = entry.state
    if state is LedgerState.PENDING:
        found.append(("pending", f"quantity {entry.quantity!r} not settled yet"))
    elif state is LedgerState.EXPIRED:
        found.append(("awaiting-carry", f"expired; {entry.quantity!r} waits for a later event"))
    elif state is LedgerState.REJECTED:
        found.append(("rejected", f"{entry.reason}: {entry.message or ''}".strip()))
    elif state is LedgerState.MISMATCH:
        found.append(
            ("mismatch", f"we sent {entry.quantity!r}, endpoint holds {entry.accepted_quantity!r}")
        )
    elif state is LedgerState.CARRIED_FORWARD:
        into = _carried_into(account, key, entry, ledger)
        if into is None or not into.state.billed:
            shown = "nothing" if into is None else into.state.value
            found.append(("carried-unbilled", f"carried into {entry.carried_into}: {shown}"))
    if state.billed:
        if at_endpoint is None:
            found.append(("missing-at-endpoint", f"ledger {state.value}, endpoint has nothing"))
        elif state is not LedgerState.MISMATCH and not _same(at_endpoint, entry.quantity):
            found.append(
                ("endpoint-differs", f"sent {entry.quantity!r}, endpoint holds {at_endpoint!r}")
            )
    elif at_endpoint is not None:
        found.append(("unexpected-at-endpoint", f"accepted {at_endpoint!r}, ledger {state.value}"))
    return found


def _carried_into(
    account: StorageAccount,
    key: ChargeKey,
    entry: LedgerEntry,
    ledger: dict[ChargeKey, LedgerEntry],
) -> LedgerEntry | None:
    if not entry.carried_into:
        return None
    into_hour = parse_hour_key(entry.carried_into)
    into = ledger.get((key[0], key[1], into_hour))
    if into is None:  # folded into an hour outside the window
        into = Ledger(account, key[0]).get(into_hour, key[1])
    if into is not None and into.state is LedgerState.CARRIED_FORWARD:
        return _carried_into(account, into.key, into, ledger)  # a chain of folds
    return into
