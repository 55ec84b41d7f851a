"""HTTP trigger: the tenant and provider usage APIs (spec/usage-api.md), and beside them the
subscriptions list, the chargeback routes and the cost query (its one POST route).

The route is a catch-all under ``subscriptions/`` so that paths with an empty or missing
subscription segment reach ``shared.query.usage_api`` (400 SubscriptionIdMissingInRequest),
and it takes every verb so that one the API does not serve is its 405, not the host's bare
404. ``authLevel`` is anonymous because every call is authenticated by its bearer token.
Settings that fail to load answer an ARM 500 with a correlation id (logged), like any
other unexpected error.
"""

import logging
import uuid

import azure.functions as func

from shared.app import LazyApp
from shared.query.arm_responses import internal_error
from shared.query.usage_api import HttpCall

app = LazyApp()


def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        answer = app().answer_usage_request(
            HttpCall(
                method=req.method,
                url=req.url,
                route_path=req.route_params.get("path") or "",
                headers=dict(req.headers),
                body=req.get_body() or b"",
            )
        )
    except Exception:  # bad settings, or a bug: the answer never raises otherwise
        correlation_id = str(uuid.uuid4())
        logging.exception("query_usage: unexpected error [%s]", correlation_id)
        answer = internal_error(correlation_id)
    return func.HttpResponse(**answer.response_arguments())
