"""The API's route families: the bounded names API metrics are labelled with.

A metric label must never carry what a caller sent (a subscription id, a month, a filter):
each request is named by the family of its route only, and anything that is not one of them
is ``other`` (a 404 to be, or an attack).
"""

from __future__ import annotations

import re

_FAMILIES = (
    (
        "subscriberUsageAggregates",
        # the Admin namespace, and the first azsadmin spelling under Microsoft.Commerce
        r"/providers/microsoft\.commerce(\.admin)?/subscriberusageaggregates/?$",
    ),
    ("usageAggregates", r"/providers/microsoft\.commerce/usageaggregates/?$"),
    (
        "subscriberStatements",
        r"/providers/microsoft\.commerce\.admin/subscriberstatements/[^/]*/?$",
    ),
    ("statements", r"/providers/microsoft\.commerce/statements/[^/]*/?$"),
    (
        "subscriberAdjustments",
        r"/providers/microsoft\.commerce\.admin/subscriberadjustments/[^/]*/?$",
    ),
    ("adjustments", r"/providers/microsoft\.commerce/adjustments/[^/]*/?$"),
    ("RateCard", r"/providers/microsoft\.commerce/ratecard/?$"),
    (
        "costQuery",
        r"(/resourcegroups/[^/]+)?(/providers/microsoft\.commerce\.admin)?"
        r"/providers/microsoft\.costmanagement/query/?$",
    ),
)
_PATTERNS = tuple((name, re.compile(r"^/?[^/]*" + tail, re.IGNORECASE)) for name, tail in _FAMILIES)
ROUTE_FAMILIES = (
    *(name for name, _ in _FAMILIES),
    "subscriptions",
    "pipelineStatus",
    "operations",
    "other",
)


def route_family(route_path: str) -> str:
    """The family of a ``subscriptions/{*path}`` request's path (``other`` if none)."""
    if not route_path.strip("/"):
        return "subscriptions"  # the list itself
    return next((name for name, pattern in _PATTERNS if pattern.match(route_path)), "other")
