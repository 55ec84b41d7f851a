"""Entity-group transactions, encoded and decoded here, sent through the SDK's pipeline.

``TableClient.submit_transaction`` builds one ``HttpRequest`` per operation, runs each
through header policies, serialises the multipart body with the ``email`` package and
parses the multipart answer with it again. Measured under ``python -m bench report``, that
was most of the app's CPU: about 0.65 ms per operation, against one round trip to storage
per transaction. Billing writes every event twice (pending, then settled) and the collector
writes every row once, so this cost bounds both.

:func:`submit_transaction` keeps the SDK's contract and wire format (the body the service
documents for ``$batch``: one changeset of sub-requests, entities serialised as the SDK's
``_add_entity_properties`` serialises them, keys quoted as the SDK quotes them) and sends
the request through the table client's own pipeline, so authentication, retries and
request hooks are unchanged. It returns the SDK's per-operation metadata (``{"etag":
...}``) and raises the exceptions the SDK raises: ``TableTransactionError`` for a refused
operation (its ``status_code`` and ``error_code`` those of the failed part), the decoded
HTTP error for a refused request. ``tests/integration/test_transactions.py`` holds it to
the SDK's answers.
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_text  # json.dumps of one str
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient, TableTransactionError, UpdateMode
from azure.data.tables._error import (  # the SDK's own decoding: same exceptions as its batch
    RequestTooLargeError,
    _decode_error,
    _validate_tablename_error,
)
from azure.data.tables._serialize import _add_entity_properties, _prepare_key

Operation = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], Mapping[str, Any]]

_ANNOTATION = "@odata.type"
MAX_OPERATIONS = 100  # Table storage: at most 100 operations in one transaction
_BOUNDARY = re.compile(rb'boundary="?([^";\r\n]+)"?', re.IGNORECASE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ?([^\r\n]*)")
_CONTENT_TYPE = re.compile(rb"^content-type:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_ETAG = re.compile(rb"^etag:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_SERVICE_ETAG = re.compile(rb"\r\nETag:[ \t]*([^\r\n]*)")


def submit_transaction(table: TableClient, operations: Sequence[Operation]) -> list[dict[str, str]]:
    """Commit ``operations`` (the SDK's ``(kind, entity[, options])`` tuples) atomically.

    Kinds: ``create``; ``upsert`` and ``update`` with ``mode`` (``UpdateMode``, merge by
    default); ``update`` and ``delete`` with ``etag`` and ``match_condition`` (without them,
    any version). Every entity must share one PartitionKey. Returns per operation the
    metadata the service answered (``{"etag": ...}``, empty for a delete).
    """
    if not operations:
        return []
    if len(operations) > MAX_OPERATIONS:
        raise ValueError(f"a transaction holds at most {MAX_OPERATIONS} operations")
    partitions = {operation[1]["PartitionKey"] for operation in operations}
    if len(partitions) != 1:
        raise ValueError("every operation of a transaction must share one PartitionKey")
    base = f"{table.scheme}://{table._primary_hostname}"  # as the SDK's batch builds it
    changeset = f"changeset_{uuid.uuid4()}"
    batch = f"batch_{uuid.uuid4()}"
    pieces = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
    for index, operation in enumerate(operations):
        pieces.append(
            f"--{changeset}\r\nContent-Type: application/http\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: {index}\r\n\r\n"
        )
        pieces.append(_sub_request(base, table.table_name, operation))
    pieces.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n")
    request = HttpRequest(
        "POST",
        f"{base}/$batch",
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={batch}",
            "Accept": "application/json",
        },
        content="".join(pieces).encode("utf-8"),
    )
    # Streamed, as the SDK's batch is: the pipeline's decoder knows no multipart body.
    response = table._client.send_request(request, stream=True)
    if response.status_code == 413:
        raise _too_large(response)
    if response.status_code != 202:
        raise refusal(response, table.table_name, None)
    parts = _responses(response.headers.get("Content-Type", ""), response.read())
    for part in parts:
        if part.status_code == 413:
            raise _too_large(response)
        if not 200 <= part.status_code < 300:
            raise refusal(part, table.table_name, TableTransactionError)
    if len(parts) != len(operations):
        raise TableTransactionError(
            message=f"the transaction's answer has {len(parts)} parts for "
            f"{len(operations)} operations"
        )
    return [{"etag": part.headers["etag"]} if "etag" in part.headers else {} for part in parts]


def _too_large(response: Any) -> HttpResponseError:
    error: HttpResponseError = _decode_error(  # type: ignore[no-untyped-call]
        response,
        error_message="The transaction request was too large",
        error_type=RequestTooLargeError,
    )
    return error


def refusal(response: Any, table_name: str, error_type: type | None) -> HttpResponseError:
    """The SDK's decoding of a refused request or operation (code, message, type); our
    queries (``shared.storage.queries``) raise it too."""
    error: HttpResponseError = _decode_error(  # type: ignore[no-untyped-call]
        response, error_type=error_type
    )
    _validate_tablename_error(error, table_name)  # type: ignore[no-untyped-call]
    return error


def _sub_request(base: str, table_name: str, operation: Operation) -> str:
    """One operation as the HTTP request inside the changeset."""
    kind, entity = operation[0], operation[1]
    options: Mapping[str, Any] = operation[2] if len(operation) > 2 else {}
    headers = "DataServiceVersion: 3.0\r\nAccept: application/json;odata=minimalmetadata\r\n"
    if kind == "create":
        return _with_body(
            f"POST {base}/{table_name}", f"{headers}Prefer: return-no-content\r\n", entity
        )
    url = (
        f"{base}/{table_name}(PartitionKey='{quote(_prepare_key(entity['PartitionKey']), safe='')}'"
        f",RowKey='{quote(_prepare_key(entity['RowKey']), safe='')}')"
    )
    if kind == "delete":
        return f"DELETE {url} HTTP/1.1\r\n{headers}If-Match: {_if_match(options)}\r\n\r\n"
    if kind not in ("upsert", "update"):
        raise ValueError(f"unknown transaction operation {kind!r}")
    mode = options.get("mode", UpdateMode.MERGE)
    method = "PUT" if mode in (UpdateMode.REPLACE, "replace") else "PATCH"
    if kind == "update":
        headers += f"If-Match: {_if_match(options)}\r\n"
    return _with_body(f"{method} {url}", headers, entity)


def _with_body(request_line: str, headers: str, entity: Mapping[str, Any]) -> str:
    """A sub-request carrying ``entity`` as the SDK serialises it (ASCII JSON, so its
    length in characters is its length in bytes)."""
    body = entity_json(entity)
    return (
        f"{request_line} HTTP/1.1\r\n{headers}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}\r\n"
    )


def entity_json(entity: Mapping[str, Any]) -> str:
    """``json.dumps`` of ``entity`` as the SDK's ``_add_entity_properties`` writes it for the
    service, character for character.

    The SDK's conversion costs about 26 us per entity (an isinstance chain and a lookup per
    property), and ``json.dumps`` of the annotated dictionary about 10 more. The app's
    entities hold only strings, finite floats, 32-bit ints, booleans, timezone-aware
    datetimes and None, so those are written here directly as text, the way ``json.dumps``
    writes them (its own C string encoder, ``float.__repr__``): strings and floats
    annotated, datetimes as UTC with microseconds, None left out. An entity with any other
    value (EDM tuples, enums, UUIDs, bytes, big or non-finite numbers, naive datetimes or
    datetime subclasses) goes to the SDK's conversion whole. ``tests/unit/test_entity_json.py``
    holds both to the same text.
    """
    members: list[str] = []
    for name, value in entity.items():
        if name.endswith(_ANNOTATION):  # a name that is itself an annotation: the SDK decides
            return json.dumps(_add_entity_properties(entity))
        kind = type(value)
        if kind is str:
            key, annotation = _names(name)
            members.append(f'{key}: {_json_text(value)}, {annotation}: "Edm.String"')
        elif kind is float and math.isfinite(value):
            key, annotation = _names(name)
            members.append(f'{key}: {float.__repr__(value)}, {annotation}: "Edm.Double"')
        elif kind is datetime and value.tzinfo is not None:
            key, annotation = _names(name)
            members.append(f'{key}: "{_utc_text(value)}", {annotation}: "Edm.DateTime"')
        elif kind is bool:
            members.append(f"{_names(name)[0]}: {'true' if value else 'false'}")
        elif kind is int and -(2**31) <= value < 2**31:
            members.append(f"{_names(name)[0]}: {int.__repr__(value)}")
        elif value is not None:
            return json.dumps(_add_entity_properties(entity))
    return "{" + ", ".join(members) + "}"


@functools.lru_cache(maxsize=1024)
def _names(name: str) -> tuple[str, str]:
    """A property's name and its ``@odata.type`` annotation's name, as JSON text; cached,
    since the app's entities share a few dozen names."""
    return _json_text(name), _json_text(name + _ANNOTATION)


@functools.lru_cache(maxsize=512)
def _utc_text(moment: datetime) -> str:
    """The SDK's text of an aware datetime; cached, since a transaction's entities mostly
    share their hours (equal instants hash equal in any zone, and give equal text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _if_match(options: Mapping[str, Any]) -> str:
    """The version an update or delete requires: the ETag given, or any."""
    etag = options.get("etag")
    if etag is not None and options.get("match_condition") is MatchConditions.IfNotModified:
        return str(etag)
    if options.get("match_condition") not in (None, MatchConditions.Unconditionally):
        raise ValueError("transactions support IfNotModified (with an etag) or no condition")
    return "*"


@dataclass
class _PartResponse:
    """One sub-response of the answer, shaped as azure-core's decoders read a response."""

    status_code: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def text(self, encoding: str | None = None) -> str:
        return self.content.decode(encoding or "utf-8")

    def body(self) -> bytes:
        return self.content


def _responses(content_type: str, body: bytes) -> list[_PartResponse]:
    """The HTTP responses inside a multipart answer, changesets opened, in order."""
    found = _BOUNDARY.search(content_type.encode("latin-1"))
    if found is None:
        raise TableTransactionError(
            message=f"the transaction's answer is not multipart: {content_type}"
        )
    responses: list[_PartResponse] = []
    for part in _split(body, found.group(1)):
        blank = _BLANK_LINE.search(part)
        if blank is None:
            raise TableTransactionError(message="a part of the transaction's answer has no status")
        inner = _CONTENT_TYPE.search(part, 0, blank.start())
        if inner is not None and inner.group(1).lower().startswith(b"multipart/mixed"):
            responses += _responses(inner.group(1).decode("latin-1"), part[blank.end() :])
            continue
        status = _STATUS_LINE.match(part, blank.end())
        if status is None:
            raise TableTransactionError(message="a part of the transaction's answer has no status")
        code, reason = int(status.group(1)), status.group(2).decode("latin-1")
        if 200 <= code < 300:
            # The common case, once per operation: only the ETag is read, in place, first as
            # the service writes it (CRLF lines, "ETag"), which is a plain scan.
            end = part.find(b"\r\n\r\n", status.end())
            if end < 0:
                blank = _BLANK_LINE.search(part, status.end())
                end = len(part) if blank is None else blank.start()
            etag = _SERVICE_ETAG.search(part, status.end(), end) or _ETAG.search(
                part, status.end(), end
            )
            found_etag = {} if etag is None else {"etag": etag.group(1).decode("latin-1")}
            responses.append(_PartResponse(code, reason, found_etag))
            continue
        content = part[part.find(b"\n", status.end()) + 1 :]
        part_headers, part_content = _headers_and_content(content)
        responses.append(_PartResponse(code, reason, part_headers, part_content.rstrip(b"\r\n")))
    return responses


def _cut(block: bytes) -> tuple[bytes, bytes]:
    """A header block and what follows the blank line after it."""
    split = _BLANK_LINE.search(block)
    return (block, b"") if split is None else (block[: split.start()], block[split.end() :])


def _split(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between ``--boundary`` lines, up to the closing ``--boundary--``."""
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        parts.append(chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n"))
    return parts


def _headers_and_content(block: bytes) -> tuple[dict[str, str], bytes]:
    """Header lines (names lower-cased) and what follows the blank line after them."""
    head, content = _cut(block)
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, content
