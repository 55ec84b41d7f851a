"""Decide whether a source's usage record may be stored, and say why not.

Usage is money: a record that is not plainly right is never stored as usage. It goes to the
quarantine with a reason code an operator can filter on, and the rest of the hour carries
on. The checks, each with its reason:

- ``MalformedSubscriptionId``: not a GUID (it would also corrupt storage keys);
- ``UnknownSubscription``: the source did not list the subscription for this hour;
- ``UnknownMeter``: not in the catalogue (compared case-insensitively);
- ``InvalidQuantity``: negative, NaN or infinite;
- ``UsageWindowNotOnHour``: the window is not exactly one whole UTC hour;
- ``UsageInFuture``: the window starts after the reported hour (usage cannot be reported
  before it happens);
- ``MalformedResourceUri``: not an ARM id of this subscription, or too long;
- ``InvalidInstanceData``: tags/additionalInfo not JSON objects (or not JSON at all).

Instance data too large for a storage property is not a reason to lose the usage: the row is
stored with the largest keys cut and says so (``shared.storage.usage_rows.fit_instance_data``).
- ``MalformedRecord``: anything else that made the record unreadable (wrong types).
"""

from __future__ import annotations

import math
import re
from collections.abc import Container
from datetime import datetime

from shared.core.hours import HOUR, is_on_hour
from shared.core.meters import MeterCatalogue
from shared.core.usage import UsageRecord
from shared.storage.quarantine import Rejection
from shared.storage.usage_rows import UsageRow, fit_instance_data

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_RESOURCE_URI = 2_048
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def validate(
    record: UsageRecord,
    reported_hour: datetime,
    catalogue: MeterCatalogue,
    known_subscriptions: Container[str],
) -> UsageRow | Rejection:
    """The storable row for ``record``, or why it must be quarantined."""
    try:
        return _validate(record, reported_hour, catalogue, known_subscriptions)
    except (TypeError, ValueError, AttributeError) as error:
        return Rejection("MalformedRecord", f"{type(error).__name__}: {error}"[:500])


def _validate(
    record: UsageRecord,
    reported_hour: datetime,
    catalogue: MeterCatalogue,
    known_subscriptions: Container[str],
) -> UsageRow | Rejection:
    subscription_id = record.subscription_id
    if not isinstance(subscription_id, str) or not GUID.match(subscription_id):
        return Rejection("MalformedSubscriptionId", f"subscription id {subscription_id!r}"[:500])
    subscription_id = subscription_id.lower()
    if subscription_id not in known_subscriptions:
        return Rejection("UnknownSubscription", f"subscription {subscription_id} is not listed")
    meter = catalogue.lookup(record.meter_id)
    if meter is None:
        return Rejection("UnknownMeter", f"meter {record.meter_id!r}"[:500])
    quantity = float(record.quantity)
    if not math.isfinite(quantity) or quantity < 0:
        return Rejection("InvalidQuantity", f"quantity {record.quantity!r}")
    start, end = record.usage_start, record.usage_end
    if start.tzinfo is None or end.tzinfo is None:
        return Rejection("UsageWindowNotOnHour", "usage window has no timezone")
    if not is_on_hour(start) or end - start != HOUR or start.utcoffset() != end.utcoffset():
        return Rejection(
            "UsageWindowNotOnHour", f"usage window {start.isoformat()}..{end.isoformat()}"
        )
    if start > reported_hour:
        return Rejection(
            "UsageInFuture",
            f"usage starts {start.isoformat()}, after reported hour {reported_hour.isoformat()}",
        )
    uri = record.resource_uri
    prefix = f"/subscriptions/{subscription_id}/"
    if (
        not isinstance(uri, str)
        or len(uri) > MAX_RESOURCE_URI
        or not uri.lower().startswith(prefix)
        or "/providers/" not in uri.lower()
        or CONTROL_CHARACTERS.search(uri)
    ):
        return Rejection("MalformedResourceUri", f"resourceUri {uri!r}"[:500])
    location = record.location or ""
    if not isinstance(location, str) or len(location) > 256:
        return Rejection("MalformedRecord", "location is not a short string")
    # The record's types are the source's promise, not a fact: check what arrived.
    instance_data: tuple[tuple[str, object], ...] = (
        ("tags", record.tags),
        ("additionalInfo", record.additional_info),
    )
    for name, value in instance_data:
        if value is not None and not isinstance(value, dict):
            return Rejection("InvalidInstanceData", f"{name} is {type(value).__name__}")
    try:
        tags_json, tags_cut = fit_instance_data("tags", record.tags)
        info_json, info_cut = fit_instance_data("additionalInfo", record.additional_info)
    except (TypeError, ValueError) as error:
        return Rejection("InvalidInstanceData", f"not storable as JSON: {error}"[:500])
    return UsageRow(
        subscription_id=subscription_id,
        meter_id=meter.meter_id,
        usage_start=start.astimezone(reported_hour.tzinfo),
        usage_end=end.astimezone(reported_hour.tzinfo),
        quantity=quantity,
        resource_uri=uri,
        location=location,
        tags_json=tags_json,
        additional_info_json=info_json,
        instance_data_truncated="; ".join(filter(None, (tags_cut, info_cut)))[:1000],
    )
