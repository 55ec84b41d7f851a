"""Read usage from the usage API, like ``Get-UsageAggregates`` (tenant route, with
``--subscription``) or ``Get-AzsSubscriberUsage`` (provider route, with
``--provider-subscription`` and optionally ``--subscriber``).

One call prints one page (at most 1,000 rows) and, when there is more, the next page's
``--continuation-token`` on stderr; ``--all-pages`` follows ``nextLink`` to the end. The
bearer token comes from ``--token`` or ``USAGE_API_TOKEN`` (locally: ``python -m ops token
admin``). Needs no app settings: it only talks HTTP. An API error is printed as one line
``code: message``; exit 2 for a 4xx answer, 3 for 5xx or an unreachable API.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlsplit

import requests
from urllib3.exceptions import InsecureRequestWarning

from shared.core.config import Settings
from shared.core.errors import BadInputError, TransientError
from shared.query.arguments import API_VERSION, parse_time

HELP = "read usage aggregates from the usage API (Get-UsageAggregates / Get-AzsSubscriberUsage)"
NEEDS_SETTINGS: Final = False

DEFAULT_API_URL: Final = "http://127.0.0.1:7071"
TENANT_PATH: Final = "/subscriptions/{}/providers/Microsoft.Commerce/usageAggregates"
PROVIDER_PATH: Final = (
    "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"
)
# Seconds: connecting must be quick; a 1,000-row page of a large provider can take a while.
TIMEOUT: Final = (5.0, 120.0)
# The CSV columns of the API (Accept: text/csv), also used for the JSON pages' table view.
TABLE_COLUMNS: Final = (
    ("subscriptionId", "SUBSCRIPTION"),
    ("usageStartTime", "USAGE START"),
    ("usageEndTime", "USAGE END"),
    ("meterName", "METER"),
    ("quantity", "QUANTITY"),
    ("unit", "UNIT"),
    ("resource", "RESOURCE"),
)


def _time(text: str) -> datetime:
    moment = parse_time(text)
    if moment is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UTC time like 2026-11-20T00:00Z")
    return moment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        default=os.environ.get("USAGE_API_URL") or DEFAULT_API_URL,
        help=f"the API's base URL (default: $USAGE_API_URL or {DEFAULT_API_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("USAGE_API_TOKEN"),
        help="bearer token (default: $USAGE_API_TOKEN); locally: python -m ops token admin",
    )
    route = parser.add_mutually_exclusive_group(required=True)
    route.add_argument(
        "--subscription", metavar="SUB", help="tenant route: this subscription's usage"
    )
    route.add_argument(
        "--provider-subscription",
        metavar="SUB",
        help="provider route: the usage of this provider subscription's direct tenants",
    )
    parser.add_argument(
        "--subscriber", metavar="SUB", help="provider route: only this direct tenant"
    )
    parser.add_argument(
        "--reported-start",
        required=True,
        type=_time,
        help="inclusive, UTC; midnight for daily, on the hour for hourly",
    )
    parser.add_argument(
        "--reported-end", required=True, type=_time, help="exclusive, UTC; not in the future"
    )
    parser.add_argument(
        "--granularity", choices=("daily", "hourly"), default="daily", help="default: daily"
    )
    parser.add_argument(
        "--show-details",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one row per resource (the API's default) or rows collapsed per meter",
    )
    paging = parser.add_mutually_exclusive_group()
    paging.add_argument(
        "--continuation-token", metavar="TOKEN", help="read the page this token points at"
    )
    paging.add_argument("--all-pages", action="store_true", help="follow nextLink to the last page")
    parser.add_argument(
        "--output", choices=("table", "json", "csv"), default="table", help="default: table"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the TLS certificate (the local host's self-signed one)",
    )


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of the API: its rows (JSON objects, or CSV records) and the next link."""

    rows: list[dict[str, Any]]
    next_link: str | None


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    if not args.token:
        raise BadInputError("no bearer token: give --token or set USAGE_API_TOKEN")
    if args.subscriber and not args.provider_subscription:
        raise BadInputError("--subscriber needs --provider-subscription (the provider route)")
    as_csv = args.output == "csv"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.token}"
    session.headers["Accept"] = "text/csv" if as_csv else "application/json"
    session.verify = not args.insecure
    rows: list[dict[str, Any]] = []
    next_link: str | None = None
    with warnings.catch_warnings():
        if args.insecure:
            warnings.simplefilter("ignore", InsecureRequestWarning)
        for number, page in enumerate(_pages(session, first_url(args), args.all_pages), 1):
            rows += page.rows
            next_link = page.next_link
            if args.all_pages and (number > 1 or next_link):
                print(f"  page {number}: {len(rows)} rows", file=sys.stderr, flush=True)
    if args.output == "json":
        body: dict[str, Any] = {"value": rows}
        if next_link is not None:
            body["nextLink"] = next_link
        print(json.dumps(body, indent=2, ensure_ascii=False))
    elif as_csv:
        sys.stdout.write(_csv_text(rows))
    else:
        print(_table(rows))
    if next_link is not None:
        token = continuation_token(next_link)
        print(f"more rows: --continuation-token {token}", file=sys.stderr)
    return 0


def first_url(args: argparse.Namespace) -> str:
    """The first request's URL, escaped as the API expects (a ``+`` would become a space)."""
    if args.subscription:
        path = TENANT_PATH.format(quote(args.subscription, safe=""))
    else:
        path = PROVIDER_PATH.format(quote(args.provider_subscription, safe=""))
    params = {
        "api-version": API_VERSION,
        "reportedStartTime": _iso(args.reported_start),
        "reportedEndTime": _iso(args.reported_end),
        "aggregationGranularity": args.granularity.capitalize(),
    }
    if args.show_details is not None:
        params["showDetails"] = "true" if args.show_details else "false"
    if args.subscriber:
        params["subscriberId"] = args.subscriber
    if args.continuation_token:
        params["continuationToken"] = args.continuation_token
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
    return f"{args.api_url.rstrip('/')}{path}?{query}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def continuation_token(next_link: str) -> str:
    """The ``continuationToken`` argument of a ``nextLink`` (any letter case)."""
    for name, values in parse_qs(urlsplit(next_link).query).items():
        if name.lower() == "continuationtoken" and values:
            return values[0]
    return next_link


def _pages(session: requests.Session, url: str, follow: bool) -> Iterator[Page]:
    """The first page, and with ``follow`` every page after it."""
    seen: set[str] = set()
    next_url: str | None = url
    while next_url is not None:
        if next_url in seen:  # a server bug must not make us loop for ever
            raise TransientError(f"the API returned the same nextLink twice: {next_url}")
        seen.add(next_url)
        page = _get(session, next_url)
        yield page
        next_url = page.next_link if follow else None


def _get(session: requests.Session, url: str) -> Page:
    try:
        response = session.get(url, timeout=TIMEOUT)
    except requests.exceptions.SSLError as error:
        raise TransientError(
            f"TLS failed for {_origin(url)} ({_reason(error)}); "
            "for the local host's self-signed certificate add --insecure"
        ) from None
    except requests.RequestException as error:
        raise TransientError(f"cannot reach {_origin(url)}: {_reason(error)}") from None
    if response.status_code != 200:
        raise _api_error(response)
    if response.headers.get("Content-Type", "").lower().startswith("text/csv"):
        records = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
        link = response.links.get("next", {}).get("url")
        return Page(rows=records, next_link=link)
    try:
        body = response.json()
        rows, link = body["value"], body.get("nextLink")
    except (ValueError, KeyError, TypeError):
        raise TransientError(f"{_origin(url)} answered 200 without a usage page") from None
    return Page(rows=list(rows), next_link=link)


def _api_error(response: requests.Response) -> BadInputError | TransientError:
    """The API's ARM error as ``code: message``: bad input for a 4xx, transient otherwise."""
    code = response.headers.get("x-ms-error-code") or f"HTTP{response.status_code}"
    message = response.reason or "no message"
    try:
        error = response.json()["error"]
        code, message = str(error.get("code") or code), str(error.get("message") or message)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    line = f"{code}: {' '.join(message.split())}"
    if 400 <= response.status_code < 500:
        return BadInputError(line, code=code)
    return TransientError(line, code=code)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _reason(error: requests.RequestException) -> str:
    """The innermost reason of a requests error, on one line (they nest urllib3 errors)."""
    reason: BaseException = error
    while reason.args and isinstance(reason.args[0], BaseException):
        reason = reason.args[0]
    inner = getattr(reason, "reason", None)
    if isinstance(inner, BaseException):
        reason = inner
    text = str(reason)
    if "Connection refused" in text or isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return " ".join(text.split())[:200] or type(reason).__name__


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV records as the API sent them (one header, however many pages)."""
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _cells(row: dict[str, Any]) -> dict[str, str]:
    """A JSON row's table cells: the resource is the last segment of its URI."""
    properties = row.get("properties") or {}
    resource = ""
    try:
        instance = json.loads(properties.get("instanceData") or "null") or {}
        resource = str(instance["Microsoft.Resources"]["resourceUri"]).rstrip("/")
    except (ValueError, KeyError, TypeError):
        pass
    quantity = properties.get("quantity", "")
    return {
        "subscriptionId": str(properties.get("subscriptionId", "")),
        "usageStartTime": str(properties.get("usageStartTime", ""))[:16],
        "usageEndTime": str(properties.get("usageEndTime", ""))[:16],
        "meterName": str(properties.get("meterName") or properties.get("meterId", "")),
        "quantity": f"{quantity:.6g}" if isinstance(quantity, int | float) else str(quantity),
        "unit": str(properties.get("unit") or ""),
        "resource": resource.rsplit("/", 1)[-1],
    }


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [_cells(row) for row in rows]
    widths = {
        key: max([len(title), *(len(cell[key]) for cell in cells)]) for key, title in TABLE_COLUMNS
    }
    lines = ["  ".join(title.ljust(widths[key]) for key, title in TABLE_COLUMNS).rstrip()]
    for cell in cells:
        line = "  ".join(
            cell[key].rjust(widths[key]) if key == "quantity" else cell[key].ljust(widths[key])
            for key, _ in TABLE_COLUMNS
        )
        lines.append(line.rstrip())
    lines.append(f"({len(rows)} rows)")
    return "\n".join(lines)
