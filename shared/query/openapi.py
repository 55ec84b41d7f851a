"""The OpenAPI 3 description of the usage API, shipped beside this module as ``openapi.json``.

Served as-is at ``GET /openapi.json``; the integration tests validate real responses
against its schemas, so it cannot drift from what the API answers without a test failing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

from shared.query.arm_responses import HttpAnswer, answered

DOCUMENT: Final = Path(__file__).with_name("openapi.json")


@cache
def _document_bytes() -> bytes:
    return DOCUMENT.read_bytes()


def openapi_answer(method: str = "GET") -> HttpAnswer:
    """The document, cacheable for an hour (it changes only with a deployment and holds no
    caller's data), with every API answer's headers; another verb is 405."""
    return answered(
        method,
        lambda _: HttpAnswer(
            200,
            _document_bytes(),
            "application/json",
            {"Cache-Control": "public, max-age=3600"},
        ),
    )
