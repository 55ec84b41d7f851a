"""Billing events and what the commerce endpoint said about them: the vocabulary the
ledger, the reporter and the commerce client share (spec/commerce-api.md).

An event's key at the endpoint is (billing resource, dimension, UTC hour); the endpoint
keeps at most one accepted event per key. Quantities compare with a relative tolerance of
1e-9, because the endpoint echoes quantities as JSON numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.core.hours import as_utc, is_on_hour

MAX_BATCH = 25  # events per POST /batchUsageEvent
QUANTITY_REL_TOLERANCE = 1e-9


class EventStatus(StrEnum):
    """An event's outcome: the spec's per-event statuses, with ``Duplicate`` resolved."""

    ACCEPTED = "Accepted"
    DUPLICATE_CONFIRMED = "DuplicateConfirmed"  # Duplicate, accepted quantity equals ours
    MISMATCH = "Mismatch"  # Duplicate, accepted quantity differs from ours
    DUPLICATE = "Duplicate"  # Duplicate without an acceptedMessage: quantity unknown
    EXPIRED = "Expired"
    ERROR = "Error"  # retryable; returned only if the peer stops sending it (never, normally)
    RESOURCE_NOT_FOUND = "ResourceNotFound"
    RESOURCE_NOT_AUTHORIZED = "ResourceNotAuthorized"
    RESOURCE_NOT_ACTIVE = "ResourceNotActive"
    INVALID_DIMENSION = "InvalidDimension"
    INVALID_QUANTITY = "InvalidQuantity"
    BAD_ARGUMENT = "BadArgument"
    UNKNOWN = "Unknown"  # a status this client does not know; final, ``message`` says which

    @property
    def billed(self) -> bool:
        """True when the endpoint holds an accepted event for this key."""
        return self in _BILLED


_BILLED = frozenset(
    {
        EventStatus.ACCEPTED,
        EventStatus.DUPLICATE_CONFIRMED,
        EventStatus.MISMATCH,
        EventStatus.DUPLICATE,
    }
)
# What the wire may say; our resolved Duplicate variants and UNKNOWN are never read from it.
WIRE_STATUSES = {
    s.value: s
    for s in EventStatus
    if s not in (EventStatus.DUPLICATE_CONFIRMED, EventStatus.MISMATCH, EventStatus.UNKNOWN)
}


def endpoint_key(key: tuple[str, str, datetime]) -> tuple[str, str, datetime]:
    """A (resource, dimension, time) key as the endpoint compares it: resource and dimension
    without case. The resource is a GUID (the OpenAPI file types ``resourceId`` as a uuid)
    or an ARM URI, both case-insensitive, and the docs do not promise the case of an echo
    (spec/commerce-api.md, "What the docs do not promise"): answers and daily rows are
    matched to our events through this key, never as sent."""
    resource, dimension, moment = key
    return (*endpoint_pair(resource, dimension), moment)


def endpoint_pair(resource_id: str, dimension: str) -> tuple[str, str]:
    """(resource, dimension) as the endpoint compares them (``endpoint_key``)."""
    return (resource_id.casefold(), dimension.casefold())


@dataclass(frozen=True)
class UsageEvent:
    """One billing event: (resource, dimension, hour) is its key at the endpoint.

    ``resource_id`` is the billed resource; a value starting with ``/`` is an ARM resource
    URI (managed apps) and is sent as ``resourceUri``. ``effective_start_time`` must be an
    aware datetime on the hour; it is normalised to UTC. ``quantity`` must be finite (JSON
    has no NaN); whether it is > 0 is the endpoint's call (``InvalidQuantity``), so the
    ledger records the peer's reason.
    """

    resource_id: str
    plan_id: str
    dimension: str
    quantity: float
    effective_start_time: datetime

    def __post_init__(self) -> None:
        moment = as_utc(self.effective_start_time)
        if not is_on_hour(moment):
            raise ValueError(f"effective_start_time {moment.isoformat()} is not on the hour")
        if not math.isfinite(self.quantity):
            raise ValueError(f"quantity {self.quantity!r} is not finite")
        if not (self.resource_id and self.plan_id and self.dimension):
            raise ValueError("resource_id, plan_id and dimension must be non-empty")
        object.__setattr__(self, "effective_start_time", moment)

    @property
    def key(self) -> tuple[str, str, datetime]:
        """The endpoint's duplicate key: (resource, dimension, UTC hour)."""
        return (self.resource_id, self.dimension, self.effective_start_time)

    def to_wire(self) -> dict[str, Any]:
        resource_field = "resourceUri" if self.resource_id.startswith("/") else "resourceId"
        return {
            resource_field: self.resource_id,
            "quantity": self.quantity,
            "dimension": self.dimension,
            "effectiveStartTime": self.effective_start_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "planId": self.plan_id,
        }


@dataclass(frozen=True)
class EventOutcome:
    """What the endpoint said about one event.

    ``usage_event_id``: the accepted event's id (ours on ``Accepted``, the original's on a
    duplicate). ``accepted_quantity``: the quantity the endpoint holds for the key (echoed on
    ``Accepted``, from ``acceptedMessage`` on a duplicate), else None. ``reason`` is the
    peer's error code, ``message`` its text. ``sends``: how many requests of the call carried
    the event (1: this answer is to its only send; more: an earlier send may still reach the
    endpoint, as a duplicate, after this answer).
    """

    event: UsageEvent
    status: EventStatus
    usage_event_id: str | None = None
    accepted_quantity: float | None = None
    reason: str | None = None
    message: str | None = None
    sends: int = 1
