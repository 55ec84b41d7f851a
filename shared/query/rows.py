"""Usage rows on the wire: the spec's JSON ``UsageAggregate`` and the same page as CSV.

JSON (spec/usage-api.md, Response): ``id``/``name``/``type``/``properties``; ``id`` names
the *caller's path* subscription and ``name`` the consuming subscription and meter (so
neither is unique per row: several resources share them). ``instanceData`` is a JSON
**string** holding ``Microsoft.Resources`` with ``resourceUri``, ``location``, ``tags`` and
``additionalInfo`` as objects or null (stored JSON text that is empty, ``"null"`` or not an
object becomes null). Times are ISO 8601 with ``+00:00``; ``quantity`` a double. Beyond
Azure Stack, the Azure usage API's ``meterName``, ``unit`` and ``meterCategory`` (the
resource provider) come from the meter catalogue; the meter id is spelled as the catalogue
spells it. Collapsed rows (``showDetails=false``) have no ``instanceData``.

CSV is for spreadsheets and Power BI: one column per field, the instance data flattened
(tags and additionalInfo as JSON text), a header row even for an empty page.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any, Final

from shared.core.hours import iso
from shared.core.meters import MeterCatalogue
from shared.query.reader import CollapsedRow, StoredRow

ROW_TYPE: Final = "Microsoft.Commerce/UsageAggregate"
CSV_COLUMNS: Final = (
    "subscriptionId",
    "usageStartTime",
    "usageEndTime",
    "meterId",
    "meterName",
    "meterCategory",
    "unit",
    "quantity",
    "resourceUri",
    "location",
    "tags",
    "additionalInfo",
)


def _object_or_null(text: str | None) -> dict[str, Any] | None:
    """Stored JSON text as an object; anything that is not one (absent, "", "null") is null."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _properties(row: StoredRow | CollapsedRow, meters: MeterCatalogue) -> dict[str, Any]:
    if isinstance(row, StoredRow):
        subscription_id = row.row.subscription_id
        stored_meter = row.row.meter_id
        start, end, quantity = row.row.usage_start, row.row.usage_end, row.row.quantity
    else:
        subscription_id, stored_meter = row.subscription_id, row.meter_id
        start, end, quantity = row.usage_start, row.usage_end, row.quantity
    meter = meters.lookup(stored_meter)
    properties: dict[str, Any] = {
        "subscriptionId": subscription_id,
        "usageStartTime": iso(start),
        "usageEndTime": iso(end),
    }
    if isinstance(row, StoredRow):
        properties["instanceData"] = json.dumps(
            {
                "Microsoft.Resources": {
                    "resourceUri": row.row.resource_uri,
                    "location": row.row.location,
                    "tags": _object_or_null(row.row.tags_json),
                    "additionalInfo": _object_or_null(row.row.additional_info_json),
                }
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
    properties["quantity"] = float(quantity)
    properties["meterId"] = meter.meter_id if meter is not None else stored_meter
    properties["meterName"] = meter.name if meter is not None else None
    properties["unit"] = meter.unit if meter is not None else None
    properties["meterCategory"] = meter.provider if meter is not None else None
    return properties


def usage_aggregate(
    path_subscription_id: str, row: StoredRow | CollapsedRow, meters: MeterCatalogue
) -> dict[str, Any]:
    """One row as the usage API's JSON object."""
    properties = _properties(row, meters)
    name = f"{properties['subscriptionId']}-{properties['meterId']}"
    return {
        "id": f"/subscriptions/{path_subscription_id}/providers/{ROW_TYPE}/{name}",
        "name": name,
        "type": ROW_TYPE,
        "properties": properties,
    }


def page_json(
    path_subscription_id: str,
    rows: Sequence[StoredRow | CollapsedRow],
    next_link: str | None,
    meters: MeterCatalogue,
) -> bytes:
    body: dict[str, Any] = {
        "value": [usage_aggregate(path_subscription_id, row, meters) for row in rows]
    }
    if next_link is not None:
        body["nextLink"] = next_link
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def page_csv(rows: Sequence[StoredRow | CollapsedRow], meters: MeterCatalogue) -> bytes:
    """The page as RFC 4180 CSV (CRLF line ends), the header first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        properties = _properties(row, meters)
        instance: dict[str, Any] = {}
        if isinstance(row, StoredRow):
            instance = {
                "resourceUri": row.row.resource_uri,
                "location": row.row.location,
                "tags": _json_text(row.row.tags_json),
                "additionalInfo": _json_text(row.row.additional_info_json),
            }
        writer.writerow(
            [_cell(properties.get(column, instance.get(column, ""))) for column in CSV_COLUMNS]
        )
    return out.getvalue().encode("utf-8")


def _json_text(text: str | None) -> str:
    value = _object_or_null(text)
    return "" if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = repr(value) if isinstance(value, float) else str(value)
    # Spreadsheets run cells starting with these as formulas (CSV injection).
    if text[:1] in ("=", "+", "-", "@") and not isinstance(value, float):
        return "'" + text
    return text
