"""HTTP trigger: ``GET /providers/Microsoft.Commerce.Admin/operations``, ARM's operations
list of the admin namespace (``shared.query.operations``).

Every verb reaches the app (another than GET is its 405). ``authLevel`` is anonymous because
every call is authenticated by its bearer token.
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
        answer = app().answer_operations_request(
            HttpCall(method=req.method, url=req.url, route_path="", headers=dict(req.headers))
        )
    except Exception:  # bad settings, or a bug: the answer never raises otherwise
        correlation_id = str(uuid.uuid4())
        logging.exception("commerce_operations: unexpected error [%s]", correlation_id)
        answer = internal_error(correlation_id)
    return func.HttpResponse(**answer.response_arguments())
