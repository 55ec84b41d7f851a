"""What a stage costs in storage requests is held to a recorded budget: a change that adds a
request per subscription (or per hour, page, run) fails here, naming the stage.

The counts are ``python -m bench cost``'s (``bench.cost.measure``) for a fleet of
``TENANTS`` directory tenants: exact, since a seeded fleet sends the same requests every run
(a storage fault retried under heavy load would add one; rerun before moving a budget).
When a change lowers a count, record the new budget here; when it raises one, it needs a
reason in docs/scale.md first.
"""

from __future__ import annotations

import pytest

from bench.cost import Stage, measure
from devstack.azurite import Azurite

TENANTS = 4

# Storage requests per stage at TENANTS directory tenants (docs/scale.md, "What each stage
# costs").
BUDGETS = {
    "collect_new_tables": 47,  # once per subscription's life: a new table's first batch
    "bill_new_ledger": 8,
    "rate_new_month": 49,  # a subscription's first charges of a month add its index entry
    "bill": 8,
    "rate": 35,  # 4 per subscription-hour: rows, ledger state, transaction, cost digest
    "rate_idle": 3,
    "daily": 15,
    "collect": 30,
    "plan": 3,
    "statements": 37,  # with each subscription-month's cost digest written from the final ledger
    "export": 16,
    "api_tenant_page": 3,
    "api_provider_page": 6,
    "api_cost_query_tenant": 5,
    "api_cost_query_provider": 9,
    "observe_reconcile": 31,
    "observe": 18,
}


@pytest.fixture(scope="module")
def stages(azurite: Azurite) -> dict[str, Stage]:
    stages, _ = measure(TENANTS, azurite=azurite)
    return stages


def test_every_stage_sends_exactly_its_budget_of_storage_requests(
    stages: dict[str, Stage],
) -> None:
    """Each stage's counted storage requests equal its recorded budget, stage by stage."""
    counted = {name: stage.storage_requests for name, stage in stages.items()}
    differing = [
        f"{name}: {counted.get(name)} requests, budget {budget} "
        f"({dict(stages[name].requests) if name in stages else 'not measured'})"
        for name, budget in BUDGETS.items()
        if counted.get(name) != budget
    ]
    assert not differing, "\n".join(differing)
    assert set(counted) == set(BUDGETS)


def test_no_budgeted_stage_is_far_from_its_ideal(stages: dict[str, Stage]) -> None:
    """Every stage with an ideal stays within 1.35x of it even at this small fleet (seven
    subscriptions with usage), where each execution's constant bookkeeping weighs most:
    collection, 1.30 (docs/scale.md)."""
    far = {
        name: stage.budget_ratio
        for name, stage in stages.items()
        if stage.budget_ratio is not None and stage.budget_ratio > 1.35
    }
    assert not far, far
