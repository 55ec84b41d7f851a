"""The simulated fleet's example price sheets (``devstack/prices/``), loaded by ``./dev run``.

- ``default.json`` and ``default-2026-10.json``: the service admin's sheet and a price
  change on 1 October (Windows dearer, the base VM cheaper);
- ``reseller.json``: every delegated provider's resale sheet (about 30% over wholesale);
  the fleet's provider ids depend on its seed, so the scope is given here, not in the file;
- ``tenant-discount.json``: an override for the demo tenant (10% off, a custom Windows price).

Loading is idempotent: a version already stored with the same prices is left as it is.
Like ``python -m ops prices import``, it then re-rates the open months the sheets changed
(the explicit re-rating step of ``shared.rating.rater``).

The scopes name the fleet's subscriptions, which the store checks: ``subscriptions_first``
records them as the fleet lists them now (what the collector would write), for a caller
that loads prices before anything is collected (``./dev run`` does, so no month can be
finalised before the sheets that price it exist).
"""

from __future__ import annotations

from pathlib import Path

from devstack.demo_tokens import demo_principal
from devstack.fleet import fleet_from_settings
from shared.core.config import Settings
from shared.core.hours import floor_hour, utc_now
from shared.core.meters import catalogue
from shared.rating.rater import Rater
from shared.rating.sheet_files import read_json_sheet
from shared.rating.sheet_store import SheetStore
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore

PRICES = Path(__file__).with_name("prices")


def load_example_prices(settings: Settings, *, subscriptions_first: bool = False) -> list[str]:
    """Store the example sheets for the fleet the settings describe; one line per version,
    and one for what was re-rated."""
    fleet = fleet_from_settings(settings)
    account = StorageAccount(settings)
    store = SheetStore(account)
    subscriptions = SubscriptionStore(account)
    if subscriptions_first:
        account.ensure_tables()
        subscriptions.sync(fleet.subscriptions(floor_hour(utc_now())), subscriptions.all())
    files: list[tuple[str, str | None]] = [
        ("default.json", None),
        ("default-2026-10.json", None),
        *(("reseller.json", f"provider:{p.subscription_id}") for p in fleet.delegated_providers),
        (
            "tenant-discount.json",
            f"subscription:{demo_principal(settings, 'tenant').subscription_id}",
        ),
    ]
    lines = []
    for name, scope in files:
        text = (PRICES / name).read_text(encoding="utf-8")
        sheet = read_json_sheet(text, catalogue(), scope=scope)
        outcome = store.put(sheet, subscriptions)
        lines.append(f"{sheet.version}: {outcome.value} ({name})")
    rerated = Rater(account, settings.source_names()).rerate_open_months()
    lines.append(f"re-rated for these prices: {len(rerated)} subscription-months")
    return lines
