"""The commerce emulator over real HTTP: the metering API's rules of spec/commerce-api.md."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from devstack.commerce_emulator import API_VERSION, CommerceEmulator

TOKEN = "emulator-test-token"
NOW = datetime(2026, 11, 26, 17, 30, tzinfo=UTC)
HOUR = datetime(2026, 11, 26, 16, tzinfo=UTC)


@pytest.fixture
def emulator() -> Iterator[CommerceEmulator]:
    with CommerceEmulator(
        token=TOKEN,
        clock=lambda: NOW,
        invalid_dimensions={"no-such-dimension"},
        unknown_resources={"gone-resource"},
    ) as running:
        yield running


def event(
    resource: str = "res-1",
    dimension: str = "vcpu-hours",
    quantity: Any = 4.0,
    start: datetime | str = HOUR,
    **extra: Any,
) -> dict[str, Any]:
    when = start if isinstance(start, str) else start.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "resourceId": resource,
        "quantity": quantity,
        "dimension": dimension,
        "effectiveStartTime": when,
        "planId": "plan-a",
        **extra,
    }


def call(
    emulator: CommerceEmulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    params: dict[str, str] | None = None,
) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.request(
        method,
        f"{emulator.base_url}{path}",
        params={"api-version": API_VERSION, **(params or {})},
        json=body,
        headers=headers,
        timeout=10,
    )


def batch(emulator: CommerceEmulator, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = call(emulator, "POST", "/api/batchUsageEvent", {"request": events})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["count"] == len(events)
    results: list[dict[str, Any]] = payload["result"]
    return results


def test_batch_accepts_events_with_ids(emulator: CommerceEmulator) -> None:
    """Valid events come back Accepted with a usageEventId and are kept."""
    results = batch(emulator, [event("res-1"), event("res-2", quantity=2)])
    assert [r["status"] for r in results] == ["Accepted", "Accepted"]
    assert all(r["usageEventId"] for r in results)
    kept = emulator.accepted_events()
    assert {(e["resourceId"], e["quantity"]) for e in kept} == {("res-1", 4.0), ("res-2", 2)}
    assert emulator.calls == {"batchUsageEvent": 1}


def test_duplicate_in_batch_returns_accepted_message(emulator: CommerceEmulator) -> None:
    """A second event for the same resource, dimension and clock hour is Duplicate + original."""
    (first,) = batch(emulator, [event(quantity=4.0)])
    (again,) = batch(emulator, [event(quantity=9.0, start="2026-11-26T16:45:00Z")])
    assert again["status"] == "Duplicate"
    accepted = again["error"]["additionalInfo"]["acceptedMessage"]
    assert accepted["usageEventId"] == first["usageEventId"]
    assert accepted["quantity"] == 4.0
    assert len(emulator.accepted_events()) == 1


def test_duplicate_single_call_is_409_with_accepted_message(emulator: CommerceEmulator) -> None:
    """The single-event route answers 409 Conflict carrying the accepted event."""
    first = call(emulator, "POST", "/api/usageEvent", event(quantity=3.0))
    assert first.status_code == 200
    assert first.json()["status"] == "Accepted"
    second = call(emulator, "POST", "/api/usageEvent", event(quantity=3.0))
    assert second.status_code == 409
    accepted = second.json()["additionalInfo"]["acceptedMessage"]
    assert accepted["usageEventId"] == first.json()["usageEventId"]
    assert accepted["quantity"] == 3.0


def test_more_than_25_events_is_bad_argument(emulator: CommerceEmulator) -> None:
    """A batch of 26 events is refused whole with 400 BadArgument and nothing is kept."""
    events = [event(f"res-{i}") for i in range(26)]
    response = call(emulator, "POST", "/api/batchUsageEvent", {"request": events})
    assert response.status_code == 400
    assert response.json()["code"] == "BadArgument"
    assert emulator.accepted_events() == []


def test_bare_array_is_bad_argument(emulator: CommerceEmulator) -> None:
    """A bare JSON array instead of {"request": [...]} is 400 BadArgument."""
    response = call(emulator, "POST", "/api/batchUsageEvent", [event()])
    assert response.status_code == 400
    assert response.json()["code"] == "BadArgument"


def test_event_older_than_24_hours_expires_with_moved_clock(emulator: CommerceEmulator) -> None:
    """Moving the clock 25 hours on makes the same event Expired."""
    emulator.clock = lambda: NOW + timedelta(hours=25)
    (result,) = batch(emulator, [event()])
    assert result["status"] == "Expired"
    assert emulator.accepted_events() == []


def test_future_event_is_bad_argument(emulator: CommerceEmulator) -> None:
    """An effectiveStartTime after the clock's now is refused as BadArgument."""
    (result,) = batch(emulator, [event(start=NOW + timedelta(hours=1))])
    assert result["status"] == "BadArgument"
    assert result["error"]["target"] == "effectiveStartTime"


def test_unparseable_time_is_bad_argument(emulator: CommerceEmulator) -> None:
    """An effectiveStartTime that is not a date-time is BadArgument."""
    (result,) = batch(emulator, [event(start="yesterday-ish")])
    assert result["status"] == "BadArgument"


@pytest.mark.parametrize("quantity", [0, -1.5])
def test_non_positive_quantity_is_invalid_quantity(
    emulator: CommerceEmulator, quantity: float
) -> None:
    """A quantity that is not greater than zero is InvalidQuantity."""
    (result,) = batch(emulator, [event(quantity=quantity)])
    assert result["status"] == "InvalidQuantity"


def test_unknown_dimension_is_invalid_dimension(emulator: CommerceEmulator) -> None:
    """A dimension in invalid_dimensions is InvalidDimension; the rest of the batch is kept."""
    results = batch(emulator, [event(dimension="no-such-dimension"), event("res-2")])
    assert [r["status"] for r in results] == ["InvalidDimension", "Accepted"]
    assert len(emulator.accepted_events()) == 1


def test_unknown_resource_is_resource_not_found(emulator: CommerceEmulator) -> None:
    """A resource in unknown_resources is ResourceNotFound."""
    (result,) = batch(emulator, [event("gone-resource")])
    assert result["status"] == "ResourceNotFound"


def test_both_resource_id_and_uri_is_bad_argument(emulator: CommerceEmulator) -> None:
    """Exactly one of resourceId and resourceUri: both is BadArgument."""
    (result,) = batch(emulator, [event(resourceUri="/subscriptions/x/resourceGroups/y")])
    assert result["status"] == "BadArgument"


def test_single_call_refusal_is_400_with_status_code(emulator: CommerceEmulator) -> None:
    """The single-event route answers a final refusal as 400 with the status as code."""
    response = call(emulator, "POST", "/api/usageEvent", event(quantity=0))
    assert response.status_code == 400
    assert response.json()["code"] == "InvalidQuantity"


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_403(emulator: CommerceEmulator, token: str | None) -> None:
    """Without the configured bearer token every route answers 403 and keeps nothing."""
    response = call(emulator, "POST", "/api/batchUsageEvent", {"request": [event()]}, token=token)
    assert response.status_code == 403
    listing = call(
        emulator, "GET", "/api/usageEvents", token=token, params={"usageStartDate": "2026-11-26"}
    )
    assert listing.status_code == 403
    assert emulator.accepted_events() == []


def test_missing_api_version_is_bad_argument(emulator: CommerceEmulator) -> None:
    """A request without api-version=2018-08-31 is 400 BadArgument."""
    response = requests.post(
        f"{emulator.base_url}/api/batchUsageEvent",
        json={"request": [event()]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "BadArgument"


# The fact sheet's "Retrieving what was accepted" (../shared/spec/commerce-api.md), as listed
# there: the fields of a daily row, its reconStatus values and the call's arguments.
FACT_SHEET_ROW_FIELDS = {
    "usageDate",
    "usageResourceId",
    "dimension",
    "planId",
    "planName",
    "offerId",
    "offerName",
    "offerType",
    "azureSubscriptionId",
    "submittedQuantity",
    "processedQuantity",
    "submittedCount",
    "reconStatus",
}
FACT_SHEET_RECON_STATUSES = {
    "Submitted",
    "Accepted",
    "Rejected",
    "Mismatch",
    "TestHeaders",
    "DryRun",
}


def daily(emulator: CommerceEmulator, **params: str) -> list[dict[str, Any]]:
    response = call(emulator, "GET", "/api/usageEvents", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def test_usage_events_answers_the_fact_sheets_daily_rows(emulator: CommerceEmulator) -> None:
    """GET usageEvents answers one row per (day, resource, dimension, plan) with exactly the
    fact sheet's fields and statuses: the day's sums and count, no hour and no event id."""
    batch(
        emulator,
        [
            event("res-1", quantity=4.0),
            event("res-1", quantity=1.5, start=HOUR - timedelta(hours=3)),
            event("res-1", dimension="gb-hours", quantity=2.0),
            event("res-2", quantity=7.25, start=HOUR - timedelta(hours=17)),  # the day before
        ],
    )
    rows = daily(emulator, usageStartDate="2026-11-25", usageEndDate="2026-11-26")
    for row in rows:
        assert set(row) == FACT_SHEET_ROW_FIELDS
        assert row["reconStatus"] in FACT_SHEET_RECON_STATUSES
    assert [
        (r["usageDate"], r["usageResourceId"], r["dimension"], r["submittedQuantity"],
         r["processedQuantity"], r["submittedCount"], r["reconStatus"])
        for r in rows
    ] == [
        ("2026-11-25T00:00:00Z", "res-2", "vcpu-hours", 7.25, 7.25, 1, "Accepted"),
        ("2026-11-26T00:00:00Z", "res-1", "gb-hours", 2.0, 2.0, 1, "Accepted"),
        ("2026-11-26T00:00:00Z", "res-1", "vcpu-hours", 5.5, 5.5, 2, "Accepted"),
    ]  # fmt: skip
    assert {r["planId"] for r in rows} == {"plan-a"}


def test_usage_events_days_and_filters(emulator: CommerceEmulator) -> None:
    """usageStartDate/usageEndDate select whole UTC days (a date-time means its day; the end
    day is included; no end means up to now); dimension, planId and reconStatus filter."""
    batch(
        emulator,
        [event("res-1"), event("res-1", dimension="gb-hours", start=HOUR - timedelta(hours=20))],
    )
    assert len(daily(emulator, usageStartDate="2026-11-26T15:00:00Z")) == 1
    assert len(daily(emulator, usageStartDate="2026-11-25")) == 2
    assert (
        daily(emulator, usageStartDate="2026-11-25", usageEndDate="2026-11-25T23:00:00Z")[0][
            "dimension"
        ]
        == "gb-hours"
    )
    assert [r["dimension"] for r in daily(emulator, usageStartDate="2026-11-25",
                                          dimension="vcpu-hours")] == ["vcpu-hours"]  # fmt: skip
    assert daily(emulator, usageStartDate="2026-11-25", planId="other-plan") == []
    assert daily(emulator, usageStartDate="2026-11-25", reconStatus="Submitted") == []


def test_unprocessed_days_are_submitted_and_processing_can_disagree() -> None:
    """A day with an event younger than processing_delay is Submitted; set_processed makes a
    day Mismatch (processed differs, non-zero) or Rejected (nothing processed)."""
    clock = {"now": NOW}
    with CommerceEmulator(
        token=TOKEN, clock=lambda: clock["now"], processing_delay=timedelta(hours=2)
    ) as emulator:
        batch(emulator, [event("res-1"), event("res-2", quantity=3.0)])
        statuses = {r["usageResourceId"]: r["reconStatus"] for r in daily(emulator,
                    usageStartDate="2026-11-26")}  # fmt: skip
        assert statuses == {"res-1": "Submitted", "res-2": "Submitted"}
        clock["now"] = NOW + timedelta(hours=2)
        emulator.set_processed("res-1", "vcpu-hours", HOUR, 3.0)
        emulator.set_processed("res-2", "vcpu-hours", HOUR, 0.0)
        rows = {r["usageResourceId"]: r for r in daily(emulator, usageStartDate="2026-11-26")}
    assert (rows["res-1"]["reconStatus"], rows["res-1"]["submittedQuantity"],
            rows["res-1"]["processedQuantity"]) == ("Mismatch", 4.0, 3.0)  # fmt: skip
    assert (rows["res-2"]["reconStatus"], rows["res-2"]["processedQuantity"]) == ("Rejected", 0.0)


def test_usage_events_needs_a_start_date(emulator: CommerceEmulator) -> None:
    """usageEvents without usageStartDate is 400 BadArgument."""
    response = call(emulator, "GET", "/api/usageEvents")
    assert response.status_code == 400


def test_throttle_fault_answers_429_with_retry_after(emulator: CommerceEmulator) -> None:
    """fail_next('429') answers 429 with the configured Retry-After, then behaves."""
    emulator.fail_next("429", retry_after=7)
    throttled = call(emulator, "POST", "/api/batchUsageEvent", {"request": [event()]})
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    assert emulator.accepted_events() == []
    assert batch(emulator, [event()])[0]["status"] == "Accepted"
    assert emulator.calls == {"batchUsageEvent": 2}


def test_accept_then_drop_keeps_events_without_answering(emulator: CommerceEmulator) -> None:
    """accept_then_drop keeps the events but closes the connection with no answer."""
    emulator.fail_next("accept_then_drop")
    with pytest.raises(requests.ConnectionError):
        call(emulator, "POST", "/api/batchUsageEvent", {"request": [event()]})
    assert len(emulator.accepted_events()) == 1
    assert emulator.call_log()[-1].status is None


def test_event_error_fault_marks_chosen_events_and_keeps_others(
    emulator: CommerceEmulator,
) -> None:
    """event_error answers 200 with status Error at the chosen positions, keeping only the rest."""
    emulator.fail_next("event_error", event_indices=[1])
    results = batch(emulator, [event("res-1"), event("res-2"), event("res-3")])
    assert [r["status"] for r in results] == ["Accepted", "Error", "Accepted"]
    assert {e["resourceId"] for e in emulator.accepted_events()} == {"res-1", "res-3"}


def test_seeded_fault_plan_is_reproducible() -> None:
    """Two emulators with the same seed fail the same requests the same way."""
    statuses = []
    for _ in range(2):
        with CommerceEmulator(token=TOKEN, clock=lambda: NOW) as running:
            running.set_fault_rate(0.5, kinds=["429", "500"], seed=42)
            statuses.append(
                [
                    call(
                        running, "GET", "/api/usageEvents", params={"usageStartDate": "2026-11-26"}
                    ).status_code
                    for _ in range(12)
                ]
            )
    assert statuses[0] == statuses[1]
    assert {429, 500, 200} <= set(statuses[0])


def test_accepted_events_survive_a_restart_with_a_state_file(tmp_path) -> None:
    """With a state file, a restarted emulator still knows what it accepted (Duplicate)."""
    state = tmp_path / "accepted.json"
    event = {
        "resourceId": "res-1",
        "quantity": 2.5,
        "dimension": "dim-1",
        "effectiveStartTime": "2026-11-26T16:00:00Z",
        "planId": "plan-a",
    }
    clock = lambda: datetime(2026, 11, 26, 17, 30, tzinfo=UTC)  # noqa: E731
    for expected in ("Accepted", "Duplicate"):
        with CommerceEmulator(token=TOKEN, clock=clock, state_file=state) as emulator:
            answer = requests.post(
                f"{emulator.base_url}/api/batchUsageEvent",
                params={"api-version": API_VERSION},
                json={"request": [event]},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
            assert answer.json()["result"][0]["status"] == expected


# --- modes: what the docs leave open, answered the inconvenient way -------------------------


def test_rows_can_appear_late_and_leave_submitted_late() -> None:
    """row_delay: an accepted event is not in its day's row at first (the row is absent, or
    smaller and Accepted); processing_delay keeps the row Submitted after it appears."""
    clock = {"now": NOW}
    with CommerceEmulator(
        token=TOKEN,
        clock=lambda: clock["now"],
        row_delay=timedelta(hours=2),
        processing_delay=timedelta(hours=3),
    ) as emulator:
        batch(emulator, [event("res-1")])
        assert daily(emulator, usageStartDate="2026-11-26") == []
        clock["now"] = NOW + timedelta(hours=2)
        batch(emulator, [event("res-1", start=HOUR + timedelta(hours=1))])  # a later event
        (row,) = daily(emulator, usageStartDate="2026-11-26")
        assert (row["submittedCount"], row["reconStatus"]) == (1, "Submitted")
        clock["now"] = NOW + timedelta(hours=3)
        (row,) = daily(emulator, usageStartDate="2026-11-26")
        assert (row["submittedCount"], row["reconStatus"]) == (1, "Accepted")  # smaller
        clock["now"] = NOW + timedelta(hours=5)
        (row,) = daily(emulator, usageStartDate="2026-11-26")
        assert (row["submittedCount"], row["submittedQuantity"]) == (2, 8.0)


def test_echo_in_another_case_and_a_resend_in_another_case_is_a_duplicate() -> None:
    """echo_other_case: results, acceptedMessage and daily rows name the resource in another
    case and the time with seven fractional digits; the resource is one GUID whatever its
    case, so a re-send spelled otherwise is a Duplicate."""
    guid = "0b1e2c3d-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    with CommerceEmulator(token=TOKEN, clock=lambda: NOW, echo_other_case=True) as emulator:
        (first,) = batch(emulator, [event(guid)])
        assert first["status"] == "Accepted"
        assert first["resourceId"] == guid.upper()
        assert first["effectiveStartTime"] == "2026-11-26T16:00:00.0000000Z"
        (again,) = batch(emulator, [event(guid.upper())])
        assert again["status"] == "Duplicate"
        assert again["error"]["additionalInfo"]["acceptedMessage"]["resourceId"] == guid.upper()
        (row,) = daily(emulator, usageStartDate="2026-11-26")
    assert row["usageResourceId"] == guid.upper()
    assert row["submittedCount"] == 1


def test_counting_submissions_adds_duplicates_and_expired_sends_to_the_day() -> None:
    """count_submissions: the day's submittedCount and submittedQuantity also count
    duplicates and expired sends (processedQuantity too: the row stays Accepted)."""
    clock = {"now": NOW}
    with CommerceEmulator(token=TOKEN, clock=lambda: clock["now"]) as emulator:
        batch(emulator, [event(quantity=4.0)])
        assert batch(emulator, [event(quantity=4.0)])[0]["status"] == "Duplicate"
        clock["now"] = NOW + timedelta(hours=25)
        assert batch(emulator, [event(quantity=1.5, start=HOUR - timedelta(hours=1))])[0][
            "status"
        ] == "Expired"  # fmt: skip
        (plain,) = daily(emulator, usageStartDate="2026-11-26", usageEndDate="2026-11-26")
        emulator.count_submissions = True
        (counted,) = daily(emulator, usageStartDate="2026-11-26", usageEndDate="2026-11-26")
    assert (plain["submittedCount"], plain["submittedQuantity"]) == (1, 4.0)
    assert (counted["submittedCount"], counted["submittedQuantity"]) == (3, 9.5)
    assert (counted["processedQuantity"], counted["reconStatus"]) == (9.5, "Accepted")


def test_one_invalid_event_can_refuse_the_whole_batch() -> None:
    """refuse_whole_batch: one invalid (or expired) event makes the batch 400 BadArgument and
    nothing is kept; a batch of valid events, and the single-event route, are unchanged."""
    with CommerceEmulator(
        token=TOKEN,
        clock=lambda: NOW,
        invalid_dimensions={"no-such-dimension"},
        refuse_whole_batch=True,
    ) as emulator:
        for bad in (event(dimension="no-such-dimension"), event(start=NOW - timedelta(days=2))):
            response = call(
                emulator, "POST", "/api/batchUsageEvent", {"request": [event("res-2"), bad]}
            )
            assert response.status_code == 400
            assert response.json()["code"] == "BadArgument"
        assert emulator.accepted_events() == []
        assert [r["status"] for r in batch(emulator, [event("res-2")])] == ["Accepted"]
        single = call(emulator, "POST", "/api/usageEvent", event(dimension="no-such-dimension"))
        assert (single.status_code, single.json()["code"]) == (400, "InvalidDimension")


def test_cancelled_resources_accept_only_hours_before_the_cancellation() -> None:
    """cancelled: hours before the cancellation are accepted, the rest ResourceNotActive;
    unauthorized_resources: ResourceNotAuthorized."""
    with CommerceEmulator(
        token=TOKEN,
        clock=lambda: NOW,
        cancelled={"Res-1": HOUR},
        unauthorized_resources={"res-9"},
    ) as emulator:
        results = batch(
            emulator,
            [event("res-1", start=HOUR - timedelta(hours=2)), event("res-1"), event("RES-9")],
        )
    assert [r["status"] for r in results] == [
        "Accepted",
        "ResourceNotActive",
        "ResourceNotAuthorized",
    ]
    assert results[1]["error"]["target"] == "resourceId"


def test_usage_events_can_answer_in_pages_linked_by_next_link() -> None:
    """page_size: {"value", "nextLink"} pages; following each absolute nextLink (on the same
    host) gives exactly the rows of the unpaged answer."""
    with CommerceEmulator(token=TOKEN, clock=lambda: NOW) as emulator:
        batch(emulator, [event(f"res-{n}") for n in range(5)])
        whole = daily(emulator, usageStartDate="2026-11-26")
        emulator.page_size = 2
        pages = [daily_page(emulator, params={"usageStartDate": "2026-11-26"})]
        while "nextLink" in pages[-1]:
            link = pages[-1]["nextLink"]
            assert link.startswith(emulator.base_url + "/api/usageEvents?")
            pages.append(daily_page(emulator, url=link))
    assert [len(page["value"]) for page in pages] == [2, 2, 1]
    assert [row for page in pages for row in page["value"]] == whole


def daily_page(
    emulator: CommerceEmulator, *, params: dict[str, str] | None = None, url: str | None = None
) -> dict[str, Any]:
    if url is None:
        response = call(emulator, "GET", "/api/usageEvents", params=params)
    else:
        response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page
