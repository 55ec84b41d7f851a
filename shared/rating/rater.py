"""Rating: usage rated into the ledger once its reported hour is durable, and nowhere else.

**When.** ``rate_usage`` (a timer of rating's own, ``RATING_SCHEDULE``, every ten minutes by
default) runs :meth:`Rater.rate_due`: every reported hour after the ``rated`` mark up to
``collected_through`` (the hour every usage source has fully written: its rows never change
again, invariant 3), oldest first, in batches of up to ``BATCH_HOURS`` hours that never
cross a month. A timer, not collection's after-hour hook or a queue: tiers and included
quantities count in reported-hour order, which one sequential run per app keeps for free
(Functions runs a timer on one instance at a time); rating gets its own time budget and
failure domain, so a rating bug never holds collection back; and a run that finds hours
waiting (an outage, a missed run) catches up in batches, which costs fewer requests per
hour than rating hour by hour.

**How.** Per batch, the hour manifest names the subscriptions with rows; each is rated on
its own (several at once): one range read of its rows of the batch, one read of its ledger
state (the month entities and its days), the rows rated in reported-hour order at every
level that applies (retail; wholesale for a delegated provider's tenant), one transaction
back (``shared.rating.ledger``) and the month's cost digest (``shared.rating.cost_digest``,
what a provider's or the whole cloud's cost query reads). Then the ``rated`` mark moves to
the batch's last hour. A rerun after a crash anywhere rates nothing twice: a month entity knows
the last hour it holds (``through``), a day the hours it holds beyond that, and every write
is guarded by the ETag it read, so a rerun or a concurrent run leaves what one clean run
leaves.

**Prices.** Each month entity records the fingerprint of the sheet versions that can price
it (``price_fingerprint``). The one other rating step is explicit:
:meth:`Rater.rerate_open_months`, which ``ops prices import`` runs after storing a sheet
and every rating run runs when the stored sheets changed since the last (``BookHash``),
re-rates from its rows each open month whose fingerprint changed. A final month is never
re-rated (``shared.rating.sheet_store`` refuses a sheet effective in one).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from shared.core.hours import HOUR, floor_day, utc_now
from shared.rating.charges import MonthCharges
from shared.rating.cost_digest import CostDigests
from shared.rating.engine import Level, Month, MonthRater, PriceBook, Pricing, exact
from shared.rating.ledger import (
    CONFLICT_ATTEMPTS,
    ChargeLedger,
    LedgerConflictError,
    LedgerFinalError,
    LoadedMonth,
)
from shared.rating.marks import RatingMarks
from shared.rating.sheet_store import SheetStore
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import first_hour_with_entries, has_entries, read_manifest
from shared.storage.subscriptions import Subscription, SubscriptionStore
from shared.storage.usage_rows import UsageRow, read_hourly_rows
from shared.storage.watermark import collected_through

log = logging.getLogger(__name__)

BATCH_HOURS: Final = 24
MAX_MONTHS_BACK: Final = 120


def price_fingerprint(book: PriceBook, pricing: Pricing, month: Month) -> str:
    """What prices a (subscription, level) in ``month`` depend on: who buys, which scopes
    price it, and every version of those scopes effective before the month ends (a row
    reported in the month was used before it ended). Stored versions never change, so the
    same fingerprint means the same prices."""
    scopes = {*pricing.bases, pricing.override_scope}
    versions = sorted(
        sheet.version
        for sheet in book.sheets()
        if sheet.scope in scopes and sheet.effective_from < month.next.first_hour
    )
    text = "|".join([pricing.level.value, pricing.buyer, *map(str, pricing.bases), *versions])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=10).hexdigest()


def book_hash(book: PriceBook) -> str:
    """A fingerprint of every stored sheet version (a new one changes it)."""
    versions = sorted(sheet.version for sheet in book.sheets())
    return hashlib.blake2b("|".join(versions).encode("utf-8"), digest_size=10).hexdigest()


@dataclass
class RatingRun:
    """What one rating run did."""

    rated_through: datetime | None = None
    batches: int = 0
    subscription_batches: int = 0  # (subscription, batch of hours) pairs rated
    rows: int = 0
    rerated: list[str] = field(default_factory=list)  # "{subscription} {month}" re-rated
    stopped_by_budget: bool = False

    def summary_line(self) -> str:
        through = f"{self.rated_through:%Y-%m-%dT%H}Z" if self.rated_through else "nothing yet"
        rerated = f"; re-rated for new prices: {len(self.rerated)}" if self.rerated else ""
        budget = (
            "; stopped by time budget (the next run continues)" if self.stopped_by_budget else ""
        )
        return (
            f"rate_usage: rated through {through}; {self.rows} rows in "
            f"{self.subscription_batches} subscription batches{rerated}{budget}"
        )


@dataclass
class Prices:
    """What one run rates with: the price book and the subscriptions, read once."""

    book: PriceBook
    subscriptions: Mapping[str, Subscription]
    _fingerprints: dict[tuple[str, Level, Month], str] = field(default_factory=dict)

    def levels(self, subscription_id: str) -> list[tuple[Level, Pricing]]:
        found = []
        for level in Level:
            pricing = self.book.pricing(subscription_id, self.subscriptions, level)
            if pricing is not None:
                found.append((level, pricing))
        return found

    def fingerprint(self, pricing: Pricing, month: Month) -> str:
        key = (pricing.subscription_id, pricing.level, month)
        found = self._fingerprints.get(key)
        if found is None:
            found = self._fingerprints[key] = price_fingerprint(self.book, pricing, month)
        return found

    def provider(self, subscription_id: str) -> str:
        subscription = self.subscriptions.get(subscription_id)
        return ((subscription.provider_subscription_id or "") if subscription else "").lower()


class Rater:
    """Rates usage into the ledger (see the module docstring)."""

    def __init__(
        self,
        account: StorageAccount,
        source_names: Sequence[str],
        *,
        clock: Callable[[], datetime] = utc_now,
        parallelism: int | None = None,
        ledger: ChargeLedger | None = None,
    ) -> None:
        self.account = account
        self.ledger = ledger or ChargeLedger(account)
        self.marks = RatingMarks(account)
        self.digests = CostDigests(account)
        self._source_names = tuple(source_names)
        self._clock = clock
        self._parallelism = parallelism or account.settings.write_parallelism

    def prices(self) -> Prices:
        return Prices(
            PriceBook(SheetStore(self.account).all()), SubscriptionStore(self.account).all()
        )

    # --- the timer's work ---------------------------------------------------------------

    def rate_due(self, budget_seconds: float, *, until: datetime | None = None) -> RatingRun:
        """Rate every durable hour not rated yet (up to ``until`` if given), oldest first,
        within ``budget_seconds`` (the next run continues); re-rate open months first when
        the sheets changed since the last run."""
        run = RatingRun()
        deadline = time.monotonic() + budget_seconds
        target = collected_through(self.account, self._source_names)
        mark = self.marks.rated()
        run.rated_through = mark.hour
        if target is None:
            return run
        if until is not None:
            target = min(target, until)
        book = PriceBook(SheetStore(self.account).all())
        current = book_hash(book)
        if mark.hour is not None and mark.hour >= target and mark.book_hash == current:
            # Nothing new and the same sheets (five runs of six an hour): the subscriptions,
            # a page per 1,000, are read only when there is something to rate.
            return run
        prices = Prices(book, SubscriptionStore(self.account).all())
        if mark.hour is not None and mark.book_hash != current:
            run.rerated += self._rerate_open(prices, mark.hour)
            self.marks.record_rated(mark.hour, current)
        hour = mark.hour + HOUR if mark.hour is not None else self._first_hour(target)
        if hour is None:  # nothing was ever collected: nothing to rate up to the target
            self.marks.record_rated(target, current)
            run.rated_through = target
            return run
        while hour <= target:
            if time.monotonic() > deadline:
                run.stopped_by_budget = True
                break
            month = Month.of(hour)
            last = min(hour + (BATCH_HOURS - 1) * HOUR, target, month.last_hour)
            self._rate_batch(hour, last, prices, run)
            self.marks.record_rated(last, current)
            run.rated_through = last
            run.batches += 1
            hour = last + HOUR
        log.info(run.summary_line())
        return run

    def _first_hour(self, target: datetime) -> datetime | None:
        """Where rating starts with no mark: the month after the newest final one, else the
        oldest month with rows going back from ``target`` (at most ``MAX_MONTHS_BACK``)."""
        finalised = self.marks.finalised_through()
        if finalised is not None:
            start = finalised.next.first_hour
        else:
            month = Month.of(target)
            for _ in range(MAX_MONTHS_BACK):
                previous = month.previous
                if not has_entries(self.account, previous.first_hour, previous.last_hour):
                    break
                month = previous
            start = month.first_hour
        return first_hour_with_entries(self.account, start, target) if start <= target else None

    def _rate_batch(self, first: datetime, last: datetime, prices: Prices, run: RatingRun) -> None:
        """Rate reported hours ``first``..``last`` (one month) of every subscription with rows."""
        month = Month.of(first)
        subscriptions = sorted(
            {e.subscription_id for _, e in read_manifest(self.account, first, last)}
        )
        with ThreadPoolExecutor(self._parallelism, thread_name_prefix="rating") as pool:
            counts = list(
                pool.map(
                    lambda s: self._rate_subscription(s, month, first, last, prices), subscriptions
                )
            )
        run.rows += sum(counts)
        run.subscription_batches += len(subscriptions)

    # --- one subscription ---------------------------------------------------------------

    def _rate_subscription(
        self, subscription_id: str, month: Month, first: datetime, last: datetime, prices: Prices
    ) -> int:
        """Rate the subscription's rows reported ``first``..``last``; returns rows rated."""
        subscription_id = subscription_id.lower()
        rows = read_hourly_rows(self.account, subscription_id, first, last)
        for _ in range(CONFLICT_ATTEMPTS):
            # Every day of the month, not only those the rows touch: still one range read,
            # and the cost digest written after it is of the whole month.
            loaded = self.ledger.load(subscription_id, month, None)
            try:
                return self._apply(loaded, rows, last, prices)
            except LedgerConflictError:
                log.info(
                    "charges of %s %s changed meanwhile; reading them again", subscription_id, month
                )
        raise LedgerConflictError(f"charges of {subscription_id} {month} kept changing")

    def _apply(
        self,
        loaded: LoadedMonth,
        rows: list[tuple[datetime, UsageRow]],
        last: datetime,
        prices: Prices,
        *,
        full: bool = False,
    ) -> int:
        """Rate ``rows`` into ``loaded`` and save it; returns rows rated. Not ``full`` (the
        usual batch), a month whose prices or levels changed is re-rated whole instead."""
        subscription_id, month = loaded.subscription_id, loaded.month
        levels = prices.levels(subscription_id)
        if any(charges.final for charges in loaded.months.values()):
            log.warning("%s %s is final: its hours are not rated again", subscription_id, month)
            return 0
        if not full and loaded.months and self._stale(loaded, levels, prices):
            return self._rerate(subscription_id, month, max(last, _through(loaded) or last), prices)
        provider = prices.provider(subscription_id)
        if loaded.stored_provider not in (None, provider):
            # It moved since it was last rated: its month is the new provider's (indexed
            # there) and its money leaves the old provider's digests.
            self.ledger.ensure_indexed(month, subscription_id, provider)
            self.digests.empty(month, subscription_id, loaded.stored_provider or "")
        raters: dict[Level, MonthRater] = {}
        for level, pricing in levels:
            charges = loaded.months.get(level)
            if charges is None:
                charges = loaded.months[level] = self._new_month(loaded, level, pricing, prices)
            charges.provider = provider
            raters[level] = MonthRater(pricing, charges.used)
        changed: set[tuple[Level, datetime]] = set(loaded.days) if full else set()
        rated, touched = rate_into(loaded, rows, raters)
        changed |= touched
        for level in raters:
            loaded.months[level].through = last
        for key in changed:
            state = loaded.months.get(key[0])
            if state is None:  # a level that no longer applies: its days are deleted
                continue
            day = loaded.days[key].charges
            day.through = last
            day.fingerprint = state.fingerprint
        self.ledger.save(loaded, changed, drop_others=full)
        self.digests.write(loaded, provider)
        return rated

    @staticmethod
    def _stale(loaded: LoadedMonth, levels: list[tuple[Level, Pricing]], prices: Prices) -> bool:
        """True when the stored month was rated with other prices or other levels."""
        current = {level: prices.fingerprint(pricing, loaded.month) for level, pricing in levels}
        stored = {level: charges.fingerprint for level, charges in loaded.months.items()}
        return current != stored

    def _new_month(
        self, loaded: LoadedMonth, level: Level, pricing: Pricing, prices: Prices
    ) -> MonthCharges:
        provider = prices.provider(loaded.subscription_id)
        if level not in loaded.month_etags:  # its first charges this month: index them first
            self.ledger.ensure_indexed(loaded.month, loaded.subscription_id, provider)
        return MonthCharges(
            subscription_id=loaded.subscription_id,
            level=level,
            month=loaded.month,
            buyer=pricing.buyer,
            currency=prices.book.currency,
            fingerprint=prices.fingerprint(pricing, loaded.month),
            provider=provider,
        )

    # --- re-rating (new prices) ---------------------------------------------------------

    def rerate_open_months(self) -> list[str]:
        """The explicit re-rating step after a price sheet is stored: every open month's
        ledger whose prices changed, re-rated from its rows; returns what was re-rated."""
        mark = self.marks.rated()
        if mark.hour is None:
            return []
        prices = self.prices()
        rerated = self._rerate_open(prices, mark.hour)
        self.marks.record_rated(mark.hour, book_hash(prices.book))
        return rerated

    def _rerate_open(self, prices: Prices, rated_through: datetime) -> list[str]:
        """Re-rate what the sheets changed in every open month: those after the finalised
        mark up to the rated one (at most ``MAX_MONTHS_BACK``), each subscription with
        charges in it (the index) checked against its fingerprint."""
        finalised = self.marks.finalised_through()
        month = Month.of(rated_through)
        open_months = []
        for _ in range(MAX_MONTHS_BACK):
            if finalised is not None and month <= finalised:
                break
            index = self.ledger.indexed(month)
            if index:
                open_months.append((month, sorted({s for subs in index.values() for s in subs})))
            month = month.previous
        rerated: list[str] = []
        for month, subscriptions in reversed(open_months):
            bound = min(rated_through, month.last_hour)

            def check(subscription_id: str, month: Month = month, bound: datetime = bound) -> bool:
                return self.rerate_if_stale(subscription_id, month, bound, prices)

            with ThreadPoolExecutor(self._parallelism, thread_name_prefix="rerating") as pool:
                changed = list(pool.map(check, subscriptions))
            rerated += [
                f"{s} {month}" for s, done in zip(subscriptions, changed, strict=True) if done
            ]
        if rerated:
            log.info("re-rated for new prices: %s", ", ".join(rerated))
        return rerated

    def rerate_if_stale(
        self, subscription_id: str, month: Month, bound: datetime, prices: Prices
    ) -> bool:
        """Re-rate the subscription's month from its rows reported up to ``bound`` if it was
        rated with other prices than ``prices``; True if it was (the finaliser's last check
        before freezing, and the sweep after a new sheet)."""
        loaded = self.ledger.load(subscription_id, month, [])
        if not loaded.months or any(c.final for c in loaded.months.values()):
            return False
        if not self._stale(loaded, prices.levels(subscription_id), prices):
            return False
        self._rerate(subscription_id, month, max(bound, _through(loaded) or bound), prices)
        return True

    def rerate_month(
        self, subscription_id: str, month: Month, last: datetime, prices: Prices
    ) -> int:
        """Rebuild one subscription's month from its rows reported up to ``last``, whatever
        its prices were (what rating a month from scratch costs; a final month is left as
        it is); returns the rows rated."""
        return self._rerate(subscription_id.lower(), month, last, prices)

    def _rerate(self, subscription_id: str, month: Month, last: datetime, prices: Prices) -> int:
        """The month's ledger rebuilt from its rows reported up to ``last``: every level that
        applies now, every day rewritten, days and levels that no longer apply deleted."""
        rows = read_hourly_rows(self.account, subscription_id, month.first_hour, last)
        levels = prices.levels(subscription_id)
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                loaded = self.ledger.load(subscription_id, month, None, content=False)
            except LedgerFinalError:
                return 0
            current = {level for level, _ in levels}
            etags = loaded.month_etags
            loaded.removed = {lvl: etag for lvl, etag in etags.items() if lvl not in current}
            loaded.month_etags = {lvl: etag for lvl, etag in etags.items() if lvl in current}
            try:
                return self._apply(loaded, rows, last, prices, full=True)
            except LedgerConflictError:
                log.info(
                    "charges of %s %s changed meanwhile; re-rating again", subscription_id, month
                )
        raise LedgerConflictError(f"charges of {subscription_id} {month} kept changing")


def rate_into(
    loaded: LoadedMonth,
    rows: Iterable[tuple[datetime, UsageRow]],
    raters: Mapping[Level, MonthRater],
) -> tuple[int, set[tuple[Level, datetime]]]:
    """Rate ``rows`` (reported-hour order) at every level of ``raters`` into ``loaded``'s
    month states and days; rows its month state already holds (``through``) are skipped,
    and so is a day that already holds the hour (a crash between writing the day and its
    month). Returns (rows rated, the days changed). Pure: nothing is read or written."""
    changed: set[tuple[Level, datetime]] = set()
    rated = 0
    for reported, row in rows:
        for level, rater in raters.items():
            charges = loaded.months[level]
            if charges.through is not None and reported <= charges.through:
                continue  # rated before (a rerun of this batch)
            result = rater.rate(row.meter_id, row.usage_start, exact(row.quantity))
            charges.add(row, result)
            rated += level is Level.RETAIL
            day_key = (level, floor_day(row.usage_start))
            day = loaded.day(*day_key).charges
            already = (
                day.through is not None
                and day.fingerprint == charges.fingerprint
                and reported <= day.through
            )
            if not already:
                day.add(reported, row, result)
                changed.add(day_key)
    return rated, changed


def _through(loaded: LoadedMonth) -> datetime | None:
    found = [charges.through for charges in loaded.months.values() if charges.through]
    return max(found) if found else None
