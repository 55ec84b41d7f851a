"""Price sheets: import a sheet version (JSON or CSV), export one, list them all, and show
the prices that apply to a subscription.

    python -m ops prices import sheet.json
    python -m ops prices import sheet.csv --scope provider:<id> --effective 2026-11-01
    python -m ops prices export --scope default [--at 2026-11-15] [--format csv]
    python -m ops prices list
    python -m ops prices show --subscription <id> [--at 2026-11-15T10:00Z]

A sheet is checked whole before anything is stored: a file with problems is refused with
one line per problem (unknown meter, negative price, tiers out of order, unknown currency,
...) and nothing of it is imported. A stored version never changes; import new prices with
a later effective date, never in a finalised month (refused, naming it). A new version
re-rates the open months it changes, at once (the ledger every surface reads). Scopes:
``default`` (the admin's sheet), ``provider:<id>`` (a
delegated provider's sheet for its tenants), ``subscription:<id>`` (an override: a
discount percent and/or custom prices for some meters).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from ops.actions import action_adder
from shared.core.config import Settings
from shared.core.errors import BadInputError, SheetRejectedError
from shared.core.hours import utc_now
from shared.core.meters import catalogue
from shared.rating.engine import Level, PriceBook
from shared.rating.rater import Rater
from shared.rating.sheet_files import read_csv_sheet, read_json_sheet, sheet_csv, sheet_json
from shared.rating.sheet_store import SheetStore
from shared.rating.sheets import PriceSheet, Scope, parse_effective
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore

HELP = "import, export, list price sheets; show the prices that apply to a subscription"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = action_adder(parser)

    imported = action("import", "store a sheet version from a JSON or CSV file (whole or not)")
    imported.add_argument("file", type=Path, help="a .json or .csv price sheet")
    imported.add_argument("--scope", help="default | provider:<id> | subscription:<id>")
    imported.add_argument("--effective", help="date or hour (UTC) the version takes effect")
    imported.add_argument("--currency", help="CSV: the sheet's currency, if no column says it")
    imported.add_argument("--discount-percent", help="CSV override: the discount percent")
    exported = action("export", "print the version of a scope in effect at a time")
    exported.add_argument("--scope", required=True)
    exported.add_argument("--at", help="a date or hour (UTC); default: now")
    exported.add_argument("--format", choices=("json", "csv"), default="json")
    action("list", "list every stored version")
    show = action("show", "the prices that apply to a subscription (retail, and wholesale)")
    show.add_argument("--subscription", required=True)
    show.add_argument("--at", help="a date or hour (UTC); default: now")


def run(args: argparse.Namespace, settings: Settings) -> int:
    account = StorageAccount(settings)
    store = SheetStore(account)
    if args.action == "import":
        code = _import(args, store, SubscriptionStore(account))
        if code == 0:
            rerated = Rater(account, settings.source_names()).rerate_open_months()
            print(f"re-rated {len(rerated)} subscription-months of open months for the new prices")
        return code
    if args.action == "export":
        return _export(args, store)
    if args.action == "list":
        return _list(store)
    return _show(args, store, SubscriptionStore(account))


def _at(text: str | None) -> datetime:
    if text is None:
        return utc_now()
    moment = parse_effective(text)
    if moment is None:
        raise BadInputError(f"--at {text!r} must be a date or an ISO time on the hour (UTC)")
    return moment


def read_sheet_file(
    path: Path,
    *,
    scope: str | None = None,
    effective: str | None = None,
    currency: str | None = None,
    discount_percent: str | None = None,
) -> PriceSheet:
    """The checked sheet of a JSON or CSV file (SheetRejectedError lists every problem)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BadInputError(f"cannot read {path}: {error.strerror}") from None
    if path.suffix.lower() == ".json":
        return read_json_sheet(text, catalogue(), scope=scope, effective_from=effective)
    if path.suffix.lower() == ".csv":
        if not scope or not effective:
            raise BadInputError("a CSV sheet needs --scope and --effective")
        return read_csv_sheet(
            text,
            catalogue(),
            scope=scope,
            effective_from=effective,
            currency=currency,
            discount_percent=discount_percent,
        )
    raise BadInputError(f"{path}: a price sheet is a .json or .csv file")


def _import(args: argparse.Namespace, store: SheetStore, subscriptions: SubscriptionStore) -> int:
    try:
        sheet = read_sheet_file(
            args.file,
            scope=args.scope,
            effective=args.effective,
            currency=args.currency,
            discount_percent=args.discount_percent,
        )
        outcome = store.put(sheet, subscriptions)
    except SheetRejectedError as error:
        print(
            f"python -m ops prices import: {args.file}: refused, nothing imported:", file=sys.stderr
        )
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(f"{sheet.version}: {outcome.value} ({len(sheet.entries)} meters)")
    return 0


def _export(args: argparse.Namespace, store: SheetStore) -> int:
    scope = Scope.parse(args.scope)
    sheet = PriceBook(store.all()).version_at(scope, _at(args.at))
    if sheet is None:
        raise BadInputError(f"no version of {scope} is in effect then")
    text = (
        sheet_json(sheet, catalogue()) if args.format == "json" else sheet_csv(sheet, catalogue())
    )
    sys.stdout.write(text)
    return 0


def _list(store: SheetStore) -> int:
    sheets = sorted(store.all(), key=lambda s: (str(s.scope), s.effective_from))
    print(f"{'SCOPE':<52} {'EFFECTIVE':<18} {'CURRENCY':<9} {'METERS':>6}  DISCOUNT")
    for sheet in sheets:
        discount = f"{sheet.discount_percent}%" if sheet.discount_percent else "-"
        print(
            f"{sheet.scope!s:<52} {sheet.effective_from:%Y-%m-%dT%H:%MZ}  "
            f"{sheet.currency or '-':<9} {len(sheet.entries):>6}  {discount}"
        )
    print(f"({len(sheets)} versions)")
    return 0


def _show(args: argparse.Namespace, store: SheetStore, subscriptions: SubscriptionStore) -> int:
    known = subscriptions.all()
    subscription_id = args.subscription.strip().lower()
    if subscription_id not in known:
        raise BadInputError(f"subscription {args.subscription} is not known")
    book = PriceBook(store.all())
    at = _at(args.at)
    shown = {}
    for level in Level:
        pricing = book.pricing(subscription_id, known, level)
        if pricing is None:
            continue
        shown[level.value] = {
            "buyerSubscriptionId": pricing.buyer,
            "currency": book.currency,
            "meters": [
                {
                    "meterId": price.meter_id,
                    "sheetEntry": price.entry,
                    "override": price.override,
                    "unitPrices": {
                        format(t.start, "f"): format(t.unit_price, "f") for t in price.tiers
                    },
                    "listUnitPrices": {
                        format(t.start, "f"): format(t.unit_price, "f") for t in price.list_tiers
                    },
                    "includedQuantity": format(price.included, "f"),
                }
                for price in pricing.effective_prices(at)
            ],
        }
    print(json.dumps(shown, indent=2))
    return 0
