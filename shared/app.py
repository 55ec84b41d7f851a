"""The function app's composition root: every collaborator built once, from settings.

Entry points (``collect_usage``, ``collect_slice``, ``report_to_azure``, ``query_usage``,
``commerce_operations``, ``rate_usage``, ``finalise_statements``, ``export_usage``,
``portal``, ``pipeline_status``, ``observe_pipeline``) hold one
:class:`LazyApp` each; its first use reads the app settings from the environment and
builds a :class:`FunctionApp`, which keeps what is worth keeping between invocations of
one worker process: the storage account (its per-thread table clients and connections),
the thread pool billing reads and writes with, the commerce client (its connections to the
endpoint) and token provider (its cached token), the usage API (its JWKS cache) and the
portal (its files, read once) and the app's telemetry (its instruments, created once; the
metrics of every piece of work are recorded here, one call each, from what the work
returns). Nothing below this module builds any of them behind the
caller's back, so a test builds its own ``FunctionApp`` from its own settings and nothing
process-wide has to be cleared.

This is the one module that sees every capability; the capabilities never import it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import cached_property

from shared.billing.commerce import CommerceClient
from shared.billing.reporter import (
    COMMERCE_CONNECTIONS,
    LEDGER_PARALLELISM,
    ReportResult,
    commerce_client,
    report_message,
)
from shared.billing.tokens import TokenProvider, token_provider_for
from shared.billing.work_items import WorkItem, work_item_deferrer, work_item_enqueuer
from shared.collection.collector import CollectionRun, Collector, HourResult
from shared.collection.planner import Plan, plan_source
from shared.collection.slices import CollectionSlice
from shared.collection.sources import SOURCES, SourceRegistry
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.hours import utc_now
from shared.core.meters import catalogue
from shared.core.telemetry import Telemetry, configure_process
from shared.export.exporter import Exporter, ExportRun
from shared.portal.site import PortalAnswer, PortalRequest, PortalSite
from shared.query import charges_api, cost_query, subscriptions_list
from shared.query.arm_responses import HttpAnswer
from shared.query.charges_api import ChargesApi
from shared.query.continuation import ContinuationCodec
from shared.query.cost_query import CostQueryApi
from shared.query.operations import OperationsApi
from shared.query.route_names import route_family
from shared.query.subscriptions_list import SubscriptionsList
from shared.query.usage_api import HttpCall, UsageApi
from shared.rating.finaliser import Finaliser, FinaliseRun
from shared.rating.rater import Rater, RatingRun
from shared.rating.rollups import Rollups
from shared.rating.statements import Statements
from shared.status.api import StatusApi
from shared.status.observer import observe
from shared.status.reader import PipelineStatus, StatusReader
from shared.storage.account import RequestHook, StorageAccount
from shared.storage.blobs import BlobStore
from shared.storage.watermark import Watermark

log = logging.getLogger(__name__)


class FunctionApp:
    """The collaborators of one function app, built from one settings object."""

    def __init__(
        self,
        settings: Settings,
        *,
        sources: SourceRegistry = SOURCES,
        clock: Callable[[], datetime] = utc_now,
        telemetry: Telemetry | None = None,
        request_hook: RequestHook | None = None,
    ) -> None:
        self.settings = settings
        # ``request_hook`` sees every storage request of the app (``bench cost`` counts them).
        self.account = StorageAccount(settings, request_hook=request_hook)
        self._sources = sources
        self._clock = clock
        # The process's meter provider (Azure Monitor, the console, or none: records
        # nothing) unless a test or benchmark brings its own.
        self.telemetry = telemetry or Telemetry(configure_process(settings))

    @classmethod
    def from_environment(cls) -> FunctionApp:
        """The app the process's app settings describe (ConfigurationError if they are bad)."""
        return cls(Settings.from_process())

    @cached_property
    def _pool(self) -> ThreadPoolExecutor:
        # Kept for the worker's life: each thread keeps its storage clients (per thread in
        # StorageAccount), so billing's reads and ledger writes reuse their connections.
        return ThreadPoolExecutor(LEDGER_PARALLELISM, thread_name_prefix="billing")

    @cached_property
    def _token_provider(self) -> TokenProvider:
        return token_provider_for(self.settings)

    @cached_property
    def _commerce(self) -> CommerceClient:
        # Kept for the worker's life, shared by the work items that run at once: each item
        # reuses a connection (and its TLS session) instead of opening its own.
        return commerce_client(self.settings, self._token_provider, pool_size=COMMERCE_CONNECTIONS)

    @cached_property
    def usage_api(self) -> UsageApi:
        return UsageApi.from_settings(self.settings, self.account)

    @cached_property
    def portal(self) -> PortalSite:
        return PortalSite.from_settings(self.settings)

    @cached_property
    def statements(self) -> Statements:
        return Statements(self.account, catalogue(), clock=self._clock)

    @cached_property
    def rollups(self) -> Rollups:
        return Rollups(self.account, self.statements, clock=self._clock)

    @cached_property
    def rater(self) -> Rater:
        return Rater(self.account, self.settings.source_names(), clock=self._clock)

    @cached_property
    def finaliser(self) -> Finaliser:
        return Finaliser(self.account, self.rater, clock=self._clock)

    @cached_property
    def charges_api(self) -> ChargesApi:
        return ChargesApi(
            account=self.account,
            validator=self.usage_api.validator,  # one JWKS cache for every route
            statements=self.statements,
            rollups=self.rollups,
            meters=catalogue(),
            clock=self._clock,
        )

    @cached_property
    def operations_api(self) -> OperationsApi:
        return OperationsApi(self.usage_api.validator)

    @cached_property
    def cost_query(self) -> CostQueryApi:
        return CostQueryApi(
            validator=self.usage_api.validator,
            statements=self.statements,
            meters=catalogue(),
            codec=ContinuationCodec(
                self.settings.continuation_token_key.get_secret_value().encode("utf-8"),
                self.settings.continuation_token_ttl_seconds,
            ),
            base_url=self.settings.api_base_url,
            clock=self._clock,
        )

    @cached_property
    def subscriptions_list(self) -> SubscriptionsList:
        return SubscriptionsList(self.account, self.usage_api.validator)

    def collector(self, stamp: Settings) -> Collector:
        """A collector of one usage source (``stamp``: its settings, one of ``stamps()``).

        A collector per run or message: it keeps the subscriptions table in memory for that
        work only, so an operator's change between runs is always seen.
        """
        return Collector(
            stamp,
            self.account,
            self._sources.create(stamp),
            after_hour_written=work_item_enqueuer(self.settings, self.account),
            stamps=self.settings.stamps(),
        )

    def collect_due_hours(self, now: datetime | None = None) -> CollectionRun:
        """Every due hour of every source collected here, in order, billing work enqueued
        (the local run and ``ops collect``; the deployed timer fans out instead)."""
        moment = now or self._clock()
        runs = []
        for stamp in self.settings.stamps():
            run = self.collector(stamp).collect_due_hours(moment)
            for hour in run.hours:
                self.telemetry.hour_collected(
                    stamp.source_name, hour.rows, hour.quarantined_by_reason
                )
            runs.append(run)
        return CollectionRun.combined(runs)

    def plan_collection(self, now: datetime | None = None) -> list[Plan]:
        """One ``collect_usage`` timer run: every source's due slices sent to the collection
        queue (``shared.collection.planner``)."""
        moment = now or self._clock()
        return [plan_source(self.collector(stamp), moment) for stamp in self.settings.stamps()]

    def collect_slice_message(self, body: bytes | str) -> HourResult | None:
        """One ``collect_slice`` message: its slice collected, unless already durable (a
        repeated delivery: the hour is closed if nobody did, nothing else). BadInputError
        for a malformed message or a source this app does not have (it ends in the poison
        queue, where an operator sees it)."""
        work = CollectionSlice.from_body(body)
        stamp = next(
            (stamp for stamp in self.settings.stamps() if stamp.source_name == work.source), None
        )
        if stamp is None:
            raise BadInputError(f"collection work item for unknown source {work.source!r}")
        collector = self.collector(stamp)
        if work.part in Watermark(self.account, work.source).done_parts(work.hour):
            collector.closer.close(work.hour)
            return None
        result = collector.collect_slice(work)
        self.telemetry.hour_collected(work.source, result.rows, result.quarantined_by_reason)
        return result

    def report_message(self, body: bytes | str) -> ReportResult:
        """One queue message: its billing work item reported to the commerce endpoint (an
        item whose events wait for their day's rows comes back on the queue later)."""
        result = report_message(
            body,
            self.settings,
            clock=self._clock,
            client=self._commerce,
            account=self.account,
            pool=self._pool,
            defer=self._defer_report,
        )
        self.telemetry.billing_reported(result.states)
        return result

    @cached_property
    def _defer_report(self) -> Callable[[WorkItem, timedelta], None]:
        return work_item_deferrer(self.settings, self.account)

    @cached_property
    def blobs(self) -> BlobStore:
        return self.account.blob_store()

    def exporter(self) -> Exporter:
        """The exporter over this app's storage (``python -m ops export`` uses it too)."""
        return Exporter(self.account, self.blobs, clock=self._clock)

    def export(self) -> list[ExportRun]:
        """One export_usage run: every configured export's due months (see ``due_months``)."""
        runs = self.exporter().run_due(execution="Scheduled")
        for run in runs:
            self.telemetry.export_written(run.config, run.rows)
        return runs

    def answer_usage_request(self, call: HttpCall) -> HttpAnswer:
        """One ``query_usage`` request (the usage API, the subscriptions list, the cost query,
        or the RateCard and statement routes under the same catch-all); never raises (errors
        become ARM-shaped answers)."""
        started = time.perf_counter()
        if subscriptions_list.handles(call.route_path):
            answer = self.subscriptions_list.answer(call)
        elif cost_query.handles(call.route_path):
            answer = self.cost_query.answer(call)
        elif charges_api.handles(call.route_path):
            answer = self.charges_api.answer(call)
        else:
            answer = self.usage_api.answer(call)
        self.telemetry.api_answered(
            route_family(call.route_path), answer.status, time.perf_counter() - started
        )
        return answer

    @cached_property
    def status_reader(self) -> StatusReader:
        """The one reader of the pipeline's stored state (``ops status``, the route, the
        timer, the chaos benchmark)."""
        return StatusReader(self.settings, self.account, blobs=self.blobs, clock=self._clock)

    @cached_property
    def status_api(self) -> StatusApi:
        return StatusApi(
            reader=self.status_reader, validator=self.usage_api.validator, clock=self._clock
        )

    def answer_status_request(self, call: HttpCall) -> HttpAnswer:
        """One request for the admin status route; never raises."""
        started = time.perf_counter()
        answer = self.status_api.answer(call)
        self.telemetry.api_answered("pipelineStatus", answer.status, time.perf_counter() - started)
        return answer

    def observe_pipeline(
        self, now: datetime | None = None, *, reconcile: bool = True
    ) -> PipelineStatus:
        """One ``observe_pipeline`` timer run: the objectives observed (kept, and sent as
        gauges), the previous UTC day reconciled first once it is collected and billed."""
        moment = now or self._clock()
        commerce = self._commerce if reconcile else None
        return observe(self.status_reader, self.telemetry, moment, reconcile_with=commerce)

    def answer_operations_request(self, call: HttpCall) -> HttpAnswer:
        """One ``commerce_operations`` request (ARM's operations list); never raises."""
        started = time.perf_counter()
        answer = self.operations_api.answer(call)
        self.telemetry.api_answered("operations", answer.status, time.perf_counter() - started)
        return answer

    def answer_portal_request(self, request: PortalRequest) -> PortalAnswer:
        """One request for the portal's page or files; never raises."""
        return self.portal.answer(request)

    def rate_usage(self) -> RatingRun:
        """One ``rate_usage`` timer run: every durable reported hour not rated yet, rated
        into the ledger of charges within the configured time budget (the next run
        continues); open months re-rated first if a price sheet was stored since.

        A timer of rating's own, not a step of collection: rating counts tiers in
        reported-hour order, which one sequential run keeps, and a rating fault never
        holds collection back (``shared.rating.rater``)."""
        return self.rater.rate_due(self.settings.rating_time_budget_seconds)

    def finalise_statements(self) -> FinaliseRun:
        """One ``finalise_statements`` timer run: freeze the ledger of every month rating
        has closed and not finalised yet, within the configured time budget (the next run
        continues).

        Its own timer rather than a step of collection or rating: a month-end gets its own
        time budget and failure domain, and never delays or shortens either."""
        return self.finaliser.finalise_due(self.settings.statements_time_budget_seconds)


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
