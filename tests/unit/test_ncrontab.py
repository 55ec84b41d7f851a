"""Six-field NCRONTAB parsing and next occurrences, as the Functions timer trigger reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from devstack.ncrontab import NcrontabError, parse


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_star_number_list_range_and_step_fields() -> None:
    """Each field form expands to the values NCrontab gives it."""
    schedule = parse("0,30 */15 9-17/4 1,15 Jan-Mar Mon-Fri")
    assert schedule.seconds == {0, 30}
    assert schedule.minutes == {0, 15, 30, 45}
    assert schedule.hours == {9, 13, 17}
    assert schedule.days == {1, 15}
    assert schedule.months == {1, 2, 3}
    assert schedule.weekdays == {1, 2, 3, 4, 5}


def test_value_with_step_runs_to_the_field_maximum() -> None:
    """``5/20`` in the minute field means 5, 25, 45."""
    assert parse("0 5/20 * * * *").minutes == {5, 25, 45}


def test_hourly_at_five_past_fires_next_hour_after_its_slot() -> None:
    """``0 5 * * * *`` fires at :05:00, strictly after the given moment."""
    schedule = parse("0 5 * * * *")
    assert schedule.next_after(at("2026-11-26T10:04:59")) == at("2026-11-26T10:05:00")
    assert schedule.next_after(at("2026-11-26T10:05:00")) == at("2026-11-26T11:05:00")
    assert schedule.next_after(at("2026-11-26T10:05:00.500")) == at("2026-11-26T11:05:00")


def test_every_five_minutes() -> None:
    """``0 */5 * * * *`` fires on each multiple of five minutes."""
    schedule = parse("0 */5 * * * *")
    assert schedule.occurrences(at("2026-11-26T10:07:30"), 3) == [
        at("2026-11-26T10:10:00"),
        at("2026-11-26T10:15:00"),
        at("2026-11-26T10:20:00"),
    ]


def test_rolls_over_day_month_and_year() -> None:
    """The next slot after the last one of a year is in the next year."""
    schedule = parse("0 0 0 * * *")
    assert schedule.next_after(at("2026-12-31T23:59:59")) == at("2027-01-01T00:00:00")
    assert parse("30 15 6 1 * *").next_after(at("2026-01-31T07:00:00")) == at("2026-02-01T06:15:30")


def test_day_and_weekday_must_both_match() -> None:
    """NCrontab ANDs day-of-month and day-of-week: Friday the 13th."""
    schedule = parse("0 0 0 13 * Fri")
    assert schedule.next_after(at("2026-01-01T00:00:00")) == at("2026-02-13T00:00:00")
    assert schedule.next_after(at("2026-02-13T00:00:00")) == at("2026-03-13T00:00:00")


def test_sunday_is_zero() -> None:
    """Day-of-week 0 is Sunday."""
    assert parse("0 0 12 * * 0").next_after(at("2026-11-26T00:00:00")) == at("2026-11-29T12:00:00")


def test_leap_day_is_found_years_ahead() -> None:
    """29 February is four years away after one passes."""
    assert parse("0 0 0 29 2 *").next_after(at("2024-03-01T00:00:00")) == at("2028-02-29T00:00:00")


def test_keeps_the_timezone_of_the_input() -> None:
    """Fields are wall-clock fields of the moment given; its tzinfo is kept."""
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2026, 11, 26, 10, 0, 1, tzinfo=plus_two)
    assert parse("0 0 * * * *").next_after(moment) == datetime(2026, 11, 26, 11, tzinfo=plus_two)


def test_matches() -> None:
    """``matches`` is true exactly on firing seconds."""
    schedule = parse("0 */5 * * * *")
    assert schedule.matches(at("2026-11-26T10:10:00"))
    assert not schedule.matches(at("2026-11-26T10:10:01"))


def test_schedule_that_never_fires_is_an_error() -> None:
    """30 February never comes: a clear error instead of an endless search."""
    with pytest.raises(NcrontabError, match="never fires"):
        parse("0 0 0 30 2 *").next_after(at("2026-01-01T00:00:00"))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 5 * * *", "six"),
        ("0 0 5 * * * *", "six"),
        ("60 * * * * *", "second field"),
        ("0 0 24 * * *", "hour field"),
        ("0 0 0 0 * *", "day field"),
        ("0 0 0 * 13 *", "month field"),
        ("0 0 0 * * 7", "day-of-week field"),
        ("0 */0 * * * *", "step"),
        ("0 10-5 * * * *", "backwards"),
        ("0 x * * * *", "not a number"),
        ("0 1,,2 * * * *", "empty"),
    ],
)
def test_invalid_expressions_name_the_problem(expression: str, message: str) -> None:
    """Bad expressions fail at parse time with the field named."""
    with pytest.raises(NcrontabError, match=message):
        parse(expression)
