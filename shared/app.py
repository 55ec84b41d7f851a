"""The function app's composition root: every collaborator built once, from settings.

Entry points (``collect_usage``, ``report_to_azure``, ``query_usage``) hold one
:class:`LazyApp` each; its first use reads the app settings from the environment and
builds a :class:`FunctionApp`, which keeps what is worth keeping between invocations of
one worker process: the storage account (its per-thread table clients and connections),
the thread pool billing reads and writes with, the commerce token provider (its cached
token) and the usage API (its JWKS cache). Nothing below this module builds any of them
behind the caller's back, so a test builds its own ``FunctionApp`` from its own settings
and nothing process-wide has to be cleared.

This is the one module that sees every capability; the capabilities never import it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import cached_property

from shared.billing.reporter import (
    LEDGER_PARALLELISM,
    ReportResult,
    commerce_client,
    report_message,
)
from shared.billing.tokens import TokenProvider, token_provider_for
from shared.billing.work_items import work_item_enqueuer
from shared.collection.collector import CollectionRun, Collector
from shared.collection.sources import SOURCES, SourceRegistry
from shared.core.config import Settings
from shared.core.hours import utc_now
from shared.query.arm_responses import HttpAnswer
from shared.query.usage_api import HttpCall, UsageApi
from shared.storage.account import StorageAccount


class FunctionApp:
    """The collaborators of one function app, built from one settings object."""

    def __init__(
        self,
        settings: Settings,
        *,
        sources: SourceRegistry = SOURCES,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.account = StorageAccount(settings)
        self._sources = sources
        self._clock = clock

    @classmethod
    def from_environment(cls) -> FunctionApp:
        """The app the process's app settings describe (ConfigurationError if they are bad)."""
        return cls(Settings.from_environ(os.environ))

    @cached_property
    def _pool(self) -> ThreadPoolExecutor:
        # Kept for the worker's life: each thread keeps its storage clients (per thread in
        # StorageAccount), so billing's reads and ledger writes reuse their connections.
        return ThreadPoolExecutor(LEDGER_PARALLELISM, thread_name_prefix="billing")

    @cached_property
    def _token_provider(self) -> TokenProvider:
        return token_provider_for(self.settings)

    @cached_property
    def usage_api(self) -> UsageApi:
        return UsageApi.from_settings(self.settings, self.account)

    def collect_due_hours(self, now: datetime | None = None) -> CollectionRun:
        """One timer run: every due hour from the configured source, billing work enqueued.

        A collector per run: it keeps the subscriptions table in memory for the run only,
        so an operator's change between runs is always seen.
        """
        collector = Collector(
            self.settings,
            self.account,
            self._sources.create(self.settings),
            after_hour_written=work_item_enqueuer(self.settings, self.account),
        )
        return collector.collect_due_hours(now or self._clock())

    def report_message(self, body: bytes | str) -> ReportResult:
        """One queue message: its billing work item reported to the commerce endpoint."""
        with commerce_client(self.settings, self._token_provider) as client:
            return report_message(
                body,
                self.settings,
                clock=self._clock,
                client=client,
                account=self.account,
                pool=self._pool,
            )

    def answer_usage_request(self, call: HttpCall) -> HttpAnswer:
        """One usage API request; never raises (errors become ARM-shaped answers)."""
        return self.usage_api.answer(call)


class LazyApp:
    """An entry point's app: built on first use, then reused by every invocation.

    Lazy because app settings are read when the worker first invokes the function, not at
    import (a bad setting must become a logged failure or an ARM 500, not an import error).
    Thread-safe: the first concurrent invocations build it once.
    """

    def __init__(self, build: Callable[[], FunctionApp] = FunctionApp.from_environment) -> None:
        self._build = build
        self._app: FunctionApp | None = None
        self._lock = threading.Lock()

    def __call__(self) -> FunctionApp:
        app = self._app
        if app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._build()
                app = self._app
        return app
