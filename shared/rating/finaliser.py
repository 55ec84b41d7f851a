"""Finalising: a closed month's ledger frozen, so its statements never change again.

A month **closes** when rating has passed its last reported hour (the ``rated`` mark, which
never passes ``collected_through``): every row reported in it is collected, durable and
rated. The ``finalise_statements`` timer (``STATEMENTS_SCHEDULE``; its own time budget and
failure domain, so a month-end never delays collection or rating) then finalises every
closed month after the ``finalised`` mark, oldest first:

1. the month's adjustments are closed (``AdjustmentStore.close``): none can be added after;
2. every subscription with charges in the month (the charges index) is checked once more
   against the price sheets (re-rated from its rows if a sheet was stored since it was
   rated) and its month entities are frozen (``Final``, ETag-guarded: a writer that changed
   one meanwhile makes the freeze read it again); its cost digest is written again from the
   frozen month (``shared.rating.cost_digest``), so a closed month's cost query reads what
   its statement holds whatever happened to the last digest rating wrote;
3. the ``finalised`` mark moves to the month: from now on its statements are ``final``, a
   price sheet effective in it is refused (``shared.rating.sheet_store``), and a
   correction is an adjustment in the open month.

Each step is idempotent, so a run stopped by its time budget, a crash or a second instance
leaves what one clean run leaves; the next run continues where it stopped. Late usage that
arrives after a month closed is reported in a later month and is on that month's statement
(marked late), never on this one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from shared.core.hours import utc_now
from shared.rating.adjustments import AdjustmentStore
from shared.rating.engine import Month
from shared.rating.ledger import CONFLICT_ATTEMPTS, ChargeLedger, LedgerConflictError
from shared.rating.marks import RatingMarks
from shared.rating.rater import Rater
from shared.storage.account import StorageAccount

log = logging.getLogger(__name__)

MAX_MONTHS_BACK: Final = 120


@dataclass
class FinaliseRun:
    """What one finalising run did."""

    months_closed: list[str] = field(default_factory=list)
    statements_frozen: int = 0  # month entities (subscription, level) frozen by this run
    statements_kept: int = 0  # already final (an earlier or concurrent run froze them)
    rerated: list[str] = field(default_factory=list)
    stopped_by_budget: bool = False

    def summary_line(self) -> str:
        closed = ", ".join(self.months_closed) or "none"
        rerated = f"; re-rated first: {len(self.rerated)}" if self.rerated else ""
        tail = "; stopped by time budget (the next run continues)" if self.stopped_by_budget else ""
        return (
            f"finalise_statements: months closed: {closed}; statements frozen "
            f"{self.statements_frozen}, already final {self.statements_kept}{rerated}{tail}"
        )


class Finaliser:
    """Finalises closed months (see the module docstring)."""

    def __init__(
        self,
        account: StorageAccount,
        rater: Rater,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.account = account
        self.rater = rater
        self.ledger = ChargeLedger(account)
        self.marks = RatingMarks(account)
        self.adjustments = AdjustmentStore(account, clock=clock)
        self._clock = clock

    def due_months(self) -> list[Month]:
        """Closed months not finalised yet, oldest first: those after the ``finalised``
        mark, or before the first finalisation every month from the oldest with charges
        (looking back at most ``MAX_MONTHS_BACK`` months, across months without any)."""
        rated = self.marks.rated_through()
        if rated is None:
            return []
        newest = Month.of(rated) if rated == Month.of(rated).last_hour else Month.of(rated).previous
        finalised = self.marks.finalised_through()
        if finalised is not None:
            first = finalised.next
        else:
            first = newest.next  # nothing due unless a month with charges is found below
            month = newest
            for _ in range(MAX_MONTHS_BACK):
                if self.ledger.indexed(month) or self.adjustments.of_month(month):
                    first = month
                month = month.previous
        due = []
        month = first
        while month <= newest:
            due.append(month)
            month = month.next
        return due

    def finalise_due(self, budget_seconds: float) -> FinaliseRun:
        """Finalise every closed month not finalised yet, oldest first, within the budget."""
        run = FinaliseRun()
        deadline = time.monotonic() + budget_seconds
        for month in self.due_months():
            if not self._finalise(month, run, deadline):
                run.stopped_by_budget = True
                break
            run.months_closed.append(str(month))
        log.info(run.summary_line())
        return run

    def _finalise(self, month: Month, run: FinaliseRun, deadline: float) -> bool:
        """Finalise ``month``; False if the budget ran out first (the next run continues)."""
        at = self._clock()
        self.adjustments.close(month, at)
        prices = self.rater.prices()
        index = self.ledger.indexed(month)
        for subscription_id in sorted({s for subs in index.values() for s in subs}):
            if time.monotonic() > deadline:
                return False
            if self.rater.rerate_if_stale(subscription_id, month, month.last_hour, prices):
                run.rerated.append(f"{subscription_id} {month}")
            for _ in range(CONFLICT_ATTEMPTS):
                try:
                    done = self.ledger.set_final(subscription_id, month, at)
                    break
                except LedgerConflictError:
                    continue
            else:
                raise LedgerConflictError(f"charges of {subscription_id} {month} kept changing")
            # The final month's cost digest, written again from the frozen ledger: whatever
            # happened to the last one rating wrote, a closed month's cost reads its statement.
            self.rater.digests.write(done.month, done.month.stored_provider or "")
            run.statements_frozen += done.frozen
            run.statements_kept += done.kept
        self.marks.record_finalised(month)
        return True
