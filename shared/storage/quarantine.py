"""The quarantine: usage records that were not stored as usage, and why.

One entity per (reported hour, reason, record). The key is a hash of the record's whole
content (the stored ``Record`` text is cut to ``MAX_TEXT``; the hash is not, so two large
records that differ only late in their text stay two entries), so re-collecting an hour
rewrites the same entities instead of adding copies: the quarantine is as idempotent as the
usage tables. Operators read it per reported hour (``PartitionKey``) and filter on ``Reason``.
Each entry names its ``Source`` (stamp) and ``Subscription`` key, so a rerun of one slice of
one source's hour removes only its own stale entries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.core.hours import hour_key
from shared.core.retry import call_with_retry
from shared.core.usage import UsageRecord, subscription_key
from shared.storage.account import StorageAccount
from shared.storage.table_writer import PartitionWriter

ROLE = "quarantine"
# Table storage keeps at most 32K UTF-16 characters in a string property; stay well inside.
MAX_TEXT = 16_000


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is not stored as usage: a stable reason code and a short detail."""

    reason: str
    detail: str


def _describe(record: UsageRecord) -> str:
    """The record as JSON text, whatever its field types (it may be malformed)."""
    return json.dumps(asdict(record), default=str, sort_keys=True)


class QuarantineBuffer:
    """Collects an hour's rejected records and writes them in batches of one partition."""

    def __init__(self, account: StorageAccount, reported_hour: datetime, source: str = ""):
        self._source = source
        self._partition = hour_key(reported_hour)
        self._table = account.settings.table_name(ROLE)
        self._writer = PartitionWriter(account, parallelism=1)
        self._pending: dict[str, dict[str, Any]] = {}
        self.count = 0
        self.by_reason: dict[str, int] = {}
        # Every RowKey this buffer wrote: what a rerun keeps of the hour's quarantine.
        self.keys: set[str] = set()

    def add(self, record: UsageRecord, rejection: Rejection) -> None:
        text = _describe(record)
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
        row_key = f"{rejection.reason}_{digest}"
        if row_key not in self.keys:
            self.count += 1
            self.by_reason[rejection.reason] = self.by_reason.get(rejection.reason, 0) + 1
            self.keys.add(row_key)
        self._pending[row_key] = {
            "PartitionKey": self._partition,
            "RowKey": row_key,
            "Reason": rejection.reason,
            "Detail": rejection.detail,
            "Record": text[:MAX_TEXT],
            "Source": self._source,
            "Subscription": subscription_key(record)[:1000],
        }
        if len(self._pending) >= 100:
            self._flush()

    def _flush(self) -> None:
        self._writer.write_partition(self._table, list(self._pending.values()))
        self._pending = {}

    def close(self) -> None:
        """Write what is pending and wait for every write; raise the first failure."""
        if self._pending:
            self._flush()
        self._writer.close()


def read_quarantine(
    account: StorageAccount, reported_hour: datetime, select: list[str] | None = None
) -> list[dict[str, Any]]:
    """Every quarantined record of one reported hour (a point partition read; only the
    ``select`` properties when given); none if the table does not exist yet."""

    def query() -> list[dict[str, Any]]:
        try:
            return list(
                account.table(ROLE).query_entities(
                    "PartitionKey eq @pk",
                    parameters={"pk": hour_key(reported_hour)},
                    select=select,
                )
            )
        except ResourceNotFoundError:
            return []

    return call_with_retry(query, what=f"read quarantine {hour_key(reported_hour)}")
