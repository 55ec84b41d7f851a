"""A usage record as a source reports it, before validation.

Sources hand the collector ``UsageRecord`` objects exactly as the resource provider said
them; nothing here is trusted yet (a quantity may be NaN, a meter unknown, a window off the
hour). ``shared.collection.validation`` decides what is stored and what is quarantined.

A record's identity is (subscription, meter, usage window, resourceUri): ``id``/``name`` of
the wire rows are not unique, so they are not part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class UsageRecord:
    subscription_id: str
    meter_id: str
    usage_start: datetime
    usage_end: datetime
    quantity: float
    resource_uri: str
    location: str = ""
    tags: dict[str, Any] | None = None
    additional_info: dict[str, Any] | None = field(default=None)


def subscription_key(record: UsageRecord) -> str:
    """The key a record is grouped, sliced and quarantined under: its subscription id in
    lower case, or the ``repr`` of a malformed (non-string) one, so every record has one."""
    subscription_id = record.subscription_id
    return subscription_id.lower() if isinstance(subscription_id, str) else repr(subscription_id)
