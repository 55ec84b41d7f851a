"""The local host's queue trigger and queue output bindings.

Mirrors the Storage Queues extension v5 with ``host.json`` ``extensions.queues``:
    Creates the queue if absent; polls with exponential backoff up to ``maxPollingInterval``
    while idle; receives up to ``batchSize`` messages and fetches the next batch once at most
    ``newBatchThreshold`` (default ``batchSize // 2``) are in flight; decodes base64 message
    text (``messageEncoding``, default base64; ``none`` passes text through); calls ``main``
    with a real ``azure.functions.queue.QueueMessage`` (``dequeue_count`` and times set).
    Success deletes the message. Failure makes it visible again after ``visibilityTimeout``;
    at ``maxDequeueCount`` (default 5) the ORIGINAL message text moves to ``<queue>-poison``
    (created on demand) and the message is deleted. A body that is not valid base64 is a
    failed invocation, so it too ends in the poison queue.

Queue output bindings send base64 text (or plain text with ``messageEncoding: none``), only
after the function succeeded.

The behaviour is ``_QueueTriggers``, a mixin of ``LocalFunctionsHost`` (in ``app``); the
annotations at the top of the class name the host state it uses. The host starts one
``_queue_loop`` thread per queue function.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageQueueMessage

from devstack.host.config import HostConfigurationError, _Function, _HostOptions

if TYPE_CHECKING:
    from devstack.host.app import Invocation, _Out

# Azurite's well-known development account, for "UseDevelopmentStorage=true" (not a secret).
_DEV_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
    "KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
)
# How long a received message stays invisible while its invocation runs (the real host uses
# 10 minutes and renews; locally an invocation that long is a bug worth seeing redelivered).
_RECEIVE_VISIBILITY_SECONDS = 600
_MIN_POLL_SECONDS = 0.05


class _QueueTriggers:
    """Polls each queue function's queue, invokes it per message and settles the message."""

    # Owned by LocalFunctionsHost.
    settings: dict[str, str]
    options: _HostOptions
    log: logging.Logger
    _stopping: threading.Event
    _executors: list[ThreadPoolExecutor]

    if TYPE_CHECKING:

        def _invoke(self, fn: _Function, trigger_value: Any, detail: str = "") -> Invocation: ...

    # -- clients --

    def _queue_client(self, fn: _Function, binding: Mapping[str, Any] | None = None) -> QueueClient:
        binding = binding or fn.trigger
        setting = str(binding.get("connection") or "AzureWebJobsStorage")
        return self._client_for(setting, str(binding["queueName"]), fn.name)

    def _client_for(self, setting: str, queue_name: str, function: str) -> QueueClient:
        value = self.settings.get(setting)
        if value:
            if value.strip().lower().rstrip(";") == "usedevelopmentstorage=true":
                value = _DEV_STORAGE
            return QueueClient.from_connection_string(value, queue_name)
        service_uri = self.settings.get(f"{setting}__queueServiceUri")
        if service_uri:
            from azure.identity import DefaultAzureCredential  # only identity-based apps need it

            credential = DefaultAzureCredential(
                managed_identity_client_id=self.settings.get(f"{setting}__clientId")
            )
            return QueueClient(service_uri, queue_name, credential=credential)
        raise HostConfigurationError(
            f"{function}: connection setting {setting!r} is not set "
            f"(nor {setting}__queueServiceUri)"
        )

    @staticmethod
    def _ensure_queue(client: QueueClient) -> None:
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()

    # -- output bindings --

    def _send_queue_outputs(self, fn: _Function, outputs: Mapping[str, _Out], result: Any) -> None:
        """Queue output bindings: base64 text, sent only after the function succeeded."""
        for binding in fn.outputs():
            if binding.get("type") != "queue":
                continue
            value = result if binding["name"] == "$return" else outputs[binding["name"]].get()
            if value is None:
                continue
            items = value if isinstance(value, list | tuple) else [value]
            client = self._queue_client(fn, binding)
            for item in items:
                if isinstance(item, func.QueueMessage):
                    item = item.get_body()
                data = item.encode() if isinstance(item, str) else bytes(item)
                client.send_message(self._encode(data))

    def _encode(self, data: bytes) -> str:
        if self.options.queues.message_encoding == "none":
            return data.decode("utf-8")
        return base64.b64encode(data).decode("ascii")

    # -- the trigger --

    def _queue_loop(self, fn: _Function, client: QueueClient) -> None:
        options = self.options.queues
        executor = ThreadPoolExecutor(
            max_workers=options.batch_size + options.threshold,
            thread_name_prefix=f"host-queue-{fn.name}",
        )
        self._executors.append(executor)
        in_flight = 0
        settled = threading.Condition()

        def done(_: object) -> None:
            nonlocal in_flight
            with settled:
                in_flight -= 1
                settled.notify_all()

        delay = _MIN_POLL_SECONDS
        created = False
        while not self._stopping.is_set():
            with settled:
                while in_flight > options.threshold and not self._stopping.is_set():
                    settled.wait(0.1)
            if self._stopping.is_set():
                break
            try:
                if not created:
                    self._ensure_queue(client)
                    created = True
                messages = list(
                    client.receive_messages(
                        messages_per_page=options.batch_size,
                        max_messages=options.batch_size,
                        visibility_timeout=_RECEIVE_VISIBILITY_SECONDS,
                    )
                )
            except Exception as error:  # storage down or refusing: back off, never die
                self.log.warning("Queue %s: polling failed: %r", client.queue_name, error)
                messages = []
            if not messages:
                self._stopping.wait(delay)
                delay = min(delay * 2, max(options.max_polling_interval, _MIN_POLL_SECONDS))
                continue
            delay = _MIN_POLL_SECONDS
            for message in messages:
                with settled:
                    in_flight += 1
                future = executor.submit(self._process_message, fn, client, message)
                future.add_done_callback(done)

    def _process_message(
        self, fn: _Function, client: QueueClient, message: StorageQueueMessage
    ) -> None:
        options = self.options.queues
        raw = message.content if isinstance(message.content, str) else str(message.content)
        detail = f" id={message.id} dequeue_count={message.dequeue_count}"
        try:
            if options.message_encoding == "base64":
                body = base64.b64decode("".join(raw.split()), validate=True)
            else:
                body = raw.encode("utf-8")
        except (binascii.Error, ValueError) as error:
            self.log.error(
                "Executed 'Functions.%s' (Failed (%s), trigger=queueTrigger): message is not "
                "base64 (host.json messageEncoding)%s",
                fn.name,
                type(error).__name__,
                detail,
            )
            succeeded = False
        else:
            trigger = TriggerQueueMessage(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            succeeded = self._invoke(fn, trigger, detail).succeeded
        try:
            if succeeded:
                client.delete_message(message.id, message.pop_receipt)
            elif (message.dequeue_count or 0) >= options.max_dequeue_count:
                poison = self._client_for(
                    str(fn.trigger.get("connection") or "AzureWebJobsStorage"),
                    f"{client.queue_name}-poison",
                    fn.name,
                )
                self._ensure_queue(poison)
                poison.send_message(raw)  # the original text, still encoded
                client.delete_message(message.id, message.pop_receipt)
                self.log.warning(
                    "Message %s moved to %s after %s attempts",
                    message.id,
                    poison.queue_name,
                    message.dequeue_count,
                )
            else:
                client.update_message(
                    message.id,
                    message.pop_receipt,
                    visibility_timeout=int(options.visibility_timeout),
                )
        except AzureError as error:
            # The message reappears when its receive visibility ends: at-least-once.
            self.log.warning(
                "Queue %s: settling %s failed: %s", client.queue_name, message.id, error
            )
