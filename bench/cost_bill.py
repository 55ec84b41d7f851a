"""The monthly bill of N active subscriptions, from ``bench cost``'s counts and list prices.

Every request count comes from a measured stage (its per-unit figure); what is assumed is
said beside it (how often each unit happens in a month, how long an execution holds its
instance's memory). Prices are pay-as-you-go list prices in USD; each names where it was
read and when (docs/scale.md, "The monthly bill"). Money is Decimal.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

HOURS = Decimal(730)  # Azure's month
DAYS = Decimal("30.4")


@dataclass(frozen=True)
class Price:
    usd: Decimal
    per: Decimal  # units the price is for
    source: str


# Table storage: every request is one transaction (an entity-group transaction included).
TABLE_TRANSACTIONS = Price(
    Decimal("0.00036"),
    Decimal(10_000),
    "Azure Retail Prices API (prices.azure.com/api/retail/prices), Table Storage LRS "
    "operations, as checked on 2026-07-21 and quoted by a public project's pricing note",
)
TABLE_CAPACITY = Price(
    Decimal("0.045"),
    Decimal(1),  # per GB-month
    "the same source and date: Table Storage LRS data stored, per GB-month",
)
FLEX_EXECUTIONS = Price(
    Decimal("0.40"),
    Decimal(1_000_000),
    "azure.microsoft.com/en-us/pricing/details/functions (Flex Consumption on demand), "
    "as quoted in a public 2026 serverless comparison (after July 2026); free grant "
    "250,000 executions a month",
)
FLEX_GB_SECONDS = Price(
    Decimal("0.000026"),
    Decimal(1),
    "the same page and date (also modal.com's 2025-05-22 guide); free grant 100,000 GB-s a month",
)
FLEX_FREE_EXECUTIONS = Decimal(250_000)
FLEX_FREE_GB_SECONDS = Decimal(100_000)
INSTANCE_GB = Decimal(2)  # infra/app/function-app.bicep: instanceMemoryMB 2048
# Not found from this machine: the queue operations and blob operation list prices (the
# official pages were not reachable). The bill counts those operations and prices them at
# the table transaction rate, marked as such; they are under 3% of the requests.
QUEUE_AND_BLOB_OPERATIONS = TABLE_TRANSACTIONS
# Assumed, not measured: the wall time an execution holds its instance, from its requests
# (in Azure a storage round trip in the region is ~10 ms and the app keeps 8 in flight)
# and its commerce POSTs (one at a time per item, ~100 ms each).
ROUND_TRIP_SECONDS = Decimal("0.010")
IN_FLIGHT = Decimal(8)
COMMERCE_SECONDS = Decimal("0.100")
EXECUTION_FLOOR_SECONDS = Decimal("0.050")  # a warm execution's own work, at least


@dataclass(frozen=True)
class Monthly:
    """What a month of N active subscriptions sends and holds."""

    table_requests: Decimal
    queue_blob_requests: Decimal
    executions: Decimal
    gb_seconds: Decimal
    stored_gb: Decimal  # at the end of the month's growth (one month of rows)

    def lines(self) -> dict[str, Decimal]:
        storage = self.table_requests / TABLE_TRANSACTIONS.per * TABLE_TRANSACTIONS.usd
        queues = self.queue_blob_requests / TABLE_TRANSACTIONS.per * TABLE_TRANSACTIONS.usd
        executions = max(Decimal(0), self.executions - FLEX_FREE_EXECUTIONS)
        gb_seconds = max(Decimal(0), self.gb_seconds - FLEX_FREE_GB_SECONDS)
        return {
            "table_transactions": storage,
            "queue_and_blob_operations": queues,
            "capacity_growth": self.stored_gb * TABLE_CAPACITY.usd,
            "function_executions": executions / FLEX_EXECUTIONS.per * FLEX_EXECUTIONS.usd,
            "function_gb_seconds": gb_seconds * FLEX_GB_SECONDS.usd,
        }


def execution_seconds(requests: Decimal, commerce_calls: Decimal) -> Decimal:
    return max(
        EXECUTION_FLOOR_SECONDS,
        requests / IN_FLIGHT * ROUND_TRIP_SECONDS + commerce_calls * COMMERCE_SECONDS,
    )
