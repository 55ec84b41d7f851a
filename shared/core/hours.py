"""Reported and usage hours: UTC, on the hour, and their storage key spellings.

Every time in the project is a timezone-aware UTC ``datetime``. Keys spell hours as
``YYYYMMDDHH`` and days as ``YYYYMMDD`` so that lexical order is time order, which is what
makes a window of hours one contiguous PartitionKey range.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
HOUR_KEY_FORMAT = "%Y%m%d%H"
DAY_KEY_FORMAT = "%Y%m%d"


def utc_now() -> datetime:
    """Now, timezone-aware UTC (the one clock read; callers pass it down)."""
    return datetime.now(UTC)


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour that contains ``moment``."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    """The UTC midnight that starts the day containing ``moment``."""
    return as_utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()} has no timezone")
    return moment.astimezone(UTC)


def is_on_hour(moment: datetime) -> bool:
    return moment.minute == 0 and moment.second == 0 and moment.microsecond == 0


def last_closed_hour(now: datetime) -> datetime:
    """The newest reported hour that has ended at ``now`` (its end is <= now)."""
    return floor_hour(now) - HOUR


def hours_between(first: datetime, last: datetime) -> Iterator[datetime]:
    """Every hour start from ``first`` to ``last`` inclusive, oldest first."""
    hour = floor_hour(first)
    while hour <= last:
        yield hour
        hour += HOUR


@functools.lru_cache(maxsize=4096)
def hour_key(hour: datetime) -> str:
    """``YYYYMMDDHH`` of ``hour`` in UTC. Cached: every ledger event and stored row needs
    one, and a run's keys come from a few hours (equal instants hash equal in any zone)."""
    return as_utc(hour).strftime(HOUR_KEY_FORMAT)


def day_key(day: datetime) -> str:
    return as_utc(day).strftime(DAY_KEY_FORMAT)


def parse_hour_key(key: str) -> datetime:
    return datetime.strptime(key, HOUR_KEY_FORMAT).replace(tzinfo=UTC)


def parse_day_key(key: str) -> datetime:
    return datetime.strptime(key, DAY_KEY_FORMAT).replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 with an explicit ``+00:00`` offset, as the usage API spells times."""
    return as_utc(moment).isoformat()
