"""The run command's catch-up fits in the local Azurite: kept, narrowed or refused by count."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from devstack.capacity import (
    CHARS_PER_ENTITY,
    DEFAULT_HOURS,
    FILL,
    HEAP_CEILING_MB,
    HEAP_FLOOR_MB,
    LOCAL_CONCURRENCY,
    NODE_MAX_STRING_LENGTH,
    DoesNotFitError,
    available_memory_mb,
    catch_up_entities,
    days_closed,
    node_heap_mb,
    plan_catch_up,
    store_limit,
)
from devstack.host import _HostOptions

REPO = Path(__file__).resolve().parents[2]
LAST = datetime(2026, 11, 26, 17, tzinfo=UTC)  # 18 hours of the day are closed
# This machine's walls: Node 20's longest string, a heap far above what it needs.
LIMIT = store_limit(heap_mb=8_192, max_string_length=NODE_MAX_STRING_LENGTH)


def test_the_string_is_the_wall_on_a_large_machine_and_the_heap_on_a_small_one() -> None:
    """With a large heap the saved string bounds the store; with a small one, the heap."""
    assert LIMIT.entities == NODE_MAX_STRING_LENGTH // CHARS_PER_ENTITY
    assert "passes V8's longest string, 536,870,888 characters" in LIMIT.wall
    small = store_limit(heap_mb=1_024, max_string_length=NODE_MAX_STRING_LENGTH)
    assert small.entities < LIMIT.entities
    assert small.wall == "Node's heap of 1,024 MB is full"


def test_node_gets_half_the_available_memory_within_bounds() -> None:
    """Half of what is available, never below the floor nor above the ceiling."""
    assert node_heap_mb(10_000) == 5_000
    assert node_heap_mb(1_000) == HEAP_FLOOR_MB
    assert node_heap_mb(200_000) == HEAP_CEILING_MB


def test_available_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    """MemAvailable (KiB) becomes MiB."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20480000 kB\n")
    assert available_memory_mb(meminfo) == 20_000


def test_the_daily_rows_of_each_day_closing_in_the_window_are_counted() -> None:
    """A day closes when its 23:00 hour is collected: counted once per such hour."""
    assert [days_closed(LAST, hours) for hours in (1, 18, 19, 24, 42, 43, 66, 67)] == [
        0, 0, 1, 1, 1, 2, 2, 3,
    ]  # fmt: skip
    midnight = datetime(2026, 11, 26, 23, tzinfo=UTC)
    assert [days_closed(midnight, hours) for hours in (1, 24, 25)] == [1, 1, 2]
    assert catch_up_entities(300, 19, LAST) > catch_up_entities(300, 18, LAST) * 19 / 18


def test_a_small_fleet_keeps_the_default_window() -> None:
    """The README's default fleet catches up 24 hours, and the line says how much it adds."""
    plan = plan_catch_up(tenants=12, hours=None, last=LAST, limit=LIMIT)
    assert plan.hours == DEFAULT_HOURS
    assert plan.line.startswith("Catch-up: 24 hours of 12 tenants, ~")
    hours_left = (LIMIT.entities - plan.entities) // (12 * 72)  # 72 entities a tenant-hour
    assert plan.line.endswith(f"serving adds ~864 an hour: room for ~{hours_left} hours.")


def test_a_large_fleet_without_hours_is_narrowed_to_what_fits() -> None:
    """No --hours: the window shrinks to the most hours that fit, said in one line."""
    room = int(LIMIT.entities * FILL)
    tenants = 400
    assert catch_up_entities(tenants, DEFAULT_HOURS, LAST) > room
    plan = plan_catch_up(tenants=tenants, hours=None, last=LAST, limit=LIMIT)
    assert 1 <= plan.hours < DEFAULT_HOURS
    assert plan.entities <= room < catch_up_entities(tenants, plan.hours + 1, LAST)
    assert plan.line.startswith(f"Catch-up narrowed to {plan.hours} hours: 24 hours of 400")
    assert "\n" not in plan.line


def test_hours_given_that_do_not_fit_are_refused_with_the_largest_that_fit() -> None:
    """--hours asked for is never narrowed silently: refused, naming what fits."""
    with pytest.raises(DoesNotFitError) as refused:
        plan_catch_up(tenants=400, hours=24, last=LAST, limit=LIMIT)
    message = str(refused.value)
    hours = int(message.split("the largest that fits is --hours ")[1].split(" ")[0])
    tenants = int(message.split(" or --tenants ")[1].split(" ")[0].replace(",", ""))
    room = int(LIMIT.entities * FILL)
    assert catch_up_entities(400, hours, LAST) <= room < catch_up_entities(400, hours + 1, LAST)
    assert catch_up_entities(tenants, 24, LAST) <= room < catch_up_entities(tenants + 1, 24, LAST)


def test_a_fleet_too_large_for_one_hour_is_refused_naming_the_largest_fleet() -> None:
    """Even one hour does not fit: the message names the largest --tenants instead."""
    with pytest.raises(DoesNotFitError, match=r"largest that fits is --tenants [\d,]+ for 24 h"):
        plan_catch_up(tenants=100_000, hours=None, last=LAST, limit=LIMIT)


def test_stamps_multiply_the_fleet_and_the_answer_is_per_stamp() -> None:
    """--stamps 2 writes two fleets: the --tenants named is per stamp."""
    one = plan_catch_up(tenants=200, hours=None, last=LAST, limit=LIMIT)
    two = plan_catch_up(tenants=100, stamps=2, hours=None, last=LAST, limit=LIMIT)
    assert one.hours == two.hours
    assert "100 tenants x 2 stamps" in two.line


def test_what_is_stored_already_counts_and_fresh_is_suggested() -> None:
    """A kept store leaves less room; a refusal then says --fresh starts empty."""
    room = int(LIMIT.entities * FILL)
    with pytest.raises(DoesNotFitError, match=r"beside the ~.* stored.*--fresh starts empty"):
        plan_catch_up(tenants=12, hours=24, last=LAST, limit=LIMIT, stored_entities=room - 10)


def test_the_run_narrows_the_hosts_concurrency_through_app_settings() -> None:
    """AzureFunctionsJobHost__ settings override host.json, as the Functions host does: the
    run's host takes 2 slices at once (1 more fetched), not host.json's 8 (and 4)."""
    deployed = _HostOptions.load(REPO / "host.json")
    local = _HostOptions.load(REPO / "host.json", LOCAL_CONCURRENCY)
    assert (deployed.queues.batch_size, deployed.queues.threshold) == (8, 4)
    assert (local.queues.batch_size, local.queues.threshold) == (2, 1)
    assert local.queues.visibility_timeout == deployed.queues.visibility_timeout
    assert local.route_prefix == deployed.route_prefix
    spelled = _HostOptions.load(
        REPO / "host.json", {"azurefunctionsjobhost__Extensions__Queues__BatchSize": "3"}
    )
    assert spelled.queues.batch_size == 3
