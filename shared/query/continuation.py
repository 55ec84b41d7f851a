"""Continuation tokens: a signed, expiring bookmark bound to the query that issued it.

A token carries where the next page starts (:class:`Cursor`) and the last partition the
query may read (``bound``: the watermark as it stood on the first page, frozen so later
pages never see hours collected meanwhile; that is what keeps paging stable while
collection writes later hours). It is opaque to clients but not secret: base64url JSON,
then ``.``, then HMAC-SHA256 over those bytes with ``CONTINUATION_TOKEN_KEY``.

Opening a token checks, in this order: size and exact shape (``TOKEN_SHAPE``: unpadded
base64url only, so no second spelling of a genuine token passes), the signature
(constant-time, compared as the text we would have written),
the version, the expiry, and the binding: the caller's object id, route, path subscription,
``subscriberId``, window, granularity and ``showDetails`` must equal the request's. Any
failure is ``400 InvalidContinuationToken`` with one fixed message, so a probe learns
nothing about which check failed; a token lifted from another caller's ``nextLink`` is
refused by the binding, and a token edited to point elsewhere by the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from shared.core.errors import BadInputError
from shared.core.hours import as_utc
from shared.query.arguments import TOKEN_SHAPE, UsageQuery, malformed_argument
from shared.query.caller_scope import CallerScope

VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last row a page returned: the next page starts strictly after it.

    Detailed rows: (subscription, PartitionKey, RowKey), the storage order. Collapsed rows
    (``showDetails=false``): (subscription, "", collapsed key), the key order of the
    subscription's collapsed rows.
    """

    subscription_id: str
    partition_key: str
    row_key: str


@dataclass(frozen=True, slots=True)
class PageState:
    """What a page needs from the previous one: the frozen bound and the cursor."""

    bound: str  # the last PartitionKey this query may read ("" if nothing is readable)
    cursor: Cursor | None


def _invalid() -> BadInputError:
    return malformed_argument("continuationtoken")


def _binding(scope: CallerScope, query: UsageQuery) -> list[str]:
    return [
        scope.caller.object_id,
        scope.path.route.value,
        scope.path.subscription_id,
        scope.subscriber_id or "",
        as_utc(query.start).isoformat(),
        as_utc(query.end).isoformat(),
        query.granularity.value,
        "details" if query.show_details else "collapsed",
    ]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ContinuationCodec:
    """Issues and opens tokens with one key and lifetime (both from the settings)."""

    def __init__(self, key: bytes, ttl_seconds: int) -> None:
        if len(key) < 32:
            raise ValueError("continuation token key must be at least 32 bytes")
        self._key = key
        self._ttl = ttl_seconds

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, scope: CallerScope, query: UsageQuery, state: PageState, now: datetime) -> str:
        cursor = state.cursor
        body: dict[str, Any] = {
            "v": VERSION,
            "b": _binding(scope, query),
            "x": int(as_utc(now).timestamp()) + self._ttl,
            "l": state.bound,
            "c": (
                [cursor.subscription_id, cursor.partition_key, cursor.row_key]
                if cursor is not None
                else None
            ),
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{_b64(self._sign(payload.encode('ascii')))}"

    def open(self, token: str, scope: CallerScope, query: UsageQuery, now: datetime) -> PageState:
        """The state ``token`` carries, if it is genuine, current and this query's."""
        body = self._body(token, _binding(scope, query), now)
        bound, cursor = body.get("l"), body.get("c")
        if not isinstance(bound, str):
            raise _invalid()
        if cursor is None:
            return PageState(bound=bound, cursor=None)
        if not (
            isinstance(cursor, list)
            and len(cursor) == 3
            and all(isinstance(part, str) for part in cursor)
        ):
            raise _invalid()
        return PageState(bound=bound, cursor=Cursor(*cursor))

    def issue_offset(self, binding: Sequence[str], offset: int, now: datetime) -> str:
        """A token for the next page of an answer paged by row offset (the cost query's
        ``$skiptoken``), bound to ``binding`` (who asked, where, and what) and expiring
        like every token."""
        body = {"v": VERSION, "b": list(binding), "x": int(as_utc(now).timestamp()) + self._ttl}
        payload = _b64(json.dumps({**body, "o": offset}, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{_b64(self._sign(payload.encode('ascii')))}"

    def open_offset(self, token: str, binding: Sequence[str], now: datetime) -> int:
        """The row offset ``token`` carries, if it is genuine, current and ``binding``'s
        (else ``400 InvalidContinuationToken``, one message for every failure)."""
        offset = self._body(token, list(binding), now).get("o")
        if not isinstance(offset, int) or offset < 0:
            raise _invalid()
        return offset

    def _body(self, token: str, binding: list[str], now: datetime) -> dict[str, Any]:
        """The JSON body of ``token`` once its shape, signature, version, expiry and binding
        are checked, in that order (the module docstring); any failure is the one error."""
        if TOKEN_SHAPE.fullmatch(token) is None:
            raise _invalid()
        payload, _, signature = token.partition(".")
        expected = _b64(self._sign(payload.encode("ascii")))
        if not hmac.compare_digest(expected, signature):
            raise _invalid()
        try:
            body = json.loads(_unb64(payload))
        except (UnicodeError, binascii.Error, ValueError):
            raise _invalid() from None
        if not isinstance(body, dict) or body.get("v") != VERSION:
            raise _invalid()
        expiry = body.get("x")
        if not isinstance(expiry, int) or expiry <= as_utc(now).timestamp():
            raise _invalid()
        if body.get("b") != binding:
            raise _invalid()
        return body
