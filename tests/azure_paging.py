"""A Table storage front that pages the way Azure documents and Azurite does not.

Azure Table storage may end a page with continuation headers when nothing more matches: a
page that fills at a partition boundary, or a query cut at five seconds ("It is possible
for a query to return no results but to still return a continuation header", Microsoft
Learn, *Query Timeout and Pagination*). Azurite sends continuation headers only when more
entities match. :class:`AzurePagingFront` forwards every request to Azurite unchanged and,
on a full page of a query (``$top`` entities) that came back without continuation headers,
adds headers pointing just after the page's last entity; following them gets an empty page
and no further headers, as Azure may answer. Everything else is Azurite's own answer.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_NEXT_PARTITION = "x-ms-continuation-NextPartitionKey"
_NEXT_ROW = "x-ms-continuation-NextRowKey"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class AzurePagingFront:
    """A loopback HTTP server in front of Azurite's table endpoint (``with`` to run it)."""

    def __init__(self, table_port: int) -> None:
        front = self
        self.added = 0  # continuation headers this front added (proof it did something)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", table_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    pairs = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP]
                    status = answer.status
                finally:
                    upstream.close()
                pairs += front._continuation(self.command, self.path, status, pairs, data)
                self.send_response(status)
                for name, value in pairs:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def __getattr__(self, name: str) -> Any:
                if name.startswith("do_"):  # every verb is forwarded
                    return self._forward
                raise AttributeError(name)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def connection_string(self, azurite_connection_string: str) -> str:
        """``azurite_connection_string`` with its table endpoint moved to this front."""
        return re.sub(
            r"TableEndpoint=http://127\.0\.0\.1:\d+/",
            f"TableEndpoint=http://127.0.0.1:{self.port}/",
            azurite_connection_string,
        )

    def _continuation(
        self, method: str, path: str, status: int, headers: list[tuple[str, str]], data: bytes
    ) -> list[tuple[str, str]]:
        """Continuation headers after a full page that had none (see the module docstring)."""
        parts = urlsplit(path)
        top = parse_qs(parts.query).get("$top")
        if method != "GET" or status != 200 or not top or not parts.path.endswith(")"):
            return []
        if any(name.lower() == _NEXT_PARTITION.lower() for name, _ in headers):
            return []
        try:
            entities = json.loads(data).get("value", [])
        except ValueError:
            return []
        if len(entities) != int(top[0]) or not entities:
            return []
        last = entities[-1]
        if "PartitionKey" not in last or "RowKey" not in last:
            return []
        self.added += 1
        return [(_NEXT_PARTITION, _b64(last["PartitionKey"])),
                (_NEXT_ROW, _b64(last["RowKey"] + "\x00"))]  # fmt: skip

    def __enter__(self) -> AzurePagingFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
