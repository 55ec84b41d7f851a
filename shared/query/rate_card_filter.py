"""The RateCard ``$filter``, read as Azure reads it, in one pass over at most 1,024 characters.

Azure's RateCard API takes exactly ``OfferDurableId eq '...' and Currency eq '...' and
Locale eq '...' and RegionInfo eq '...'``: the four terms, each once, joined by ``and``,
only ``eq``. Anything else is ``400 InvalidFilter`` with Azure's fixed message
(:data:`FILTER_MESSAGE`), which names nothing the request sent.

Why a hand-written scanner: the regular expressions this replaced (``\\s+and\\s+`` to split,
then ``\\s*name\\s+op\\s+'value'`` per term) backtrack over runs of whitespace, so
``OfferDurableId`` followed by 64,000 spaces cost 17 s of server time before its 400. The
scanner reads each character once (cost linear in the text, which ``versioned_arguments``
has already capped at ``MAX_FILTER_CHARS``), and the values have exact ASCII shapes:

- whitespace between words is the ASCII space only (a non-breaking space, tab or newline is
  not a separator Azure documents);
- ``OfferDurableId`` is ``MS-AZR-nnnnP`` (ASCII digits), ``Currency`` one the sheets know,
  ``RegionInfo`` two letters, ``Locale`` a BCP 47 tag of at most 35 characters and four
  subtags. The answer carries the locale in its canonical spelling (``en-us`` -> ``en-US``),
  built from the parsed parts, never the text as sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from shared.core.errors import BadInputError
from shared.query.arguments import MAX_FILTER_CHARS
from shared.rating.sheets import CURRENCY_MINOR_UNITS

# Azure's own answer to a $filter it cannot use (the text its RateCard API returns).
FILTER_MESSAGE: Final = (
    "Invalid query specified. Please specify valid values for OfferDurableId, Currency, "
    "Locale and RegionInfo."
)
FILTER_TERMS: Final = ("OfferDurableId", "Currency", "Locale", "RegionInfo")
MAX_LOCALE_CHARS: Final = 35  # RFC 5646's recommended buffer for a language tag
_TERM_NAMES = {term.lower() for term in FILTER_TERMS}
_OFFER = re.compile(r"MS-AZR-[0-9]{4}P(?:-[0-9]{4}P){0,3}", re.IGNORECASE)
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}")
_REGION = re.compile(r"[A-Za-z]{2}")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class RateCardFilter:
    """The four terms, checked; ``locale`` in its canonical spelling."""

    offer_durable_id: str
    currency: str  # upper case
    locale: str
    region: str  # upper case


def filter_error() -> BadInputError:
    return BadInputError(FILTER_MESSAGE, code="InvalidFilter", target="$filter")


def parse_rate_card_filter(text: str | None) -> RateCardFilter:
    """The terms of a RateCard ``$filter`` (400 ``InvalidFilter`` as Azure answers)."""
    if not text or len(text) > MAX_FILTER_CHARS:
        raise filter_error()
    terms = _Scanner(text).terms()
    offer, currency = terms["offerdurableid"], terms["currency"]
    locale, region = terms["locale"], terms["regioninfo"]
    if (
        _OFFER.fullmatch(offer) is None
        or not currency.isascii()
        or currency.upper() not in CURRENCY_MINOR_UNITS
        or len(locale) > MAX_LOCALE_CHARS
        or _LOCALE.fullmatch(locale) is None
        or _REGION.fullmatch(region) is None
    ):
        raise filter_error()
    return RateCardFilter(offer.upper(), currency.upper(), canonical_locale(locale), region.upper())


def canonical_locale(tag: str) -> str:
    """A checked BCP 47 tag in its conventional case: language lower, script title, region
    upper, the rest lower (``EN-latn-us`` -> ``en-Latn-US``)."""
    language, *subtags = tag.split("-")
    spelled = [language.lower()]
    for subtag in subtags:
        if len(subtag) == 2 and subtag.isalpha():
            spelled.append(subtag.upper())
        elif len(subtag) == 4 and subtag.isalpha():
            spelled.append(subtag.title())
        else:
            spelled.append(subtag.lower())
    return "-".join(spelled)


class _Scanner:
    """Reads ``name eq 'value' [and name eq 'value']...`` left to right, once."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._at = 0

    def terms(self) -> dict[str, str]:
        terms: dict[str, str] = {}
        self._spaces()
        while True:
            name = self._word().lower()
            self._spaces(required=True)
            if self._word().lower() != "eq":
                raise filter_error()
            self._spaces(required=True)
            value = self._quoted()
            if name not in _TERM_NAMES or name in terms:
                raise filter_error()
            terms[name] = value
            separated = self._spaces()
            if self._at == len(self._text):
                break
            if not separated or self._word().lower() != "and":
                raise filter_error()
            self._spaces(required=True)
        if len(terms) != len(FILTER_TERMS):
            raise filter_error()
        return terms

    def _spaces(self, *, required: bool = False) -> bool:
        start = self._at
        while self._at < len(self._text) and self._text[self._at] == " ":
            self._at += 1
        if required and self._at == start:
            raise filter_error()
        return self._at > start

    def _word(self) -> str:
        start = self._at
        while self._at < len(self._text) and self._text[self._at] in _LETTERS:
            self._at += 1
        if self._at == start:
            raise filter_error()
        return self._text[start : self._at]

    def _quoted(self) -> str:
        if not self._text.startswith("'", self._at):
            raise filter_error()
        end = self._text.find("'", self._at + 1)
        if end < 0:
            raise filter_error()
        value = self._text[self._at + 1 : end]
        self._at = end + 1
        return value
