"""HTTP trigger: the usage portal's static web app (``shared.portal``) under ``/portal/``.

``authLevel`` is anonymous because the page and its files are public; every number it shows
is fetched by the browser from the usage API with the signed-in caller's bearer token.
Settings that fail to load answer a plain 500 with a correlation id (logged).
"""

import logging
import uuid

import azure.functions as func

from shared.app import LazyApp
from shared.portal.site import PortalRequest

app = LazyApp()


def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        answer = app().answer_portal_request(
            PortalRequest(
                method=req.method,
                url=req.url,
                path=req.route_params.get("path") or "",
                headers=dict(req.headers),
            )
        )
    except Exception:  # bad settings, or a bug: the answer never raises otherwise
        correlation_id = str(uuid.uuid4())
        logging.exception("portal: unexpected error [%s]", correlation_id)
        return func.HttpResponse(
            f"portal unavailable; correlation id {correlation_id}", status_code=500
        )
    return func.HttpResponse(
        body=answer.body,
        status_code=answer.status,
        headers=answer.headers,
        mimetype=answer.mimetype.partition(";")[0],
        charset="utf-8",
    )
