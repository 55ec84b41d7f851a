"""Counting every storage request by the kind Azure bills it as.

In Azure the storage bill is a count of requests (Table storage bills every request as one
transaction, an entity-group transaction included; queues and blobs bill operations by
class), so what the app costs to run is measured exactly by counting them, with no noise
from this machine. :class:`StorageRequests` is a ``request_hook`` of
:class:`shared.storage.account.StorageAccount`, which hands it the requests of every client
it builds: tables, queues and blobs alike (each request tagged with its service), so one
counter sees the whole account.

Kinds are read from the request line only (method, path, query), as the storage REST APIs
name their operations; nothing of the body is parsed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlsplit

# The key under which the account tags each request's service in azure-core's request
# context (a dict the pipeline carries with the request).
SERVICE_KEY = "usage_reporter_storage_service"


class StorageService(StrEnum):
    TABLE = "table"
    QUEUE = "queue"
    BLOB = "blob"


class RequestKind(StrEnum):
    """What one storage request is, in the words the storage model prices and limits."""

    TRANSACTION = "entity_group_transactions"  # POST $batch: up to 100 entities, one partition
    WRITE = "single_writes"  # insert, upsert, merge, delete of one entity
    POINT_READ = "point_reads"  # GET of one entity by its keys
    QUERY = "queries"  # the first page of a query
    CONTINUATION = "continuation_pages"  # each further page of a query
    TABLE_ADMIN = "table_operations"  # create, delete or list tables
    QUEUE_SEND = "queue_messages_sent"
    QUEUE_RECEIVE = "queue_receives"  # get messages (the trigger's read)
    QUEUE_DELETE = "queue_deletes"  # delete a message once processed
    QUEUE_ADMIN = "queue_other"  # create a queue, read its properties
    BLOB_WRITE = "blob_writes"  # put blob, put block, put block list
    BLOB_READ = "blob_reads"
    BLOB_LIST = "blob_lists"
    BLOB_DELETE = "blob_deletes"
    CONTAINER_ADMIN = "container_other"  # create a container, read its properties


TABLE_KINDS = (
    RequestKind.TRANSACTION,
    RequestKind.WRITE,
    RequestKind.POINT_READ,
    RequestKind.QUERY,
    RequestKind.CONTINUATION,
    RequestKind.TABLE_ADMIN,
)
QUEUE_KINDS = (
    RequestKind.QUEUE_SEND,
    RequestKind.QUEUE_RECEIVE,
    RequestKind.QUEUE_DELETE,
    RequestKind.QUEUE_ADMIN,
)
BLOB_KINDS = (
    RequestKind.BLOB_WRITE,
    RequestKind.BLOB_READ,
    RequestKind.BLOB_LIST,
    RequestKind.BLOB_DELETE,
    RequestKind.CONTAINER_ADMIN,
)


def _table_kind(method: str, path: str, query: Mapping[str, list[str]]) -> RequestKind:
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last == "$batch":
        return RequestKind.TRANSACTION
    if last == "Tables" or last.startswith("Tables("):
        return RequestKind.TABLE_ADMIN
    if method != "GET":
        return RequestKind.WRITE
    if "PartitionKey=" in last and "RowKey=" in last:
        return RequestKind.POINT_READ
    if "NextPartitionKey" in query or "NextRowKey" in query:
        return RequestKind.CONTINUATION
    return RequestKind.QUERY


def _queue_kind(method: str, path: str) -> RequestKind:
    segments = path.rstrip("/").split("/")
    if "messages" in segments[-2:]:
        if method == "POST":
            return RequestKind.QUEUE_SEND
        if method == "GET":
            return RequestKind.QUEUE_RECEIVE
        if method == "DELETE":
            return RequestKind.QUEUE_DELETE
    return RequestKind.QUEUE_ADMIN


def _blob_kind(method: str, query: Mapping[str, list[str]]) -> RequestKind:
    comp = query.get("comp", [""])[0]
    if comp == "list":
        return RequestKind.BLOB_LIST
    if query.get("restype", [""])[0] == "container":
        return RequestKind.CONTAINER_ADMIN
    if method == "PUT":
        return RequestKind.BLOB_WRITE
    if method == "DELETE":
        return RequestKind.BLOB_DELETE
    return RequestKind.BLOB_READ


def request_kind(service: StorageService, method: str, url: str) -> RequestKind:
    """The kind of one request of ``service`` (its method and URL)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    method = method.upper()
    if service is StorageService.TABLE:
        return _table_kind(method, parts.path, query)
    if service is StorageService.QUEUE:
        return _queue_kind(method, parts.path)
    return _blob_kind(method, query)


class StorageRequests:
    """A ``request_hook`` that counts every request of the account by :class:`RequestKind`.

    Thread-safe (the app writes from pools). ``snapshot`` and ``since`` let a caller count
    one piece of work: take a snapshot before, ask what was sent since after.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[RequestKind] = Counter()

    def __call__(self, request: Any) -> None:
        service = StorageService(request.context.get(SERVICE_KEY, StorageService.TABLE))
        http = request.http_request
        kind = request_kind(service, http.method, http.url)
        with self._lock:
            self._counts[kind] += 1

    def snapshot(self) -> Counter[RequestKind]:
        with self._lock:
            return Counter(self._counts)

    def forget(self, counts: Counter[RequestKind]) -> None:
        """Take ``counts`` back out (requests a measurement does not attribute to the work)."""
        with self._lock:
            self._counts.subtract(counts)

    def since(self, before: Counter[RequestKind]) -> Counter[RequestKind]:
        """What was sent after ``before`` (a :meth:`snapshot`), per kind."""
        now = self.snapshot()
        return Counter({kind: now[kind] - before[kind] for kind in now if now[kind] > before[kind]})
