"""Price sheets as files: JSON and CSV in, the same out (``python -m ops prices``).

JSON (one document is one sheet version)::

    {"scope": "default", "effectiveFrom": "2026-11-01", "currency": "USD",
     "meters": [
       {"meterId": "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5", "unitPrice": "0.012"},
       {"meterId": "09F8879E-87E9-4305-A572-4B7BE209F857", "tiers": {"0": 0.02, "1000": 0.015},
        "includedQuantity": 100}
     ]}

``tiers`` is RateCard's ``MeterRates``: threshold -> unit price, in rising order. Numbers may
be JSON numbers or strings; both are read as exact decimals, never as floats. An override
(``scope: subscription:{id}``) has no currency and may carry ``discountPercent``.

CSV: one row per tier, columns ``meter_id,tier_start,unit_price,included_quantity`` and
optionally ``currency`` (the same on every row) and, for people, ``meter_name`` and
``unit`` (ignored on import). Scope and effective date come with the command (a CSV has no
place for them); a JSON document's own values must agree with the command's.

Reading never stores anything and never stops at the first problem: every problem of the
file is one line of the ``SheetRejectedError``.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any, Final

from shared.core.errors import SheetRejectedError
from shared.core.meters import MeterCatalogue
from shared.rating.sheets import (
    PriceSheet,
    SheetDraft,
    SheetRow,
    build_sheet,
    version_time,
)

CSV_REQUIRED: Final = ("meter_id", "tier_start", "unit_price", "included_quantity")
CSV_OPTIONAL: Final = ("currency", "meter_name", "unit")
_JSON_KEYS: Final = {"scope", "effectiveFrom", "currency", "discountPercent", "meters"}
_METER_KEYS: Final = {"meterId", "unitPrice", "tiers", "includedQuantity", "meterName", "unit"}


def _text(value: object) -> str:
    """A JSON scalar as decimal text (numbers were parsed as Decimal), or '' for null."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return str(value).lower()  # not a number: the check names it
    return str(value)


def _agree(problems: list[str], name: str, in_file: str, given: str | None) -> str:
    """The file's value, the command's, or both when they agree."""
    if given is None or not given.strip():
        return in_file
    if in_file.strip() and in_file.strip().lower() != given.strip().lower():
        problems.append(f"the file says {name} {in_file!r} but the command says {given!r}")
    return given


def read_json_sheet(
    text: str,
    meters: MeterCatalogue,
    *,
    scope: str | None = None,
    effective_from: str | None = None,
) -> PriceSheet:
    """The sheet a JSON document describes (see the module docstring)."""
    problems: list[str] = []
    try:
        document = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError as error:
        raise SheetRejectedError([f"not JSON: {error}"]) from None
    if not isinstance(document, dict):
        raise SheetRejectedError(["the document must be a JSON object"])
    problems += [f"unknown field {key!r}" for key in sorted(set(document) - _JSON_KEYS)]
    rows: list[SheetRow] = []
    listed = document.get("meters")
    if not isinstance(listed, list):
        problems.append("'meters' must be a list")
        listed = []
    seen: set[str] = set()
    for index, meter in enumerate(listed):
        where = f"meters[{index}]"
        if not isinstance(meter, dict):
            problems.append(f"{where}: must be an object")
            continue
        problems += [f"{where}: unknown field {k!r}" for k in sorted(set(meter) - _METER_KEYS)]
        meter_id = _text(meter.get("meterId"))
        if meter_id.strip().lower() in seen:
            problems.append(f"{where}: meter {meter_id!r} is listed twice")
            continue
        seen.add(meter_id.strip().lower())
        included = _text(meter.get("includedQuantity"))
        tiers = meter.get("tiers")
        if ("unitPrice" in meter) == (tiers is not None):
            problems.append(f"{where}: give either unitPrice or tiers")
            continue
        if tiers is None:
            rows.append(SheetRow(where, meter_id, "0", _text(meter["unitPrice"]), included))
        elif isinstance(tiers, dict) and tiers:
            for position, (start, price) in enumerate(tiers.items()):
                rows.append(
                    SheetRow(where, meter_id, start, _text(price), included if not position else "")
                )
        else:
            problems.append(f"{where}: tiers must be an object of threshold -> unit price")
    draft = SheetDraft(
        scope=_agree(problems, "scope", _text(document.get("scope")), scope),
        effective_from=_agree(
            problems, "effectiveFrom", _text(document.get("effectiveFrom")), effective_from
        ),
        currency=_text(document.get("currency")),
        rows=rows,
        discount_percent=_text(document.get("discountPercent")),
    )
    return _build(draft, meters, problems)


def read_csv_sheet(
    text: str,
    meters: MeterCatalogue,
    *,
    scope: str,
    effective_from: str,
    currency: str | None = None,
    discount_percent: str | None = None,
) -> PriceSheet:
    """The sheet a CSV file describes, with scope and effective date from the command."""
    problems: list[str] = []
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in CSV_REQUIRED if name not in header]
    unknown = [name for name in header if name not in CSV_REQUIRED + CSV_OPTIONAL]
    if missing or unknown:
        problems += [f"header: column {name!r} is missing" for name in missing]
        problems += [f"header: unknown column {name!r}" for name in unknown]
        raise SheetRejectedError(problems)
    rows: list[SheetRow] = []
    currencies: set[str] = set()
    for line, record in enumerate(reader, start=2):
        values = {(k or "").strip(): (v or "").strip() for k, v in record.items() if k}
        if None in record:
            problems.append(f"line {line}: more fields than columns")
        if not any(values.values()):
            continue  # a blank line
        if values.get("currency"):
            currencies.add(values["currency"].upper())
        rows.append(
            SheetRow(
                f"line {line}",
                values["meter_id"],
                values["tier_start"] or "0",
                values["unit_price"],
                values["included_quantity"],
            )
        )
    if len(currencies) > 1:
        problems.append(f"the currency column holds several currencies: {sorted(currencies)}")
    in_file = min(currencies) if currencies else ""
    draft = SheetDraft(
        scope=scope,
        effective_from=effective_from,
        currency=_agree(problems, "currency", in_file, currency),
        rows=rows,
        discount_percent=discount_percent or "",
    )
    return _build(draft, meters, problems)


def _build(draft: SheetDraft, meters: MeterCatalogue, problems: list[str]) -> PriceSheet:
    try:
        sheet = build_sheet(draft, meters)
    except SheetRejectedError as error:
        raise SheetRejectedError([*problems, *error.problems]) from None
    if problems:
        raise SheetRejectedError(problems)
    return sheet


def _plain(value: Decimal) -> str:
    return format(value, "f")


def sheet_document(sheet: PriceSheet, meters: MeterCatalogue) -> dict[str, Any]:
    """The JSON document of ``sheet`` (reads back to the same sheet)."""
    document: dict[str, Any] = {
        "scope": str(sheet.scope),
        "effectiveFrom": version_time(sheet.effective_from),
    }
    if sheet.currency is not None:
        document["currency"] = sheet.currency
    if sheet.discount_percent:
        document["discountPercent"] = _plain(sheet.discount_percent)
    listed = []
    for entry in sorted(sheet.entries.values(), key=lambda e: e.meter_key):
        meter = meters.lookup(entry.meter_id)
        item: dict[str, Any] = {"meterId": entry.meter_id}
        if meter is not None:
            item["meterName"] = meter.name
            item["unit"] = meter.unit
        if len(entry.tiers) == 1:
            item["unitPrice"] = _plain(entry.tiers[0].unit_price)
        else:
            item["tiers"] = {_plain(t.start): _plain(t.unit_price) for t in entry.tiers}
        if entry.included_quantity:
            item["includedQuantity"] = _plain(entry.included_quantity)
        listed.append(item)
    document["meters"] = listed
    return document


def sheet_json(sheet: PriceSheet, meters: MeterCatalogue) -> str:
    return json.dumps(sheet_document(sheet, meters), indent=2, ensure_ascii=False) + "\n"


def sheet_csv(sheet: PriceSheet, meters: MeterCatalogue) -> str:
    """The sheet as CSV, one row per tier (scope and effective date are not columns)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("meter_id", "meter_name", "unit", *CSV_REQUIRED[1:], "currency"))
    for entry in sorted(sheet.entries.values(), key=lambda e: e.meter_key):
        meter = meters.lookup(entry.meter_id)
        for position, tier in enumerate(entry.tiers):
            writer.writerow(
                (
                    entry.meter_id,
                    meter.name if meter else "",
                    meter.unit if meter else "",
                    _plain(tier.start),
                    _plain(tier.unit_price),
                    _plain(entry.included_quantity) if not position else "",
                    sheet.currency or "",
                )
            )
    return out.getvalue()
