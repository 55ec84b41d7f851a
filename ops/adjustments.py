"""Adjustments: credits, corrections and one-off charges on a subscription's statement.

    python -m ops adjustments add --subscription <id> --month 2026-12 --category credit \\
        --amount -25.00 --currency USD --reason "SLA: 3 h outage on 4 December" \\
        [--corrects 2026-11] [--level retail|wholesale] [--by <who>]
    python -m ops adjustments add --reverses <adjustment id> --reason "added twice"
    python -m ops adjustments list --month 2026-12 [--subscription <id> | --provider <id>]
    python -m ops adjustments show <adjustment id>

The amount is signed as it changes the bill, in whole minor units of the deployment's
currency: a ``credit`` is negative, a one-off ``charge`` positive, an ``adjustment`` either.
The month is the statement it appears on and must be open (not finalised; the current month
by default); a closed month is corrected by an adjustment in the open month that names it
with ``--corrects``. Adjustments are never changed or deleted: ``--reverses`` adds the
opposite one. Each keeps who (``--by``, else the operator's login), when and why. Written
here only (storage rights); the API reads them per scope.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from ops.actions import action_adder, month_argument
from shared.app import FunctionApp
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.hours import utc_now
from shared.rating.adjustments import (
    Adjustment,
    AdjustmentStore,
    Category,
    checked_amount,
    final_month_error,
)
from shared.rating.engine import Level, Month
from shared.storage.subscriptions import SubscriptionStore

HELP = "add, list and show credits, corrections and one-off charges (never changed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = action_adder(parser)
    add = action("add", "add an adjustment to an open month's statement")
    add.add_argument("--subscription", help="the subscription whose statement it is on")
    add.add_argument(
        "--month", type=month_argument, help="the statement's month (default: this one)"
    )
    add.add_argument("--category", choices=[c.value for c in Category])
    add.add_argument("--amount", help="signed, as it changes the bill: a credit is negative")
    add.add_argument("--currency", help="the deployment's currency (its price sheets')")
    add.add_argument("--reason", required=True, help="why (shown on the statement)")
    add.add_argument("--corrects", type=month_argument, help="the earlier month it corrects")
    add.add_argument("--level", choices=[lvl.value for lvl in Level], default="retail")
    add.add_argument("--reverses", help="the id of an adjustment to reverse (its opposite)")
    add.add_argument("--by", help="who adds it (default: the operator's login)")
    listed = action("list", "a month's adjustments")
    listed.add_argument("--month", type=month_argument, required=True)
    who = listed.add_mutually_exclusive_group()
    who.add_argument("--subscription")
    who.add_argument("--provider", help="a provider subscription: its direct tenants'")
    listed.add_argument("--output", choices=("table", "json"), default="table")
    show = action("show", "one adjustment, as stored")
    show.add_argument("id")


def run(args: argparse.Namespace, settings: Settings) -> int:
    app = FunctionApp(settings)
    store = AdjustmentStore(app.account)
    if args.action == "add":
        return _add(args, app, store)
    if args.action == "list":
        return _list(args, app, store)
    found = store.get(args.id)
    if found is None:
        raise BadInputError(f"no adjustment {args.id}")
    print(json.dumps(found.document(), indent=2))
    return 0


def _add(args: argparse.Namespace, app: FunctionApp, store: AdjustmentStore) -> int:
    month = args.month or Month.of(utc_now())
    if month > Month.of(utc_now()):
        raise BadInputError(f"{month} has not started yet")
    original: Adjustment | None = None
    if args.reverses:
        original = store.get(args.reverses)
        if original is None:
            raise BadInputError(f"no adjustment {args.reverses} to reverse")
    subscription_id = (args.subscription or (original.subscription_id if original else "")).lower()
    if not subscription_id:
        raise BadInputError("give --subscription (or --reverses)")
    subscriptions = SubscriptionStore(app.account).all()
    if subscription_id not in subscriptions:
        raise BadInputError(f"subscription {subscription_id} is not known")
    level = original.level if original else Level(args.level)
    book = app.statements.price_book()
    if book.pricing(subscription_id, subscriptions, level) is None:
        raise BadInputError(
            f"{subscription_id} was not offered by a delegated provider: no {level}"
        )
    if book.currency is None:
        raise BadInputError("no price sheet sets the deployment's currency yet: import one first")
    currency = (args.currency or (original.currency if original else "")).upper()
    if currency != book.currency:
        raise BadInputError(f"--currency must be the deployment's currency, {book.currency}")
    category = Category(args.category) if args.category else None
    if original is not None:
        category = category or Category.ADJUSTMENT
        amount = checked_amount(args.amount or format(-original.amount, "f"), category, currency)
        if amount != -original.amount:
            raise BadInputError(f"a reversal of {original.adjustment_id} is {-original.amount}")
    else:
        if category is None or not args.amount:
            raise BadInputError("give --category and --amount")
        amount = checked_amount(args.amount, category, currency)
    finalised = app.statements.status().finalised_through
    if finalised is not None and month <= finalised:
        raise final_month_error(month)
    adjustment = store.add(
        subscription_id=subscription_id,
        level=level,
        month=month,
        category=category,
        amount=amount,
        currency=currency,
        reason=args.reason,
        created_by=args.by or _login(),
        corrects=args.corrects,
        reverses=original.adjustment_id if original else None,
    )
    print(
        f"{adjustment.adjustment_id}: {adjustment.category.value} {adjustment.amount} "
        f"{adjustment.currency} on {adjustment.subscription_id}'s {adjustment.level.value} "
        f"statement of {adjustment.month}"
    )
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"


def _list(args: argparse.Namespace, app: FunctionApp, store: AdjustmentStore) -> int:
    found = store.of_month(args.month)
    if args.subscription:
        found = [a for a in found if a.subscription_id == args.subscription.strip().lower()]
    elif args.provider:
        provider = args.provider.strip().lower()
        subscriptions = SubscriptionStore(app.account).all()
        offered = {
            s for s, sub in subscriptions.items()
            if (sub.provider_subscription_id or "").lower() == provider
        }  # fmt: skip
        found = [a for a in found if a.subscription_id in offered]
    if args.output == "json":
        print(json.dumps([a.document() for a in found], indent=2))
        return 0
    print(f"{'ID':<30} {'SUBSCRIPTION':<38} {'LEVEL':<10} {'CATEGORY':<11} {'AMOUNT':>12}  REASON")
    for a in found:
        print(
            f"{a.adjustment_id:<30} {a.subscription_id:<38} {a.level.value:<10} "
            f"{a.category.value:<11} {format(a.amount, 'f'):>12}  {a.reason}"
        )
    print(f"({len(found)} adjustments)", file=sys.stdout)
    return 0
