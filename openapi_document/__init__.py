"""HTTP trigger: ``GET /openapi.json``, the shipped OpenAPI 3 description of the usage API
(every verb reaches it; another than GET is a 405 of the app's, not the host's 404)."""

import azure.functions as func

from shared.query.openapi import openapi_answer


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(**openapi_answer(req.method).response_arguments())
