"""The meter catalogue: Azure Stack meter ids, names, units and how each meter behaves.

Built from ``meters.csv`` beside this module (a copy of the team's catalogue). Meter ids are
compared case-insensitively because providers spell them in either case; the catalogue's
spelling is the one we store and emit. Unknown meters are not guessed at: ``lookup``
returns ``None`` and the collector quarantines the record.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from shared.core.config import Settings

CATALOGUE_FILE = Path(__file__).with_name("meters.csv")


class MeterKind(StrEnum):
    """How a meter's quantity accrues; every kind sums cleanly from hours to days."""

    DURATION = "duration"
    CAPACITY = "capacity"
    COUNTER = "counter"
    POINT_IN_TIME = "point_in_time"


@dataclass(frozen=True, slots=True)
class Meter:
    meter_id: str
    name: str
    unit: str
    provider: str
    kind: MeterKind
    chargeable: bool
    deprecated: bool

    @property
    def key(self) -> str:
        """The lower-case id used in storage keys."""
        return self.meter_id.lower()

    @property
    def dimension(self) -> str:
        """The commerce dimension id billed for this meter: stable and derived from the id."""
        return f"azs-{self.key}"


class MeterCatalogue:
    """Case-insensitive lookup over the catalogue's meters."""

    def __init__(self, meters: list[Meter]):
        self._by_key = {meter.key: meter for meter in meters}
        if len(self._by_key) != len(meters):
            raise ValueError("meter catalogue holds the same meter id twice")

    def lookup(self, meter_id: str) -> Meter | None:
        return self._by_key.get(meter_id.strip().lower())

    def __iter__(self) -> Iterator[Meter]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def chargeable(self, overrides: dict[str, bool] | None = None) -> frozenset[str]:
        """Keys of the chargeable meters: the catalogue's default, then operator overrides."""
        flags = {meter.key: meter.chargeable for meter in self}
        for meter_id, flag in (overrides or {}).items():
            flags[meter_id.lower()] = flag
        return frozenset(key for key, flag in flags.items() if flag)


def _parse_bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text == "true"


@cache
def catalogue() -> MeterCatalogue:
    """The project's catalogue, read once per process."""
    with CATALOGUE_FILE.open(newline="", encoding="utf-8") as handle:
        meters = [
            Meter(
                meter_id=row["meter_id"],
                name=row["name"],
                unit=row["unit"],
                provider=row["provider"],
                kind=MeterKind(row["kind"]),
                chargeable=_parse_bool(row["chargeable"]),
                deprecated=row["status"] == "deprecated",
            )
            for row in csv.DictReader(handle)
        ]
    return MeterCatalogue(meters)


class ChargeableMeters:
    """Chargeable meter -> dimension, from the catalogue and the operator's overrides."""

    def __init__(self, settings: Settings, meters: MeterCatalogue | None = None) -> None:
        meters = meters or catalogue()
        chargeable = meters.chargeable(settings.chargeable_overrides())
        self._dimensions = {m.key: m.dimension for m in meters if m.key in chargeable}

    def dimension_of(self, meter_id: str) -> str | None:
        """The dimension billed for ``meter_id``; None when the meter is not chargeable."""
        return self._dimensions.get(meter_id.strip().lower())
