"""The admin status route through the local Functions host (real HTTP), over the session's
world (a fleet's day collected): the admin gets the ``ops status`` document as an ARM
resource; anyone else gets the API's ARM errors."""

from __future__ import annotations

from devstack.host import LocalFunctionsHost
from shared.query.arguments import API_VERSION
from shared.status.objectives import Objective
from tests.integration.test_query_support import World, call

PATH = "/providers/Microsoft.Commerce.Admin/pipelineStatus"


def test_the_admin_reads_the_pipeline_status_as_an_arm_resource(
    world: World, host: LocalFunctionsHost
) -> None:
    """200 for the admin: every objective with its state now, 24 h and 30 d, the stamps'
    watermarks (the world's last hour), queues, and the series a chart draws."""
    answer = call(host.base_url, PATH, {"api-version": API_VERSION}, world.admin_token())
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["id"] == PATH + "/current"
    assert body["type"] == "Microsoft.Commerce.Admin/pipelineStatus"
    status = body["properties"]
    assert [o["name"] for o in status["objectives"]] == [o.value for o in Objective]
    for objective in status["objectives"]:
        assert objective["state"] in ("met", "breached", "unknown")
        assert set(objective["last24h"]) >= {"observations", "metShare", "worst", "state"}
    (stamp,) = status["stamps"]
    assert stamp["watermark"] == status["collectedThrough"]
    assert status["healthy"] == (not status["breached"])
    assert set(status["queues"]) == {"billing", "collection"}
    assert isinstance(status["series"], list)


def test_the_status_route_is_for_the_admin_only(world: World, host: LocalFunctionsHost) -> None:
    """A tenant or provider gets 403, no token 401, a missing api-version 400: ARM errors."""
    tenant = world.tenants()[0]
    tenant_token = world.token(tenant.owners[0])
    refused = call(host.base_url, PATH, {"api-version": API_VERSION}, tenant_token)
    assert refused.status_code == 403
    assert refused.headers["x-ms-error-code"] == "AuthorizationFailed"
    assert "properties" not in refused.json()
    anonymous = call(host.base_url, PATH, {"api-version": API_VERSION})
    assert anonymous.status_code == 401
    assert anonymous.headers["x-ms-error-code"] == "InvalidAuthenticationToken"
    unversioned = call(host.base_url, PATH, None, world.admin_token())
    assert unversioned.status_code == 400
    assert unversioned.headers["x-ms-error-code"] == "NoApiVersion"
