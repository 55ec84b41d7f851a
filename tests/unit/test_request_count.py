"""Every storage request is counted as the kind the storage REST APIs name it."""

from __future__ import annotations

import pytest

from shared.storage.request_count import RequestKind, StorageService, request_kind

ACCOUNT = "https://acct.table.core.windows.net"
LOCAL = "http://127.0.0.1:10002/devstoreaccount1"

TABLE = StorageService.TABLE
QUEUE = StorageService.QUEUE
BLOB = StorageService.BLOB


@pytest.mark.parametrize("base", [ACCOUNT, LOCAL])
@pytest.mark.parametrize(
    ("service", "method", "path", "kind"),
    [
        (TABLE, "POST", "/$batch", RequestKind.TRANSACTION),
        (TABLE, "POST", "/Tables", RequestKind.TABLE_ADMIN),
        (TABLE, "GET", "/Tables()?$filter=TableName%20ge%20'u'", RequestKind.TABLE_ADMIN),
        (TABLE, "DELETE", "/Tables('usagehours')", RequestKind.TABLE_ADMIN),
        (TABLE, "POST", "/usagestate", RequestKind.WRITE),
        (TABLE, "PATCH", "/usagestate(PartitionKey='w',RowKey='s')", RequestKind.WRITE),
        (TABLE, "PUT", "/usagestate(PartitionKey='w',RowKey='s')", RequestKind.WRITE),
        (TABLE, "DELETE", "/usagestate(PartitionKey='w',RowKey='s')", RequestKind.WRITE),
        (TABLE, "GET", "/usagestate(PartitionKey='w',RowKey='s')", RequestKind.POINT_READ),
        (TABLE, "GET", "/usagehours()?$filter=PartitionKey%20eq%20'1'", RequestKind.QUERY),
        (
            TABLE,
            "GET",
            "/usagehours()?$filter=x&NextPartitionKey=1!8!MQ--&NextRowKey=1!8!Mg--",
            RequestKind.CONTINUATION,
        ),
        (QUEUE, "POST", "/work/messages", RequestKind.QUEUE_SEND),
        (QUEUE, "GET", "/work/messages?numofmessages=8", RequestKind.QUEUE_RECEIVE),
        (QUEUE, "DELETE", "/work/messages/abc?popreceipt=x", RequestKind.QUEUE_DELETE),
        (QUEUE, "PUT", "/work", RequestKind.QUEUE_ADMIN),
        (QUEUE, "GET", "/work?comp=metadata", RequestKind.QUEUE_ADMIN),
        (BLOB, "PUT", "/exports/a/b/part_0_0001.parquet", RequestKind.BLOB_WRITE),
        (BLOB, "PUT", "/exports/a/part?comp=block&blockid=AA", RequestKind.BLOB_WRITE),
        (BLOB, "PUT", "/exports/a/part?comp=blocklist", RequestKind.BLOB_WRITE),
        (BLOB, "GET", "/exports/a/manifest.json", RequestKind.BLOB_READ),
        (BLOB, "DELETE", "/exports/a/manifest.json", RequestKind.BLOB_DELETE),
        (BLOB, "GET", "/exports?restype=container&comp=list&prefix=a", RequestKind.BLOB_LIST),
        (BLOB, "PUT", "/exports?restype=container", RequestKind.CONTAINER_ADMIN),
    ],
)
def test_each_request_is_counted_as_its_kind(
    base: str, service: StorageService, method: str, path: str, kind: RequestKind
) -> None:
    """The kind is read from the request line alone, in Azure's URL form and Azurite's."""
    assert request_kind(service, method, base + path) is kind
