"""The rating engine and statements, pure: tiers, included quantity, price changes, late
usage, two levels, overrides, rounding, bad sheets, and properties that must hold for any
split of a month's usage."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.errors import BadInputError, SheetRejectedError
from shared.core.meters import catalogue
from shared.query.rate_card_filter import FILTER_MESSAGE, parse_rate_card_filter
from shared.rating.engine import Level, Month, PriceBook
from shared.rating.rounding import allocate, round_amount
from shared.rating.sheet_files import read_csv_sheet, read_json_sheet, sheet_csv, sheet_json
from shared.rating.sheets import PriceSheet
from shared.rating.statements import rate_in_memory, statement_document
from shared.storage.subscriptions import Subscription, SubscriptionState
from shared.storage.usage_rows import UsageRow

HOUR = timedelta(hours=1)
VM = "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5"  # Base VM Size Hours
WIN = "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A"
IP = "F271A8A388C44D93956A063E1D2FA80B"
ROOT = "00000000-0000-0000-0000-00000000000a"
RESELLER = "00000000-0000-0000-0000-00000000000b"
DIRECT = "11111111-1111-1111-1111-111111111111"
RESOLD = "22222222-2222-2222-2222-222222222222"
NOV = Month(2026, 11)
DEC = Month(2026, 12)


def sub(subscription_id: str, provider: str | None, *, is_provider: bool = False) -> Subscription:
    return Subscription(
        subscription_id, "s", "t", provider, (), SubscriptionState.ACTIVE, is_provider=is_provider
    )


SUBSCRIPTIONS = {
    ROOT: sub(ROOT, None, is_provider=True),
    RESELLER: sub(RESELLER, ROOT, is_provider=True),
    DIRECT: sub(DIRECT, ROOT),
    RESOLD: sub(RESOLD, RESELLER),
}


def sheet(
    meters: list[dict[str, Any]],
    *,
    scope: str = "default",
    effective: str = "2026-01-01",
    currency: str | None = "USD",
    discount: str | None = None,
) -> PriceSheet:
    document: dict[str, Any] = {"scope": scope, "effectiveFrom": effective, "meters": meters}
    if currency:
        document["currency"] = currency
    if discount:
        document["discountPercent"] = discount
    return read_json_sheet(json.dumps(document), catalogue())


def row(meter: str, usage_start: datetime, quantity: float) -> UsageRow:
    return UsageRow(DIRECT, meter, usage_start, usage_start + HOUR, quantity, "/r", "l", None, None)


def statement(
    book: PriceBook,
    rows: Iterable[UsageRow],
    *,
    subscription_id: str = DIRECT,
    level: Level = Level.RETAIL,
    month: Month = NOV,
) -> dict[str, Any]:
    pricing = book.pricing(subscription_id, SUBSCRIPTIONS, level)
    assert pricing is not None
    charges = rate_in_memory(pricing, month, rows)
    return statement_document(
        charges,
        [],
        subscription_id=subscription_id,
        level=level,
        month=month,
        buyer=pricing.buyer,
        currency=book.currency,
        final=False,
        rated_through=None,
        meters=catalogue(),
        at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def line(
    document: dict[str, Any], meter: str, month: str = "2026-11", *, priced: bool | None = None
) -> dict[str, Any]:
    (found,) = [
        item
        for item in document["lines"]
        if item["meterId"].lower() == meter.lower()
        and item["usagePeriod"]["month"] == month
        and (priced is None or item["priced"] is priced)
    ]
    return found


TIERED = PriceBook([sheet([{"meterId": VM, "tiers": {"0": "2", "100": "1"}}])])
T0 = datetime(2026, 11, 2, tzinfo=UTC)


def test_a_tier_boundary_crossed_inside_one_hour_splits_the_row() -> None:
    """150 units in one row: 100 at the first tier's price, 50 at the second's."""
    document = statement(TIERED, [row(VM, T0, 150.0)])
    tiers = line(document, VM)["tiers"]
    assert [(t["tierStart"], t["quantity"], t["amount"]) for t in tiers] == [
        ("0", "100", "200"),
        ("100", "50.0", "50.0"),
    ]
    assert document["total"] == "250.00"
    assert all(t["sheetEntry"] == f"default@2026-01-01T00:00Z/{VM.lower()}" for t in tiers)


def test_a_tier_boundary_crossed_across_hours_counts_the_month_cumulatively() -> None:
    """60 + 60 in two hours: the second hour's row is split at the month's 100th unit."""
    document = statement(TIERED, [row(VM, T0, 60.0), row(VM, T0 + HOUR, 60.0)])
    assert line(document, VM)["quantity"] == "120.0"
    assert document["total"] == "220.00"  # 100 x 2 + 20 x 1


def test_included_quantity_is_free_and_counts_toward_tiers() -> None:
    """The first 10 units of the month are free; thresholds count them."""
    book = PriceBook(
        [sheet([{"meterId": VM, "tiers": {"0": "2", "100": "1"}, "includedQuantity": "10"}])]
    )
    document = statement(book, [row(VM, T0, 5.0), row(VM, T0 + HOUR, 105.0)])
    tiers = line(document, VM)["tiers"]
    assert tiers[0]["included"] is True
    assert tiers[0]["quantity"] == "10.0"
    assert document["total"] == "190.00"  # 10 free, 90 x 2, 10 x 1


def test_a_price_change_mid_month_prices_usage_by_its_usage_time() -> None:
    """Usage before 15 November at the old price, after it at the new one, on one line."""
    book = PriceBook(
        [
            sheet([{"meterId": VM, "unitPrice": "1"}]),
            sheet([{"meterId": VM, "unitPrice": "3"}], effective="2026-11-15"),
        ]
    )
    before, after = datetime(2026, 11, 14, 23, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)
    document = statement(book, [row(VM, before, 10.0), row(VM, after, 10.0)])
    tiers = line(document, VM)["tiers"]
    assert {(t["sheetVersion"], t["unitPrice"]) for t in tiers} == {
        ("default@2026-01-01T00:00Z", "1"),
        ("default@2026-11-15T00:00Z", "3"),
    }
    assert document["total"] == "40.00"
    assert document["sheetVersions"] == ["default@2026-01-01T00:00Z", "default@2026-11-15T00:00Z"]


def test_late_usage_reported_in_december_is_priced_at_novembers_price() -> None:
    """November usage on December's statement: November's price, its own line, marked late."""
    book = PriceBook(
        [
            sheet([{"meterId": VM, "unitPrice": "1"}]),
            sheet([{"meterId": VM, "unitPrice": "3"}], effective="2026-12-01"),
        ]
    )
    late = datetime(2026, 11, 30, 22, tzinfo=UTC)
    document = statement(book, [row(VM, late, 5.0), row(VM, DEC.first_hour, 5.0)], month=DEC)
    november = line(document, VM, "2026-11")
    assert november["late"] is True
    assert november["unitPrices"] == ["1"]
    assert november["amount"] == "5.00"
    assert line(document, VM, "2026-12")["late"] is False
    assert document["total"] == "20.00"


def test_two_levels_retail_by_the_resellers_sheet_wholesale_by_the_admins() -> None:
    """A delegated provider's tenant pays the reseller's price; the reseller pays the admin's."""
    book = PriceBook(
        [
            sheet([{"meterId": VM, "unitPrice": "1"}]),
            sheet([{"meterId": VM, "unitPrice": "1.5"}], scope=f"provider:{RESELLER}"),
        ]
    )
    rows = [row(VM, T0, 10.0)]
    retail = statement(book, rows, subscription_id=RESOLD)
    wholesale = statement(book, rows, subscription_id=RESOLD, level=Level.WHOLESALE)
    assert (retail["total"], retail["buyerSubscriptionId"]) == ("15.00", RESOLD)
    assert (wholesale["total"], wholesale["buyerSubscriptionId"]) == ("10.00", RESELLER)
    assert statement(book, rows)["total"] == "10.00"  # a direct tenant: the admin's sheet
    assert book.pricing(DIRECT, SUBSCRIPTIONS, Level.WHOLESALE) is None


def test_an_override_discounts_and_custom_prices_on_top_of_the_sheet() -> None:
    """10% off the sheet, except a custom Windows price; list prices stay the sheet's."""
    book = PriceBook(
        [
            sheet([{"meterId": VM, "unitPrice": "2"}, {"meterId": WIN, "unitPrice": "5"}]),
            sheet(
                [{"meterId": WIN, "unitPrice": "4"}],
                scope=f"subscription:{DIRECT}",
                currency=None,
                discount="10",
            ),
        ]
    )
    document = statement(book, [row(VM, T0, 10.0), row(WIN, T0, 10.0)])
    assert line(document, VM)["amount"] == "18.00"
    assert line(document, WIN)["amount"] == "40.00"
    assert line(document, WIN)["listAmount"] == "50.00"
    assert line(document, VM)["tiers"][0]["override"] == f"subscription:{DIRECT}@2026-01-01T00:00Z"


def test_unpriced_meters_are_shown_with_no_amount() -> None:
    """A meter no sheet prices is a line with priced false and amount 0, not dropped."""
    document = statement(TIERED, [row(IP, T0, 3.0)])
    assert line(document, IP)["priced"] is False
    assert document["total"] == "0.00"


def test_partial_pricing_keeps_the_priced_money_beside_the_unpriced_quantity() -> None:
    """5 units at 2.00, then the meter leaves the sheet mid-month and 5 more come unpriced:
    a priced line of 10.00 and an unpriced line of 5 units beside it, total 10.00 (the old
    builder marked the whole line unpriced and billed 0.00, for good once final)."""
    book = PriceBook(
        [
            sheet([{"meterId": VM, "unitPrice": "2"}]),
            sheet([{"meterId": WIN, "unitPrice": "1"}], effective="2026-11-10"),
        ]
    )
    before, after = datetime(2026, 11, 5, tzinfo=UTC), datetime(2026, 11, 12, tzinfo=UTC)
    document = statement(book, [row(VM, before, 5.0), row(VM, after, 5.0)])
    priced = line(document, VM, priced=True)
    unpriced = line(document, VM, priced=False)
    assert (priced["quantity"], priced["amount"]) == ("5.0", "10.00")
    assert (unpriced["quantity"], unpriced["amount"], unpriced["tiers"]) == ("5.0", "0.00", [])
    assert document["total"] == "10.00"


def test_totals_are_the_sum_of_rounded_lines_not_the_rounded_sum() -> None:
    """Three lines of 0.005 each: each rounds half-even to 0.00, so the total is 0.00."""
    book = PriceBook(
        [
            sheet(
                [
                    {"meterId": VM, "unitPrice": "0.005"},
                    {"meterId": WIN, "unitPrice": "0.005"},
                    {"meterId": IP, "unitPrice": "0.015"},
                ]
            )
        ]
    )
    document = statement(book, [row(VM, T0, 1.0), row(WIN, T0, 1.0), row(IP, T0, 1.0)])
    amounts = [item["amount"] for item in document["lines"]]
    assert sorted(amounts) == ["0.00", "0.00", "0.02"]  # 0.005 -> 0.00, 0.015 -> 0.02
    assert document["total"] == "0.02"  # round(0.025) would be 0.02 too; the rule is the sum
    assert round_amount(Decimal("0.125"), "USD") == Decimal("0.12")  # half-even


def test_a_rounded_line_is_spread_over_its_rows_by_largest_remainder() -> None:
    """0.004 + 0.004 + 0.003 + 0.0001 = 0.0111 rounds to 0.01: the cent goes to the first
    of the two largest remainders (ties: the earlier row); JPY has no minor digits; no
    currency (nothing priced) leaves amounts as they are."""
    amounts = [Decimal("0.004"), Decimal("0.004"), Decimal("0.003"), Decimal("0.0001")]
    assert allocate(amounts, "USD") == [Decimal("0.01"), Decimal("0.00"), Decimal("0.00"),
                                        Decimal("0.00")]  # fmt: skip
    assert allocate([Decimal("1.5"), Decimal("1.5"), Decimal("1.5")], "JPY") == [
        Decimal(2),
        Decimal(1),
        Decimal(1),
    ]  # 4.5 rounds half-even to 4: floors give 3, the earliest of three equal remainders 1 more
    assert allocate([Decimal("0.3")], None) == [Decimal("0.3")]


# --- properties ------------------------------------------------------------------------

PROPERTY_BOOK = PriceBook(
    [
        sheet(
            [
                {
                    "meterId": VM,
                    "tiers": {"0": "0.013", "50": "0.011", "400": "0.007"},
                    "includedQuantity": "7.5",
                },
                {"meterId": WIN, "unitPrice": "0.0461"},
            ]
        )
    ]
)
USAGE = st.lists(
    st.tuples(
        st.sampled_from([VM, WIN]),
        st.integers(min_value=0, max_value=29 * 24),  # the usage hour in November
        st.integers(min_value=1, max_value=50_000),  # thousandths
        st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=4),  # split weights
    ),
    min_size=1,
    max_size=25,
)


def _pieces(total: int, weights: list[int]) -> list[int]:
    """``total`` split by ``weights`` into integers that add up to it exactly."""
    pieces = [total * w // sum(weights) for w in weights]
    pieces[-1] += total - sum(pieces)
    return [piece for piece in pieces if piece]


@settings(max_examples=150, deadline=None)
@given(usage=USAGE, offsets=st.lists(st.integers(min_value=0, max_value=6), min_size=4))
def test_the_total_does_not_depend_on_how_usage_is_split_across_reported_hours(
    usage: list[tuple[str, int, int, list[int]]], offsets: list[int]
) -> None:
    """One row per usage hour, or its quantity split over several reported hours (in any
    order of collection): the same lines and the same total."""
    whole = sorted(
        ((hour, meter, Decimal(q) / 1000) for meter, hour, q, _ in usage), key=lambda r: r[0]
    )
    split = []
    for index, (meter, hour, quantity, weights) in enumerate(usage):
        for position, piece in enumerate(_pieces(quantity, weights)):
            reported = hour + offsets[(index + position) % len(offsets)]
            split.append((min(reported, 29 * 24 + 23), meter, hour, Decimal(piece) / 1000))
    split.sort(key=lambda r: r[0])  # the rater's order: reported hour
    start = NOV.first_hour

    def rows(items: Iterable[tuple[int, str, Decimal]]) -> list[UsageRow]:
        return [row(meter, start + hour * HOUR, float(q)) for hour, meter, q in items]

    one = statement(PROPERTY_BOOK, rows(whole))
    many = statement(PROPERTY_BOOK, rows((h, m, q) for _, m, h, q in split))
    assert many["total"] == one["total"]
    assert [(x["meterId"], x["amount"]) for x in many["lines"]] == [
        (x["meterId"], x["amount"]) for x in one["lines"]
    ]


@settings(max_examples=150, deadline=None)
@given(usage=USAGE)
def test_a_statements_total_is_the_sum_of_its_rounded_lines(
    usage: list[tuple[str, int, int, list[int]]],
) -> None:
    """For any usage: total == sum of line amounts, each line == its parts rounded half-even."""
    start = NOV.first_hour
    document = statement(
        PROPERTY_BOOK,
        [row(m, start + h * HOUR, q / 1000) for m, h, q, _ in sorted(usage, key=lambda u: u[1])],
    )
    lines = document["lines"]
    assert Decimal(document["total"]) == sum((Decimal(x["amount"]) for x in lines), Decimal(0))
    for item in lines:
        exact = sum((Decimal(t["amount"]) for t in item["tiers"]), Decimal(0))
        assert Decimal(item["amount"]) == round_amount(exact, "USD")
        assert Decimal(item["quantity"]) == sum(Decimal(t["quantity"]) for t in item["tiers"])


# --- sheets ----------------------------------------------------------------------------


def test_a_bad_sheet_is_refused_whole_with_one_line_per_problem() -> None:
    """Unknown meter, negative price, tiers out of order, unknown currency: four lines."""
    document = {
        "scope": "default",
        "effectiveFrom": "2026-11-01",
        "currency": "XYZ",
        "meters": [
            {"meterId": "00000000-dead-beef-0000-000000000000", "unitPrice": "1"},
            {"meterId": WIN, "unitPrice": "-0.5"},
            {"meterId": VM, "tiers": {"0": "2", "100": "1", "50": "1.5"}},
        ],
    }
    with pytest.raises(SheetRejectedError) as refused:
        read_json_sheet(json.dumps(document), catalogue())
    problems = refused.value.problems
    assert len(problems) == 4, problems
    assert any("unknown currency 'XYZ'" in p for p in problems)
    assert any("unknown meter" in p for p in problems)
    assert any("negative price -0.5" in p for p in problems)
    assert any("tiers out of order" in p for p in problems)


@pytest.mark.parametrize(
    ("csv_text", "problem"),
    [
        ("meter_id,tier_start,unit_price,included_quantity\nnope,0,1,\n", "unknown meter"),
        (f"meter_id,tier_start,unit_price,included_quantity\n{VM},5,1,\n", "must start at 0"),
        (f"meter_id,tier_start,unit_price,included_quantity\n{VM},0,1e3,\n", "plain decimal"),
        (f"meter_id,tier_start,unit_price,included_quantity\n{VM},0,NaN,\n", "plain decimal"),
        (f"meter_id,tier_start,unit_price\n{VM},0,1\n", "'included_quantity' is missing"),
        (
            f"meter_id,tier_start,unit_price,included_quantity\n{VM},0,0.1234567890123456,\n",
            "significant digits",
        ),
    ],
)
def test_csv_sheet_problems_are_named(csv_text: str, problem: str) -> None:
    """Each malformed CSV is refused with a line that says what is wrong."""
    with pytest.raises(SheetRejectedError) as refused:
        read_csv_sheet(
            csv_text, catalogue(), scope="default", effective_from="2026-11-01", currency="USD"
        )
    assert any(problem in line for line in refused.value.problems), refused.value.problems


def test_sheets_round_trip_through_json_and_csv() -> None:
    """Export then import gives the same sheet, in both formats."""
    original = sheet(
        [
            {"meterId": VM, "tiers": {"0": "0.013", "50": "0.011"}, "includedQuantity": "7.5"},
            {"meterId": WIN, "unitPrice": "0.0461"},
        ]
    )
    assert read_json_sheet(sheet_json(original, catalogue()), catalogue()) == original
    again = read_csv_sheet(
        sheet_csv(original, catalogue()), catalogue(), scope="default", effective_from="2026-01-01"
    )
    assert again == original


def test_an_override_has_no_currency_and_a_base_sheet_no_discount() -> None:
    """Overrides price in their sheet's currency; discounts belong to overrides only."""
    with pytest.raises(SheetRejectedError, match="has no currency"):
        sheet([], scope=f"subscription:{DIRECT}", discount="5")
    with pytest.raises(SheetRejectedError, match="subscription override only"):
        sheet([{"meterId": VM, "unitPrice": "1"}], discount="5")


# --- the RateCard filter ---------------------------------------------------------------

GOOD = (
    "OfferDurableId eq 'MS-AZR-0003P' and Currency eq 'USD' and Locale eq 'en-US' "
    "and RegionInfo eq 'US'"
)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "OfferDurableId eq 'MS-AZR-0003P' and Currency eq 'USD' and Locale eq 'en-US'",
        GOOD.replace(" and RegionInfo", " or RegionInfo"),
        GOOD.replace("Currency eq", "Currency ne"),
        GOOD.replace("'MS-AZR-0003P'", "'0003P'"),
        GOOD.replace("'USD'", "'XYZ'"),
        GOOD.replace("'US'", "'USA'"),
        GOOD + " and Currency eq 'USD'",
        GOOD.replace("Locale", "Language"),
        GOOD.replace("'en-US'", "en-US"),
        GOOD.replace(" and ", "\u00a0and\u00a0", 1),  # non-breaking spaces
        GOOD.replace(" and ", "\nand ", 1),
        GOOD.replace(" eq ", "\teq ", 1),
        GOOD.replace("0003", "\uff10\uff10\uff10\uff13"),  # full-width digits
        GOOD.replace("'USD'", "'U\u017fD'"),  # a long s, which upper-cases to S
        GOOD.replace("'en-US'", "'en-" + "-".join(["abcdefgh"] * 4) + "'"),  # over 35
        GOOD.replace("'en-US'", "'en-aa-bb-cc-dd'"),  # five subtags
        "OfferDurableId" + " " * 1_000 + "x",
    ],
)
def test_rate_card_filters_azure_refuses_are_refused_with_its_message(text: str | None) -> None:
    """Missing terms, other operators, bad values, repeats: 400 InvalidFilter, Azure's text."""
    with pytest.raises(BadInputError) as refused:
        parse_rate_card_filter(text)
    assert refused.value.code == "InvalidFilter"
    assert refused.value.message == FILTER_MESSAGE


def test_rate_card_filter_accepts_azures_own_example_in_any_letter_case() -> None:
    """The spec's example filter, and the same with other letter cases, are read."""
    assert parse_rate_card_filter(GOOD).currency == "USD"
    terms = parse_rate_card_filter(
        GOOD.replace(" and ", " AND ").replace("OfferDurableId", "offerdurableid")
    )
    assert terms.offer_durable_id == "MS-AZR-0003P"


@pytest.mark.parametrize(
    ("sent", "answered"),
    [("en-US", "en-US"), ("EN-us", "en-US"), ("zh-hant-tw", "zh-Hant-TW"), ("de", "de")],
)
def test_rate_card_locale_is_answered_in_its_canonical_spelling(sent: str, answered: str) -> None:
    """The Locale the answer carries is built from the parsed tag, not the text as sent."""
    assert parse_rate_card_filter(GOOD.replace("'en-US'", f"'{sent}'")).locale == answered
