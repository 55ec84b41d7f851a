"""The usage API's request handling: one HTTP call in, one ARM-shaped answer out.

``query_usage/__init__.py`` turns the Functions ``HttpRequest`` into an :class:`HttpCall`
and calls the app's :meth:`UsageApi.answer`; nothing here knows the Functions SDK, and
nothing raises out of it (``shared.query.arm_responses`` maps every error).

The steps, in order, and why that order:

1. the path: which route, which subscription (404 / ``SubscriptionIdMissingInRequest`` /
   400 for a subscription that is not a GUID); the provider route answers under both of
   Microsoft's spellings, ``Microsoft.Commerce.Admin/subscriberUsageAggregates`` and the
   first azsadmin description's ``Microsoft.Commerce/subscriberUsageAggregates``;
2. the bearer token (401): nothing is looked up for an unauthenticated caller;
3. the arguments (400s of the spec);
4. the caller's scope, resolved once (403 / ``SubscriberIdIsNotDirectTenant``);
5. the continuation token, checked against that scope and query, or, on a first page, the
   watermark that freezes what the whole paging run may see (a daily window holding a day
   collected only in part is refused: that day has hourly rows and no daily ones yet);
6. one page read inside the scope, rendered as JSON or (``Accept: text/csv``) CSV, with
   ``nextLink`` and a ``Link: <...>; rel="next"`` header when there is more.

Links are built, never copied: ``PUBLIC_BASE_URL`` (not the request's ``Host`` header, which
the caller controls), the route's path for the path's subscription (in our spelling, the
older provider spelling included), and the validated arguments spelled by us, each
percent-encoded. Nothing a client sent can add a second link
to ``Link`` or point a client that follows it (with its bearer token) elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from shared.core.config import AppMode, Settings
from shared.core.errors import BadInputError, ConfigurationError
from shared.core.hours import as_utc, iso, utc_now
from shared.core.meters import MeterCatalogue, catalogue
from shared.query.arguments import (
    API_VERSION,
    Route,
    UsageQuery,
    parse_path,
    parse_query,
    query_arguments,
)
from shared.query.arm_responses import HttpAnswer, answered
from shared.query.auth import FileJwksSource, HttpJwksSource, JwksSource, TokenValidator
from shared.query.caller_scope import CallerScope, resolve_scope
from shared.query.continuation import ContinuationCodec, PageState
from shared.query.reader import UsagePage, UsageReader, incomplete_day, visible_bound
from shared.query.rows import page_csv, page_json
from shared.storage.account import StorageAccount
from shared.storage.activity import active_tenants
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.watermark import collected_through

log = logging.getLogger(__name__)

CSV_MIMETYPE = "text/csv"


@dataclass(frozen=True, slots=True)
class HttpCall:
    """What the usage API needs of a request; header names are matched case-insensitively."""

    method: str
    url: str  # as received, query string included: arguments are read from it, repeats kept
    route_path: str  # the path after /subscriptions (the route's catch-all), decoded
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""  # a POST's body (the cost query's definition); empty for a GET

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


class UsageApi:
    """Everything a request needs, built once per process from the settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        account: StorageAccount,
        validator: TokenValidator,
        codec: ContinuationCodec,
        reader: UsageReader,
        meters: MeterCatalogue,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        # The visible bound waits for every usage source (stamp) to have written an hour.
        self._source_names = settings.source_names()
        self._account = account
        self._validator = validator
        self._codec = codec
        self._reader = reader
        self._meters = meters
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, account: StorageAccount | None = None) -> UsageApi:
        account = account or StorageAccount(settings)
        return cls(
            settings,
            account=account,
            validator=TokenValidator(
                issuer=settings.auth_issuers,
                audience=settings.auth_audiences,
                jwks=jwks_source(settings),
                admin_role=settings.auth_admin_role,
            ),
            codec=ContinuationCodec(
                settings.continuation_token_key.get_secret_value().encode("utf-8"),
                settings.continuation_token_ttl_seconds,
            ),
            reader=UsageReader(account),
            meters=catalogue(),
        )

    @property
    def validator(self) -> TokenValidator:
        """The bearer-token validator (and its JWKS cache), shared with the charges routes."""
        return self._validator

    def answer(self, call: HttpCall) -> HttpAnswer:
        """The answer to ``call``; never raises."""
        return answered(call.method, lambda correlation_id: self._serve(call, correlation_id))

    def _serve(self, call: HttpCall, correlation_id: str) -> HttpAnswer:
        path = parse_path(call.route_path)
        caller = self._validator.validate(call.header("Authorization"))
        now = self._clock()
        query = parse_query(path, query_arguments(call.url), now)
        scope = resolve_scope(
            caller, query, SubscriptionStore(self._account), self._with_usage(query)
        )
        state = self._page_state(scope, query, now)
        page = self._reader.read_page(scope, query, state)
        next_link = self._next_link(scope, query, state, page, now)
        headers = {} if next_link is None else {"Link": f'<{next_link}>; rel="next"'}
        if wants_csv(call.header("Accept")):
            return HttpAnswer(200, page_csv(page.rows, self._meters), CSV_MIMETYPE, headers)
        body = page_json(path.subscription_id, page.rows, next_link, self._meters)
        return HttpAnswer(200, body, "application/json", headers)

    def _with_usage(self, query: UsageQuery) -> Callable[[str], set[str]]:
        """A provider's tenants with rows in the query's reported days (activity index)."""
        last = as_utc(query.end) - query.granularity.bucket
        return lambda provider: active_tenants(self._account, provider, query.start, last)

    def _page_state(self, scope: CallerScope, query: UsageQuery, now: datetime) -> PageState:
        if query.continuation_token is not None:
            return self._codec.open(query.continuation_token, scope, query, now)
        watermark = collected_through(self._account, self._source_names)
        day = incomplete_day(query, watermark)
        if day is not None and watermark is not None:
            raise BadInputError(
                f"the reported day {day:%Y-%m-%d} is collected only through "
                f"{as_utc(watermark):%H}:00 UTC, so it has no daily rows yet; end the window "
                f"at {iso(day)} or ask for Hourly granularity",
                code="InvalidProperty",
                target="reportedEndTime",
            )
        return PageState(bound=visible_bound(query.granularity, watermark), cursor=None)

    def _next_link(
        self,
        scope: CallerScope,
        query: UsageQuery,
        state: PageState,
        page: UsagePage,
        now: datetime,
    ) -> str | None:
        if page.next_cursor is None:
            return None
        token = self._codec.issue(scope, query, PageState(state.bound, page.next_cursor), now)
        return next_page_url(self._settings.api_base_url, query, token)


def next_page_url(base_url: str, query: UsageQuery, token: str) -> str:
    """The URL of the page after ``query``'s: ``base_url``, the route's path and the
    validated arguments in our own spelling, every component percent-encoded."""
    if query.path.route is Route.TENANT:
        resource = "Microsoft.Commerce/usageAggregates"
    else:
        resource = "Microsoft.Commerce.Admin/subscriberUsageAggregates"
    path = f"/subscriptions/{quote(query.path.subscription_id, safe='')}/providers/{resource}"
    arguments = [
        ("api-version", API_VERSION),
        ("reportedStartTime", iso(query.start)),
        ("reportedEndTime", iso(query.end)),
        ("aggregationGranularity", query.granularity.value.capitalize()),
        ("showDetails", "true" if query.show_details else "false"),
    ]
    if query.subscriber_id is not None:
        arguments.append(("subscriberId", query.subscriber_id))
    arguments.append(("continuationToken", token))
    return f"{base_url}{path}?{urlencode(arguments, quote_via=quote, safe='')}"


def wants_csv(accept: str | None) -> bool:
    """True if the Accept header prefers ``text/csv`` to JSON (JSON wins ties and absence)."""
    if not accept:
        return False
    csv_q, json_q = 0.0, -1.0
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media == "text/csv":
            csv_q = max(csv_q, q)
        elif media in ("application/json", "application/*"):
            json_q = max(json_q, q)
    return csv_q > 0 and csv_q > json_q


def jwks_source(settings: Settings) -> JwksSource:
    """The configured key set: an https JWKS; a file path only in local mode."""
    uri = settings.auth_jwks_uri
    if uri.startswith(("https://", "http://")):
        return HttpJwksSource(uri)
    if settings.app_mode is not AppMode.LOCAL:
        raise ConfigurationError("AUTH_JWKS_URI must be an https URL outside local mode")
    return FileJwksSource(Path(uri))
