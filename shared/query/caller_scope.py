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
  deleted ones included. ``subscriberId`` narrows to one of them, else
  ``400 SubscriberIdIsNotDirectTenant``.
- anything else is ``403 AuthorizationFailed`` with one fixed message, the same whether the
  subscription exists or not (no existence oracle).
"""

from __future__ import annotations

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


def resolve_scope(caller: Caller, query: ScopedRequest, store: SubscriptionStore) -> CallerScope:
    """The scope of ``caller`` for ``query``; raises 403 or 400 as the module docstring says."""
    path = query.path
    target = store.get(path.subscription_id) if path.is_guid else None
    if path.route is Route.TENANT:
        ids = _tenant_scope(caller, target)
        subscriber = None
    else:
        ids, subscriber = _provider_scope(caller, target, path, query.subscriber_id, store)
    return CallerScope(
        caller=caller,
        path=path,
        subscriber_id=subscriber,
        subscription_ids=tuple(sorted(set(ids))),
        _key=_KEY,
    )


def _tenant_scope(caller: Caller, target: Subscription | None) -> list[str]:
    if caller.is_admin:
        return [target.subscription_id.lower()] if target is not None else []
    if (
        target is None
        or target.state is SubscriptionState.DELETED
        or caller.object_id not in (*target.owners, *target.readers)
    ):
        raise _forbidden()
    return [target.subscription_id.lower()]


def _provider_scope(
    caller: Caller,
    target: Subscription | None,
    path: ApiPath,
    subscriber_id: str | None,
    store: SubscriptionStore,
) -> tuple[list[str], str | None]:
    if not caller.is_admin and (
        target is None or not target.is_provider or caller.object_id not in target.owners
    ):
        raise _forbidden()
    provider = path.subscription_id
    tenants = (
        [
            subscription_id
            for subscription_id, subscription in store.all().items()
            if (subscription.provider_subscription_id or "").lower() == provider
        ]
        if target is not None
        else []
    )
    if subscriber_id is None:
        return tenants, None
    if subscriber_id not in tenants:
        raise BadInputError(
            "subscriberId is not a direct tenant of this provider subscription",
            code="SubscriberIdIsNotDirectTenant",
            target="subscriberId",
        )
    return [subscriber_id], subscriber_id
