"""HTTP trigger: the pipeline's status for the service admin (``shared.status.api``): the
objectives now and over 24 hours and 30 days, stamps, billing, queues, exports, statements.

``authLevel`` is anonymous because the call is authenticated by its bearer token (admin
only). Settings that fail to load answer an ARM 500 with a correlation id (logged).
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
        answer = app().answer_status_request(
            HttpCall(method=req.method, url=req.url, route_path="", headers=dict(req.headers))
        )
    except Exception:  # bad settings, or a bug: the answer never raises otherwise
        correlation_id = str(uuid.uuid4())
        logging.exception("pipeline_status: unexpected error [%s]", correlation_id)
        answer = internal_error(correlation_id)
    return func.HttpResponse(
        body=answer.body,
        status_code=answer.status,
        headers=answer.headers,
        mimetype=answer.mimetype,
        charset="utf-8",
    )
