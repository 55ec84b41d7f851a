"""The multipart answer of an entity-group transaction, read as the service writes it and as
any other valid spelling of it (bare LF lines, header names in other cases, no space)."""

from __future__ import annotations

import pytest

from shared.storage.transport.direct import _responses

CONTENT_TYPE = "multipart/mixed; boundary=batchresponse_b1"
FIRST = "W/\"datetime'2026-12-03T16%3A52%3A46.5501079Z'\""
SECOND = "W/\"datetime'2026-12-03T16%3A52%3A46.5501080Z'\""
# As Azurite and Azure Table storage answer: CRLF lines, "ETag: ", a changeset inside.
SERVICE = (
    "--batchresponse_b1\r\n"
    "Content-Type: multipart/mixed; boundary=changesetresponse_c1\r\n\r\n"
    "--changesetresponse_c1\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    "HTTP/1.1 204 No Content\r\nX-Content-Type-Options: nosniff\r\n"
    "DataServiceVersion: 3.0;\r\nLocation: http://host/t(PartitionKey='p',RowKey='a')\r\n"
    f"ETag: {FIRST}\r\n\r\n\r\n"
    "--changesetresponse_c1\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    f"HTTP/1.1 201 Created\r\nETag: {SECOND}\r\nContent-Type: application/json\r\n\r\n"
    '{"RowKey": "b"}\r\n'
    "--changesetresponse_c1\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    "HTTP/1.1 204 No Content\r\nDataServiceVersion: 3.0;\r\n\r\n"
    # No ETag header: text in a body is not a header.
    "\r\nETag: not-a-header\r\n"
    "--changesetresponse_c1--\r\n"
    "--batchresponse_b1--\r\n"
)
EXPECTED = [(204, {"etag": FIRST}), (201, {"etag": SECOND}), (204, {})]


@pytest.mark.parametrize(
    "answer",
    [
        SERVICE,
        SERVICE.replace("\r\n", "\n"),
        SERVICE.replace("ETag: ", "etag: "),
        SERVICE.replace("ETag: ", "ETAG:"),
        SERVICE.replace("ETag: ", "ETag:  \t"),
    ],
    ids=["service", "bare-lf", "lower-case", "upper-case-no-space", "more-space"],
)
def test_statuses_and_etags_are_read_from_every_spelling(answer: str) -> None:
    parts = _responses(CONTENT_TYPE, answer.encode())
    assert [(part.status_code, part.headers) for part in parts] == EXPECTED


def test_a_refused_part_keeps_its_headers_and_body() -> None:
    refused = SERVICE.replace(
        f"HTTP/1.1 201 Created\r\nETag: {SECOND}\r\nContent-Type: application/json\r\n\r\n"
        '{"RowKey": "b"}',
        "HTTP/1.1 409 Conflict\r\nContent-Type: application/json;odata=minimalmetadata\r\n\r\n"
        '{"odata.error": {"code": "EntityAlreadyExists"}}',
    )
    parts = _responses(CONTENT_TYPE, refused.encode())
    assert [part.status_code for part in parts] == [204, 409, 204]
    assert parts[1].headers == {"content-type": "application/json;odata=minimalmetadata"}
    assert parts[1].content == b'{"odata.error": {"code": "EntityAlreadyExists"}}'
