r"""Exact shapes of the text a request may carry: ASCII digits, GUIDs, months.

Python's conveniences are wider than the formats they are used to check: ``\d`` and
``str.isdigit`` accept every Unicode digit (superscripts, full-width and Arabic-Indic
digits), and ``int()`` converts most of them (but not a superscript, which then fails where
nobody expected a failure); ``str.strip`` removes Unicode spaces too; ``$`` matches before a
trailing newline.
Each of those let hostile text pass a check and fail later, deeper, as a 500. So the edges
check shapes here, with ASCII character classes and ``fullmatch`` only, before any value is
converted or looked up.
"""

from __future__ import annotations

import re
from typing import Final

# Azure's subscription ids: 8-4-4-4-12 hexadecimal digits, either case, nothing around them.
GUID: Final = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")
# A statement month: yyyy-MM.
MONTH: Final = re.compile(r"([0-9]{4})-([0-9]{2})")


def is_guid(text: str) -> bool:
    """True if ``text`` is exactly a GUID (no braces, no spaces, no trailing newline)."""
    return GUID.fullmatch(text) is not None


def month_parts(text: str) -> tuple[int, int] | None:
    """(year, month) of exactly ``yyyy-MM`` in ASCII digits, month 1-12; else None."""
    match = MONTH.fullmatch(text)
    if match is None:
        return None
    year, month = int(match.group(1)), int(match.group(2))
    return (year, month) if 1 <= month <= 12 else None
