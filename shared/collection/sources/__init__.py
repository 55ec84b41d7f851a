"""Usage sources: where the collector reads each reported hour's usage from.

A source answers two questions for a reported hour (the UTC hour in which usage entered the
provider's usage system):

- ``subscriptions(hour)``: every subscription as it stood at the end of that hour, including
  provider subscriptions and every subscription that has records in the hour;
- ``usage(hour, within)``: the hour's usage records, **grouped by subscription** (all records
  of one subscription are yielded together). The grouping lets the collector stream: it
  holds one subscription's rows at a time, never the whole hour. ``within``, when given,
  says which subscription keys (``shared.core.usage.subscription_key``) the caller wants
  (its slice of the hour): a source may skip the others' records, or yield them anyway
  (the collector drops them).

Asking for the same hour twice must give the same answer; the collector's idempotency rests
on it.

Which sources exist is a registry (``SOURCES``). The deployed app knows only real sources
(``azurestack``); the local stack (``devstack``, never deployed) registers the simulated
fleet before it runs the app, so production code never imports the simulator and a
deployment cannot reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Protocol

from shared.core.config import Settings
from shared.core.errors import ConfigurationError
from shared.core.usage import UsageRecord
from shared.storage.subscriptions import Subscription


class UsageSource(Protocol):
    name: str

    def subscriptions(self, reported_hour: datetime) -> list[Subscription]: ...

    def usage(
        self, reported_hour: datetime, within: Callable[[str], bool] | None = None
    ) -> Iterator[UsageRecord]: ...


SourceFactory = Callable[[Settings], UsageSource]


def _azurestack(settings: Settings) -> UsageSource:
    from shared.collection.sources.azurestack import create_azurestack_source

    return create_azurestack_source(settings)


class SourceRegistry:
    """Source names (the ``USAGE_SOURCE`` values) and how to build each from settings."""

    def __init__(self) -> None:
        self._factories: dict[str, SourceFactory] = {"azurestack": _azurestack}

    def register(self, name: str, factory: SourceFactory) -> None:
        """Make ``USAGE_SOURCE=name`` build its source with ``factory`` in this process."""
        self._factories[name] = factory

    def create(self, settings: Settings) -> UsageSource:
        """The usage source the settings name; ConfigurationError if this app has none.

        The source is named after the settings' ``source_name`` (the stamp's name when the
        app has several), the key of its watermark and of its parts of every hour."""
        name = settings.usage_source or ""
        factory = self._factories.get(name)
        if factory is None:
            raise ConfigurationError(
                f"USAGE_SOURCE={name} is not available in this app (it has: "
                f"{', '.join(sorted(self._factories))}); the simulated fleet exists only in "
                "the local stack (./dev run)"
            )
        source = factory(settings)
        source.name = settings.source_name
        return source


# The process's sources: the real ones; the local stack registers the simulated fleet here.
SOURCES = SourceRegistry()
