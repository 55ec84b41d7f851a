"""The fast tables transport: transactions and queries encoded and read here.

Every private name of the SDK the app uses lives in this module and nowhere else
(``tests/unit/test_private_names.py`` greps the tree): the SDK's decoding of errors, its
entity conversion both ways, key quoting, filter substitution, and the table client's host
and generated client (``_primary_hostname``, ``_client.send_request``), through which the
requests go, so authentication, retries and request hooks are unchanged. An SDK release
that moves one of them breaks this module's import, which ``shared.storage.transport.choice``
catches (the SDK path runs instead); one that changes what the SDK sends is what the
contract suite (``tests/contract``) and ``./dev canary`` find, before a pin moves.

Transactions. ``TableClient.submit_transaction`` builds one ``HttpRequest`` per operation,
runs each through header policies, serialises the multipart body with the ``email`` package
and parses the multipart answer with it again. Measured under ``python -m bench report``,
that was most of the app's CPU: about 0.65 ms per operation, against one round trip to
storage per transaction. Billing writes every event twice (pending, then settled) and the
collector writes every row once, so this cost bounds both. The body here is the one the
service documents for ``$batch``: one changeset of sub-requests, entities serialised as the
SDK's ``_add_entity_properties`` serialises them, keys quoted as the SDK quotes them. It
returns the SDK's per-operation metadata and raises the exceptions the SDK raises.

Queries. ``TableClient.query_entities`` runs every page through the generated client's
msrest ``Deserializer`` (property by property, for every entity) before converting the
entities. Measured on Azurite, a range read of 270 summary rows cost about 11 ms of CPU
through the SDK and 5 ms this way; billing reads every event's summary row and ledger
state, so that cost followed the events. The request is the one the SDK sends (same filter
substitution, ``$select``, headers and continuation) and each entity is converted with the
SDK's own ``_convert_to_entity``, so values, EDM types and metadata are the SDK's.
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

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient, TableTransactionError, UpdateMode
from azure.data.tables._deserialize import _convert_to_entity
from azure.data.tables._error import (  # the SDK's own decoding: same exceptions as its batch
    RequestTooLargeError,
    _decode_error,
    _validate_tablename_error,
)
from azure.data.tables._serialize import (
    _add_entity_properties,
    _parameter_filter_substitution,
    _prepare_key,
)

from shared.storage.transport.interface import TablesTransport
from shared.storage.transport.operations import Operation, match_version

_ANNOTATION = "@odata.type"
_BOUNDARY = re.compile(rb'boundary="?([^";\r\n]+)"?', re.IGNORECASE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ?([^\r\n]*)")
_CONTENT_TYPE = re.compile(rb"^content-type:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_ETAG = re.compile(rb"^etag:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_SERVICE_ETAG = re.compile(rb"\r\nETag:[ \t]*([^\r\n]*)")
_NEXT_PARTITION = "x-ms-continuation-NextPartitionKey"
_NEXT_ROW = "x-ms-continuation-NextRowKey"


class DirectTransport(TablesTransport):
    name = "direct"

    def _commit(self, table: TableClient, operations: list[Operation]) -> list[dict[str, str]]:
        return submit_transaction(table, operations)

    def query_entities(
        self,
        table: TableClient,
        query_filter: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
        plain: bool = False,
    ) -> list[dict[str, Any]]:
        return query_entities(
            table, query_filter, parameters=parameters, select=select, plain=plain
        )


def submit_transaction(table: TableClient, operations: Sequence[Operation]) -> list[dict[str, str]]:
    """Commit checked, non-empty ``operations`` in one request (``TablesTransport``)."""
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
        raise _refusal(response, table.table_name, None)
    parts = _responses(response.headers.get("Content-Type", ""), response.read())
    for part in parts:
        if part.status_code == 413:
            raise _too_large(response)
        if not 200 <= part.status_code < 300:
            raise _refusal(part, table.table_name, TableTransactionError)
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


def _refusal(response: Any, table_name: str, error_type: type | None) -> HttpResponseError:
    """The SDK's decoding of a refused request or operation (code, message, type)."""
    error: HttpResponseError = _decode_error(  # type: ignore[no-untyped-call]
        response, error_type=error_type
    )
    _validate_tablename_error(error, table_name)  # type: ignore[no-untyped-call]
    return error


def _sub_request(base: str, table_name: str, operation: Operation) -> str:
    """One operation as the HTTP request inside the changeset."""
    kind, entity = str(operation[0]).lower(), operation[1]
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
        return f"DELETE {url} HTTP/1.1\r\n{headers}If-Match: {match_version(options)}\r\n\r\n"
    method = "PUT" if options.get("mode") == UpdateMode.REPLACE else "PATCH"
    if kind == "update":
        headers += f"If-Match: {match_version(options)}\r\n"
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
            return sdk_entity_json(entity)
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
            return sdk_entity_json(entity)
    return "{" + ", ".join(members) + "}"


def sdk_entity_json(entity: Mapping[str, Any]) -> str:
    """The SDK's own text of ``entity`` (``_add_entity_properties``, then ``json.dumps``):
    what :func:`entity_json` equals, and its fallback for values it does not write."""
    return json.dumps(_add_entity_properties(entity))


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


def query_entities(
    table: TableClient,
    query_filter: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    select: Sequence[str] | None = None,
    plain: bool = False,
) -> list[dict[str, Any]]:
    """The SDK's query, sent and read here (``TablesTransport.query_entities``).

    Every entity of ``table`` matching ``query_filter`` (``@name`` words replaced from
    ``parameters`` as the SDK replaces them), with only ``select``'s properties if given,
    following continuation tokens to the last page. The entities are the SDK's
    ``TableEntity`` (a dict whose ``metadata`` holds the ETag and timestamp).

    ``plain``: the service's ``nometadata`` JSON as it comes instead, plain dicts without
    ETag or type annotations (so Int64, DateTime, Guid and Binary values would arrive as
    strings), for reads that select only String and Int32 properties: the conversion is
    then a copy, and billing's summary read converts thousands of rows."""
    query = {"$filter": _parameter_filter_substitution(dict(parameters or {}), query_filter)}
    if select:
        query = {"$select": ",".join(select), **query}  # the SDK's order
    url = f"{table.scheme}://{table._primary_hostname}/{quote(table.table_name)}()"
    headers = {
        "x-ms-version": table.api_version,
        "DataServiceVersion": "3.0",
        "Accept": f"application/json;odata={'nometadata' if plain else 'minimalmetadata'}",
    }
    entities: list[dict[str, Any]] = []
    while True:
        # Every value quoted whole, as the SDK's serializer quotes it ("&", "+", "%" too).
        target = (
            url + "?" + "&".join(f"{name}={quote(value, safe='')}" for name, value in query.items())
        )
        response = table._client.send_request(HttpRequest("GET", target, headers=headers))
        if response.status_code != 200:
            raise _refusal(response, table.table_name, None)
        page: list[dict[str, Any]] = json.loads(response.content)["value"]
        if plain:
            entities += page
        else:
            entities += [_convert_to_entity(entity) for entity in page]  # type: ignore[no-untyped-call]
        next_partition = response.headers.get(_NEXT_PARTITION)
        next_row = response.headers.get(_NEXT_ROW)
        if not next_partition and not next_row:
            return entities
        query.pop("NextPartitionKey", None)
        query.pop("NextRowKey", None)
        if next_partition:
            query["NextPartitionKey"] = next_partition
        if next_row:
            query["NextRowKey"] = next_row
