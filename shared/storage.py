"""Table and queue clients for the app's storage account, built from the settings.

Two ways in, as the Functions host itself supports them: a connection string (Azurite
locally) or identity-based service URIs (``AzureWebJobsStorage__tableServiceUri`` with a
managed identity in Azure, no keys in settings). The SDK's retry policy is off: retries
live in ``shared.retry`` so they are capped, jittered and named in one place.

Tables, by role (the name is ``{USAGE_TABLE_PREFIX}{role}``):

- ``hourly``: usage rows per (reported hour, subscription) partition;
- ``daily``: usage rows per (reported day, subscription) partition;
- ``hours``: one entity per (reported hour, subscription) that has rows: what was written;
- ``subscriptions``, ``state`` (watermarks), ``quarantine``, ``ledger``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient

from shared.config import Settings
from shared.retry import call_with_retry

TABLE_ROLES = ("hourly", "daily", "hours", "subscriptions", "state", "quarantine", "ledger")

# Seconds; a storage call that takes longer than this is treated as a transient fault.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30


def _client_options() -> dict[str, Any]:
    return {"retry_total": 0, "connection_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}


class StorageAccount:
    """Builds and caches table clients; one per (role, thread) for parallel writers."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = threading.local()

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
                settings.storage_connection_string.get_secret_value(), **_client_options()
            )
        from azure.identity import ManagedIdentityCredential

        assert settings.table_service_uri is not None  # guaranteed by Settings validation
        credential = ManagedIdentityCredential(client_id=settings.storage_client_id)
        return TableServiceClient(
            endpoint=settings.table_service_uri, credential=credential, **_client_options()
        )

    def table(self, role: str) -> TableClient:
        """This thread's client for the table of ``role``."""
        clients: dict[str, TableClient] | None = getattr(self._local, "tables", None)
        if clients is None:
            clients = {}
            self._local.tables = clients
        client = clients.get(role)
        if client is None:
            client = self._service().get_table_client(self.settings.table_name(role))
            clients[role] = client
        return client

    def ensure_tables(self, roles: Iterable[str] = TABLE_ROLES) -> None:
        """Create the tables if they are missing (idempotent; a race with another run is fine)."""
        for role in roles:
            name = self.settings.table_name(role)

            def create(name: str = name) -> None:
                # Another run or an earlier one created it: that is what we wanted.
                with contextlib.suppress(ResourceExistsError):
                    self._service().create_table(name)

            call_with_retry(create, what=f"create table {name}")
