"""Usage sources: where the collector reads each reported hour's usage from.

A source answers two questions for a reported hour (the UTC hour in which usage entered the
provider's usage system):

- ``subscriptions(hour)``: every subscription as it stood at the end of that hour, including
  provider subscriptions and every subscription that has records in the hour;
- ``usage(hour)``: the hour's usage records, **grouped by subscription** (all records of one
  subscription are yielded together). The grouping lets the collector stream: it holds one
  subscription's rows at a time, never the whole hour.

Asking for the same hour twice must give the same answer; the collector's idempotency rests
on it. ``create_source`` picks the implementation named by the settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from shared.subscriptions import Subscription
from shared.usage import UsageRecord

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.sources.fleet import SimulatedFleet


class UsageSource(Protocol):
    name: str

    def subscriptions(self, reported_hour: datetime) -> list[Subscription]: ...

    def usage(self, reported_hour: datetime) -> Iterator[UsageRecord]: ...


def simulated_fleet(settings: Settings) -> SimulatedFleet:
    """The simulated fleet the settings' ``FLEET_*`` values describe."""
    from shared.sources.fleet import FleetOptions, SimulatedFleet

    return SimulatedFleet(
        FleetOptions(
            seed=settings.fleet_seed,
            tenants=settings.fleet_tenants,
            late_share=settings.fleet_late_share,
            scale=settings.fleet_scale,
        )
    )


def create_source(settings: Settings) -> UsageSource:
    """The usage source the settings name."""
    if settings.usage_source == "simulated":
        return simulated_fleet(settings)
    if settings.usage_source == "azurestack":
        from shared.sources.azurestack import create_azurestack_source

        return create_azurestack_source(settings)
    raise AssertionError(f"settings accepted an unknown usage source {settings.usage_source!r}")
