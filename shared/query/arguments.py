"""The usage API's request: which route, which subscription, and the validated arguments.

Turns the raw path remainder and query arguments of a request into a :class:`UsageQuery`,
or refuses with ``BadInputError`` carrying the spec's code (spec/usage-api.md, Arguments):

- argument *names* are case-insensitive ASCII (clients send ``reportedstarttime`` and
  ``ReportedStartTime``); a name given twice in one request, in the same or another
  spelling, is ambiguous -> 400 (never "the last one wins"). Arguments are read from the
  raw query string (:func:`query_arguments`), because a mapping has already lost repeats;
- every value has an exact shape and a maximum length (:data:`MAX_LENGTHS`), checked before
  it is converted and before anything reads storage: ASCII digits only (``shared.core.shapes``:
  Python's ``\\d`` and ``int()`` take any Unicode digit), a GUID for ``subscriberId`` and the
  path's subscription, the token's exact encoding for ``continuationToken``;
- times are UTC ISO 8601 (``yyyy-MM-dd[THH[:mm[:ss[.fffffff]]]]``, ``Z`` or an offset). A ``+``
  that was not URL-escaped arrives as a space (form decoding), and some clients escape twice
  (``%253a``): both are repaired before the shape is checked;
- the window is inclusive start, exclusive end, aligned to the granularity (on the hour;
  on UTC midnight for daily), start < end, end not in the future.

Errors name the argument in our own spelling and never send back what the request held: an
argument this API does not read is described, not named.

The route is recognised from the path after ``/subscriptions`` (the function's catch-all),
so a request with an empty or missing subscription segment still reaches us and gets
``SubscriptionIdMissingInRequest`` instead of the host's bare 404.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from shared.core.errors import BadInputError, UnknownResourceError
from shared.core.hours import DAY, HOUR, as_utc
from shared.core.shapes import is_guid

API_VERSION: Final = "2015-06-01-preview"
# Every argument a route of this API reads, by lower-case name, in our spelling.
ARGUMENT_NAMES: Final = {
    name.lower(): name
    for name in (
        "api-version",
        "reportedStartTime",
        "reportedEndTime",
        "aggregationGranularity",
        "showDetails",
        "subscriberId",
        "continuationToken",
        "$filter",
    )
}
# The longest value each argument may have, checked before anything else looks at it: a
# time escaped twice is ~45 characters; a continuation token is MAX_TOKEN_CHARS.
MAX_TOKEN_CHARS: Final = 2048
MAX_FILTER_CHARS: Final = 1024
MAX_LENGTHS: Final = {
    "api-version": len(API_VERSION),
    "reportedstarttime": 100,
    "reportedendtime": 100,
    "aggregationgranularity": len("hourly"),
    "showdetails": len("false"),
    "subscriberid": 36,
    "continuationtoken": MAX_TOKEN_CHARS,
    "$filter": MAX_FILTER_CHARS,
}
# The code each argument answers when it is malformed (spec/usage-api.md, Errors).
ARGUMENT_CODES: Final = {
    "api-version": "InvalidApiVersionParameter",
    "aggregationgranularity": "InvalidAggregationGranularity",
    "continuationtoken": "InvalidContinuationToken",
    "subscriberid": "SubscriberIdIsNotDirectTenant",
    "$filter": "InvalidFilter",
}
# A continuation token as ContinuationCodec spells it: base64url payload (no padding), ".",
# the 32-byte HMAC in base64url (43 characters, no padding).
TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]{1,2000}\.[A-Za-z0-9_-]{43}")
# The path's resource: the tenant route, the provider route in both of Microsoft's spellings
# (Microsoft.Commerce.Admin, and Microsoft.Commerce in the first azsadmin description and the
# clients generated from it).
_RESOURCES = (
    r"(?P<resource>microsoft\.commerce/usageaggregates"
    r"|microsoft\.commerce\.admin/subscriberusageaggregates"
    r"|microsoft\.commerce/subscriberusageaggregates)/?$"
)
_PATH = re.compile(r"^/?(?P<subscription>[^/]*)/providers/" + _RESOURCES, re.IGNORECASE)
# The same resource with no subscription segment at all: /subscriptions/providers/...
_PATH_WITHOUT_SUBSCRIPTION = re.compile(r"^/?providers/" + _RESOURCES, re.IGNORECASE)
# A space (a "+" decoded as form data) before a UTC offset at the end of a time.
_SPACE_OFFSET = re.compile(r" ([0-9]{2}:?[0-9]{2})\Z")
# ISO 8601 as the API takes it: a date, optionally a time (hours, minutes, seconds, up to
# seven fraction digits as .NET writes them), optionally Z or an offset. ASCII digits only.
_TIME_SHAPE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,7})?)?)?)?"
    r"(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)


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
        return is_guid(self.subscription_id)


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
    resource = match.group("resource").lower()
    route = Route.TENANT if resource.endswith("/usageaggregates") else Route.PROVIDER
    return ApiPath(route=route, subscription_id=path_subscription(match.group("subscription")))


def path_subscription(segment: str) -> str:
    """The path's subscription id, lower case: a GUID, or 400 before anything is looked up."""
    if not segment.strip(" "):
        raise _missing_subscription()
    if not is_guid(segment):
        raise BadInputError(
            "the subscription id in the path must be a GUID",
            code="InvalidProperty",
            target="subscriptionId",
        )
    return segment.lower()


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
    token = args.get("continuationtoken")
    if token and TOKEN_SHAPE.fullmatch(token) is None:
        raise malformed_argument("continuationtoken")
    return UsageQuery(
        path=path,
        start=start,
        end=end,
        granularity=granularity,
        show_details=_show_details(args.get("showdetails")),
        subscriber_id=subscriber_argument(args) if path.route is Route.PROVIDER else None,
        continuation_token=token if token else None,
    )


def versioned_arguments(
    arguments: Iterable[tuple[str, str]], supported: Sequence[str] = (API_VERSION,)
) -> dict[str, str]:
    """Arguments by lower-case name, each within its maximum length; a repeated name (any
    spelling), an over-long value, or a missing or other ``api-version`` than ``supported``
    (the route's; the usage API's by default) is 400, as every route of this API answers it."""
    args = _case_insensitive(arguments)
    for name, value in args.items():
        if len(value) > MAX_LENGTHS.get(name, len(value)):
            raise malformed_argument(name)
    api_version = args.get("api-version")
    if not api_version:
        raise BadInputError(
            f"the api-version query argument is required; use {supported[-1]}",
            code="NoApiVersion",
            target="api-version",
        )
    if api_version not in supported:
        raise BadInputError(
            f"api-version is not supported; use {supported[-1]}",
            code="InvalidApiVersionParameter",
            target="api-version",
        )
    return args


def subscriber_argument(args: Mapping[str, str]) -> str | None:
    """``subscriberId``, lower case, or None when absent or empty; a value that is not a
    GUID cannot be a direct tenant (400, before any lookup)."""
    value = args.get("subscriberid")
    if not value:
        return None
    if not is_guid(value):
        raise malformed_argument("subscriberid")
    return value.lower()


def malformed_argument(name: str) -> BadInputError:
    """The error of a malformed argument ``name`` (a lower-case key of MAX_LENGTHS), with its
    code and a fixed message (one for a continuation token, whatever check refused it)."""
    spelled = ARGUMENT_NAMES[name]
    code = ARGUMENT_CODES.get(name, "InvalidProperty")
    messages = {
        "api-version": f"api-version is not supported; use {API_VERSION}",
        "aggregationgranularity": "aggregationGranularity must be Daily or Hourly",
        "continuationtoken": (
            "the continuation token is invalid, expired or belongs to another query"
        ),
        "subscriberid": "subscriberId is not a direct tenant of this provider subscription",
        "$filter": f"$filter is malformed or longer than {MAX_FILTER_CHARS} characters",
    }
    message = messages.get(name, f"{spelled} is malformed or too long")
    return BadInputError(message, code=code, target=spelled)


def _case_insensitive(arguments: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Arguments by lower-case name. Only ASCII names can be this API's (``str.lower`` maps
    the Kelvin sign to ``k``); a repeated name is named in our spelling if it is one of
    ours, else described, never sent back."""
    args: dict[str, str] = {}
    for name, value in arguments:
        key = name.strip(" ").lower() if name.isascii() else name
        if key in args:
            spelled = ARGUMENT_NAMES.get(key)
            if spelled is None:
                raise BadInputError(
                    "a query argument this API does not read is given more than once",
                    code="InvalidProperty",
                )
            raise BadInputError(
                f"query argument {spelled} is given more than once",
                code="InvalidProperty",
                target=spelled,
            )
        args[key] = value
    return args


def _granularity(value: str | None) -> Granularity:
    if not value:
        return Granularity.DAILY
    if value.isascii():
        with contextlib.suppress(ValueError):
            return Granularity(value.lower())
    raise malformed_argument("aggregationgranularity")


def _show_details(value: str | None) -> bool:
    if not value:
        return True
    text = value.lower() if value.isascii() else value
    if text not in ("true", "false"):
        raise BadInputError(
            "showDetails must be true or false", code="InvalidProperty", target="showDetails"
        )
    return text == "true"


def _time(args: Mapping[str, str], name: str, granularity: Granularity) -> datetime:
    raw = args.get(name.lower())
    if not raw:
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
    """An ISO 8601 time as UTC, repairing URL-escaping damage; None if it is not one (of
    the exact shape ``_TIME_SHAPE``, in at most 100 characters as sent).

    A time without an offset is taken as UTC (the API's times are UTC by definition).
    """
    if len(raw) > MAX_LENGTHS["reportedstarttime"]:
        return None
    text = raw
    for _ in range(2):  # escaped once more than the host decoded (%3a, %2b, %253a)
        if "%" not in text:
            break
        text = unquote(text)
    text = _SPACE_OFFSET.sub(r"+\1", text)
    if _TIME_SHAPE.fullmatch(text) is None:
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
