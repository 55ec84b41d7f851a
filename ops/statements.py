"""Statements: one subscription's month, or a provider's roll-up, as a table, JSON or CSV.

    python -m ops statements --subscription <id> --month 2026-11 [--output table|json|csv]
    python -m ops statements --subscription <tenant> --month 2026-11 --wholesale
    python -m ops statements --provider <id> --month 2026-11 [--output ...]
    python -m ops statements finalise

A month's statement is final once ``finalise_statements`` stored it (after the collection
watermark passed the month's last hour); until then it is computed from the rows
collected so far and marked provisional. ``--wholesale`` shows what the tenant's delegated
provider pays for its usage (the admin's sheet). ``finalise`` runs the finaliser once,
as the timer does. Operators read every subscription (this reads storage directly).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.meters import catalogue
from shared.rating.engine import Level, Month
from shared.rating.statement_store import Statements
from shared.rating.statements import rollup_csv, statement_csv
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore

HELP = "a subscription's monthly statement or a provider's roll-up (table, JSON, CSV)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("show", "finalise"), default="show")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--subscription", help="a subscription's statement")
    who.add_argument("--provider", help="a provider subscription's roll-up")
    parser.add_argument("--month", type=_month, help="yyyy-MM, e.g. 2026-11")
    parser.add_argument("--wholesale", action="store_true", help="the provider's cost instead")
    parser.add_argument("--output", choices=("table", "json", "csv"), default="table")


def _month(text: str) -> Month:
    month = Month.parse(text)
    if month is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month (yyyy-MM)")
    return month


def run(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.usage_source is not None  # filled in local mode, required otherwise
    account = StorageAccount(settings)
    statements = Statements(account, catalogue(), settings.source_names())
    if args.action == "finalise":
        print(statements.finalise_due(settings.statements_time_budget_seconds).summary_line())
        return 0
    if args.month is None or not (args.subscription or args.provider):
        raise BadInputError("give --month and --subscription or --provider")
    subscriptions = SubscriptionStore(account).all()
    wanted = (args.subscription or args.provider).strip().lower()
    if wanted not in subscriptions:
        raise BadInputError(f"subscription {wanted} is not known")
    if args.provider:
        tenants = [
            s
            for s, sub in subscriptions.items()
            if (sub.provider_subscription_id or "").lower() == wanted
        ]
        rollup = statements.rollup(subscriptions[wanted], args.month, subscriptions, tenants)
        _print_rollup(rollup, args.output)
        return 0
    level = Level.WHOLESALE if args.wholesale else Level.RETAIL
    document = statements.statement(wanted, args.month, level, subscriptions)
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
    print(f"  {'TOTAL':<100} {document['total']:>12} {currency}")
    if any(line["late"] for line in document["lines"]):
        print("  * late usage: used in an earlier month, reported in this one")
    print(f"  sheets: {', '.join(document['sheetVersions']) or 'none'}")


def _print_rollup(rollup: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(rollup, indent=2))
        return
    if output == "csv":
        print(rollup_csv(rollup), end="")
        return
    print(
        f"Roll-up {rollup['month']} of provider {rollup['providerSubscriptionId']}: "
        f"{rollup['status']}"
    )
    print(f"  {'SUBSCRIPTION':<38} {'NAME':<32} {'STATUS':<12} {'TOTAL':>12} {'WHOLESALE':>12}")
    for tenant in rollup["tenants"]:
        cost = tenant.get("wholesaleTotal") or tenant.get("resoldWholesaleTotal") or ""
        print(
            f"  {tenant['subscriptionId']:<38} {tenant['displayName'][:32]:<32} "
            f"{tenant['status']:<12} {tenant['total']:>12} {cost:>12}"
        )
    print(
        f"  {'TOTAL':<84} {rollup['total']:>12} {rollup['wholesaleTotal'] or '':>12} "
        f"{rollup['currency'] or ''}"
    )
    if rollup["margin"] is not None:
        print(f"  margin (total - wholesale): {rollup['margin']} {rollup['currency'] or ''}")
