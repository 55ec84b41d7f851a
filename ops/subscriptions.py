"""List the subscriptions the collector has seen, and edit what operators own: where a
subscription is billed (``set-billing``) and who besides its owners may read its usage
(``grant-reader`` / ``revoke-reader``).

Owners are not edited here: they come from the usage source and every collection rewrites
them, so an edit would not last. To let someone read a subscription's usage, grant them as
a reader (their Entra object id); readers and the billing mapping are never overwritten by
collection. Edits are ETag-guarded, so they are safe while the collector runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ops.actions import action_adder
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription, SubscriptionStore, billing_target

HELP = "list subscriptions; edit their billing mapping and readers (owners come from the source)"


def _identifier(text: str) -> str:
    value = text.strip()
    if not value or any(character.isspace() for character in value):
        raise argparse.ArgumentTypeError(f"{text!r} is not an id")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = action_adder(parser)

    listing = action("list", "list subscriptions with owners, readers and billing target")
    listing.add_argument("--provider", metavar="SUB", help="only this provider's direct tenants")
    listing.add_argument(
        "--output", choices=("table", "json"), default="table", help="default: table"
    )

    billing = action(
        "set-billing",
        "bill a subscription to a billing resource and plan ('' and '' = back to the default)",
    )
    billing.add_argument("subscription", type=_identifier, metavar="SUB")
    billing.add_argument("--resource", required=True, help="billing resource id ('' = default)")
    billing.add_argument("--plan", required=True, help="plan id ('' = default)")

    for name, verb in (("grant-reader", "let"), ("revoke-reader", "no longer let")):
        edit = action(
            name,
            f"{verb} an Entra object id read a subscription's usage (owners come from the "
            "usage source and are rewritten by each collection; readers are the operator's)",
        )
        edit.add_argument("subscription", type=_identifier, metavar="SUB")
        edit.add_argument("object_id", type=_identifier, metavar="OBJECT_ID")


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = SubscriptionStore(StorageAccount(settings))
    if args.action == "list":
        return _list(store, settings, args.provider, args.output)
    if args.action == "set-billing":
        changed = store.set_billing(args.subscription, args.resource.strip(), args.plan.strip())
    elif args.action == "grant-reader":
        changed = store.grant_reader(args.subscription, args.object_id)
    else:
        changed = store.revoke_reader(args.subscription, args.object_id)
    target = billing_target(settings, changed)
    mapped = "" if changed.billing_resource_id else " (default)"
    print(
        f"{changed.subscription_id}: billing {target.resource_id}/{target.plan_id}{mapped}; "
        f"readers: {', '.join(changed.readers) or 'none'}"
    )
    return 0


def _list(store: SubscriptionStore, settings: Settings, provider: str | None, output: str) -> int:
    subscriptions = sorted(store.all().values(), key=lambda s: s.subscription_id)
    if provider is not None:
        wanted = provider.strip().lower()
        if store.get(wanted) is None:
            raise BadInputError(
                f"subscription {provider} is not known", code="SubscriptionNotFound"
            )
        subscriptions = [
            s for s in subscriptions if (s.provider_subscription_id or "").lower() == wanted
        ]
    records = [_record(settings, s) for s in subscriptions]
    if output == "json":
        print(json.dumps(records, indent=2))
        return 0
    columns = ("id", "name", "state", "provider", "owners", "readers", "billing")
    cells = [
        {
            "id": r["id"],
            "name": r["name"],
            "state": r["state"] + (" (provider)" if r["isProvider"] else ""),
            "provider": r["provider"] or "-",
            "owners": ",".join(r["owners"]) or "-",
            "readers": ",".join(r["readers"]) or "-",
            "billing": f"{r['billingResourceId']}/{r['billingPlanId']}"
            + ("" if r["billingMapped"] else " (default)"),
        }
        for r in records
    ]
    widths = {c: max([len(c), *(len(cell[c]) for cell in cells)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for cell in cells:
        print("  ".join(cell[c].ljust(widths[c]) for c in columns).rstrip())
    print(f"({len(cells)} subscriptions)")
    return 0


def _record(settings: Settings, subscription: Subscription) -> dict[str, Any]:
    """A subscription as the listing shows it; billing is the effective target."""
    target = billing_target(settings, subscription)
    return {
        "id": subscription.subscription_id,
        "name": subscription.display_name,
        "state": subscription.state.value,
        "isProvider": subscription.is_provider,
        "provider": subscription.provider_subscription_id,
        "tenantId": subscription.tenant_id,
        "owners": list(subscription.owners),
        "readers": list(subscription.readers),
        "billingResourceId": target.resource_id,
        "billingPlanId": target.plan_id,
        "billingMapped": bool(subscription.billing_resource_id),
    }
