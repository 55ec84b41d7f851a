"""HTTP trigger: ``GET /openapi.json``, the shipped OpenAPI 3 description of the usage API."""

import azure.functions as func

from shared.query.openapi import openapi_answer


def main(req: func.HttpRequest) -> func.HttpResponse:
    answer = openapi_answer()
    return func.HttpResponse(
        body=answer.body,
        status_code=answer.status,
        headers=answer.headers,
        mimetype=answer.mimetype,
        charset="utf-8",
    )
