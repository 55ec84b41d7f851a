"""The Azure Stack source against a recorded-style stamp served over real HTTP.

``Stamp`` is a small admin ARM endpoint (http.server on 127.0.0.1, a free port) that serves
``Microsoft.Subscriptions.Admin/subscriptions`` and ``Microsoft.Commerce.Admin/
subscriberUsageAggregates`` the way a real stamp does: pages of at most 1,000 rows with
``nextLink``, ``instanceData`` as JSON text whose ``tags``/``additionalInfo`` are objects,
``""``, ``"null"`` or JSON text, meter ids in either case, rows in no particular order,
``id``/``name`` shared by rows. Faults are scripted per request (504 on the all-tenants
call, 429 with ``Retry-After``, 503, a page that keeps failing).

The reference is the simulated fleet collected directly: the stamp serves the same hour,
encoded every way the wire allows, so collecting through the source must give the very
same usage tables.
"""

from __future__ import annotations

import http.server
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from devstack.fleet import FleetOptions, SimulatedFleet
from shared.collection.collector import Collector
from shared.collection.sources.azurestack import AzureStackOptions, AzureStackSource
from shared.core.config import Settings
from shared.core.errors import BadInputError, NotAllowedError, UpstreamUnavailableError
from shared.core.retry import RetryPolicy
from shared.core.usage import UsageRecord
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription, SubscriptionState
from shared.storage.watermark import Watermark
from tests.loopback import LoopbackServer
from tests.scripted_source import snapshot

HOUR = datetime(2026, 3, 2, 14, tzinfo=UTC)
TOKEN = "stamp-test-token"
ADMIN_STATES = {
    SubscriptionState.ACTIVE: "Enabled",
    SubscriptionState.SUSPENDED: "Disabled",
    SubscriptionState.DELETED: "Deleted",
}


@dataclass
class Fault:
    """Answer ``status`` instead of the data, ``times`` times, to matching requests."""

    status: int
    route: str = "usage"  # "usage" or "subscriptions"
    all_tenants: bool | None = None  # usage: True = no subscriberId, False = with one
    page: int | None = None  # 1-based page number, None = any
    provider: str | None = None  # lower-case provider subscription id, None = any
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1_000_000


@dataclass
class Seen:
    route: str
    provider: str
    subscriber: str | None
    page: int
    status: int


class Stamp(LoopbackServer):
    """A recorded-style admin ARM endpoint on a free loopback port (see module docstring)."""

    def __init__(self, page_size: int = 1000, subscriptions_page_size: int = 25) -> None:
        self.page_size = page_size
        self.subscriptions_page_size = subscriptions_page_size
        self.usage: dict[tuple[str, datetime], list[dict[str, Any]]] = {}
        self.subscription_items: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.requests = 0
        self.next_link_base: str | None = None
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def __enter__(self) -> Stamp:
        super().__enter__()
        return self

    def serve_fleet(self, fleet: SimulatedFleet, hour: datetime, seed: int = 1) -> int:
        """Serve the fleet's hour as a stamp would, every encoding mixed; return the rows."""
        listed = fleet.subscriptions(hour)
        provider_of = {s.subscription_id: s.provider_subscription_id for s in listed}
        self.subscription_items = [admin_item(s) for s in listed if s.provider_subscription_id]
        rows = [
            (provider_of[record.subscription_id] or "", wire_row(record, i, provider_of))
            for i, record in enumerate(fleet.usage(hour))
        ]
        random.Random(seed).shuffle(rows)  # a stamp's order is its own
        for provider, row in rows:
            self.usage.setdefault((provider.lower(), hour), []).append(row)
        return len(rows)

    def usage_requests(self, provider: str) -> list[Seen]:
        return [s for s in self.seen if s.route == "usage" and s.provider == provider.lower()]

    def _fault(self, route: str, provider: str, subscriber: str | None, page: int) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times <= 0 or fault.route != route:
                    continue
                if fault.all_tenants is not None and fault.all_tenants != (subscriber is None):
                    continue
                if fault.page is not None and fault.page != page:
                    continue
                if fault.provider is not None and fault.provider != provider:
                    continue
                fault.times -= 1
                return fault
        return None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        stamp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with stamp._lock:
                    stamp.requests += 1
                parts = urlsplit(self.path)
                query = {k.lower(): v for k, v in parse_qsl(parts.query)}
                segments = [s.lower() for s in parts.path.strip("/").split("/")]
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._error(401, "InvalidAuthenticationToken")
                    return
                if len(segments) != 5 or segments[0] != "subscriptions":
                    self._error(404, "NotFound")
                    return
                provider, route = segments[1], segments[4]
                offset = int(query.get("continuationtoken", "0"))
                if route == "subscriptions":
                    self._serve("subscriptions", provider, None, stamp.subscription_items,
                                offset, stamp.subscriptions_page_size, query)  # fmt: skip
                    return
                hour = datetime.fromisoformat(query["reportedstarttime"]).astimezone(UTC)
                rows = stamp.usage.get((provider, hour), [])
                subscriber = query.get("subscriberid")
                if subscriber is not None:
                    rows = [
                        row
                        for row in rows
                        if row["properties"]["subscriptionId"].lower() == subscriber.lower()
                    ]
                self._serve("usage", provider, subscriber, rows, offset, stamp.page_size, query)

            def _serve(
                self,
                route: str,
                provider: str,
                subscriber: str | None,
                items: list[dict[str, Any]],
                offset: int,
                size: int,
                query: dict[str, str],
            ) -> None:
                page = offset // size + 1
                fault = stamp._fault(route, provider, subscriber, page)
                status = fault.status if fault else 200
                with stamp._lock:
                    stamp.seen.append(Seen(route, provider, subscriber, page, status))
                if fault is not None:
                    self._error(fault.status, "Injected", fault.headers)
                    return
                body: dict[str, Any] = {"value": items[offset : offset + size]}
                if offset + size < len(items):
                    base = stamp.next_link_base or stamp.base_url
                    link_query = {**query, "continuationtoken": str(offset + size)}
                    body["nextLink"] = f"{base}{urlsplit(self.path).path}?{urlencode(link_query)}"
                self._send(200, body, {})

            def _error(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
                error = {"error": {"code": code, "message": f"injected {status}"}}
                self._send(status, error, {"x-ms-error-code": code, **(headers or {})})

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def admin_item(subscription: Subscription) -> dict[str, Any]:
    """A subscription as Microsoft.Subscriptions.Admin lists it (owner is a UPN)."""
    owner = subscription.owners[0] if subscription.owners else "nobody"
    return {
        "id": "/subscriptions/x/providers/Microsoft.Subscriptions.Admin/subscriptions/"
        + subscription.subscription_id,
        "subscriptionId": subscription.subscription_id,
        "delegatedProviderSubscriptionId": subscription.provider_subscription_id,
        "displayName": subscription.display_name,
        "owner": f"User-{owner[:8]}@Contoso.example",
        "tenantId": subscription.tenant_id,
        "routingResourceManagerType": "Default",
        "offerId": f"/subscriptions/x/providers/Microsoft.Subscriptions.Admin/offers/"
        f"{subscription.offer.replace(' ', '-')}",
        "state": ADMIN_STATES[subscription.state],
    }


def wire_row(record: UsageRecord, i: int, provider_of: dict[str, str | None]) -> dict[str, Any]:
    """A fleet record as the stamp sends it, the encoding chosen by ``i`` (all lossless)."""

    def encoded(value: dict[str, Any] | None, choice: int) -> Any:
        if value is None:
            return "" if choice % 2 else "null"
        return value if choice % 2 else json.dumps(value)

    resources = {
        "resourceUri": record.resource_uri,
        "location": record.location,
        "tags": encoded(record.tags, i),
        "additionalInfo": encoded(record.additional_info, i // 2),
    }
    meter = record.meter_id.lower() if i % 3 == 0 else record.meter_id.upper()
    start = record.usage_start.isoformat()
    if i % 5 == 0:
        start = record.usage_start.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00")
    caller = provider_of[record.subscription_id]
    name = f"{record.subscription_id}-{meter}"  # not unique: many resources share it
    return {
        "id": f"/subscriptions/{caller}/providers/Microsoft.Commerce/UsageAggregate/{name}",
        "name": name,
        "type": "Microsoft.Commerce/UsageAggregate",
        "properties": {
            "subscriptionId": record.subscription_id,
            "usageStartTime": start,
            "usageEndTime": record.usage_end.isoformat(),
            "instanceData": json.dumps({"Microsoft.Resources": resources}),
            "quantity": record.quantity,
            "meterId": meter,
        },
    }


@pytest.fixture
def stamp() -> Iterator[Stamp]:
    with Stamp() as server:
        yield server


def source_for(
    stamp: Stamp, fleet: SimulatedFleet, waits: list[float], **options: Any
) -> AzureStackSource:
    retry = RetryPolicy(max_attempts=4, max_total_seconds=120, sleep=waits.append)
    return AzureStackSource(
        AzureStackOptions(
            admin_arm_endpoint=stamp.base_url,
            provider_subscription_id=fleet.default_provider.subscription_id,
            retry=options.pop("retry", retry),
            **options,
        ),
        lambda: TOKEN,
    )


def collect(settings: Settings, source: Any) -> StorageAccount:
    account = StorageAccount(settings)
    account.ensure_tables()
    Collector(settings, account, source).collect_hour(HOUR)
    return account


def reference(make_settings: Any, fleet: SimulatedFleet) -> dict[str, Any]:
    """The fleet's hour collected directly: what the stamp route must reproduce."""
    return snapshot(collect(make_settings(), fleet), "usage")


def test_stamp_hour_reproduces_the_fleet_tables(make_settings: Any, stamp: Stamp) -> None:
    """Every encoding, mixed-case meters, shuffled rows, > 1,000 rows over pages: same tables."""
    fleet = SimulatedFleet(FleetOptions(tenants=40))
    served = stamp.serve_fleet(fleet, HOUR)
    waits: list[float] = []
    with source_for(stamp, fleet, waits) as source:
        account = collect(make_settings(), source)
        stats = source.stats
    expected = reference(make_settings, fleet)
    assert snapshot(account, "usage") == expected
    assert snapshot(account, "quarantine") == {"quarantine": []}
    default = fleet.default_provider.subscription_id
    assert served > 1000
    assert stats.rows == served
    assert max(seen.page for seen in stamp.usage_requests(default)) >= 2
    # Delegated providers' tenants are read through their own provider route.
    assert {p.subscription_id for p in fleet.delegated_providers} <= {
        seen.provider for seen in stamp.seen if seen.route == "usage"
    }
    assert stats.fallbacks == []
    assert waits == []


def test_subscriptions_come_from_the_admin_api(stamp: Stamp) -> None:
    """Owner UPN, tenant, offer, state, provider; the default provider is added as root."""
    fleet = SimulatedFleet(FleetOptions(tenants=12))
    stamp.serve_fleet(fleet, HOUR)
    with source_for(stamp, fleet, []) as source:
        listed = {s.subscription_id: s for s in source.subscriptions(HOUR)}
    expected = {s.subscription_id: s for s in fleet.subscriptions(HOUR)}
    assert listed.keys() == expected.keys()
    assert max(s.page for s in stamp.seen if s.route == "subscriptions") >= 2
    for subscription_id, want in expected.items():
        got = listed[subscription_id]
        assert got.state is want.state
        assert got.provider_subscription_id == want.provider_subscription_id
        assert got.is_provider == want.is_provider
        if want.provider_subscription_id:
            assert got.tenant_id == want.tenant_id
            assert got.owners == (f"user-{want.owners[0][:8]}@contoso.example",)


def test_gateway_timeouts_fall_back_to_one_subscriber_at_a_time(
    make_settings: Any, stamp: Stamp
) -> None:
    """504s on the all-tenants call switch to per-subscriber reads; the tables are unchanged."""
    fleet = SimulatedFleet(FleetOptions(tenants=8))
    stamp.serve_fleet(fleet, HOUR)
    default = fleet.default_provider.subscription_id
    stamp.faults.append(Fault(504, all_tenants=True, provider=default))
    with source_for(stamp, fleet, []) as source:
        account = collect(make_settings(), source)
        assert source.stats.fallbacks == [default.lower()]
    assert snapshot(account, "usage") == reference(make_settings, fleet)
    asked = {seen.subscriber for seen in stamp.usage_requests(default) if seen.subscriber}
    direct = {
        s.subscription_id
        for s in fleet.subscriptions(HOUR)
        if s.provider_subscription_id == default
    }
    assert asked == direct


def test_throttling_and_busy_answers_are_retried_within_caps(
    make_settings: Any, stamp: Stamp
) -> None:
    """429 waits its Retry-After, 503 and 500 back off; the hour still comes out whole."""
    fleet = SimulatedFleet(FleetOptions(tenants=8))
    stamp.page_size = 100
    stamp.serve_fleet(fleet, HOUR)
    stamp.faults += [
        Fault(429, page=1, headers={"Retry-After": "7"}, times=1),
        Fault(503, page=2, headers={"Retry-After": "2"}, times=1),
        Fault(500, route="subscriptions", times=1),
    ]
    waits: list[float] = []
    with source_for(stamp, fleet, waits) as source:
        account = collect(make_settings(), source)
    assert snapshot(account, "usage") == reference(make_settings, fleet)
    assert 7.0 in waits
    assert 2.0 in waits
    assert len(waits) == 3


def test_a_page_failing_mid_hour_leaves_the_hour_uncollected(
    make_settings: Any, stamp: Stamp
) -> None:
    """Page 2 keeps failing: the collector raises, the watermark stays; a rerun completes."""
    fleet = SimulatedFleet(FleetOptions(tenants=8))
    stamp.page_size = 100
    stamp.serve_fleet(fleet, HOUR)
    stamp.faults.append(Fault(503, all_tenants=True, page=2))
    settings = make_settings()
    waits: list[float] = []
    with source_for(stamp, fleet, waits) as source:
        with pytest.raises(UpstreamUnavailableError, match=r"page 2"):
            collect(settings, source)
        account = StorageAccount(settings)
        assert Watermark(account, source.name).read() is None
        assert len(waits) == 3  # four attempts, capped
        stamp.faults.clear()
        collect(settings, source)
    assert Watermark(account, "azurestack").read() == HOUR
    assert snapshot(account, "usage") == reference(make_settings, fleet)


def test_retry_budget_caps_total_time(stamp: Stamp) -> None:
    """A Retry-After that would pass the time cap is not waited for: it raises at once."""
    fleet = SimulatedFleet(FleetOptions(tenants=4))
    stamp.serve_fleet(fleet, HOUR)
    stamp.faults.append(Fault(429, route="subscriptions", headers={"Retry-After": "600"}))
    waits: list[float] = []
    source = source_for(stamp, fleet, waits)
    with source, pytest.raises(UpstreamUnavailableError, match="1 attempt"):
        source.subscriptions(HOUR)
    assert waits == []


def test_a_next_link_off_the_stamp_is_not_followed(stamp: Stamp) -> None:
    """A nextLink to another host would carry our token there: refused as a clear error."""
    fleet = SimulatedFleet(FleetOptions(tenants=8))
    stamp.page_size = 100
    stamp.serve_fleet(fleet, HOUR)
    stamp.next_link_base = "http://127.0.0.2:9"
    with source_for(stamp, fleet, []) as source, pytest.raises(BadInputError) as error:
        list(source.usage(HOUR))
    assert error.value.code == "ForeignNextLink"


def test_a_refused_token_is_not_retried(stamp: Stamp) -> None:
    """401 from the stamp is NotAllowedError at once, naming the peer's code."""
    fleet = SimulatedFleet(FleetOptions(tenants=4))
    stamp.serve_fleet(fleet, HOUR)
    source = AzureStackSource(
        AzureStackOptions(stamp.base_url, fleet.default_provider.subscription_id),
        lambda: "wrong-token",
    )
    with source, pytest.raises(NotAllowedError) as error:
        source.subscriptions(HOUR)
    assert error.value.code == "InvalidAuthenticationToken"
    assert "wrong-token" not in str(error.value)
    assert stamp.requests == 1
