"""``python -m bench portal``'s store, at a tiny shape: what the two cost views read, written
by the pipeline's own collector and rater (the benchmark itself drives Chromium for minutes,
so it is not run here)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from bench.portal import MONTH_FIRST, Shape, build_store, longest_lived
from devstack.fleet import fleet_from_settings
from devstack.sign_in import LocalSignIn
from devstack.tokens import LocalIssuer
from shared.app import FunctionApp
from shared.core.config import Settings
from shared.core.hours import HOUR
from shared.rating.engine import Level, Month
from shared.rating.marks import RatingMarks
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import read_manifest


def test_the_store_holds_every_subscriptions_month_and_one_subscriptions_history(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Before the month only the chosen subscription is collected, in the month every one;
    all of it is rated into the ledger (its statements count every collected row)."""
    settings = make_settings(FLEET_TENANTS=2, FLEET_SEED=1, COLLECT_LOOKBACK_HOURS=1)
    fleet = fleet_from_settings(settings)
    shape = Shape(2, MONTH_FIRST, MONTH_FIRST - HOUR)
    sign_in = LocalSignIn(settings, LocalIssuer(tmp_path / "auth"), at=shape.month_last)
    _, subscription = longest_lived(fleet, {c.key: c for c in sign_in.choices}, shape)

    built = build_store(settings, fleet, shape, subscription)

    account = StorageAccount(settings)
    per_hour: dict[bool, set[str]] = defaultdict(set)
    rows: dict[str, int] = defaultdict(int)
    for hour, entry in read_manifest(account, shape.history_first, shape.month_last):
        per_hour[hour >= MONTH_FIRST].add(entry.subscription_id)
        if hour >= MONTH_FIRST:
            rows[entry.subscription_id] += entry.rows
    assert built.hours == 2
    assert per_hour[False] == {subscription}
    assert len(per_hour[True]) > 1
    assert RatingMarks(account).rated().hour == shape.month_last
    statements = FunctionApp(settings).statements
    for subscription_id, collected in rows.items():
        statement = statements.statement(subscription_id, Month(2026, 12), Level.RETAIL, {})
        assert statement is not None
        assert statement["rows"] == collected
