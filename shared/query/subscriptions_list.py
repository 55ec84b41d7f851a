"""``GET /subscriptions?api-version=...``: the subscriptions the caller may read, in ARM's shape.

What Azure Resource Manager answers for "Subscriptions - List" (``value[]`` of ``id``,
``subscriptionId``, ``displayName``, ``state``, ``tenantId``, ``subscriptionPolicies``,
``authorizationSource``), so ``azure-mgmt-subscription``'s ``SubscriptionClient`` and the
portal's pickers read names instead of bare GUIDs, and a tenant who may read four
subscriptions sees four. Who sees what follows the other routes' rules
(``shared.query.caller_scope``): the admin every subscription; anyone else those it owns
or reads, deleted ones left out (the tenant route refuses them). ``tags.usageRole`` says
``provider`` for a provider subscription (its owner opens its direct tenants through the
``Microsoft.Commerce.Admin`` routes) and ``tenant`` otherwise, and a provider's
``tags.providerKind`` is the roll-up's ``kind`` (``default``, or ``delegated`` for one another
provider offered: which of the roll-up's figures its money has, so the portal names them as
the CLI does): additions of ours, in the ``tags`` member newer ARM versions carry, which
clients that do not know them ignore.

State: active is ``Enabled``, suspended ``Disabled``, deleted ``Deleted`` (admin only).
One answer, no ``nextLink``: a caller's subscriptions are few, and the admin's are the
subscriptions table, read once.
"""

from __future__ import annotations

from typing import Any, Final

from shared.query.arguments import query_arguments, versioned_arguments
from shared.query.arm_responses import HttpAnswer, answered, json_answer
from shared.query.auth import Caller, TokenValidator
from shared.query.usage_api import HttpCall
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription, SubscriptionState, SubscriptionStore

# ARM's documented versions of Subscriptions - List (azure-mgmt-subscription 3 sends 2021-10-01).
API_VERSIONS: Final = (
    "2016-06-01", "2019-06-01", "2020-01-01", "2021-01-01", "2021-10-01", "2022-12-01",
)  # fmt: skip
STATES: Final = {
    SubscriptionState.ACTIVE: "Enabled",
    SubscriptionState.SUSPENDED: "Disabled",
    SubscriptionState.DELETED: "Deleted",
}


def handles(route_path: str) -> bool:
    """True for the list itself: ``/subscriptions`` with nothing after it."""
    return route_path.strip("/") == ""


def readable(caller: Caller, subscription: Subscription) -> bool:
    """The caller may read ``subscription`` (the tenant route's rule; providers: owners)."""
    if caller.is_admin:
        return True
    if subscription.state is SubscriptionState.DELETED:
        return False
    wanted = caller.object_id.lower()
    return any(oid.lower() == wanted for oid in (*subscription.owners, *subscription.readers))


def document(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{subscription.subscription_id.lower()}",
        "subscriptionId": subscription.subscription_id.lower(),
        "displayName": subscription.display_name,
        "state": STATES[subscription.state],
        "tenantId": subscription.tenant_id,
        "authorizationSource": "RoleBased",
        "subscriptionPolicies": {
            "locationPlacementId": "",
            "quotaId": "",
            "spendingLimit": "Off",
        },
        "tags": tags(subscription),
    }


def tags(subscription: Subscription) -> dict[str, str]:
    """Our ``tags``: the role, and a provider's kind (the roll-up's ``kind``)."""
    if not subscription.is_provider:
        return {"usageRole": "tenant"}
    kind = "default" if subscription.provider_subscription_id is None else "delegated"
    return {"usageRole": "provider", "providerKind": kind}


class SubscriptionsList:
    """The list route; built once per process by ``shared.app``."""

    def __init__(self, account: StorageAccount, validator: TokenValidator) -> None:
        self._account = account
        self._validator = validator

    def answer(self, call: HttpCall) -> HttpAnswer:
        """The answer to ``call``; never raises."""
        return answered(call.method, lambda _: self._serve(call))

    def _serve(self, call: HttpCall) -> HttpAnswer:
        caller = self._validator.validate(call.header("Authorization"))
        versioned_arguments(query_arguments(call.url), API_VERSIONS)
        subscriptions = SubscriptionStore(self._account).all().values()
        value = [
            document(s)
            for s in sorted(
                subscriptions, key=lambda s: (s.display_name.lower(), s.subscription_id)
            )
            if readable(caller, s)
        ]
        return json_answer(200, {"value": value})
