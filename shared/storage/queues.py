"""Queue clients for the app's storage account, and the Functions queue message encoding.

The Functions queue trigger reads message text as base64 (``host.json``
``messageEncoding: base64``), so producers encode the JSON themselves and send plain text:
the clients built here have no encode policy, which also lets the operator's re-enqueue move
a poison message's text unchanged. Two ways in, like ``shared.storage.account``: a connection string
(Azurite) or the identity-based queue service URI. The SDK's retries are off; callers retry
with ``shared.core.retry``.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.core.config import Settings
from shared.core.errors import ConfigurationError
from shared.core.retry import call_with_retry
from shared.storage.timeouts import CONNECT_TIMEOUT, READ_TIMEOUT

POISON_SUFFIX = "-poison"  # the Functions host's name for a queue's poison queue


def queue_client(
    settings: Settings,
    queue_name: str,
    *,
    request_hook: Callable[[Any], None] | None = None,
) -> QueueClient:
    """A client for ``queue_name`` that sends and receives text as is.

    The app's own work reaches queues through ``StorageAccount.queue``, which passes its
    ``request_hook`` (every request counted with the account's others)."""
    options: dict[str, Any] = {
        "retry_total": 0,
        "connection_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
    }
    if request_hook is not None:
        options["raw_request_hook"] = request_hook
    if settings.storage_connection_string is not None:
        return QueueClient.from_connection_string(
            settings.storage_connection_string.get_secret_value(), queue_name, **options
        )
    if settings.queue_service_uri is None:
        raise ConfigurationError(
            "set AzureWebJobsStorage or AzureWebJobsStorage__queueServiceUri for the queues"
        )
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential(client_id=settings.storage_client_id)
    return QueueClient(settings.queue_service_uri, queue_name, credential=credential, **options)


def ensure_queue(client: QueueClient) -> None:
    """Create the queue unless it exists (a race with another producer is fine)."""

    def create() -> None:
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()

    call_with_retry(create, what=f"create queue {client.queue_name}")


def send_text(client: QueueClient, text: str, *, what: str) -> None:
    """Send ``text``: one request. A queue that does not exist yet (a fresh local stack; in
    Azure the Bicep creates every queue) is created on the send's 404 and the send made
    again, so no send pays a create ahead of it."""

    def send() -> None:
        try:
            client.send_message(text)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            client.send_message(text)

    call_with_retry(send, what=what)


def encode_body(text: str) -> str:
    """Message text the Functions trigger decodes back to ``text`` (base64 of UTF-8)."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
