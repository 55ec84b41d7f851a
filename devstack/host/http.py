"""The local host's HTTP trigger: routes, the server and its handler, and TLS.

Mirrors the host's ASP.NET Core routing:
    ``route`` templates (default: the function name) under ``extensions.http.routePrefix``
    (default ``api``; ``""`` means none), matched case-insensitively, with ``{param}``,
    ``{param?}``, ``{param:int}``-style constraints and ``{*catchAll}``; literal segments win
    over parameters, parameters over catch-alls. ``methods`` restricts the verbs (absent:
    all). As in the real host, a verb not listed simply does not match, so it answers 404
    (Azure/azure-functions-host#10098), not 405. A function that raises answers 500; the
    host keeps serving. A body length that cannot be read answers 400; a body over the
    host's request length limit (100 MB, 104,857,600 bytes, as Azure Functions' HTTP
    trigger) answers 413 before any of it is read, so a huge but well-formed Content-Length
    or chunk size costs nothing. Optional TLS with a self-signed certificate made with
    ``cryptography``.

Where it is stricter than the real host, because developers run it on their laptops, where a
web page they visit can reach loopback:

- **Framing is never ambiguous.** Several ``Content-Length`` values, a ``Transfer-Encoding``
  other than exactly ``chunked`` (``xchunked``, ``chunked, identity``), or both headers at
  once answer 400 and close the connection: a body read one way by us and another by a proxy
  in front is how a second, hidden request gets smuggled in.
- **Host is checked, never used.** Only loopback names are answered (``127.0.0.1``,
  ``localhost``, ``[::1]``, with a port or none): anything else is 400, so a page that
  rebinds its own name to 127.0.0.1 cannot call the app (or the local sign-in): its
  requests keep naming its own host. (Any port: a loopback proxy in front, such as the
  Azure Stack round-trip test's stamp, forwards its own ``Host``.) Routing
  uses the request target's path alone (origin-form only: ``/path?query``), and the URL a
  function sees is the host's own address plus that target, never the ``Host`` text.
- **Every answer of its own is JSON** (400, 404, 413, 414, 431, 500, ...): ARM's error
  envelope with ``x-ms-error-code``, ``X-Content-Type-Options: nosniff``,
  ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`` and
  ``Cache-Control: no-store``, never ``http.server``'s HTML error page.

``_Route`` compiles one route template; ``_HttpTriggers``, a mixin of ``LocalFunctionsHost``
(in ``app``), starts the server over the routes of the loaded functions; ``_HttpHandler``
answers each request by invoking the function whose route matches.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import azure.functions as func

if TYPE_CHECKING:
    from devstack.host.app import LocalFunctionsHost
    from devstack.host.config import _Function


# --- routes ------------------------------------------------------------------------------

_PARAMETER = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])",
    "guid": r"\{?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}\}?",
}


@dataclass(frozen=True)
class _Route:
    """One compiled route template; ``rank`` orders literals before parameters."""

    template: str
    pattern: re.Pattern[str]
    groups: dict[str, str]  # regex group -> route parameter name
    rank: tuple[int, ...]
    methods: frozenset[str] | None

    @classmethod
    def compile(cls, prefix: str, route: str, methods: frozenset[str] | None) -> _Route:
        segments = [part for part in f"{prefix.strip('/')}/{route.strip('/')}".split("/") if part]
        regex = ""
        groups: dict[str, str] = {}
        rank: list[int] = []
        for segment in segments:
            parameters = _PARAMETER.findall(segment)
            if not parameters:
                regex += "/" + re.escape(segment)
                rank.append(0)
                continue
            if len(parameters) == 1 and segment == "{" + parameters[0] + "}":
                name, kind, body = cls._parameter(parameters[0], groups)
                if kind == "catchall":
                    regex += f"(?:/(?P<{name}>.*))?"
                    rank.append(5)
                elif kind == "optional":
                    regex += f"(?:/(?P<{name}>{body}))?"
                    rank.append(4)
                else:
                    regex += f"/(?P<{name}>{body})"
                    rank.append(2 if body != "[^/]+" else 3)
                continue
            # A segment mixing literals and parameters, e.g. "{name}.{ext}".
            piece, position = "", 0
            for match in _PARAMETER.finditer(segment):
                piece += re.escape(segment[position : match.start()])
                name, _, body = cls._parameter(match.group(1), groups)
                piece += f"(?P<{name}>{body.replace('[^/]+', '[^/]+?')})"
                position = match.end()
            regex += "/" + piece + re.escape(segment[position:])
            rank.append(1)
        return cls(
            template=route,
            pattern=re.compile(f"^{regex or ''}/?$", re.IGNORECASE),
            groups=groups,
            rank=tuple(rank),
            methods=methods,
        )

    @staticmethod
    def _parameter(text: str, groups: dict[str, str]) -> tuple[str, str, str]:
        kind = "plain"
        if text.startswith("*"):
            kind, text = "catchall", text.lstrip("*")
        name, _, constraint = text.partition(":")
        name = name.partition("=")[0]
        if name.endswith("?"):
            kind, name = "optional", name[:-1]
        if constraint.endswith("?"):
            kind, constraint = "optional", constraint[:-1]
        body = _CONSTRAINTS.get(constraint.partition("(")[0].lower(), "[^/]+")
        group = f"p{len(groups)}"
        groups[group] = name
        return group, kind, body

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.methods is not None and method.upper() not in self.methods:
            return None
        found = self.pattern.match(path)
        if found is None:
            return None
        return {
            self.groups[group]: unquote(value)
            for group, value in found.groupdict().items()
            if value is not None
        }


# --- the server --------------------------------------------------------------------------


class _HttpTriggers:
    """Serves the HTTP functions' routes on loopback, over TLS when asked."""

    # Owned by LocalFunctionsHost.
    functions: dict[str, _Function]
    certificate_path: Path | None
    _http_port: int
    _tls: bool
    _tls_dir: Path
    _server: _HttpServer | None

    if TYPE_CHECKING:

        def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None: ...

    def _start_http(self) -> None:
        routes = sorted(
            ((fn.route, fn) for fn in self.functions.values() if fn.route is not None),
            key=lambda pair: pair[0].rank,
        )
        server = _HttpServer(("127.0.0.1", self._http_port), _HttpHandler)
        server.host = self
        server.routes = routes
        if self._tls:
            cert, key = ensure_certificate(self._tls_dir)
            self.certificate_path = cert
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            # Handshake in the request thread, so one slow client never blocks accepting.
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._spawn("http", server.serve_forever, 0.1)


# Request framing as RFC 9112 writes it: Content-Length is 1*DIGIT, a chunk size 1*HEXDIG.
# Kestrel reads lengths as a .NET long, so one past that is as unusable as "abc".
_CONTENT_LENGTH = re.compile(r"[0-9]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")
_MAX_LENGTH = 2**63 - 1
# Azure Functions' HTTP request length limit (its FUNCTIONS_REQUEST_BODY_SIZE_LIMIT default).
MAX_REQUEST_BODY = 104_857_600


# The only Host names answered (RFC 9110 host, lower case), with a port or none.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_PORT = re.compile(r"[0-9]{1,5}")
# Headers on every answer the host writes itself (its functions' answers carry their own).
OWN_ANSWER_HEADERS = (
    ("Content-Type", "application/json; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
)
# What the host's own answers say, per status: fixed text, nothing of the request.
_OWN_ERRORS = {
    400: ("BadRequest", "the request is malformed, its framing ambiguous or its Host not loopback"),
    404: ("NotFound", "no function answers this path and method"),
    408: ("RequestTimeout", "the request was not received in time"),
    413: ("RequestEntityTooLarge", "the request body is over the host's limit"),
    414: ("RequestUriTooLong", "the request line is over the host's limit"),
    431: ("RequestHeaderFieldsTooLarge", "the request headers are over the host's limits"),
    500: ("InternalServerError", "the function failed; see the host's log"),
    501: ("NotImplemented", "the method is not supported"),
    505: ("HttpVersionNotSupported", "only HTTP/1.0 and HTTP/1.1 are supported"),
}


def own_answer(status: int) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and JSON body of an answer the host writes itself."""
    code, message = _OWN_ERRORS.get(status, ("Error", "the request could not be served"))
    body = json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")
    return [*OWN_ANSWER_HEADERS, ("x-ms-error-code", code)], body


class _FramingError(Exception):
    """A Content-Length or chunk size that is not a length, several lengths, or a transfer
    coding other than ``chunked``: where the body ends is unknown or ambiguous."""


class _BodyTooLargeError(Exception):
    """The body is longer than ``MAX_REQUEST_BODY``: refused before it is read."""


def _content_length(value: str) -> int:
    digits = value.strip()
    if _CONTENT_LENGTH.fullmatch(digits) is None or int(digits) > _MAX_LENGTH:
        raise _FramingError(f"Content-Length {value!r} is not a length")
    return int(digits)


def _chunk_size(text: bytes) -> int:
    if _CHUNK_SIZE.fullmatch(text) is None or int(text, 16) > _MAX_LENGTH:
        raise _FramingError(f"chunk size {text!r} is not a hexadecimal length")
    return int(text, 16)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # stop() waits for in-flight requests
    block_on_close = True
    host: LocalFunctionsHost
    routes: list[tuple[_Route, _Function]]


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (40 ms on Linux), a stall the real host does not add.
    disable_nagle_algorithm = True
    # Idle keep-alive connections close after this, so stop() never waits on a quiet client.
    timeout = 2
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        self.server.host.log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        """The request body; ``_FramingError`` when its length cannot be read or is
        ambiguous, ``_BodyTooLargeError`` when it (or the chunks so far) exceed
        ``MAX_REQUEST_BODY``."""
        codings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if codings and lengths:
            raise _FramingError("both Transfer-Encoding and Content-Length")
        if len(codings) > 1 or (codings and codings[0].strip().lower() != "chunked"):
            raise _FramingError("a transfer coding other than exactly chunked")
        if len(lengths) > 1:
            raise _FramingError("several Content-Length headers")
        if codings:
            chunks = []
            total = 0
            while True:
                size = _chunk_size(self.rfile.readline().split(b";")[0].strip() or b"0")
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_REQUEST_BODY:
                    raise _BodyTooLargeError(f"chunked body over {MAX_REQUEST_BODY} bytes")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = _content_length(self.headers.get("Content-Length") or "0")
        if length > MAX_REQUEST_BODY:
            raise _BodyTooLargeError(f"Content-Length {length} is over {MAX_REQUEST_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _loopback_host(self) -> bool:
        """True if the request names this host by one loopback name (module docstring)."""
        names = self.headers.get_all("Host") or []
        if len(names) != 1:
            return False
        value = names[0].strip(" \t").lower()
        if value.endswith("]") or ":" not in value:  # no port (a bare IPv6 address has ":")
            name, port = value, ""
        else:
            name, _, port = value.rpartition(":")
        return name in LOOPBACK_NAMES and (port == "" or _PORT.fullmatch(port) is not None)

    def _dispatch(self) -> None:
        host = self.server.host
        if not self.path.startswith("/") or self.path.startswith("//"):
            # Origin-form only: an absolute-form target names a host, and "//x/y" would be
            # read as one by URL parsers.
            self._refuse(400, "Bad request: request target is not origin-form")
            return
        if not self._loopback_host():
            self._refuse(400, "Bad request: Host is not a loopback name of this host")
            return
        path, _, query = self.path.partition("?")
        try:
            body = self._read_body()
        except _FramingError as error:
            # As Kestrel: where the body ends is unknown, so answer 400 and drop the connection.
            self._refuse(400, f"Bad request: {error}")
            return
        except _BodyTooLargeError as error:
            # As the real host: 413, and the connection closes (the body was never read).
            self._refuse(413, f"Request body too large: {error}")
            return
        matched = next(
            (
                (fn, params)
                for route, fn in self.server.routes
                if (params := route.match(self.command, path)) is not None
            ),
            None,
        )
        if matched is None:  # no route, or a verb the function does not list (as the host)
            self._send(404, *own_answer(404))
            return
        fn, route_params = matched
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = func.HttpRequest(
            self.command,
            f"{host.base_url}{self.path}",
            headers=headers,
            params=dict(parse_qsl(query, keep_blank_values=True)),
            route_params=route_params,
            body=body,
        )
        invocation = host._invoke(fn, request, f" {self.command} {path}")
        response = invocation.result
        if invocation.error is not None:
            self._send(500, *own_answer(500))
        elif isinstance(response, func.HttpResponse):
            pairs = list(response.headers.items())
            if not any(name.lower() == "content-type" for name, _ in pairs):
                pairs.append(("Content-Type", f"{response.mimetype}; charset={response.charset}"))
            self._send(response.status_code, pairs, response.get_body())
        elif isinstance(response, str | bytes):
            data = response.encode() if isinstance(response, str) else response
            self._send(200, [("Content-Type", "text/plain; charset=utf-8")], data)
        else:
            self._send(204, [], b"")

    def _refuse(self, status: int, reason: str) -> None:
        """The host's own refusal: logged with its reason, answered with fixed JSON, closed
        (what follows on the connection cannot be trusted to be a request)."""
        self.log_message("%s", reason)
        self._send(status, *own_answer(status), close=True)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """``http.server``'s own refusals (414, 431, a bad request line, HTTP/2.0): JSON as
        every answer of this host, never its HTML page, and never the request's text."""
        self.log_message("refused %d: %s", code, message or "")
        self.close_connection = True
        self._send(code, *own_answer(code), close=True)

    def _send(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool = False
    ) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in {"content-length", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close or self.server.host.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up do_<VERB>; every verb goes through the router.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)


# --- TLS ---------------------------------------------------------------------------------


def ensure_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost in ``folder``; reused while valid.

    Returns (certificate PEM, private key PEM). Clients verify with the certificate as CA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "localhost.crt", folder / "localhost.key"
    now = dt.datetime.now(dt.UTC)
    if cert_path.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if existing.not_valid_after_utc > now + dt.timedelta(days=1):
            return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
