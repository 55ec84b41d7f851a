"""Blob containers of the app's storage account: where exports write their files.

The same two ways in as tables and queues (``shared.storage.account``): the connection
string (Azurite locally: its blob service) or identity-based,
``AzureWebJobsStorage__blobServiceUri`` with the app's managed identity (the Bicep grants
it Storage Blob Data Owner on the account).
The SDK's own retries are off; every call here is retried by ``shared.core.retry``, which
raises ``TransientError`` once it gives up.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from shared.core.config import Settings
from shared.core.errors import ConfigurationError
from shared.core.retry import call_with_retry
from shared.storage.timeouts import CONNECT_TIMEOUT, READ_TIMEOUT

# Files are uploaded in blocks of this size (and in parallel up to UPLOAD_CONCURRENCY), so
# a part of any size is sent without holding it in memory.
BLOCK_SIZE = 8 * 1024 * 1024
UPLOAD_CONCURRENCY = 2


def _options(request_hook: Callable[[Any], None] | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "retry_total": 0,
        "connection_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "max_block_size": BLOCK_SIZE,
        "max_single_put_size": BLOCK_SIZE,
    }
    if request_hook is not None:
        options["raw_request_hook"] = request_hook
    return options


class BlobStore:
    """One storage account's blob service: containers, uploads, listings, deletes.

    ``request_hook`` sees every request (``StorageAccount.blob_store`` passes the account's,
    so the account's counter sees blobs too)."""

    def __init__(self, settings: Settings, *, request_hook: Callable[[Any], None] | None = None):
        self.settings = settings
        self._request_hook = request_hook
        self._lock = threading.Lock()
        self._service: BlobServiceClient | None = None

    def service(self) -> BlobServiceClient:
        with self._lock:
            if self._service is None:
                self._service = self._build()
            return self._service

    def _build(self) -> BlobServiceClient:
        settings = self.settings
        if settings.storage_connection_string is not None:
            return BlobServiceClient.from_connection_string(
                settings.storage_connection_string.get_secret_value(),
                **_options(self._request_hook),
            )
        if settings.blob_service_uri is None:
            raise ConfigurationError(
                "exports need blob storage: set AzureWebJobsStorage or "
                "AzureWebJobsStorage__blobServiceUri"
            )
        from azure.identity import ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=settings.storage_client_id)
        return BlobServiceClient(
            settings.blob_service_uri, credential=credential, **_options(self._request_hook)
        )

    @property
    def account_url(self) -> str:
        return str(self.service().url).rstrip("/")

    def container(self, name: str) -> ContainerClient:
        return self.service().get_container_client(name)

    def ensure_container(self, name: str) -> None:
        def create() -> None:
            with contextlib.suppress(ResourceExistsError):
                self.container(name).create_container()

        call_with_retry(create, what=f"create container {name}")

    def upload(self, container: str, name: str, data: IO[bytes] | bytes, content_type: str) -> None:
        """Write blob ``name`` whole (replacing it); a stream is rewound before each attempt."""

        def put() -> None:
            if not isinstance(data, bytes):
                data.seek(0)
            self.container(container).upload_blob(
                name,
                data,
                overwrite=True,
                max_concurrency=UPLOAD_CONCURRENCY,
                content_settings=ContentSettings(content_type=content_type),
            )

        call_with_retry(put, what=f"upload {container}/{name}")

    def names(self, container: str, prefix: str) -> list[str]:
        """Every blob name under ``prefix`` (none if the container does not exist)."""

        def read() -> list[str]:
            try:
                return sorted(self.container(container).list_blob_names(name_starts_with=prefix))
            except ResourceNotFoundError:
                return []

        return call_with_retry(read, what=f"list {container}/{prefix}")

    def read(self, container: str, name: str) -> bytes | None:
        """The blob's bytes, or None if it does not exist."""

        def get() -> bytes | None:
            try:
                return bytes(self.container(container).download_blob(name).readall())
            except ResourceNotFoundError:
                return None

        return call_with_retry(get, what=f"read {container}/{name}")

    def delete(self, container: str, names: Iterator[str] | list[str]) -> int:
        """Delete each blob (one already gone counts as deleted); returns how many."""
        count = 0
        for name in names:

            def remove(blob: str = name) -> None:
                with contextlib.suppress(ResourceNotFoundError):
                    self.container(container).delete_blob(blob)

            call_with_retry(remove, what=f"delete {container}/{name}")
            count += 1
        return count
