"""Table, queue and blob clients for the app's storage account, built from the settings.

Two ways in, as the Functions host itself supports them: a connection string (Azurite
locally) or identity-based service URIs (``AzureWebJobsStorage__tableServiceUri`` with a
managed identity in Azure, no keys in settings). The SDK's retry policy is off: retries
live in ``shared.core.retry`` so they are capped, jittered and named in one place.

Usage rows live in one table per tenant subscription (``shared.storage.usage_rows``); the app's
other tables, by role (the name is ``{USAGE_TABLE_PREFIX}{role}``):

- ``hours``: one entity per (reported hour, subscription) that has rows: what was written;
- ``activity``: which of a provider's tenants had rows in a reported day;
- ``summaries``: an hour's chargeable sums per (billing resource, dimension);
- ``subscriptions``, ``state`` (watermarks), ``quarantine``, ``ledger``;
- ``prices`` (price sheets), ``charges`` (which subscriptions have rated charges in a month;
  the charges themselves live in each subscription's table), ``costdigests`` (each
  subscription's billed money of a month, where a provider's cost query reads it) and
  ``adjustments`` (credits, corrections, one-off charges), written by ``shared.rating``;
- ``exports``: export configurations (``shared.export.configs``).

Every client the account builds (tables here, queues by :meth:`StorageAccount.queue`, blobs
by :meth:`StorageAccount.blob_store`) sends its requests past the one ``request_hook``, each
tagged with its service: what ``shared.storage.request_count`` counts the whole bill with.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient

from shared.core.config import Settings
from shared.core.http_environment import transport_options
from shared.core.retry import call_with_retry
from shared.storage.blobs import BlobStore
from shared.storage.queues import queue_client
from shared.storage.request_count import SERVICE_KEY, StorageService
from shared.storage.timeouts import CONNECT_TIMEOUT, READ_TIMEOUT
from shared.storage.transport import TablesTransport, tables_transport

RequestHook = Callable[[Any], None]

TABLE_ROLES = (
    "hours",
    "subscriptions",
    "state",
    "quarantine",
    "ledger",
    "activity",
    "summaries",
    "prices",
    "charges",
    "costdigests",
    "adjustments",
    "exports",
)

CLIENTS_PER_THREAD = 32


def _client_options(
    settings: Settings, endpoint: str, request_hook: RequestHook | None = None
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "retry_total": 0,
        "connection_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        # The settings' proxies and CA bundle, resolved once (not on every request).
        **transport_options(endpoint, settings),
    }
    if request_hook is not None:
        options["raw_request_hook"] = request_hook
    return options


class StorageAccount:
    """Builds and caches table clients; one per (role, thread) for parallel writers.

    ``request_hook`` (azure-core's ``raw_request_hook``) sees every request before it is
    sent, of the tables, the queues and the blobs the account's clients reach: the
    storage-level counter that proves which tables a read touches and what a piece of work
    costs (``shared.storage.request_count``). ``transport`` sends transactions and queries
    on the table clients (``TABLES_TRANSPORT``; both transports send through the clients'
    pipeline, so the hook sees them alike).
    """

    def __init__(self, settings: Settings, *, request_hook: RequestHook | None = None):
        self.settings = settings
        self.transport: TablesTransport = tables_transport(settings.tables_transport)
        self._request_hook = request_hook
        self._local = threading.local()

    def hook_for(self, service: StorageService) -> RequestHook | None:
        """The request hook of ``service``'s clients: the account's, each request tagged
        with its service (None without a hook: the clients run no hook at all)."""
        hook = self._request_hook
        if hook is None:
            return None

        def tagged(request: Any) -> None:
            request.context[SERVICE_KEY] = service.value
            hook(request)

        return tagged

    def queue(self, name: str) -> QueueClient:
        """A client for queue ``name`` (``shared.storage.queues``), its requests seen by the
        account's hook."""
        return queue_client(self.settings, name, request_hook=self.hook_for(StorageService.QUEUE))

    def blob_store(self) -> BlobStore:
        """The account's blob service (``shared.storage.blobs``), its requests seen by the
        account's hook."""
        return BlobStore(self.settings, request_hook=self.hook_for(StorageService.BLOB))

    def _service(self) -> TableServiceClient:
        service: TableServiceClient | None = getattr(self._local, "service", None)
        if service is None:
            service = self._build_service()
            self._local.service = service
        return service

    def _build_service(self) -> TableServiceClient:
        settings = self.settings
        if settings.storage_connection_string is not None:
            return TableServiceClient.from_connection_string(
                settings.storage_connection_string.get_secret_value(),
                **_client_options(settings, self._endpoint, self.hook_for(StorageService.TABLE)),
            )
        from azure.identity import ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=settings.storage_client_id)
        return TableServiceClient(
            endpoint=self._endpoint,
            credential=credential,
            **_client_options(settings, self._endpoint, self.hook_for(StorageService.TABLE)),
        )

    @cached_property
    def _endpoint(self) -> str:
        """The table service's URL (a connection string names it in one of several forms:
        the SDK reads it), once per account rather than once per thread's client."""
        if self.settings.storage_connection_string is None:
            assert self.settings.table_service_uri is not None  # guaranteed by Settings
            return self.settings.table_service_uri
        secret = self.settings.storage_connection_string.get_secret_value()
        return TableServiceClient.from_connection_string(secret).url

    def table(self, role: str) -> TableClient:
        """This thread's client for the app table of ``role``."""
        return self.table_named(self.settings.table_name(role))

    def table_named(self, name: str) -> TableClient:
        """This thread's client for the table ``name`` (clients share one connection pool).

        Clients are cached per thread in a small LRU: the app's own tables stay hot, while
        the thousands of per-subscription tables a run touches do not pile up in memory.
        """
        clients: OrderedDict[str, TableClient] | None = getattr(self._local, "tables", None)
        if clients is None:
            clients = OrderedDict()
            self._local.tables = clients
        client = clients.get(name)
        if client is None:
            client = self._service().get_table_client(name)
            clients[name] = client
            if len(clients) > CLIENTS_PER_THREAD:
                clients.popitem(last=False)
        else:
            clients.move_to_end(name)
        return client

    def create_table(self, name: str) -> None:
        """Create table ``name`` unless it exists (a race with another writer is fine)."""

        def create() -> None:
            # Another run or an earlier one created it: that is what we wanted.
            with contextlib.suppress(ResourceExistsError):
                self._service().create_table(name)

        call_with_retry(create, what=f"create table {name}")

    def ensure_tables(self, roles: Iterable[str] = TABLE_ROLES) -> None:
        """Create the tables if they are missing (idempotent; a race with another run is fine)."""
        for role in roles:
            self.create_table(self.settings.table_name(role))
