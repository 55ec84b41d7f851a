"""The simulated fleet's example price sheets (``devstack/prices/``), loaded by ``./dev run``.

- ``default.json`` and ``default-2026-10.json``: the service admin's sheet and a price
  change on 1 October (Windows dearer, the base VM cheaper);
- ``reseller.json``: every delegated provider's resale sheet (about 30% over wholesale);
  the fleet's provider ids depend on its seed, so the scope is given here, not in the file;
- ``tenant-discount.json``: an override for the demo tenant (10% off, a custom Windows price).

Loading is idempotent: a version already stored with the same prices is left as it is.
"""

from __future__ import annotations

from pathlib import Path

from devstack.demo_tokens import demo_principal
from devstack.fleet import fleet_from_settings
from shared.core.config import Settings
from shared.core.meters import catalogue
from shared.rating.sheet_files import read_json_sheet
from shared.rating.sheet_store import SheetStore
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore

PRICES = Path(__file__).with_name("prices")


def load_example_prices(settings: Settings) -> list[str]:
    """Store the example sheets for the fleet the settings describe; one line per version."""
    fleet = fleet_from_settings(settings)
    account = StorageAccount(settings)
    store = SheetStore(account)
    subscriptions = SubscriptionStore(account)
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
    return lines
