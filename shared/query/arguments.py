"""The usage API's request: which route, which subscription, and the validated arguments.

Turns the raw path remainder and query arguments of a request into a :class:`UsageQuery`,
or refuses with ``BadInputError`` carrying the spec's code (spec/usage-api.md, Arguments):

- argument *names* are case-insensitive (clients send ``reportedstarttime`` and
  ``ReportedStartTime``); a name given twice in one request, in the same or another
  spelling, is ambiguous -> 400 (never "the last one wins"). Arguments are read from the
  raw query string (:func:`query_arguments`), because a mapping has already lost repeats;
- times are UTC ISO 8601. A ``+`` that was not URL-escaped arrives as a space (form
  decoding), and some clients escape twice (``%253a``): both are repaired before parsing;
- the window is inclusive start, exclusive end, aligned to the granularity (on the hour;
  on UTC midnight for daily), start < end, end not in the future.

The route is recognised from the path after ``/subscriptions`` (the function's catch-all),
so a request with an empty or missing subscription segment still reaches us and gets
``SubscriptionIdMissingInRequest`` instead of the host's bare 404.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from shared.core.errors import BadInputError, UnknownResourceError
from shared.core.hours import DAY, HOUR, as_utc

API_VERSION: Final = "2015-06-01-preview"
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PATH = re.compile(
    r"^/?(?P<subscription>[^/]*)/providers/"
    r"(?P<resource>microsoft\.commerce/usageaggregates"
    r"|microsoft\.commerce\.admin/subscriberusageaggregates)/?$",
    re.IGNORECASE,
)
# The same resource with no subscription segment at all: /subscriptions/providers/...
_PATH_WITHOUT_SUBSCRIPTION = re.compile(
    r"^/?providers/(microsoft\.commerce/usageaggregates"
    r"|microsoft\.commerce\.admin/subscriberusageaggregates)/?$",
    re.IGNORECASE,
)
# A space (a "+" decoded as form data) before a UTC offset at the end of a time.
_SPACE_OFFSET = re.compile(r" (\d{2}:?\d{2})$")


class Route(StrEnum):
    TENANT = "tenant"  # Microsoft.Commerce/usageAggregates
    PROVIDER = "provider"  # Microsoft.Commerce.Admin/subscriberUsageAggregates


class Granularity(StrEnum):
    DAILY = "daily"
    HOURLY = "hourly"

    @property
    def bucket(self) -> timedelta:
        return DAY if self is Granularity.DAILY else HOUR


@dataclass(frozen=True, slots=True)
class ApiPath:
    """Which route was called, for which subscription (lower case; may be malformed)."""

    route: Route
    subscription_id: str

    @property
    def is_guid(self) -> bool:
        """Only a GUID can name a stored subscription (and a table); anything else is absent."""
        return _GUID.fullmatch(self.subscription_id) is not None


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A request's validated arguments. Times are UTC; ``end`` is exclusive."""

    path: ApiPath
    start: datetime
    end: datetime
    granularity: Granularity
    show_details: bool
    # Provider route only; lower case.
    subscriber_id: str | None
    continuation_token: str | None


def parse_path(remainder: str) -> ApiPath:
    """The route and subscription from the path after ``/subscriptions``."""
    match = _PATH.match(remainder)
    if match is None:
        if _PATH_WITHOUT_SUBSCRIPTION.match(remainder):
            raise _missing_subscription()
        raise UnknownResourceError("the requested resource does not exist", code="NotFound")
    subscription = match.group("subscription").strip()
    if not subscription:
        raise _missing_subscription()
    resource = match.group("resource").lower()
    route = Route.TENANT if resource.startswith("microsoft.commerce/") else Route.PROVIDER
    return ApiPath(route=route, subscription_id=subscription.lower())


def _missing_subscription() -> BadInputError:
    return BadInputError(
        "the request path has no subscription id",
        code="SubscriptionIdMissingInRequest",
        target="subscriptionId",
    )


def query_arguments(url: str) -> list[tuple[str, str]]:
    """Every (name, value) of ``url``'s query string, decoded, repeats and order kept."""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def parse_query(
    path: ApiPath, arguments: Mapping[str, str] | Iterable[tuple[str, str]], now: datetime
) -> UsageQuery:
    """Validate the query arguments of a request to ``path`` (see the module docstring)."""
    args = versioned_arguments(arguments.items() if isinstance(arguments, Mapping) else arguments)
    granularity = _granularity(args.get("aggregationgranularity"))
    start = _time(args, "reportedStartTime", granularity)
    end = _time(args, "reportedEndTime", granularity)
    if start >= end:
        raise BadInputError(
            "reportedEndTime must be after reportedStartTime",
            code="InvalidProperty",
            target="reportedEndTime",
        )
    if end > as_utc(now):
        raise BadInputError(
            "reportedEndTime must not be in the future",
            code="RequestEndTimeIsInFuture",
            target="reportedEndTime",
        )
    subscriber = args.get("subscriberid") if path.route is Route.PROVIDER else None
    token = args.get("continuationtoken")
    return UsageQuery(
        path=path,
        start=start,
        end=end,
        granularity=granularity,
        show_details=_show_details(args.get("showdetails")),
        subscriber_id=(subscriber or "").strip().lower() or None,
        continuation_token=token if token else None,
    )


def versioned_arguments(
    arguments: Iterable[tuple[str, str]], supported: Sequence[str] = (API_VERSION,)
) -> dict[str, str]:
    """Arguments by lower-case name; a repeated name (any spelling) or a missing or other
    ``api-version`` than ``supported`` (the route's; the usage API's by default) is 400, as
    every route of this API answers it."""
    args = _case_insensitive(arguments)
    api_version = args.get("api-version")
    if api_version is None or not api_version.strip():
        raise BadInputError(
            f"the api-version query argument is required; use {supported[-1]}",
            code="NoApiVersion",
            target="api-version",
        )
    if api_version.strip() not in supported:
        raise BadInputError(
            f"api-version is not supported; use {supported[-1]}",
            code="InvalidApiVersionParameter",
            target="api-version",
        )
    return args


def _case_insensitive(arguments: Iterable[tuple[str, str]]) -> dict[str, str]:
    args: dict[str, str] = {}
    for name, value in arguments:
        key = name.strip().lower()
        if key in args:
            raise BadInputError(
                f"query argument {key[:64]!r} is given more than once",
                code="InvalidProperty",
                target=key,
            )
        args[key] = value
    return args


def _granularity(value: str | None) -> Granularity:
    if value is None or not value.strip():
        return Granularity.DAILY
    try:
        return Granularity(value.strip().lower())
    except ValueError:
        raise BadInputError(
            "aggregationGranularity must be Daily or Hourly",
            code="InvalidAggregationGranularity",
            target="aggregationGranularity",
        ) from None


def _show_details(value: str | None) -> bool:
    if value is None or not value.strip():
        return True
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise BadInputError(
            "showDetails must be true or false", code="InvalidProperty", target="showDetails"
        )
    return text == "true"


def _time(args: Mapping[str, str], name: str, granularity: Granularity) -> datetime:
    raw = args.get(name.lower())
    if raw is None or not raw.strip():
        raise BadInputError(f"{name} is required", code="InvalidProperty", target=name)
    moment = parse_time(raw)
    if moment is None:
        raise BadInputError(
            f"{name} must be a UTC time in ISO 8601 format",
            code="InvalidProperty",
            target=name,
        )
    aligned = moment.minute == moment.second == moment.microsecond == 0
    if granularity is Granularity.DAILY:
        aligned = aligned and moment.hour == 0
    if not aligned:
        boundary = "UTC midnight" if granularity is Granularity.DAILY else "the hour"
        raise BadInputError(
            f"{name} must be on {boundary} for {granularity.value} granularity",
            code="InvalidProperty",
            target=name,
        )
    return moment


def parse_time(raw: str) -> datetime | None:
    """An ISO 8601 time as UTC, repairing URL-escaping damage; None if it is not one.

    A time without an offset is taken as UTC (the API's times are UTC by definition).
    """
    text = raw.strip()
    for _ in range(2):  # escaped once more than the host decoded (%3a, %2b, %253a)
        if "%" not in text:
            break
        text = unquote(text)
    text = _SPACE_OFFSET.sub(r"+\1", text.strip())
    if len(text) > 40:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None
