"""Hostile requests against a normal page: ``python -m bench hostile [--quick]``.

Fills an in-memory Azurite with six reported hours of a simulated fleet (as ``bench query``
does), serves it through the local Functions host in its own process (the app, and the
portal's local sign-in as ``./dev run`` serves it), and puts a counting forwarder in front of
Azurite's table endpoint, so every storage request the host sends is counted.

Then it alternates, round after round:

- the **baseline**: a tenant's first 1,000-row page (tenant route, hourly, the filled
  window), token validation included: what a normal client pays;
- the **corpus**: every finding of issue 26's attack run and its neighbours (a month in
  other digits, a 20,000-character ``subscriberId``, deeply nested sign-in JSON, repeated
  arguments, a long locale, a forged ``Host``, a ``$filter`` of 64,000 spaces, ten-year
  windows, ambiguous framing, over-long URLs and headers, respelled continuation tokens, a
  daily window over a partly collected day, forged bearer tokens, OData injection, path
  tricks), each sent once per round.

Figures: the server time of each request as the client sees it on loopback (a fresh
connection each, sent byte for byte), and the storage requests it caused. The target:
``hostile_p99_ratio`` (the corpus's p99 over the baseline page's median) <= 1, every hostile
answer a 4xx (the ten-year windows are valid requests: 200 with what little they hold; no
5xx, no answer missing), and ``hostile_storage_max`` (the most storage requests one hostile
request caused) no more than the page's.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from bench.common import finish, median
from bench.query import (
    FIRST_HOUR,
    fill,
    functions_host,
    get_page,
    p99,
    page_tenant,
    rows_per_subscription,
)
from devstack.azurite import Azurite
from devstack.fleet import SimulatedFleet, options_for_rows
from devstack.local_settings import local_values
from devstack.tokens import LocalIssuer
from shared.core.config import Settings
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.watermark import Watermark

HOUR = timedelta(hours=1)
HOURS = 6
VERSION = "api-version=2015-06-01-preview"
TENANT = "/subscriptions/{}/providers/Microsoft.Commerce/usageAggregates"
PROVIDER = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"
STATEMENT = "/subscriptions/{}/providers/Microsoft.Commerce/statements/{}"
ROLLUP = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberStatements/{}"
RATE_CARD = "/subscriptions/{}/providers/Microsoft.Commerce/RateCard"
FILTER = (
    "OfferDurableId+eq+'MS-AZR-0003P'+and+Currency+eq+'USD'+and+Locale+eq+'en-US'"
    "+and+RegionInfo+eq+'US'"
)
# alg "none", no signature: a forged bearer token (not a credential).
UNSIGNED_TOKEN = "eyJhbGciOiJub25lIn0.eyJvaWQiOiJ4In0."  # noqa: S105
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass(frozen=True)
class Hostile:
    """One request of the corpus: raw bytes on a fresh connection."""

    name: str
    data: bytes


class CountingFront:
    """A loopback forwarder in front of Azurite's table endpoint that counts requests."""

    def __init__(self, table_port: int) -> None:
        front = self
        self.requests = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                with front._lock:
                    front.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", table_port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    pairs = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP]
                    status = answer.status
                finally:
                    upstream.close()
                self.send_response(status)
                for name, value in pairs:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = _forward  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]

    @contextmanager
    def running(self) -> Iterator[CountingFront]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def request_bytes(
    target: str,
    host: str,
    *,
    method: str = "GET",
    token: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(port: int, data: bytes) -> tuple[int, float]:
    """Send ``data`` on a fresh connection, read the answer to the end: (status, seconds)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        # The host may refuse (414, 431, 413) and close before reading everything.
        with contextlib.suppress(OSError):
            connection.sendall(data)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    seconds = time.perf_counter() - started
    status_line = received.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return status, seconds


def respelled(token: str) -> dict[str, str]:
    payload, _, signature = token.partition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return {
        "token padded": f"{payload}.{signature}=",
        "token standard base64": f"{payload}.{base64.b64encode(raw).decode()}",
        "token with a newline": f"{token}%0A",
    }


def corpus(
    host: str,
    tokens: dict[str, str],
    ids: dict[str, str],
    window: str,
    next_token: str,
    last_hour: datetime,
) -> list[Hostile]:
    """The findings of issue 26 and their neighbours, as raw requests."""
    tenant, victim, delegated, root = ids["tenant"], ids["victim"], ids["delegated"], ids["root"]
    owner, provider, admin = tokens["tenant"], tokens["delegated"], tokens["admin"]
    decade_end = FIRST_HOUR.isoformat().replace("+00:00", "Z")
    decade_start = (FIRST_HOUR - timedelta(days=3650)).isoformat().replace("+00:00", "Z")
    decade = f"{VERSION}&reportedStartTime={decade_start}&reportedEndTime={decade_end}"
    last_day = last_hour.replace(hour=0)
    day_text = last_day.strftime("%Y-%m-%dT00:00:00Z")
    next_day = (last_day + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    framing = "POST /local-sign-in/token HTTP/1.1\r\nHost: " + host + "\r\n"
    hidden = f"GET /portal/config.json HTTP/1.1\r\nHost: {host}\r\n\r\n"
    img = quote("<img src=x onerror=alert(1)>", safe="")
    long_name = "n" * 5_000
    items: list[tuple[str, bytes]] = [
        # 1 and 11: months in other digits, on one's own subscription, another's, a roll-up
        ("month superscript", request_bytes(
            f"{STATEMENT.format(tenant, '2026-1%C2%B2')}?{VERSION}", host, token=owner)),
        ("month superscript, victim", request_bytes(
            f"{STATEMENT.format(victim, '2026-1%C2%B2')}?{VERSION}", host, token=owner)),
        ("month full-width, roll-up", request_bytes(
            f"{ROLLUP.format(delegated, '%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96-11')}?{VERSION}",
            host, token=provider)),
        ("month newline", request_bytes(
            f"{STATEMENT.format(tenant, '2026-11%0A')}?{VERSION}", host, token=owner)),
        # 2: a 20,000-character subscriberId
        ("subscriberId 20k usage", request_bytes(
            f"{PROVIDER.format(delegated)}?{window}&subscriberId={'a' * 20_000}", host,
            token=provider)),
        ("subscriberId 20k statements", request_bytes(
            f"{ROLLUP.format(delegated, '2026-11')}?{VERSION}&subscriberId={'a' * 20_000}",
            host, token=provider)),
        # 3: deep JSON to the local sign-in
        ("sign-in nested 100k", request_bytes(
            "/local-sign-in/token", host, method="POST",
            headers=(("Content-Type", "application/json"),),
            body=b"[" * 100_000 + b"]" * 100_000)),
        ("sign-in nested 500", request_bytes(
            "/local-sign-in/token", host, method="POST",
            headers=(("Content-Type", "application/json"),), body=b"[" * 500 + b"]" * 500)),
        # 4: repeated arguments with attacker names
        ("repeated img name", request_bytes(
            f"{TENANT.format(tenant)}?{window}&{img}=1&{img}=2", host, token=owner)),
        ("repeated 5k name", request_bytes(
            f"{TENANT.format(tenant)}?{window}&{long_name}=1&{long_name}=2", host, token=owner)),
        # 5: a long locale
        ("locale long", request_bytes(
            f"{RATE_CARD.format(tenant)}?{VERSION}&$filter="
            + FILTER.replace("en-US", "en-" + "-".join(["abcdefgh"] * 4)), host, token=owner)),
        # 6: a Host that made the portal redirect off-site
        ("portal host", request_bytes("/portal", "x/\\evil.example")),
        # 7: whitespace runs in $filter
        ("filter 64k spaces", request_bytes(
            f"{RATE_CARD.format(tenant)}?{VERSION}&$filter=OfferDurableId{'+' * 64_000}x",
            host, token=owner)),
        ("filter 20k spaces", request_bytes(
            f"{RATE_CARD.format(tenant)}?{VERSION}&$filter=OfferDurableId{'+' * 20_000}x",
            host, token=owner)),
        ("filter 1k spaces", request_bytes(
            f"{RATE_CARD.format(tenant)}?{VERSION}&$filter=OfferDurableId{'+' * 980}x",
            host, token=owner)),
        # 8: ten-year windows over sparse data
        ("decade delegated", request_bytes(
            f"{PROVIDER.format(delegated)}?{decade}&aggregationGranularity=Hourly", host,
            token=provider)),
        ("decade default provider", request_bytes(
            f"{PROVIDER.format(root)}?{decade}&aggregationGranularity=Hourly", host,
            token=admin)),
        ("decade daily", request_bytes(
            f"{PROVIDER.format(root)}?{decade}&aggregationGranularity=Daily", host,
            token=admin)),
        # 9: framing and Host
        ("two content lengths", (framing + "Content-Length: 0\r\nContent-Length: "
            + f"{len(hidden)}\r\n\r\n" + hidden).encode()),
        ("xchunked", (framing + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + hidden).encode()),
        ("chunked, identity", (framing + "Transfer-Encoding: chunked, identity\r\n\r\n"
            + "0\r\n\r\n" + hidden).encode()),
        ("host with a query", request_bytes("/openapi.json", host + "?api-version=x&y=")),
        ("rebound name", request_bytes(
            "/local-sign-in/token", "evil.example", method="POST",
            headers=(("Content-Type", "text/plain"),), body=b'{"principal":"admin"}')),
        # 10: the host's own refusals
        ("url 70k", request_bytes("/" + "a" * 70_000, host)),
        ("header 70k", request_bytes("/openapi.json", host, headers=(("X-Big", "b" * 70_000),))),
        ("120 headers", request_bytes(
            "/openapi.json", host, headers=tuple((f"X-H{n}", "v") for n in range(120)))),
        ("no route", request_bytes("/nothing/here", host)),
        # 11: odd spellings
        ("time newline", request_bytes(
            f"{TENANT.format(tenant)}?{window.replace('Z&', 'Z%0A&', 1)}", host, token=owner)),
        ("filter nbsp", request_bytes(
            f"{RATE_CARD.format(tenant)}?{VERSION}&$filter="
            + FILTER.replace("+and+", "%C2%A0and%C2%A0", 1), host, token=owner)),
        *(
            (name, request_bytes(
                f"{TENANT.format(tenant)}?{window}&continuationToken={quote(value, safe='%')}",
                host, token=owner))
            for name, value in respelled(next_token).items()
        ),
        # 13: a daily window over the partly collected last day
        ("daily partial day", request_bytes(
            f"{TENANT.format(tenant)}?{VERSION}&reportedStartTime={day_text}"
            f"&reportedEndTime={next_day}&aggregationGranularity=Daily", host, token=owner)),
        # neighbours: tokens, injection, paths, methods
        ("bearer alg none", request_bytes(
            f"{TENANT.format(tenant)}?{window}", host, token=UNSIGNED_TOKEN)),
        ("bearer 40k", request_bytes(
            f"{TENANT.format(tenant)}?{window}", host, token="x" * 40_000)),
        ("odata injection", request_bytes(
            f"{PROVIDER.format(delegated)}?{window}&subscriberId="
            + quote("x' or PartitionKey ne '", safe=""), host, token=provider)),
        ("path dot-dot", request_bytes(
            f"/subscriptions/{tenant}%2f..%2f{victim}/providers/Microsoft.Commerce/usageAggregates"
            f"?{window}", host, token=owner)),
        ("path 4k id", request_bytes(f"{TENANT.format('a' * 4_000)}?{window}", host, token=owner)),
        ("victim", request_bytes(f"{TENANT.format(victim)}?{window}", host, token=owner)),
        ("post to the API", request_bytes(
            f"{TENANT.format(tenant)}?{window}", host, method="POST", token=owner)),
        ("api-version 8k", request_bytes(
            f"{TENANT.format(tenant)}?{window}&api-version={'x' * 8_000}", host, token=owner)),
    ]  # fmt: skip
    return [Hostile(name, data) for name, data in items]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hostile")
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 15")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 15
    hours = [FIRST_HOUR + n * HOUR for n in range(HOURS)]
    fleet = SimulatedFleet(options_for_rows(3_500, scale=3.0, at=FIRST_HOUR + 14 * HOUR))
    started = time.monotonic()
    with Azurite() as azurite, tempfile.TemporaryDirectory() as scratch:
        issuer = LocalIssuer(Path(scratch) / "auth")
        values = local_values(
            azurite.connection_string,
            USAGE_TABLE_PREFIX="bh" + uuid.uuid4().hex[:8],
            AUTH_JWKS_URI=str(issuer.jwks_path),
            FLEET_TENANTS=str(fleet.options.tenants),
            FLEET_SCALE="3.0",
            PORTAL_LOCAL_SIGN_IN_URL="/local-sign-in",
            **{"AzureWebJobs.collect_usage.Disabled": "true"},
            **{"AzureWebJobs.collect_slice.Disabled": "true"},
            **{"AzureWebJobs.report_to_azure.Disabled": "true"},
            **{"AzureWebJobs.finalise_statements.Disabled": "true"},
            **{"AzureWebJobs.export_usage.Disabled": "true"},
        )
        settings = Settings.from_environ(values)
        account = StorageAccount(settings)
        account.ensure_tables()
        store = SubscriptionStore(account)
        listed = fleet.subscriptions(hours[-1])
        store.sync(listed, store.all())
        by_id = {s.subscription_id.lower(): s for s in listed}
        counts = rows_per_subscription(fleet, hours)
        _, tenant = page_tenant(counts, by_id)
        owner = by_id[tenant].owners[0]
        victim = next(s for s in sorted(by_id) if owner not in by_id[s].owners)
        rows = fill(account, fleet, hours, lambda sid: True)
        for hour in hours:
            Watermark(account, "simulated").advance(hour)
        delegated = fleet.delegated_providers[0]
        tokens = {
            "tenant": issuer.mint(owner),
            "delegated": issuer.mint(delegated.owners[0]),
            "admin": issuer.mint(fleet.admin_object_id, roles=[settings.auth_admin_role]),
        }
        ids = {
            "tenant": tenant,
            "victim": victim,
            "delegated": delegated.subscription_id.lower(),
            "root": fleet.default_provider.subscription_id.lower(),
        }
        start, end = hours[0], hours[-1] + HOUR
        window = (
            f"{VERSION}&reportedStartTime={start:%Y-%m-%dT%H:%M:%SZ}"
            f"&reportedEndTime={end:%Y-%m-%dT%H:%M:%SZ}&aggregationGranularity=Hourly"
        )
        print(f"fleet: {len(counts)} subscriptions with usage, {rows:,} hourly rows, {HOURS} h")
        front = CountingFront(azurite.table_port)
        host_values = {
            **values,
            "AzureWebJobsStorage": azurite.connection_string.replace(
                f":{azurite.table_port}/", f":{front.port}/"
            ),
        }
        with front.running(), functions_host(host_values, Path(scratch)) as base_url:
            port = urlsplit(base_url).port or 0
            host = f"127.0.0.1:{port}"
            page_target = f"{TENANT.format(tenant)}?{window}"
            first = get_page(f"{base_url}{page_target}", tokens["tenant"])
            next_token = parse_qs(urlsplit(first["nextLink"]).query)["continuationToken"][0]
            hostile = corpus(host, tokens, ids, window, next_token, hours[-1])
            page = request_bytes(page_target, host, token=tokens["tenant"])
            exchange(port, page)  # warm: imports, JWKS file, client caches
            for item in hostile:
                exchange(port, item.data)
            page_ms: list[float] = []
            page_storage: list[int] = []
            hostile_ms: dict[str, list[float]] = {item.name: [] for item in hostile}
            hostile_storage: dict[str, int] = {item.name: 0 for item in hostile}
            statuses: Counter[int] = Counter()
            for _ in range(rounds):
                before = front.requests
                status, seconds = exchange(port, page)
                if status != 200:
                    raise RuntimeError(f"the baseline page answered {status}")
                page_ms.append(1000 * seconds)
                page_storage.append(front.requests - before)
                for item in hostile:
                    before = front.requests
                    status, seconds = exchange(port, item.data)
                    statuses[status] += 1
                    hostile_ms[item.name].append(1000 * seconds)
                    hostile_storage[item.name] = max(
                        hostile_storage[item.name], front.requests - before
                    )
    every = [value for values_ms in hostile_ms.values() for value in values_ms]
    slowest = max(hostile_ms, key=lambda name: max(hostile_ms[name]))
    costliest = max(hostile_storage, key=lambda name: hostile_storage[name])
    figures = {
        "mode": "quick" if args.quick else "full",
        "rounds": rounds,
        "corpus": len(hostile),
        "hostile_requests": len(every),
        "statuses": dict(sorted(statuses.items())),
        # 200 only for the ten-year windows (valid, and answered with what little they hold).
        "answers_2xx": sum(n for status, n in statuses.items() if 200 <= status < 300),
        "answers_5xx_or_none": sum(n for status, n in statuses.items() if not 200 <= status < 500),
        "page_ms_p50": median(page_ms),
        "page_ms_p99": p99(page_ms),
        "page_storage_requests": max(page_storage),
        "hostile_ms_p50": median(every),
        "hostile_ms_p99": p99(every),
        "hostile_p99_ratio": p99(every) / median(page_ms),
        "slowest": slowest,
        "slowest_ms_p50": median(hostile_ms[slowest]),
        "hostile_storage_max": hostile_storage[costliest],
        "hostile_storage_max_request": costliest,
        "hostile_storage_total_per_round": sum(hostile_storage.values()),
        "seconds_total": time.monotonic() - started,
    }
    finish(figures)
    return 0
