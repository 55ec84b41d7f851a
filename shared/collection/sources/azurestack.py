"""The Azure Stack Hub usage source: a real stamp's provider usage API, read hour by hour.

What it calls (spec/usage-api.md; Microsoft.Commerce.Admin 2015-06-01-preview and
Microsoft.Subscriptions.Admin 2015-11-01 on the stamp's admin ARM endpoint):

- ``GET {arm}/subscriptions/{provider}/providers/Microsoft.Subscriptions.Admin/subscriptions``
  for the subscriptions (every page, following ``nextLink``);
- ``GET {arm}/subscriptions/{provider}/providers/Microsoft.Commerce.Admin/
  subscriberUsageAggregates?reportedStartTime=H&reportedEndTime=H+1h&aggregationGranularity=
  Hourly`` for reported hour ``H``, following every ``nextLink`` to the last page.

The provider hierarchy
    The provider route returns the usage of the caller's **direct** tenants only (the
    default provider P0 sees its own tenants and the delegated provider subscriptions P1,
    P2; P1's tenants are read through P1's route). So an hour is read once per provider
    subscription: the configured default provider first, then every subscription that the
    admin list names as some subscription's ``delegatedProviderSubscriptionId``. The
    identity therefore needs Reader on the default provider subscription *and* on each
    delegated provider subscription whose tenants are billed (docs/azurestack.md); a
    refusal is an error, never a silently smaller hour.

Grouping without holding the hour (the ``UsageSource`` contract)
    The collector wants each subscription's records together; the stamp pages rows in an
    order of its own. An all-tenants read is therefore spooled, page by page, into a
    private SQLite temporary database (``sqlite3.connect("")``: it lives in a bounded page
    cache, spills to a temporary file beyond ``spool_cache_kib``, and is deleted on
    close), then read back ordered by (subscription, arrival). Memory stays bounded by one
    page plus the cache whatever the stamp's size; nothing is yielded for a provider until
    its last page was read. Measured (tests/unit/test_azurestack_rows.py): 100,000 rows
    in and out in ~2.2 s (~45,000 rows/s, JSON encoding included; a page of 1,000 rows
    takes the stamp far longer to serve) with the peak RSS growing ~9 MiB under a 4 MiB
    cache, where holding the rows would take ~60 MiB. Per-subscriber reads, the other
    bounded design, cost one request per subscription per hour even when most have no
    usage (thousands per hour on a big stamp), so they are only the fallback.

Fallback on gateway timeouts
    An all-tenants query of a busy stamp can outlast ARM's gateway (``504``, or our read
    timeout). After ``gateway_timeouts_before_fallback`` of those on any page of a
    provider's all-tenants read, that provider's spool is dropped and its direct tenants
    (from the admin list, deleted ones included) are read one at a time with
    ``subscriberId``, each streamed page by page (each is one group already). This is what
    Microsoft's AzureStack-Tools usage scripts do. A subscription the stamp no longer lists
    at all can only be read by the all-tenants query; that limit is logged.

Completeness
    Every request is retried within a ``RetryPolicy`` (``shared.core.http_retry``); when the
    budget runs out, or a page is malformed, or a ``nextLink`` leaves the stamp's origin or
    repeats, the iterator raises. The collector then never writes the manifest nor moves
    the watermark, so an hour only counts as collected when every page of every provider
    was read.

Normalising a row (``record_from_row``)
    Faithful, never dropping: ``instanceData`` is parsed whether it is a JSON string (the
    documented form) or an object; ``tags``/``additionalInfo`` may be objects, ``""``,
    ``"null"`` (-> ``None``) or JSON text (-> parsed). Meter ids keep their wire spelling
    (the collector maps them to the catalogue's case-insensitively), usage windows are
    kept as sent (late rows carry their older window). A field that does not parse is
    passed on as the raw wire value, so validation quarantines the record with what the
    stamp said (``MalformedRecord``, ``InvalidInstanceData``, ``MalformedResourceUri``)
    instead of it disappearing; ``id``/``name`` are ignored (not unique).

Subscriptions (``subscription_from_item``)
    ``subscriptionId``, ``displayName``, ``tenantId``, ``offerId`` (the offer's ARM id),
    ``delegatedProviderSubscriptionId`` -> ``provider_subscription_id`` (the default
    provider when empty), ``state`` -> ``SubscriptionState`` (Enabled -> active; Disabled,
    Warned, PastDue -> suspended; Deleting, Deleted, PartiallyDeleted -> deleted; anything
    else -> suspended, with a warning). ``owner`` is a **UPN** (``alice@contoso.com``), not
    the Entra object id that query_usage matches callers on (``oid``): it is stored
    lower-cased in ``owners`` for the record, and grants nothing by itself. Operators give
    tenant users read access by adding their object ids as ``readers`` (operator-owned,
    never overwritten by the source). The admin API has no history: ``subscriptions(H)``
    is the stamp's state when asked (cached ``subscriptions_max_age_seconds``), not as of
    ``H``; a subscription with usage but no listing is quarantined as
    ``UnknownSubscription`` by the collector.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.core.errors import (
    BadInputError,
    ConfigurationError,
    GatewayTimeoutError,
    NotAllowedError,
    TransientError,
)
from shared.core.hours import HOUR, as_utc, is_on_hour
from shared.core.http_retry import ARM_POLICY, HttpTimeouts, get_json
from shared.core.retry import RetryPolicy
from shared.core.usage import UsageRecord, subscription_key
from shared.storage.subscriptions import Subscription, SubscriptionState

if TYPE_CHECKING:
    from shared.core.config import Settings

log = logging.getLogger(__name__)

USAGE_API_VERSION = "2015-06-01-preview"
SUBSCRIPTIONS_API_VERSION = "2015-11-01"
USAGE_ROUTE = "providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"
SUBSCRIPTIONS_ROUTE = "providers/Microsoft.Subscriptions.Admin/subscriptions"
# A stamp never needs this many pages for one read; more means a nextLink loop.
MAX_PAGES = 100_000

# Returns a bearer token for the admin ARM audience; called before every request (the
# azure-identity credentials cache and refresh tokens themselves).
TokenProvider = Callable[[], str]

_STATES: Mapping[str, SubscriptionState] = {
    "enabled": SubscriptionState.ACTIVE,
    "warned": SubscriptionState.SUSPENDED,
    "pastdue": SubscriptionState.SUSPENDED,
    "disabled": SubscriptionState.SUSPENDED,
    "deleting": SubscriptionState.DELETED,
    "deleted": SubscriptionState.DELETED,
    "partiallydeleted": SubscriptionState.DELETED,
}


# --- normalising the wire ---------------------------------------------------------------


def _field(mapping: Mapping[str, Any], name: str) -> Any:
    """``mapping[name]``, matching the key case-insensitively if the exact key is absent."""
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


@lru_cache(maxsize=4096)
def _parse_time_text(text: str) -> datetime | str:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return text


def _time(value: Any) -> Any:
    """An ISO 8601 time as sent (offset kept); the raw value if it is not one."""
    return _parse_time_text(value) if isinstance(value, str) else value


def instance_field(value: Any) -> Any:
    """``tags``/``additionalInfo`` as an object or None, whatever the wire's encoding.

    ``""`` and ``"null"`` are None; JSON text is parsed (twice, if it was encoded twice);
    text that is not JSON is returned as it came, for validation to quarantine.
    """
    for _ in range(2):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text in ("", "null"):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return value
    return value


def _instance_data(value: Any) -> tuple[Any, Any, Any, Any]:
    """(resourceUri, location, tags, additionalInfo) out of a row's ``instanceData``."""
    data = value
    if isinstance(value, str):
        if not value.strip():
            return "", "", None, None
        try:
            data = json.loads(value)
        except ValueError:
            data = None
    if not isinstance(data, dict):
        # Unreadable: no resource URI (quarantined as MalformedResourceUri); the wire text
        # travels in ``tags`` so the quarantine keeps what the stamp sent.
        return "", "", (None if value is None else value), None
    resources = _field(data, "Microsoft.Resources")
    if not isinstance(resources, dict):
        resources = data
    location = _field(resources, "location")
    return (
        _field(resources, "resourceUri") or "",
        "" if location is None else location,
        instance_field(_field(resources, "tags")),
        instance_field(_field(resources, "additionalInfo")),
    )


def record_from_row(row: Any) -> UsageRecord:
    """One wire row of ``subscriberUsageAggregates`` as a ``UsageRecord``, nothing dropped."""
    properties = _field(row, "properties") if isinstance(row, dict) else None
    if not isinstance(properties, dict):
        # Not a usage row at all: keep it whole for the quarantine (no subscription id).
        return UsageRecord(
            subscription_id=_raw(None),
            meter_id="",
            usage_start=_raw(None),
            usage_end=_raw(None),
            quantity=math.nan,
            resource_uri="",
            additional_info=_raw(row),
        )
    uri, location, tags, info = _instance_data(_field(properties, "instanceData"))
    return UsageRecord(
        subscription_id=_field(properties, "subscriptionId"),
        meter_id=_field(properties, "meterId"),
        usage_start=_time(_field(properties, "usageStartTime")),
        usage_end=_time(_field(properties, "usageEndTime")),
        quantity=_field(properties, "quantity"),
        resource_uri=uri,
        location=location,
        tags=tags,
        additional_info=info,
    )


def _raw(value: Any) -> Any:
    """A wire value passed on untyped: validation checks what arrived, not our promise."""
    return value


def group_key(row: Any) -> str:
    """The collector's grouping key of a wire row: the lower-case subscription id."""
    properties = _field(row, "properties") if isinstance(row, dict) else None
    value = _field(properties, "subscriptionId") if isinstance(properties, dict) else None
    return value.lower() if isinstance(value, str) else repr(value)


def subscription_from_item(item: Mapping[str, Any], default_provider: str) -> Subscription:
    """One admin-API subscription as a ``Subscription`` (see the module docstring)."""
    subscription_id = str(_field(item, "subscriptionId"))
    provider = _field(item, "delegatedProviderSubscriptionId") or default_provider
    if str(provider).lower() == subscription_id.lower():
        provider = None
    raw_state = str(_field(item, "state") or "")
    state = _STATES.get(raw_state.lower())
    if state is None:
        log.warning(
            "subscription %s has state %r, unknown here: treated as suspended",
            subscription_id,
            raw_state,
        )
        state = SubscriptionState.SUSPENDED
    owner = _field(item, "owner")
    return Subscription(
        subscription_id=subscription_id,
        display_name=str(_field(item, "displayName") or ""),
        tenant_id=str(_field(item, "tenantId") or ""),
        provider_subscription_id=None if provider is None else str(provider),
        owners=(owner.strip().lower(),) if isinstance(owner, str) and owner.strip() else (),
        state=state,
        offer=str(_field(item, "offerId") or ""),
    )


# --- the spool ---------------------------------------------------------------------------


class RowSpool:
    """Wire rows of one all-tenants read, handed back grouped by subscription.

    A private SQLite temporary database: pages stay in a cache of ``cache_kib`` and spill
    to a temporary file beyond it; the file is deleted on ``close``. Rows come back ordered
    by (group key, arrival), so each subscription's rows are contiguous and in wire order.
    """

    def __init__(self, cache_kib: int = 16_384) -> None:
        self._db = sqlite3.connect("")
        self._db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        self._db.execute("PRAGMA temp_store = FILE")
        self._db.execute("CREATE TABLE spool (grp TEXT NOT NULL, body TEXT NOT NULL)")
        self.rows = 0

    def add(self, rows: list[Any]) -> None:
        self._db.executemany(
            "INSERT INTO spool (grp, body) VALUES (?, ?)",
            [(group_key(row), json.dumps(row, separators=(",", ":"))) for row in rows],
        )
        self.rows += len(rows)

    def grouped(self) -> Iterator[Any]:
        """Every row, grouped by subscription; streamed from the database."""
        for (body,) in self._db.execute("SELECT body FROM spool ORDER BY grp, rowid"):
            yield json.loads(body)

    def close(self) -> None:
        self._db.close()


# --- the source --------------------------------------------------------------------------


@dataclass(frozen=True)
class AzureStackOptions:
    """Where the stamp is and how hard to try; ``create_source`` fills it from settings."""

    admin_arm_endpoint: str
    provider_subscription_id: str
    retry: RetryPolicy = ARM_POLICY
    timeouts: HttpTimeouts = field(default_factory=HttpTimeouts)
    # 504s / read timeouts on one all-tenants read before asking one subscriber at a time.
    gateway_timeouts_before_fallback: int = 2
    # The admin subscription list is re-read when older than this (one collector run).
    subscriptions_max_age_seconds: float = 300.0
    spool_cache_kib: int = 16_384


@dataclass
class ReadStats:
    """What the last ``usage`` call did (for logs and tests)."""

    pages: int = 0
    rows: int = 0
    providers: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Listing:
    subscriptions: list[Subscription]
    # Lower-case provider subscription ids: the default first, then the delegated ones.
    providers: list[str]
    read_at: float

    def direct_tenants(self, provider: str) -> list[str]:
        return [
            s.subscription_id
            for s in self.subscriptions
            if (s.provider_subscription_id or "").lower() == provider
        ]


class AzureStackSource:
    """A ``UsageSource`` reading a real Azure Stack Hub stamp (see the module docstring)."""

    name = "azurestack"

    def __init__(
        self,
        options: AzureStackOptions,
        token_provider: TokenProvider,
        *,
        session: requests.Session | None = None,
    ) -> None:
        endpoint = options.admin_arm_endpoint.rstrip("/")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"admin ARM endpoint {endpoint!r} is not an http(s) URL")
        self._options = options
        self._endpoint = endpoint
        self._origin = (parts.scheme, parts.netloc.lower())
        self._provider = options.provider_subscription_id.lower()
        self._token_provider = token_provider
        self._session = session or _new_session()
        self._listing_cache: _Listing | None = None
        self.stats = ReadStats()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> AzureStackSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- UsageSource ---------------------------------------------------------------------

    def subscriptions(self, reported_hour: datetime) -> list[Subscription]:
        """The stamp's subscriptions now (deleted ones included), plus the default provider."""
        return list(self._listing().subscriptions)

    def usage(
        self, reported_hour: datetime, within: Callable[[str], bool] | None = None
    ) -> Iterator[UsageRecord]:
        """The hour's records, grouped by subscription, provider by provider.

        The provider usage API answers a whole hour per provider, so a slice of the hour
        (``within``) reads every page and keeps its own subscriptions' records: slicing a
        stamp multiplies its reads by the slice count (docs/scale.md)."""
        hour = as_utc(reported_hour)
        if not is_on_hour(hour):
            raise ValueError(f"reported hour {reported_hour.isoformat()} is not on the hour")
        listing = self._listing()
        self.stats = ReadStats(providers=list(listing.providers))
        records = self._usage(hour, listing)
        if within is None:
            return records
        return (record for record in records if within(subscription_key(record)))

    def _usage(self, hour: datetime, listing: _Listing) -> Iterator[UsageRecord]:
        for provider in listing.providers:
            yield from self._provider_usage(hour, provider, listing)

    def _provider_usage(
        self, hour: datetime, provider: str, listing: _Listing
    ) -> Iterator[UsageRecord]:
        spool = RowSpool(self._options.spool_cache_kib)
        try:
            try:
                for page in self._usage_pages(hour, provider, None):
                    spool.add(page)
            except GatewayTimeoutError as error:
                spool.close()
                tenants = listing.direct_tenants(provider)
                log.warning(
                    "%s; reading the %d direct tenants of provider %s one at a time "
                    "(a subscription the stamp no longer lists cannot be read this way)",
                    error.message,
                    len(tenants),
                    provider,
                )
                self.stats.fallbacks.append(provider)
                for subscriber in tenants:
                    for page in self._usage_pages(hour, provider, subscriber):
                        for row in page:
                            yield record_from_row(row)
                return
            for row in spool.grouped():
                yield record_from_row(row)
        finally:
            spool.close()

    # -- reading -------------------------------------------------------------------------

    def _usage_pages(
        self, hour: datetime, provider: str, subscriber: str | None
    ) -> Iterator[list[Any]]:
        params = {
            "api-version": USAGE_API_VERSION,
            "reportedStartTime": hour.isoformat(),
            "reportedEndTime": (hour + HOUR).isoformat(),
            "aggregationGranularity": "Hourly",
        }
        what = f"usage of reported hour {hour:%Y-%m-%dT%H}Z from provider {provider}"
        if subscriber is not None:
            params["subscriberId"] = subscriber
            what += f" for subscriber {subscriber}"
        limit = None if subscriber else self._options.gateway_timeouts_before_fallback
        url = f"{self._endpoint}/subscriptions/{provider}/{USAGE_ROUTE}"
        for page in self._pages(url, params, what, gateway_timeout_limit=limit):
            self.stats.pages += 1
            self.stats.rows += len(page)
            yield page

    def _pages(
        self,
        url: str,
        params: Mapping[str, str],
        what: str,
        *,
        gateway_timeout_limit: int | None = None,
    ) -> Iterator[list[Any]]:
        """Every page's ``value`` of an ARM list, following ``nextLink`` to the end."""
        seen: set[str] = set()
        query: Mapping[str, str] | None = params
        for number in range(1, MAX_PAGES + 1):
            payload = get_json(
                self._session,
                url,
                what=f"{what} (page {number})",
                policy=self._options.retry,
                timeouts=self._options.timeouts,
                headers=self._headers,
                params=query,
                gateway_timeout_limit=gateway_timeout_limit,
            )
            value = payload.get("value") if isinstance(payload, dict) else None
            if not isinstance(value, list):
                raise BadInputError(
                    f"{what}: page {number} has no 'value' list", code="MalformedPage"
                )
            yield value
            next_link = payload.get("nextLink")
            if not next_link:
                return
            url, query = self._checked_next_link(next_link, seen, what), None
        raise BadInputError(f"{what}: more than {MAX_PAGES} pages", code="TooManyPages")

    def _checked_next_link(self, link: object, seen: set[str], what: str) -> str:
        """The next page's URL, if it stays on the stamp (it gets our token) and is new."""
        if not isinstance(link, str):
            raise BadInputError(f"{what}: nextLink is not a string", code="MalformedPage")
        parts = urlsplit(link)
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            raise BadInputError(
                f"{what}: nextLink leaves the admin ARM endpoint ({parts.scheme}://"
                f"{parts.netloc}); not following it with our token",
                code="ForeignNextLink",
            )
        if link in seen:
            raise BadInputError(f"{what}: nextLink repeats a page", code="NextLinkLoop")
        seen.add(link)
        return link

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token_provider()}",
            "Accept": "application/json",
            "x-ms-client-request-id": str(uuid.uuid4()),
        }

    def _listing(self) -> _Listing:
        now = self._options.retry.monotonic()
        cached = self._listing_cache
        if (
            cached is not None
            and now - cached.read_at < self._options.subscriptions_max_age_seconds
        ):
            return cached
        url = f"{self._endpoint}/subscriptions/{self._provider}/{SUBSCRIPTIONS_ROUTE}"
        what = f"subscriptions of provider {self._provider}"
        by_id: dict[str, Subscription] = {}
        providers: set[str] = set()
        params = {"api-version": SUBSCRIPTIONS_API_VERSION}
        for page in self._pages(url, params, what):
            for item in page:
                subscription_id = _field(item, "subscriptionId") if isinstance(item, dict) else None
                if not isinstance(subscription_id, str) or not subscription_id.strip():
                    log.warning("%s: skipping an entry without a subscriptionId", what)
                    continue
                subscription = subscription_from_item(item, self._provider)
                key = subscription.subscription_id.lower()
                if key in by_id:
                    log.warning("%s: %s is listed twice; keeping the first", what, key)
                    continue
                by_id[key] = subscription
                if subscription.provider_subscription_id:
                    providers.add(subscription.provider_subscription_id.lower())
        providers.add(self._provider)
        listed = []
        for key, subscription in by_id.items():
            if key == self._provider:
                subscription = _as_root(subscription)
            elif key in providers:
                subscription = _with_provider_flag(subscription)
            listed.append(subscription)
        if self._provider not in by_id:
            listed.insert(0, _default_provider(self._provider))
        ordered = [self._provider, *sorted(providers - {self._provider})]
        self._listing_cache = _Listing(listed, ordered, now)
        return self._listing_cache


def _as_root(subscription: Subscription) -> Subscription:
    return replace(subscription, provider_subscription_id=None, is_provider=True)


def _with_provider_flag(subscription: Subscription) -> Subscription:
    return replace(subscription, is_provider=True)


def _default_provider(subscription_id: str) -> Subscription:
    """The default provider subscription when the admin list does not include it."""
    return Subscription(
        subscription_id=subscription_id,
        display_name="Default Provider Subscription",
        tenant_id="",
        provider_subscription_id=None,
        owners=(),
        state=SubscriptionState.ACTIVE,
        is_provider=True,
    )


def _new_session() -> requests.Session:
    """A pooled session with urllib3's own retries off: ``shared.core.http_retry`` owns them."""
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=1,
        pool_maxsize=4,
        max_retries=Retry(total=0, connect=0, read=False, redirect=False, status=0),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- settings ----------------------------------------------------------------------------


def token_provider_from_settings(settings: Settings) -> TokenProvider:
    """Bearer tokens for the stamp's admin ARM audience, by the identity the settings name.

    ``client_secret``: a service principal in Entra ID (authority ``https://login.
    microsoftonline.com``, tenant = the directory id) or in the stamp's AD FS (authority
    ``https://adfs.<region>.<fqdn>``, tenant ``adfs``; instance discovery is off, as
    azure-identity requires for AD FS). ``managed_identity``: the app's (user-assigned,
    when a client id is set) managed identity; Entra-connected stamps only. The scope is
    ``{audience}/.default`` (an audience ending in ``/`` gives ``//.default``, which is
    what Entra expects for such v1 resources). azure-identity is imported here, lazily.
    """
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
    from azure.identity import ClientSecretCredential, ManagedIdentityCredential

    audience = settings.azurestack_audience or ""
    scope = f"{audience}/.default"
    credential: TokenCredential
    if settings.azurestack_auth == "client_secret":
        secret = settings.azurestack_client_secret
        tenant = settings.azurestack_tenant_id or ""
        if secret is None or not settings.azurestack_client_id or not tenant:
            raise ConfigurationError("AZURESTACK_AUTH=client_secret needs tenant, client, secret")
        authority = (settings.azurestack_authority or "").rstrip("/")
        credential = ClientSecretCredential(
            tenant,
            settings.azurestack_client_id,
            secret.get_secret_value(),
            authority=authority,
            disable_instance_discovery=tenant.lower() == "adfs",
        )
    else:
        credential = ManagedIdentityCredential(client_id=settings.azurestack_client_id or None)

    def token() -> str:
        try:
            return credential.get_token(scope).token
        except ClientAuthenticationError as error:
            raise NotAllowedError(
                f"no token for the Azure Stack admin ARM ({scope}): {type(error).__name__}",
                code="AzureStackTokenRefused",
                target="azurestack",
            ) from error
        except ServiceRequestError as error:
            raise TransientError(
                f"token endpoint unreachable for {scope}: {type(error).__name__}"
            ) from error

    return token


def create_azurestack_source(settings: Settings) -> AzureStackSource:
    """The source the ``AZURESTACK_*`` settings describe (validated at load)."""
    if (
        not settings.azurestack_admin_arm_endpoint
        or not settings.azurestack_provider_subscription_id
    ):
        raise ConfigurationError("USAGE_SOURCE=azurestack needs the AZURESTACK_* settings")
    options = AzureStackOptions(
        admin_arm_endpoint=settings.azurestack_admin_arm_endpoint,
        provider_subscription_id=settings.azurestack_provider_subscription_id,
        timeouts=HttpTimeouts(read_seconds=settings.azurestack_timeout_seconds),
    )
    return AzureStackSource(options, token_provider_from_settings(settings))
