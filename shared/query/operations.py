"""``GET /providers/Microsoft.Commerce.Admin/operations``: the operations this API serves.

ARM's ``Operations_List`` (azsadmin ``Commerce.json``, 2015-06-01-preview): ``{"value":
[{"name", "display": {"provider", "resource", "operation", "description"}}]}``, one entry
per REST operation, named as RBAC names actions. Admin clients generated from that
description (``Azs.Commerce.Admin``) call it; it lists what this app answers under the
admin namespace. Like every route here it needs a valid bearer token (401 otherwise) and
``api-version``; the list is the same for every caller (what a caller may read is decided
per request by ``shared.query.caller_scope``).
"""

from __future__ import annotations

from typing import Any, Final

from shared.query.arguments import query_arguments, versioned_arguments
from shared.query.arm_responses import HttpAnswer, answered, json_answer
from shared.query.auth import TokenValidator
from shared.query.usage_api import HttpCall

PROVIDER_DISPLAY: Final = "Microsoft Commerce Service"
OPERATIONS: Final = (
    (
        "Microsoft.Commerce.Admin/operations/read",
        "Operation",
        "List Operations",
        "Lists the supported operations.",
    ),
    (
        "Microsoft.Commerce.Admin/subscriberUsageAggregates/read",
        "SubscriberUsageAggregates",
        "List Subscriber Usage Aggregates",
        "Lists the usage aggregates of a provider subscription's direct tenants.",
    ),
    (
        "Microsoft.Commerce.Admin/subscriberStatements/read",
        "SubscriberStatements",
        "Get Subscriber Statements",
        "Gets a provider subscription's monthly roll-up of its direct tenants' statements.",
    ),
    (
        "Microsoft.Commerce.Admin/subscriberAdjustments/read",
        "SubscriberAdjustments",
        "List Subscriber Adjustments",
        "Lists the credits, corrections and one-off charges of a provider subscription's "
        "direct tenants in a month.",
    ),
)


def operations_document() -> dict[str, Any]:
    """The ``OperationList`` this API answers."""
    return {
        "value": [
            {
                "name": name,
                "display": {
                    "provider": PROVIDER_DISPLAY,
                    "resource": resource,
                    "operation": operation,
                    "description": description,
                },
            }
            for name, resource, operation, description in OPERATIONS
        ]
    }


class OperationsApi:
    """The operations route, sharing the usage API's token validator (one JWKS cache)."""

    def __init__(self, validator: TokenValidator) -> None:
        self._validator = validator

    def answer(self, call: HttpCall) -> HttpAnswer:
        """The answer to ``call``; never raises."""
        return answered(call.method, lambda _: self._serve(call))

    def _serve(self, call: HttpCall) -> HttpAnswer:
        self._validator.validate(call.header("Authorization"))
        versioned_arguments(query_arguments(call.url))
        return json_answer(200, operations_document())
