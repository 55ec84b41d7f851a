"""Run one benchmark: ``python -m bench NAME [--quick]``
(NAME: collect, query, report, load, chaos, rating, export, hostile, azurite, cost, portal)."""

from __future__ import annotations

import importlib
import sys

from devstack.fleet import register_simulated_source

BENCHMARKS = (
    "collect",
    "query",
    "report",
    "load",
    "chaos",
    "rating",
    "export",
    "hostile",
    "azurite",
    "cost",
    "portal",
)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m bench {{{','.join(BENCHMARKS)}}} [--quick]", file=sys.stderr)
        return 2
    # Benchmarks run the app on the local stack: USAGE_SOURCE=simulated is the fleet.
    register_simulated_source()
    module = importlib.import_module(f"bench.{argv[0]}")
    return int(module.main(argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
