"""Six-field NCRONTAB schedules, as the Functions timer trigger reads them.

Mirrors the NCrontab library that the Azure Functions host uses for ``timerTrigger``
``schedule`` values: ``{second} {minute} {hour} {day} {month} {day-of-week}``, each field a
``*``, a number, a range ``a-b``, a list ``a,b,c`` or a step (``*/5``, ``10-40/10``,
``5/15`` meaning from 5 to the field's maximum). Months may be named (``Jan``..``Dec``) and
days of the week too (``Sun``..``Sat``, Sunday is 0).

Two NCrontab details that differ from Vixie cron and matter for schedules:

- A time matches only when the day-of-month AND the day-of-week fields both match (Vixie cron
  ORs them when both are restricted).
- Five-field expressions are refused: the Functions host needs the seconds field, and a
  five-field string silently read as six would fire at the wrong times.

Times are wall-clock fields of the datetime given (the host evaluates schedules in UTC unless
``WEBSITE_TIME_ZONE`` says otherwise); the timezone of the input is kept on the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["CronSchedule", "NcrontabError", "parse"]


class NcrontabError(ValueError):
    """The expression is not a valid six-field NCRONTAB schedule (the message names the field)."""


_MONTHS = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        start=1,
    )
}
_DAYS = {
    name: number for number, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
}

# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DAYS),
)

# The longest gap between two matches of a satisfiable schedule is 8 years (29 February on a
# given weekday needs up to 28); anything beyond that can never fire (e.g. 30 February).
_SEARCH_YEARS = 29


def _number(text: str, field: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(text.lower()) if names else None
    if value is None:
        if not text.isdigit():
            raise NcrontabError(f"{field} field: {text!r} is not a number")
        value = int(text)
    if not low <= value <= high:
        raise NcrontabError(f"{field} field: {value} is outside {low}-{high}")
    return value


def _parse_field(
    text: str, field: str, low: int, high: int, names: dict[str, int]
) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise NcrontabError(f"{field} field: empty list item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise NcrontabError(f"{field} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _number(first, field, low, high, names)
            end = _number(last, field, low, high, names)
            if start > end:
                raise NcrontabError(f"{field} field: range {base!r} runs backwards")
        else:
            start = _number(base, field, low, high, names)
            # "5/15" means 5, 20, 35, 50: from the value to the field's maximum.
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule; ``next_after`` gives the next firing time strictly after a moment."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday, as NCrontab counts

    def _day_matches(self, moment: datetime) -> bool:
        # Python's weekday() has Monday = 0; NCrontab has Sunday = 0.
        return moment.day in self.days and (moment.weekday() + 1) % 7 in self.weekdays

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule fires at ``moment`` (to the second)."""
        return (
            moment.month in self.months
            and self._day_matches(moment)
            and moment.hour in self.hours
            and moment.minute in self.minutes
            and moment.second in self.seconds
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after ``moment``, in ``moment``'s timezone."""
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        give_up = moment.year + _SEARCH_YEARS
        while candidate.year <= give_up:
            if candidate.month not in self.months:
                year, month = divmod(candidate.month, 12)  # month is 1-based: this is +1
                candidate = candidate.replace(
                    year=candidate.year + year, month=month + 1, day=1, hour=0, minute=0, second=0
                )
                continue
            if not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if candidate.minute not in self.minutes:
                candidate = candidate.replace(second=0) + timedelta(minutes=1)
                continue
            later = [second for second in self.seconds if second >= candidate.second]
            if not later:
                candidate = candidate.replace(second=0) + timedelta(minutes=1)
                continue
            return candidate.replace(second=min(later))
        raise NcrontabError(f"schedule {self.expression!r} never fires")

    def occurrences(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` firing times after ``after`` (for logs and tests)."""
        result: list[datetime] = []
        moment = after
        for _ in range(count):
            moment = self.next_after(moment)
            result.append(moment)
        return result


def parse(expression: str) -> CronSchedule:
    """Parse a six-field NCRONTAB expression, e.g. ``"0 */5 * * * *"``."""
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        raise NcrontabError(
            f"{expression!r} has {len(parts)} fields; NCRONTAB needs six: "
            "{second} {minute} {hour} {day} {month} {day-of-week}"
        )
    sets = [
        _parse_field(text, name, low, high, names)
        for text, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
    ]
    return CronSchedule(expression, *sets)
