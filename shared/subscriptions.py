"""Subscriptions: who consumed, who may read it, and where it is billed.

A tenant subscription is offered by a provider subscription (the default provider
subscription, or a delegated provider's). Sources report the fields they own (display name,
directory tenant, provider, owners, state); operators own the billing mapping, which the
collector only fills in when a subscription is first seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    display_name: str
    tenant_id: str
    # The provider subscription that offered this one; None for the default provider
    # subscription itself (the root of the hierarchy).
    provider_subscription_id: str | None
    owners: tuple[str, ...]
    state: SubscriptionState
    # True for provider subscriptions (the default one and delegated providers'): they
    # can call the provider route for their direct tenants.
    is_provider: bool = False
    readers: tuple[str, ...] = ()
    offer: str = ""
    billing_resource_id: str = ""
    billing_plan_id: str = ""
