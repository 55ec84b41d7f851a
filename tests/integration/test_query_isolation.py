"""Tenant isolation (invariant 5) over real HTTP: who can read what, and nothing more.

Every ordered pair of the fleet's directory tenants, both routes, the argument
combinations; delegated providers see exactly their direct tenants; the admin sees all;
continuation tokens do not travel between callers; and hypothesis throws arbitrary
arguments and paths at the API, which must never answer 5xx nor a row outside the scope.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from datetime import timedelta
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.example_prices import load_example_prices
from devstack.host import LocalFunctionsHost
from shared.core.errors import NotAllowedError
from shared.core.hours import utc_now
from shared.query.arguments import parse_path, parse_query
from shared.query.auth import Caller
from shared.query.caller_scope import resolve_scope
from shared.query.continuation import ContinuationCodec, Cursor, PageState
from shared.storage.subscriptions import Subscription, SubscriptionState, SubscriptionStore
from tests.integration.test_query_support import (
    API_VERSION,
    DAY,
    HOUR,
    PROVIDER_PATH,
    TENANT_PATH,
    World,
    call,
    follow,
    window,
)

COMBINATIONS = [
    window(DAY, DAY + timedelta(days=1), "Hourly"),
    window(DAY, DAY + timedelta(days=1), "Daily"),
    {**window(DAY + 6 * HOUR, DAY + 9 * HOUR), "showDetails": "false"},
    {**window(DAY, DAY + timedelta(days=1), "daily"), "showDetails": "true"},
]


RATE_CARD_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/RateCard"
STATEMENT_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/statements/2026-11"
ROLLUP_PATH = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberStatements/2026-11"
ADJUSTMENTS_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/adjustments/{}"
SUBSCRIBER_ADJUSTMENTS_PATH = (
    "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberAdjustments/{}"
)
RATE_CARD_ARGS = {
    "api-version": API_VERSION,
    "$filter": "OfferDurableId eq 'MS-AZR-0003P' and Currency eq 'USD' and Locale eq 'en-US' "
    "and RegionInfo eq 'US'",
}
CHARGES = [
    (RATE_CARD_PATH, RATE_CARD_ARGS),
    (STATEMENT_PATH, {"api-version": API_VERSION}),
    (ROLLUP_PATH, {"api-version": API_VERSION}),
    (ADJUSTMENTS_PATH.format("{}", "2026-11"), {"api-version": API_VERSION}),
    (SUBSCRIBER_ADJUSTMENTS_PATH.format("{}", "2026-11"), {"api-version": API_VERSION}),
]


def directories(world: World) -> dict[str, list[Subscription]]:
    """Tenant subscriptions by directory tenant."""
    by_directory: dict[str, list[Subscription]] = defaultdict(list)
    for subscription in world.tenants():
        by_directory[subscription.tenant_id].append(subscription)
    return by_directory


def readable(world: World, object_id: str) -> set[str]:
    """Subscriptions ``object_id`` may read on the tenant route (owner/reader, not deleted)."""
    return {
        s.subscription_id.lower()
        for s in world.tenants()
        if object_id in (*s.owners, *s.readers) and s.state is not SubscriptionState.DELETED
    }


def test_every_pair_of_tenants_is_isolated_on_both_routes(
    world: World, host: LocalFunctionsHost
) -> None:
    """Each directory's users get 403 for every other directory's subscriptions, on both
    routes, in every argument combination; narrowing through their provider too."""
    by_directory = directories(world)
    assert len(by_directory) == 12
    routes = (TENANT_PATH, PROVIDER_PATH)
    refused: set[tuple[str, str, str, int]] = set()  # (directory, route, subscription, args)
    for (mine_id, mine), (_, theirs) in itertools.permutations(by_directory.items(), 2):
        user = next(owner for s in mine for owner in s.owners)
        token = world.token(user)
        offset = sorted(by_directory).index(mine_id)
        # Each of their subscriptions on one route, rotating with the caller's directory
        # (every directory has two or more, so both routes each pair), as was every route
        # for every subscription (~1,560 requests).
        for index, target in enumerate(theirs):
            combination = (index + len(refused)) % len(COMBINATIONS)
            path = routes[(index + offset) % len(routes)]
            params = COMBINATIONS[combination]
            response = call(host.base_url, path.format(target.subscription_id), params, token)
            assert response.status_code == 403, (path, response.text)
            refused.add((mine_id, path, target.subscription_id, combination))
        # Narrowing to their subscription through their provider: still 403.
        target = theirs[0]
        provider = target.provider_subscription_id
        assert provider is not None
        narrowed = {**COMBINATIONS[0], "subscriberId": target.subscription_id}
        response = call(host.base_url, PROVIDER_PATH.format(provider), narrowed, token)
        assert response.status_code == 403
    subscriptions = {s.subscription_id: d for d, subs in by_directory.items() for s in subs}
    assert {(mine, path, subscriptions[sub]) for mine, path, sub, _ in refused} == {
        (mine, path, theirs)
        for mine, theirs in itertools.permutations(by_directory, 2)
        for path in routes
    }
    assert {(mine, sub) for mine, _, sub, _ in refused} == {
        (mine, sub) for sub, theirs in subscriptions.items() for mine in by_directory
        if mine != theirs
    }  # fmt: skip
    assert {(path, sub) for _, path, sub, _ in refused} == {
        (path, sub) for path in routes for sub in subscriptions
    }
    assert {(path, args) for _, path, _, args in refused} == {
        (path, args) for path in routes for args in range(len(COMBINATIONS))
    }


def test_every_pair_of_tenants_is_isolated_on_statements_and_rate_cards(
    world: World, host: LocalFunctionsHost
) -> None:
    """Each directory's users get 403 on every charges route for every other directory, for
    each of its subscriptions, and every (route, subscription) pair is refused to someone;
    also when narrowing a provider's roll-up to one of its subscriptions."""
    load_example_prices(world.settings)  # idempotent: the same versions every time
    by_directory = directories(world)
    refused: set[tuple[str, str, str]] = set()  # (caller's directory, route, subscription)
    for (mine_id, mine), (_, theirs) in itertools.permutations(by_directory.items(), 2):
        token = world.token(next(owner for s in mine for owner in s.owners))
        offset = sorted(by_directory).index(mine_id)
        # Each of their subscriptions on one route, the routes rotating with the caller's
        # directory (so every subscription meets every route over the callers), and every
        # route at least once per pair; not the whole cube (it took ~145 s).
        for n in range(max(len(theirs), len(CHARGES))):
            target = theirs[n % len(theirs)]
            path, params = CHARGES[(n + offset) % len(CHARGES)]
            response = call(host.base_url, path.format(target.subscription_id), params, token)
            assert response.status_code == 403, (path, response.text)
            refused.add((mine_id, path, target.subscription_id))
        target = theirs[0]
        narrowed = {"api-version": API_VERSION, "subscriberId": target.subscription_id}
        path = ROLLUP_PATH.format(target.provider_subscription_id)
        assert call(host.base_url, path, narrowed, token).status_code == 403
    subscriptions = {s.subscription_id: d for d, subs in by_directory.items() for s in subs}
    routes = {path for path, _ in CHARGES}
    # Every caller was refused every route for every other directory ...
    assert {(mine, path, subscriptions[sub]) for mine, path, sub in refused} == {
        (mine, path, theirs)
        for mine, theirs in itertools.permutations(by_directory, 2)
        for path in routes
    }
    # ... each of that directory's subscriptions ...
    assert {(mine, sub) for mine, _, sub in refused} == {
        (mine, sub) for sub, theirs in subscriptions.items() for mine in by_directory
        if mine != theirs
    }  # fmt: skip
    # ... and every subscription on every route.
    assert {(path, sub) for _, path, sub in refused} == {
        (path, sub) for path in routes for sub in subscriptions
    }


def test_tenant_owners_read_exactly_their_subscription(
    world: World, host: LocalFunctionsHost
) -> None:
    """An owner's rows all belong to the path subscription, in every argument combination."""
    for subscription in world.tenants():
        if subscription.state is SubscriptionState.DELETED or not subscription.owners:
            continue
        token = world.token(subscription.owners[0])
        for params in COMBINATIONS[:2]:
            path = TENANT_PATH.format(subscription.subscription_id)
            rows, _ = follow(call(host.base_url, path, params, token), token)
            assert {row["properties"]["subscriptionId"] for row in rows} <= {
                subscription.subscription_id.lower()
            }


def test_providers_see_exactly_their_direct_tenants(world: World, host: LocalFunctionsHost) -> None:
    """P0, P1, P2 (by their owners) see their direct tenants' usage, and nobody else's."""
    p0 = world.fleet.default_provider.subscription_id.lower()
    assert {p.subscription_id.lower() for p in world.fleet.delegated_providers} <= (
        world.direct_tenants(p0)
    )
    for provider in world.providers():
        token = world.token(provider.owners[0])
        path = PROVIDER_PATH.format(provider.subscription_id)
        rows, _ = follow(call(host.base_url, path, window(), token), token)
        seen = {row["properties"]["subscriptionId"] for row in rows}
        direct = world.direct_tenants(provider.subscription_id)
        assert seen == direct & world.reported_subscriptions()
        for other in world.providers():
            if other.subscription_id != provider.subscription_id:
                response = call(
                    host.base_url, PROVIDER_PATH.format(other.subscription_id), window(), token
                )
                assert response.status_code == 403


def test_admin_sees_every_tenant(world: World, host: LocalFunctionsHost) -> None:
    """The admin role reads all tenants through the providers and any tenant directly."""
    token = world.admin_token()
    seen: set[str] = set()
    for provider in world.providers():
        path = PROVIDER_PATH.format(provider.subscription_id)
        rows, _ = follow(call(host.base_url, path, window(granularity="Daily"), token), token)
        seen |= {row["properties"]["subscriptionId"] for row in rows}
    with_usage = {
        s.subscription_id.lower()
        for s in world.tenants()
        if call(
            host.base_url, TENANT_PATH.format(s.subscription_id), window(granularity="Daily"), token
        ).json()["value"]
    }
    assert with_usage
    assert seen == with_usage


def test_continuation_tokens_do_not_travel_between_callers(
    world: World, host: LocalFunctionsHost
) -> None:
    """P1's nextLink is 403 for P2's owner; on P2's own path it is InvalidContinuationToken."""
    p1, p2 = world.fleet.delegated_providers
    p1_token, p2_token = world.token(p1.owners[0]), world.token(p2.owners[0])
    first = call(host.base_url, PROVIDER_PATH.format(p1.subscription_id), window(), p1_token)
    link = first.json()["nextLink"]
    stolen = requests.get(link, headers={"Authorization": f"Bearer {p2_token}"}, timeout=30)
    assert stolen.status_code == 403
    continuation = link.split("continuationToken=")[1]
    own_path = call(
        host.base_url,
        PROVIDER_PATH.format(p2.subscription_id),
        {**window(), "continuationToken": continuation},
        p2_token,
    )
    assert own_path.status_code == 400
    assert own_path.headers["x-ms-error-code"] == "InvalidContinuationToken"
    # The admin, too, cannot replay P1's token: it is bound to P1's owner.
    replay = requests.get(
        link, headers={"Authorization": f"Bearer {world.admin_token()}"}, timeout=30
    )
    assert replay.headers["x-ms-error-code"] == "InvalidContinuationToken"
    # Narrowing with subscriberId after the fact is another query: refused.
    narrowed = requests.get(
        link + f"&subscriberId={sorted(world.direct_tenants(p1.subscription_id))[0]}",
        headers={"Authorization": f"Bearer {p1_token}"},
        timeout=30,
    )
    assert narrowed.headers["x-ms-error-code"] == "InvalidContinuationToken"


def test_a_tenants_token_is_refused_for_another_tenant(
    world: World, host: LocalFunctionsHost
) -> None:
    """A genuine token minted for tenant A's query, presented by tenant B anywhere: refused."""
    by_directory = list(directories(world).values())
    a = next(s for s in by_directory[0] if s.owners and s.state is SubscriptionState.ACTIVE)
    b = next(s for s in by_directory[1] if s.owners and s.state is SubscriptionState.ACTIVE)
    params = window()
    query = parse_query(
        parse_path(f"/{a.subscription_id}/providers/Microsoft.Commerce/usageAggregates"),
        params,
        utc_now(),
    )
    caller_a = Caller(a.owners[0], None, frozenset(), False)
    scope = resolve_scope(caller_a, query, SubscriptionStore(world.account), lambda _: ())
    settings_ = world.settings
    codec = ContinuationCodec(
        settings_.continuation_token_key.get_secret_value().encode(),
        settings_.continuation_token_ttl_seconds,
    )
    state = PageState(
        bound="H2026112023", cursor=Cursor(a.subscription_id.lower(), "H2026112000", "")
    )
    token = codec.issue(scope, query, state, utc_now())
    b_token = world.token(b.owners[0])
    a_url = (
        host.base_url
        + TENANT_PATH.format(a.subscription_id)
        + "?"
        + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    )
    assert (
        requests.get(
            with_token(a_url, token),
            headers={"Authorization": f"Bearer {world.token(a.owners[0])}"},
            timeout=30,
        ).status_code
        == 200
    )
    response = requests.get(
        with_token(a_url, token),
        headers={"Authorization": f"Bearer {b_token}"},
        timeout=30,
    )
    assert response.status_code == 403
    b_url = a_url.replace(a.subscription_id, b.subscription_id)
    response = requests.get(
        with_token(b_url, token),
        headers={"Authorization": f"Bearer {b_token}"},
        timeout=30,
    )
    assert response.headers["x-ms-error-code"] == "InvalidContinuationToken"


def test_owner_object_ids_compare_case_insensitively(account) -> None:
    """A source that spells owners in upper case: the owner's (lower-case) oid reads its
    subscription and, as a provider owner, its direct tenants; a stranger still cannot."""
    provider_id, tenant_id = str(uuid.uuid4()), str(uuid.uuid4())
    owner = str(uuid.uuid4())
    listed = [
        Subscription(provider_id, "p", "t", None, (owner.upper(),), SubscriptionState.ACTIVE,
                     is_provider=True),
        Subscription(tenant_id, "s", "t", provider_id, (owner.upper(),), SubscriptionState.ACTIVE),
    ]  # fmt: skip
    store = SubscriptionStore(account)
    store.sync(listed, {})
    tenant_query = parse_query(
        parse_path(f"/{tenant_id}/providers/Microsoft.Commerce/usageAggregates"),
        window(),
        utc_now(),
    )
    provider_query = parse_query(
        parse_path(f"/{provider_id}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"),
        window(),
        utc_now(),
    )

    def with_usage(provider: str) -> list[str]:
        return [tenant_id]  # the tenant has usage in the window

    caller = Caller(owner.lower(), None, frozenset(), False)
    assert resolve_scope(caller, tenant_query, store, with_usage).subscription_ids == (tenant_id,)
    assert resolve_scope(caller, provider_query, store, with_usage).subscription_ids == (tenant_id,)
    stranger = Caller(str(uuid.uuid4()), None, frozenset(), False)
    for query in (tenant_query, provider_query):
        with pytest.raises(NotAllowedError):
            resolve_scope(stranger, query, store, with_usage)


def with_token(url: str, token: str) -> str:
    return f"{url}&continuationToken={quote(token, safe='')}"


# --- property-based ----------------------------------------------------------------------

ARGUMENT_NAMES = st.sampled_from(
    [
        "api-version",
        "API-VERSION",
        "reportedStartTime",
        "reportedendtime",
        "aggregationGranularity",
        "showDetails",
        "subscriberId",
        "continuationToken",
        "$filter",
    ]
)
TIMES = st.one_of(
    st.datetimes(
        min_value=DAY.replace(tzinfo=None) - timedelta(days=3),
        max_value=DAY.replace(tzinfo=None) + timedelta(days=10),
    ).map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from(
        [
            "2026-11-20T00:00:00+00:00",
            "2026-11-21T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:00:00-05:00",
        ]
    ),
    st.text(max_size=30),
)
VALUES = st.one_of(
    TIMES,
    st.sampled_from(["2015-06-01-preview", "Hourly", "daily", "true", "FALSE", "weekly", ""]),
    st.uuids().map(str),
    st.text(max_size=40),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    who=st.integers(min_value=0, max_value=10_000),
    route=st.sampled_from([TENANT_PATH, PROVIDER_PATH]),
    target=st.one_of(st.integers(min_value=0, max_value=10_000), st.text(max_size=20)),
    arguments=st.dictionaries(ARGUMENT_NAMES, VALUES, max_size=7),
    base=st.booleans(),
)
def test_arbitrary_requests_never_5xx_nor_leak(
    world: World,
    host: LocalFunctionsHost,
    who: int,
    route: str,
    target: int | str,
    arguments: dict[str, str],
    base: bool,
) -> None:
    """Any caller, path and arguments: a 2xx/4xx answer whose rows all lie in the caller's scope."""
    tenants = world.tenants()
    owner = tenants[who % len(tenants)].owners[0]
    if isinstance(target, int):
        path = route.format(tenants[target % len(tenants)].subscription_id)
    else:
        path = route.format(quote(target, safe=""))
    params = {**(window() if base else {}), **arguments}
    response = call(host.base_url, path, params, world.token(owner))
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        allowed = readable(world, owner)
        for provider in world.providers():
            if owner in provider.owners:
                allowed |= world.direct_tenants(provider.subscription_id)
        for row in response.json()["value"]:
            assert row["properties"]["subscriptionId"] in allowed
    else:
        assert response.headers["x-ms-error-code"]


def test_unknown_subscription_for_admin_is_empty(world: World, host: LocalFunctionsHost) -> None:
    """The admin asking about a subscription that does not exist gets an empty page."""
    response = call(host.base_url, TENANT_PATH.format(uuid.uuid4()), window(), world.admin_token())
    assert response.status_code == 200
    assert response.json() == {"value": []}
