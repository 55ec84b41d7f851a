"""One export run: a billing period's FOCUS rows written as a complete, replaceable file set.

**Cost Management layout** (``spec/focus-export.md``)::

    {container}/{root}/{export}/{YYYYMMDD-YYYYMMDD}/{YYYYMMDDHHmm}/{runId}/part_0_0001.parquet
                                                                   .../manifest.json

The period folder is the billing month (first day - last day), the same for every run of
that month, so "the latest run of the period" is well defined. The run id is a GUID whose
leading digits are the run's start in milliseconds (UUID version 7, ``run_id_at``), so the
run folders ``{YYYYMMDDHHmm}/{runId}`` sort by start time even within one minute (a random
GUID sorted the same-minute runs by chance). Order of a run:

1. every part is uploaded into the run's own new folder (a reader ignores folders without
   a ``manifest.json``);
2. ``manifest.json`` is written **last**: the run is now complete;
3. then the run looks at the period: if a run that started later is complete already (its
   manifest is there), this one is stale and deletes its own folder; otherwise it deletes
   the older runs of the period (``OverwritePreviousReport``), complete or not.

So two runs of a month, one after the other or racing, leave exactly the one that started
last: whichever finishes second sees the other's manifest (storage lists what was written
before the listing), and a newer run that deleted an older run's parts while it was still
uploading is never followed by that older run's manifest staying behind. A run that dies
before step 2 leaves the previous run complete and readable (and its own partial folder,
which the next complete run removes); one that dies in step 3 leaves two complete runs, the
newer one read first. Invariant 11: the same stored usage gives the same rows, in the same
order.

**FinOps hubs layout**:
``{container}/{root}/Costs/{yyyy}/{mm}/{scope}/{ingestionId}__part_0_0001.parquet``, then an
empty ``manifest.json`` in that folder, which starts the hub's ingestion; a newer ingestion id
replaces the older files of the folder (the hub does that on its side; the older blobs are
deleted here after the manifest, as above).

Rows visible to an export are the ledger's: usage reported at or before the ``rated``
mark, rated once by ``shared.rating`` (an export never rates), and the month's adjustments.
Which subscriptions: those the charges index lists for the month (never a table with
nothing in it); at which level and figures: ``shared.export.configs`` (scope) and
``shared.export.focus`` (grain, figures).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Final

from shared.core.hours import utc_now
from shared.core.meters import MeterCatalogue, catalogue
from shared.export.configs import ExportConfig, ExportConfigs, Layout
from shared.export.files import PART_ROWS, ROW_GROUP_ROWS, PartWriter, WrittenBlob
from shared.export.focus import OPERATOR_NAME, Buyer, SubscriptionMonth
from shared.rating.adjustments import Adjustment, AdjustmentStore
from shared.rating.engine import Level, Month, PriceBook
from shared.rating.ledger import ChargeLedger
from shared.rating.marks import RatingMarks
from shared.rating.sheet_store import SheetStore
from shared.storage.account import StorageAccount
from shared.storage.blobs import BlobStore
from shared.storage.subscriptions import Subscription, SubscriptionStore

log = logging.getLogger(__name__)

MANIFEST: Final = "manifest.json"
MANIFEST_VERSION: Final = "2024-04-01"
DATA_VERSION: Final = "1.2-preview"
API_VERSION: Final = "2023-07-01-preview"
EXPORT_TYPE: Final = "FocusCost"
# Cost Management re-exports the previous month on the first days of a month (days 1-5).
PREVIOUS_MONTH_DAYS: Final = 5
# Without any price sheet there is no currency; the costs are then all 0, NotPriced.
NO_SHEET_CURRENCY: Final = "USD"

Progress = Callable[[int, int, int], None]  # (subscriptions done, of, rows so far)


@dataclass
class ExportRun:
    """What one run wrote."""

    config: str
    period: str  # YYYY-MM
    folder: str  # container/... of the run (where manifest.json is)
    run_id: str
    blobs: list[WrittenBlob] = field(default_factory=list)
    rows: int = 0
    subscriptions: int = 0
    removed: int = 0  # blobs of older runs deleted
    superseded: bool = False  # a run that started later was complete first: this one is gone
    rejected: list[str] = field(default_factory=list)  # rows left out: a value did not fit

    def summary_line(self) -> str:
        left_out = f"; {len(self.rejected)} row(s) left out (logged)" if self.rejected else ""
        if self.superseded:
            return (
                f"export {self.config} {self.period}: run {self.run_id} removed, a run that "
                f"started later finished first{left_out}"
            )
        return (
            f"export {self.config} {self.period}: {self.rows} rows in {len(self.blobs)} "
            f"file(s) at {self.folder} ({self.subscriptions} subscriptions; "
            f"{self.removed} older blob(s) removed{left_out})"
        )


_last_id = 0  # the newest run id made in this process (as an integer), for ``run_id_at``
_id_lock = threading.Lock()


def run_id_at(started: datetime) -> str:
    """A new run id: a UUID version 7 (RFC 9562) of ``started``, so ids sort as the runs
    started, to the millisecond; within one millisecond in one process, each id is the
    previous one plus one, so the later run still sorts last."""
    global _last_id
    millis = int(started.timestamp() * 1000)
    value = (millis << 80) | (0x7 << 76) | (secrets.randbits(12) << 64)
    value |= (0b10 << 62) | secrets.randbits(62)
    with _id_lock:
        if value <= _last_id:
            value = _last_id + 1
        _last_id = value
    return str(uuid.UUID(int=value))


def zulu(moment: datetime) -> str:
    """ISO 8601 UTC with seconds and ``Z`` (FOCUS's and Cost Management's date-time text)."""
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def period_folder(month: Month) -> str:
    return f"{month.first_hour:%Y%m%d}-{month.last_hour:%Y%m%d}"


def time_frame(month: Month, now: datetime) -> str:
    current = Month.of(now)
    if month == current:
        return "MonthToDate"
    return "TheLastMonth" if month == current.previous else "Custom"


def due_months(now: datetime) -> list[Month]:
    """The months a scheduled run exports: this one, and the previous one on days 1-5."""
    current = Month.of(now)
    if now.day <= PREVIOUS_MONTH_DAYS:
        return [current.previous, current]
    return [current]


@dataclass(frozen=True, slots=True)
class _Names:
    """Where a run writes: its folder, manifest and parts; what it keeps and cleans after."""

    folder: str
    manifest: str
    part_prefix: str
    extension: str
    clean: str  # the prefix under which the period's runs live
    run_key: str  # this run's place in time order: older runs' keys sort before it
    hubs: bool

    def part(self, number: int) -> str:
        return f"{self.part_prefix}{number:04d}{self.extension}"

    def key_of(self, name: str) -> str | None:
        """The run key of a blob under ``clean`` (None: the folder's shared hubs manifest)."""
        rest = name[len(self.clean) :]
        if self.hubs:
            return rest.split("__", 1)[0] if "__" in rest else None
        return "/".join(rest.split("/")[:2])


class Exporter:
    """Writes export runs (see the module docstring)."""

    def __init__(
        self,
        account: StorageAccount,
        blobs: BlobStore,
        *,
        meters: MeterCatalogue | None = None,
        clock: Callable[[], datetime] = utc_now,
        part_rows: int = PART_ROWS,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        self.account = account
        self.blobs = blobs
        self.meters = meters or catalogue()
        self._clock = clock
        self._part_rows = part_rows
        self._group_rows = row_group_rows

    def run_due(self, *, execution: str = "Scheduled") -> list[ExportRun]:
        """Every configured export, for every due month (the timer's work)."""
        now = self._clock()
        runs = []
        for config in ExportConfigs(self.account).all():
            for month in due_months(now):
                runs.append(self.run(config, month, execution=execution))
        return runs

    def run(
        self,
        config: ExportConfig,
        month: Month,
        *,
        execution: str = "OnDemand",
        progress: Progress | None = None,
    ) -> ExportRun:
        """Export ``month`` (its rows reported so far) for ``config``; see the module docstring."""
        started = self._clock()
        rated = RatingMarks(self.account).rated_through()
        subscriptions = SubscriptionStore(self.account).all()
        book = PriceBook(SheetStore(self.account).all())
        run_id = run_id_at(started)
        names = self._names(config, month, started, run_id)
        run = ExportRun(config.name, str(month), f"{config.container}/{names.folder}", run_id)
        self.blobs.ensure_container(config.container)

        def upload(name: str, file: IO[bytes], content_type: str) -> None:
            self.blobs.upload(config.container, name, file, content_type)

        writer = PartWriter(
            config.file_format,
            names.part,
            upload,
            part_rows=self._part_rows,
            row_group_rows=self._group_rows,
        )
        adjustments = AdjustmentStore(self.account).of_month(month)
        chosen = []
        if rated is not None and rated >= month.first_hour:
            chosen = self._in_scope(config, month, subscriptions, adjustments)
        try:
            for index, subscription_id in enumerate(chosen, start=1):
                written = self._export_subscription(
                    config, subscription_id, month, subscriptions, book, adjustments, writer, run
                )
                run.subscriptions += written > 0
                if progress is not None:
                    progress(index, len(chosen), writer.rows)
            run.blobs = writer.finish()
        except BaseException:
            writer.abort()
            raise
        run.rows = writer.rows
        manifest = self._manifest(config, month, started, run, execution)
        body = json.dumps(manifest, indent=2).encode("utf-8") if manifest else b""
        self.blobs.upload(config.container, names.manifest, body, "application/json")
        self._settle(config.container, names, run)
        log.info(run.summary_line())
        return run

    def _names(self, config: ExportConfig, month: Month, started: datetime, run_id: str) -> _Names:
        extension = config.file_format.extension
        root = f"{config.root_folder}/" if config.root_folder else ""
        if config.layout is Layout.FINOPS_HUBS:
            folder = f"{root}Costs/{month.year:04d}/{month.month:02d}/{config.scope_path}"
            ingestion = f"{started:%Y%m%d%H%M%S}{run_id.replace('-', '')}"
            return _Names(
                folder=folder,
                manifest=f"{folder}/{MANIFEST}",
                part_prefix=f"{folder}/{ingestion}__part_0_",
                extension=extension,
                clean=f"{folder}/",
                run_key=ingestion,
                hubs=True,
            )
        period = f"{root}{config.name}/{period_folder(month)}/"
        run_key = f"{started:%Y%m%d%H%M}/{run_id}"
        return _Names(
            folder=f"{period}{run_key}",
            manifest=f"{period}{run_key}/{MANIFEST}",
            part_prefix=f"{period}{run_key}/part_0_",
            extension=extension,
            clean=period,
            run_key=run_key,
            hubs=False,
        )

    def _in_scope(
        self,
        config: ExportConfig,
        month: Month,
        subscriptions: dict[str, Subscription],
        adjustments: list[Adjustment],
    ) -> list[str]:
        """The subscriptions with charges in ``month`` the export covers, sorted: all of
        them, or a delegated provider's direct tenants."""
        provider = config.provider_id
        index = ChargeLedger(self.account).indexed(month, provider)
        found = {s for subscriptions_of in index.values() for s in subscriptions_of}
        found |= {a.subscription_id for a in adjustments}
        if provider is None:
            return sorted(found)
        return sorted(
            sid
            for sid in found
            if sid in subscriptions
            and (subscriptions[sid].provider_subscription_id or "").lower() == provider
            and sid != provider
        )

    def _export_subscription(
        self,
        config: ExportConfig,
        subscription_id: str,
        month: Month,
        subscriptions: dict[str, Subscription],
        book: PriceBook,
        adjustments: list[Adjustment],
        writer: PartWriter,
        run: ExportRun,
    ) -> int:
        level = Level.RETAIL
        if config.provider_id is None and book.pricing(
            subscription_id, subscriptions, Level.WHOLESALE
        ):
            level = Level.WHOLESALE  # the admin bills a delegated provider's tenant to it
        pricing = book.pricing(subscription_id, subscriptions, level)
        assert pricing is not None  # retail always exists; wholesale was checked above
        buyer = _buyer(config, pricing.buyer, level, subscriptions)
        month_rows = SubscriptionMonth(
            subscriptions.get(subscription_id),
            subscription_id,
            month,
            buyer,
            book.currency or NO_SHEET_CURRENCY,
            self.meters,
        )
        # The month's charge lines: one range read of the ledger (a day's lines per entity).
        days = ChargeLedger(self.account).day_charges(subscription_id, month, level)
        own = [a for a in adjustments if a.subscription_id == subscription_id and a.level is level]
        rows = month_rows.rows(days, own)
        for rejected in month_rows.rejected:
            log.error("export %s %s: row left out: %s", config.name, month, rejected)
        run.rejected.extend(month_rows.rejected)
        for focus_row in rows:
            writer.write(focus_row)
        return len(rows)

    def _manifest(
        self,
        config: ExportConfig,
        month: Month,
        started: datetime,
        run: ExportRun,
        execution: str,
    ) -> dict[str, Any]:
        if config.layout is Layout.FINOPS_HUBS:
            return {}  # FinOps hubs: an empty manifest starts ingestion of the folder
        return {
            "manifestVersion": MANIFEST_VERSION,
            "byteCount": sum(b.byte_count for b in run.blobs),
            "blobCount": len(run.blobs),
            "dataRowCount": run.rows,
            "exportConfig": {
                "exportName": config.name,
                "resourceId": config.resource_id,
                "dataVersion": DATA_VERSION,
                "apiVersion": API_VERSION,
                "type": EXPORT_TYPE,
                "timeFrame": time_frame(month, started),
                "granularity": "Daily",
            },
            "deliveryConfig": {
                "partitionData": True,
                "dataOverwriteBehavior": "OverwritePreviousReport",
                "fileFormat": config.file_format.manifest_format,
                "compressionMode": config.file_format.compression,
                "containerUri": f"{self.blobs.account_url}/{config.container}",
                "rootFolderPath": config.root_folder,
            },
            "runInfo": {
                "executionType": execution,
                "submittedTime": zulu(started),
                "runId": run.run_id,
                "startDate": zulu(month.first_hour),
                "endDate": zulu(month.next.first_hour),
            },
            "blobs": [
                {"blobName": b.name, "byteCount": b.byte_count, "dataRowCount": b.row_count}
                for b in run.blobs
            ],
        }

    def _settle(self, container: str, names: _Names, run: ExportRun) -> None:
        """After this run's manifest: delete this run if a later-started run of the period is
        complete already, else the period's older runs (complete or not). Never a newer
        run's blobs: of two runs racing (the timer and an operator), the one that started
        later is the one kept, whichever finishes first. (FinOps hubs share one manifest,
        so there a run only removes older ingestion ids, as the hub itself replaces them.)"""
        listed = self.blobs.names(container, names.clean)
        keys = [(name, names.key_of(name)) for name in listed]
        newer_complete = not names.hubs and any(
            key is not None and key > names.run_key and name.endswith("/" + MANIFEST)
            for name, key in keys
        )
        if newer_complete:
            own = [name for name, key in keys if key == names.run_key]
            self.blobs.delete(container, own)
            run.superseded = True
            return
        stale = [name for name, key in keys if key is not None and key < names.run_key]
        run.removed = self.blobs.delete(container, stale)


def _buyer(
    config: ExportConfig, buyer_id: str, level: Level, subscriptions: dict[str, Subscription]
) -> Buyer:
    provider = config.provider_id
    buyer = subscriptions.get(buyer_id)
    seller = OPERATOR_NAME  # the admin's export: the operator sells and invoices
    if provider is not None:  # a delegated provider's: the reseller sells and invoices
        owner = subscriptions.get(provider)
        seller = (owner.display_name if owner else "") or f"provider {provider}"
    return Buyer(
        level=level,
        account_id=f"/subscriptions/{buyer_id}",
        account_name=buyer.display_name if buyer else None,
        account_type="Subscription" if level is Level.RETAIL else "Delegated provider",
        seller_name=seller,
    )
