"""The caller's scope: the subscriptions one request may read, decided once, on the server.

Invariant 5: the scope is derived from the authenticated :class:`~shared.query.auth.Caller` and
the subscriptions table, never from what the request claims. Query arguments can only
narrow it (``subscriberId``). Every read takes a :class:`CallerScope` as a required
parameter, and the only way to make one is :func:`resolve_scope` (the constructor demands a
module-private key), so a read without the check is a type error, not a missed test.

Rules (spec/usage-api.md; design.md, Auth):

- tenant route: the admin, or an owner/reader of that subscription. A deleted subscription
  is readable there by the admin only; its usage stays readable through the provider route.
- provider route: the admin, or an owner of that provider subscription. It reads the
  subscription's **direct** tenants (those whose provider subscription is the path's one),
  deleted ones included; only those with usage in the window are listed (the rest would
  answer no rows), each checked against the provider's index. ``subscriberId`` narrows to
  one of them, else ``400 SubscriberIdIsNotDirectTenant``.
- anything else is ``403 AuthorizationFailed`` with one fixed message, the same whether the
  subscription exists or not (no existence oracle).

Object ids are GUIDs and compare case-insensitively: sources spell owners as they please
(readers granted by operators are stored lower-case), Entra spells ``oid`` lower-case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from shared.core.errors import BadInputError, NotAllowedError
from shared.query.arguments import ApiPath, Route
from shared.query.auth import Caller
from shared.storage.subscriptions import Subscription, SubscriptionState, SubscriptionStore

_KEY = object()


@dataclass(frozen=True, slots=True)
class CallerScope:
    """Who asked, on which route and path, and the (sorted, lower-case) subscriptions in reach.

    Built only by :func:`resolve_scope`; ``subscription_ids`` may be empty (the admin asking
    about a subscription with no usage or that does not exist).
    """

    caller: Caller
    path: ApiPath
    subscriber_id: str | None
    subscription_ids: tuple[str, ...]
    _key: object = field(repr=False, compare=False)
    # The subscription the path names, as the rules read it (None: not a GUID, or unknown).
    target: Subscription | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._key is not _KEY:
            raise TypeError("CallerScope is made by resolve_scope only")
        if list(self.subscription_ids) != sorted(set(self.subscription_ids)):
            raise ValueError("scope subscriptions must be sorted and unique")


def _forbidden() -> NotAllowedError:
    return NotAllowedError(
        "the caller is not allowed to read usage of this subscription",
        code="AuthorizationFailed",
    )


class ScopedRequest(Protocol):
    """What the rules read of a request: its route and path, and a ``subscriberId`` (a
    usage query, or a chargeback request of ``shared.query.charges_api``)."""

    @property
    def path(self) -> ApiPath: ...

    @property
    def subscriber_id(self) -> str | None: ...


def resolve_scope(
    caller: Caller,
    query: ScopedRequest,
    store: SubscriptionStore,
    with_usage: Callable[[str], Iterable[str]],
) -> CallerScope:
    """The scope of ``caller`` for ``query``; raises 403 or 400 as the module docstring says.

    ``with_usage(provider)`` names the provider's tenants that may have rows in the
    request's window (the activity index); the provider route's scope is those that are its
    direct tenants now, so a page never pays for idle tenants (invariant 6).
    """
    path = query.path
    target = store.get(path.subscription_id) if path.is_guid else None
    if path.route is Route.TENANT:
        ids = _tenant_scope(caller, target)
        subscriber = None
    else:
        ids, subscriber = _provider_scope(
            caller, target, path, query.subscriber_id, store, with_usage
        )
    return CallerScope(
        caller=caller,
        path=path,
        subscriber_id=subscriber,
        subscription_ids=tuple(sorted(set(ids))),
        _key=_KEY,
        target=target,
    )


def _is_one_of(caller: Caller, object_ids: tuple[str, ...]) -> bool:
    """The caller's object id is among ``object_ids``, compared case-insensitively."""
    wanted = caller.object_id.lower()
    return any(object_id.lower() == wanted for object_id in object_ids)


def reads_on_tenant_route(object_id: str, subscription: Subscription) -> bool:
    """Whether a principal without the admin role may read ``subscription`` on the tenant
    route: one of its owners or readers, and the subscription is not deleted. The one rule
    the API applies and ``ops token --verbose`` shows."""
    wanted = object_id.lower()
    return subscription.state is not SubscriptionState.DELETED and any(
        principal.lower() == wanted for principal in (*subscription.owners, *subscription.readers)
    )


def _tenant_scope(caller: Caller, target: Subscription | None) -> list[str]:
    if caller.is_admin:
        return [target.subscription_id.lower()] if target is not None else []
    if target is None or not reads_on_tenant_route(caller.object_id, target):
        raise _forbidden()
    return [target.subscription_id.lower()]


def _provider_scope(
    caller: Caller,
    target: Subscription | None,
    path: ApiPath,
    subscriber_id: str | None,
    store: SubscriptionStore,
    with_usage: Callable[[str], Iterable[str]],
) -> tuple[list[str], str | None]:
    if not caller.is_admin and (
        target is None or not target.is_provider or not _is_one_of(caller, target.owners)
    ):
        raise _forbidden()
    if target is None:
        tenants: list[str] = []
    elif subscriber_id is None:
        tenants = store.tenants_among(path.subscription_id, with_usage(path.subscription_id))
    else:
        tenants = store.tenants_among(path.subscription_id, [subscriber_id])
    if subscriber_id is None:
        return tenants, None
    if subscriber_id not in tenants:
        raise BadInputError(
            "subscriberId is not a direct tenant of this provider subscription",
            code="SubscriberIdIsNotDirectTenant",
            target="subscriberId",
        )
    return [subscriber_id], subscriber_id
