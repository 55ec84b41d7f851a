"""Statements: one subscription's month, a provider's roll-up, or the whole cloud.

    python -m ops statements --subscription <id> --month 2026-11 [--output table|json|csv]
    python -m ops statements --subscription <tenant> --month 2026-11 --wholesale
    python -m ops statements --provider <id> --month 2026-11 [--output ...]
    python -m ops statements --cloud --month 2026-11 [--output table|json]
    python -m ops statements rate
    python -m ops statements finalise

Every figure is read from the ledger of rated charges, the same the API, the portal and the
FOCUS exports read. A month's statement is final once ``finalise_statements`` froze it
(after rating passed the month's last hour); until then it shows what is rated so far,
provisional. ``--wholesale`` shows what the tenant's delegated provider pays for its usage
(the admin's sheet). A roll-up and ``--cloud`` use one definition of a provider's money
(``shared.rating.rollups``), with the same labels as the API and the portal. ``rate`` runs
the rating timer's work once; ``finalise`` rates what is due, then finalises, as the
timers do. Operators read every subscription (this reads storage directly).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ops.actions import month_argument
from shared.app import FunctionApp
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.rating.engine import Level
from shared.rating.rollups import LABELS, rollup_csv
from shared.rating.statements import statement_csv
from shared.storage.subscriptions import SubscriptionStore

HELP = "a subscription's statement, a provider's roll-up or the whole cloud (table, JSON, CSV)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("show", "rate", "finalise"), default="show")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--subscription", help="a subscription's statement")
    who.add_argument("--provider", help="a provider subscription's roll-up")
    who.add_argument("--cloud", action="store_true", help="every provider, every tenant once")
    parser.add_argument("--month", type=month_argument, help="yyyy-MM, e.g. 2026-11")
    parser.add_argument("--wholesale", action="store_true", help="the provider's cost instead")
    parser.add_argument("--output", choices=("table", "json", "csv"), default="table")


def run(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.usage_source is not None  # filled in local mode, required otherwise
    app = FunctionApp(settings)
    if args.action == "rate":
        print(app.rate_usage().summary_line())
        return 0
    if args.action == "finalise":
        print(app.rate_usage().summary_line())
        print(app.finalise_statements().summary_line())
        return 0
    if args.month is None or not (args.subscription or args.provider or args.cloud):
        raise BadInputError("give --month and --subscription, --provider or --cloud")
    subscriptions = SubscriptionStore(app.account).all()
    if args.cloud:
        cloud = app.rollups.cloud(args.month, subscriptions)
        if args.output == "csv":
            raise BadInputError("--cloud prints a table or JSON")
        _print_cloud(cloud, args.output)
        return 0
    wanted = (args.subscription or args.provider).strip().lower()
    if wanted not in subscriptions:
        raise BadInputError(f"subscription {wanted} is not known")
    if args.provider:
        tenants = app.rollups.charged(wanted, args.month, subscriptions)
        direct = [
            s for s in tenants
            if s in subscriptions
            and (subscriptions[s].provider_subscription_id or "").lower() == wanted
        ]  # fmt: skip
        rollup = app.rollups.rollup(subscriptions[wanted], args.month, subscriptions, direct)
        _print_rollup(rollup, args.output)
        return 0
    level = Level.WHOLESALE if args.wholesale else Level.RETAIL
    document = app.statements.statement(wanted, args.month, level, subscriptions)
    if document is None:
        raise BadInputError(f"{wanted} was not offered by a delegated provider: no wholesale")
    _print_statement(document, args.output)
    return 0


def _print_statement(document: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(document, indent=2))
        return
    if output == "csv":
        print(statement_csv([document]), end="")
        return
    currency = document["currency"] or ""
    print(
        f"Statement {document['month']} of {document['subscriptionId']} "
        f"({document['level']}, paid by {document['buyerSubscriptionId']}): "
        f"{document['status']}, {document['rows']} rows"
    )
    print(
        f"  {'METER':<34} {'USAGE':<8} {'QUANTITY':>16} {'UNIT':<20} {'UNIT PRICES':<18} "
        f"{'AMOUNT':>12}"
    )
    for line in document["lines"]:
        usage = line["usagePeriod"]["month"] + ("*" if line["late"] else "")
        prices = ";".join(line["unitPrices"]) if line["priced"] else "unpriced"
        print(
            f"  {line['meterName'][:34]:<34} {usage:<8} {line['quantity'][:16]:>16} "
            f"{line['unit'][:20]:<20} {prices[:18]:<18} {line['amount']:>12}"
        )
    for adjustment in document["adjustments"]:
        corrects = adjustment["corrects"] or ""
        label = f"{adjustment['category']}: {adjustment['reason']}"
        print(f"  {label[:34]:<34} {corrects:<8} {'':>16} {'':<20} {'':<18} "
              f"{adjustment['amount']:>12}")  # fmt: skip
    print(f"  {'TOTAL':<100} {document['total']:>12} {currency}")
    if any(line["late"] for line in document["lines"]):
        print("  * late usage: used in an earlier month, reported in this one")
    print(f"  sheets: {', '.join(document['sheetVersions']) or 'none'}")


def _figures(document: dict[str, Any]) -> list[tuple[str, str]]:
    """The definition's figures a document carries, labelled (``rollups.LABELS``)."""
    keys = ("directTenantsTotal", "wholesaleTotal", "margin", "resellersTotal", "grandTotal")
    return [(LABELS[key], document[key]) for key in keys if document.get(key) is not None]


def _print_rollup(rollup: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(rollup, indent=2))
        return
    if output == "csv":
        print(rollup_csv(rollup), end="")
        return
    currency = rollup["currency"] or ""
    print(
        f"Roll-up {rollup['month']} of {rollup['kind']} provider "
        f"{rollup['providerSubscriptionId']} ({rollup['displayName']}): {rollup['status']}"
    )
    print(f"  {'SUBSCRIPTION':<38} {'NAME':<32} {'STATUS':<12} {'TOTAL':>12} {'WHOLESALE':>12}")
    for tenant in rollup["tenants"]:
        cost = tenant.get("wholesaleTotal", "")
        print(
            f"  {tenant['subscriptionId']:<38} {tenant['displayName'][:32]:<32} "
            f"{tenant['status']:<12} {tenant['total']:>12} {cost:>12}"
        )
    for reseller in rollup["resellers"]:
        print(
            f"  {reseller['subscriptionId']:<38} {reseller['displayName'][:32]:<32} "
            f"{'(reseller)':<12} {'':>12} {reseller['wholesaleTotal']:>12}"
        )
    for label, value in _figures(rollup):
        print(f"  {label + ':':<46} {value:>12} {currency}")


def _print_cloud(cloud: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(cloud, indent=2))
        return
    currency = cloud["currency"] or ""
    print(f"The whole cloud, {cloud['month']}: {cloud['status']}")
    for provider in cloud["providers"]:
        print(f"  {provider['displayName']} ({provider['kind']}, {provider['tenants']} tenants)")
        for label, value in _figures(provider):
            print(f"      {label + ':':<42} {value:>12} {currency}")
    print(f"  {LABELS['cloudTotal'] + ':':<46} {cloud['cloudTotal']:>12} {currency}")
