"""Collection work items: one slice of one usage source's reported hour.

Collection fans out through a storage queue: ``collect_usage`` (timer) plans, for each usage
source (stamp) and due reported hour, one work item per slice of the source's subscriptions;
``collect_slice`` (queue trigger) collects one slice, so the Functions scale controller
spreads an hour across instances. The slices of ``COLLECT_SLICES`` are equal ranges of
subscription ids (GUIDs, so ranges of their first 32 bits hold equal shares; any other key
falls in the range its text sorts into), so every process agrees on a subscription's slice
without coordination, every record of a subscription (its rows, its quarantined records)
lands in one slice, and a slice reads only its own range of the subscriptions table.

The message is ``{"v": 1, "source": ..., "hour": "YYYYMMDDHH", "slice": i, "slices": n}``
(base64 text, as the queue trigger expects). Deliveries are at least once and may repeat or
overlap: a slice's writes are idempotent upserts, so a repeat changes nothing.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime

from shared.core.errors import BadInputError
from shared.core.hours import hour_key, parse_hour_key
from shared.storage.queues import encode_body

VERSION = 1
MAX_SLICES = 64


def slice_starts(count: int) -> list[str]:
    """Where each of ``count`` slices starts: "" then the first 32 bits of a GUID, in lower
    case hex, cut in ``count`` equal ranges."""
    return [""] + [f"{-(-index * 2**32 // count):08x}" for index in range(1, count)]


def slice_of(subscription_key: str, count: int) -> int:
    """The slice (0..count-1) a subscription's records belong to: the range its key (the
    lower-case id) sorts into."""
    return bisect_right(slice_starts(count), subscription_key) - 1


def part_names(count: int) -> list[str]:
    """The names of an hour's ``count`` parts, as recorded when each is durable."""
    return [f"{index}of{count}" for index in range(count)]


@dataclass(frozen=True, slots=True)
class CollectionSlice:
    """Collect the subscriptions of slice ``index`` of ``count`` of ``source``'s ``hour``."""

    source: str
    hour: datetime
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SLICES or not 0 <= self.index < self.count:
            raise BadInputError(f"slice {self.index} of {self.count} is not a slice")

    @property
    def part(self) -> str:
        """This slice's name among its hour's parts (see ``part_names``)."""
        return f"{self.index}of{self.count}"

    @property
    def summary_part(self) -> str:
        """This slice's name in the hour summary, which holds every source's parts."""
        return summary_part(self.source, self.part)

    def holds(self, subscription_key: str) -> bool:
        return slice_of(subscription_key, self.count) == self.index

    @property
    def key_range(self) -> tuple[str | None, str | None]:
        """The slice's subscription ids: (low inclusive, high exclusive); None is open."""
        starts = slice_starts(self.count)
        low = starts[self.index] or None
        high = starts[self.index + 1] if self.index + 1 < self.count else None
        return low, high

    def to_message_text(self) -> str:
        document = {"v": VERSION, "source": self.source, "hour": hour_key(self.hour),
                    "slice": self.index, "slices": self.count}  # fmt: skip
        return encode_body(json.dumps(document, separators=(",", ":")))

    @classmethod
    def from_body(cls, body: bytes | str) -> CollectionSlice:
        """Parse a decoded message body; BadInputError names what is wrong."""
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            document = json.loads(text)
        except (UnicodeDecodeError, ValueError) as error:
            raise BadInputError(f"collection work item is not JSON: {error}") from None
        if not isinstance(document, dict) or document.get("v") != VERSION:
            raise BadInputError("collection work item is not a version 1 object")
        source, hour = document.get("source"), document.get("hour")
        index, count = document.get("slice"), document.get("slices")
        if not isinstance(source, str) or not source:
            raise BadInputError("collection work item has no source")
        if not isinstance(hour, str):
            raise BadInputError("collection work item has no hour")
        if type(index) is not int or type(count) is not int:
            raise BadInputError("collection work item's slice and slices must be integers")
        try:
            reported_hour = parse_hour_key(hour)
        except ValueError:
            raise BadInputError(
                f"collection work item's hour {hour[:20]!r} is not YYYYMMDDHH"
            ) from None
        return cls(source, reported_hour, index, count)


def summary_part(source: str, part: str) -> str:
    return f"{source}.{part}"
