"""Record validation: what is stored, what is quarantined, and with which reason."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.collection.validation import validate
from shared.core.meters import catalogue
from shared.core.usage import UsageRecord
from shared.storage.quarantine import Rejection
from shared.storage.usage_rows import (
    MAX_STRING_BYTES,
    UsageRow,
    fit_instance_data,
    utf16_bytes,
)

HOUR = timedelta(hours=1)
REPORTED = datetime(2026, 11, 26, 17, tzinfo=UTC)
SUB = "AAAAAAAA-1111-2222-3333-444444444444"
URI = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
GOOD = UsageRecord(
    SUB, "9cd92d4c-bafd-4492-b278-bedc2de8232a", REPORTED, REPORTED + HOUR, 8.0, URI, "local"
)
KNOWN = {SUB.lower()}


def check(record: UsageRecord) -> UsageRow | Rejection:
    return validate(record, REPORTED, catalogue(), KNOWN)


def test_good_record_is_normalised() -> None:
    """A good record becomes a row with the catalogue's meter spelling and a lower-case id."""
    row = check(GOOD)
    assert isinstance(row, UsageRow)
    assert row.meter_id == "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A"
    assert row.subscription_id == SUB.lower()
    assert row.quantity == 8.0


def test_late_record_and_zero_quantity_are_stored() -> None:
    """Usage from earlier hours (late) and zero quantities are legitimate usage."""
    late = replace(GOOD, usage_start=REPORTED - 6 * HOUR, usage_end=REPORTED - 5 * HOUR)
    assert isinstance(check(late), UsageRow)
    assert isinstance(check(replace(GOOD, quantity=0.0)), UsageRow)


def test_window_in_another_offset_is_accepted_as_utc() -> None:
    """A window spelled in another UTC offset is the same instant and is stored in UTC."""
    plus_two = timezone(timedelta(hours=2))
    row = check(
        replace(
            GOOD,
            usage_start=REPORTED.astimezone(plus_two),
            usage_end=(REPORTED + HOUR).astimezone(plus_two),
        )
    )
    assert isinstance(row, UsageRow)
    assert row.usage_start.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"quantity": -0.5}, "InvalidQuantity"),
        ({"quantity": float("nan")}, "InvalidQuantity"),
        ({"quantity": float("inf")}, "InvalidQuantity"),
        ({"quantity": "many"}, "MalformedRecord"),
        ({"meter_id": "00000000-0000-0000-0000-000000000000"}, "UnknownMeter"),
        ({"subscription_id": "bbbbbbbb-1111-2222-3333-444444444444"}, "UnknownSubscription"),
        ({"subscription_id": "x/../y"}, "MalformedSubscriptionId"),
        ({"subscription_id": None}, "MalformedSubscriptionId"),
        ({"resource_uri": "vm1"}, "MalformedResourceUri"),
        ({"resource_uri": URI.replace("/providers/", "/")}, "MalformedResourceUri"),
        ({"resource_uri": URI + "\x00"}, "MalformedResourceUri"),
        ({"resource_uri": URI + "x" * 3000}, "MalformedResourceUri"),
        ({"usage_start": REPORTED + timedelta(minutes=1)}, "UsageWindowNotOnHour"),
        ({"usage_end": REPORTED + 2 * HOUR}, "UsageWindowNotOnHour"),
        ({"usage_start": REPORTED.replace(tzinfo=None)}, "UsageWindowNotOnHour"),
        (
            {"usage_start": REPORTED + 24 * HOUR, "usage_end": REPORTED + 25 * HOUR},
            "UsageInFuture",
        ),
        ({"tags": "null"}, "InvalidInstanceData"),
        ({"tags": {"bad": float("nan")}}, "InvalidInstanceData"),
        ({"tags": {"bad": object()}}, "InvalidInstanceData"),
        ({"location": 42}, "MalformedRecord"),
    ],
)
def test_bad_records_are_rejected_with_their_reason(changes: dict, reason: str) -> None:
    """Each kind of bad input is refused with a reason an operator can filter on."""
    verdict = check(replace(GOOD, **changes))
    assert isinstance(verdict, Rejection)
    assert verdict.reason == reason
    assert len(verdict.detail) <= 500


def test_instance_data_over_a_storage_property_is_cut_key_by_key_and_the_row_kept() -> None:
    """additionalInfo over 64 KiB of UTF-16 loses its largest keys; the usage is still stored."""
    info = {"ServiceType": "Standard_A4", "Blob": "x" * 40_000, "Other": "y" * 30_000}
    row = check(replace(GOOD, additional_info=info, tags={"env": "prod"}))
    assert isinstance(row, UsageRow)
    assert row.quantity == 8.0
    assert json.loads(row.additional_info_json or "") == {
        "ServiceType": "Standard_A4",
        "Other": "y" * 30_000,
    }
    assert row.tags_json == '{"env":"prod"}'
    assert "additionalInfo" in row.instance_data_truncated
    assert "Blob" in row.instance_data_truncated


def test_fitting_counts_utf16_not_characters() -> None:
    """An astral character is two UTF-16 units: 20,000 emoji (80 KB) do not fit a property."""
    text, cut = fit_instance_data("tags", {"e": "\U0001f600" * 20_000, "k": "v"})
    assert json.loads(text or "") == {"k": "v"}
    assert cut
    assert utf16_bytes(text or "") <= MAX_STRING_BYTES
    assert fit_instance_data("tags", {"x": "a" * 32_000}) == (json.dumps({"x": "a" * 32_000},
        separators=(",", ":")), "")  # fmt: skip
