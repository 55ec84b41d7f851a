"""Fuzzing query_usage from its own OpenAPI description (schemathesis), over real HTTP.

Schemathesis generates requests for both routes from ``shared/query/openapi.json`` (valid and
invalid path segments and arguments, as the document allows) and sends them to the local
host serving the collected query world, as the admin (the widest scope) and as a tenant.
Each response must not be a 5xx, must use a status and content type the document lists,
and must validate against the response schema it declares. Budget: a fixed number of
examples per operation, derandomised, so the run is bounded and repeatable.

The checks are named, not the defaults: "positive data acceptance" would expect any
schema-valid date-time to be accepted, but the spec requires hourly alignment and a past
end (documented 400s the OpenAPI types cannot express).
"""

from __future__ import annotations

import json

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.host import LocalFunctionsHost
from shared.query.openapi import DOCUMENT
from tests.integration.test_query_support import World

SCHEMA = schemathesis.openapi.from_dict(json.loads(DOCUMENT.read_text()))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Both usage routes. The provider route's older spelling (Microsoft.Commerce/
# subscriberUsageAggregates) runs the same code: test_query_api compares it page for page.
USAGE_ROUTES = SCHEMA.include(method="GET", path_regex="usageAggregates|UsageAggregates").exclude(
    path_regex="Commerce/subscriberUsageAggregates"
)
BUDGET = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@USAGE_ROUTES.parametrize()
@BUDGET
def test_fuzzed_requests_as_admin_never_fail_the_description(
    case: schemathesis.Case, world: World, host: LocalFunctionsHost
) -> None:
    """Admin caller: no 5xx; status, content type, headers and body as documented."""
    headers = {"Authorization": f"Bearer {world.admin_token()}"}
    case.call_and_validate(base_url=host.base_url, headers=headers, checks=CHECKS, timeout=60)


@USAGE_ROUTES.parametrize()
@BUDGET
def test_fuzzed_requests_as_a_tenant_never_fail_the_description(
    case: schemathesis.Case, world: World, host: LocalFunctionsHost
) -> None:
    """Tenant caller (403s and 400s mostly): no 5xx, every answer as documented."""
    tenant = next(t for t in world.tenants() if t.owners)
    path = case.path_parameters
    # Half the cases aim at the caller's own subscription, so 200s are fuzzed too.
    if path is not None and len(str(path.get("subscriptionId", ""))) % 2 == 0:
        path["subscriptionId"] = tenant.subscription_id
    headers = {"Authorization": f"Bearer {world.token(tenant.owners[0])}"}
    case.call_and_validate(base_url=host.base_url, headers=headers, checks=CHECKS, timeout=60)
