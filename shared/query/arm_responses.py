"""HTTP answers in ARM's shape, and how every error of the tree becomes one.

The HTTP edge never lets an exception escape (an escaped one is a bare 500 with no code).
:func:`error_answer` maps the error tree (``shared.core.errors``) to statuses::

    UnknownResourceError (a BadInputError)   -> 404 NotFound
    BadInputError                            -> 400 with its code
    NotAllowedError InvalidAuthenticationToken -> 401 + WWW-Authenticate: Bearer
    NotAllowedError (anything else)          -> 403 with its code
    TransientError, a transient AzureError   -> 503 ServiceUnavailable + Retry-After
      (throttling, timeouts, unreachable: ``shared.core.retry.is_transient``)
    any other AzureError                     -> 500 InternalServerError, cause logged
      (403 from a missing RBAC role, a wrong key, a table that was never created: retrying
      cannot help, so "try again later" would be a lie that hides the misconfiguration)
    anything else                            -> 500 InternalServerError

Every answer is ``{"error": {"code", "message", "target"?}}`` with the code repeated in
``x-ms-error-code`` and a correlation id in ``x-ms-correlation-request-id``. Unexpected
errors are logged with their stack trace under that id; the body carries only the id, never
the trace or the exception text (which may hold storage URLs or request content).

Every answer of every API route, success or error, leaves through :func:`answered` (or
:func:`secured` for the few answers made outside it), which adds :data:`SECURITY_HEADERS`:
``X-Content-Type-Options: nosniff`` (a browser never guesses HTML into a JSON or CSV body),
``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`` (an answer opened
as a page can load nothing and be framed by nobody), and ``Cache-Control: no-store`` unless
the route chose its own (answers are per caller: no shared cache may keep one). A new route
served through :func:`answered` gets them without asking.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError

from shared.core.errors import BadInputError, NotAllowedError, TransientError, UnknownResourceError
from shared.core.retry import is_transient
from shared.query.auth import INVALID_TOKEN_CODE

log = logging.getLogger(__name__)

JSON_MIMETYPE = "application/json"
DEFAULT_RETRY_AFTER_SECONDS = 5
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": API_CONTENT_SECURITY_POLICY,
}


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A response, independent of the Functions SDK (the entry point wraps it)."""

    status: int
    body: bytes
    mimetype: str = JSON_MIMETYPE
    headers: dict[str, str] = field(default_factory=dict)

    def response_arguments(self) -> dict[str, Any]:
        """The keyword arguments of the Functions SDK's ``HttpResponse`` for this answer
        (``func.HttpResponse(**answer.response_arguments())`` in an entry point)."""
        return {
            "body": self.body,
            "status_code": self.status,
            "headers": self.headers,
            "mimetype": self.mimetype,
            "charset": "utf-8",
        }


def json_answer(status: int, document: Any, headers: dict[str, str] | None = None) -> HttpAnswer:
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return HttpAnswer(status, body, JSON_MIMETYPE, dict(headers or {}))


def arm_error(
    status: int,
    code: str,
    message: str,
    correlation_id: str,
    *,
    target: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpAnswer:
    error: dict[str, str] = {"code": code, "message": message}
    if target is not None:
        error["target"] = target
    return json_answer(
        status,
        {"error": error},
        {
            "x-ms-error-code": code,
            "x-ms-correlation-request-id": correlation_id,
            **(headers or {}),
        },
    )


def error_answer(error: BaseException, correlation_id: str) -> HttpAnswer:
    """The ARM answer for ``error`` (see the module docstring)."""
    if isinstance(error, UnknownResourceError):
        return arm_error(404, "NotFound", error.message, correlation_id)
    if isinstance(error, BadInputError):
        return arm_error(400, error.code, error.message, correlation_id, target=error.target)
    if isinstance(error, NotAllowedError):
        if error.code == INVALID_TOKEN_CODE:
            return arm_error(
                401,
                INVALID_TOKEN_CODE,
                error.message,
                correlation_id,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return arm_error(403, error.code, error.message, correlation_id)
    if isinstance(error, AzureError) and not is_transient(error):
        status = error.status_code if isinstance(error, HttpResponseError) else None
        code = getattr(error, "error_code", None)
        log.error(
            "storage refused the app itself (%s, HTTP %s, %s: %s); check the storage "
            "settings and the identity's role assignments [%s]",
            type(error).__name__,
            status,
            getattr(code, "value", code) or "no error code",
            (str(error).splitlines() or [""])[0][:300],
            correlation_id,
        )
        return internal_error(correlation_id)
    if isinstance(error, TransientError | AzureError):
        seconds = (
            error.retry_after_seconds
            if isinstance(error, TransientError)
            else DEFAULT_RETRY_AFTER_SECONDS
        )
        log.warning("answering 503 (%s): %s [%s]", type(error).__name__, error, correlation_id)
        return arm_error(
            503,
            "ServiceUnavailable",
            "the service is busy; retry after the interval in Retry-After",
            correlation_id,
            headers={"Retry-After": str(max(1, math.ceil(seconds)))},
        )
    log.error("unexpected error [%s]", correlation_id, exc_info=error)
    return internal_error(correlation_id)


def internal_error(correlation_id: str) -> HttpAnswer:
    return secured(
        arm_error(
            500,
            "InternalServerError",
            f"an unexpected error occurred; correlation id {correlation_id}",
            correlation_id,
        )
    )


def secured(answer: HttpAnswer) -> HttpAnswer:
    """``answer`` with :data:`SECURITY_HEADERS`, and ``Cache-Control: no-store`` unless it
    names its own caching (the module docstring says why)."""
    for name, value in (*SECURITY_HEADERS.items(), ("Cache-Control", "no-store")):
        if not any(key.lower() == name.lower() for key in answer.headers):
            answer.headers[name] = value
    return answer


def answered(method: str, serve: Callable[[str], HttpAnswer], allowed: str = "GET") -> HttpAnswer:
    """The answer of one API request: ``serve(correlation_id)`` for the route's one method
    (``allowed``: GET, or POST for the cost query), 405 otherwise; any exception becomes its
    ARM answer (never raised), the correlation id is sent back in
    ``x-ms-correlation-request-id``, and every answer is :func:`secured`."""
    correlation_id = str(uuid.uuid4())
    if method.upper() != allowed:
        answer = arm_error(
            405,
            "MethodNotAllowed",
            f"only {allowed} is supported",
            correlation_id,
            headers={"Allow": allowed},
        )
    else:
        try:
            answer = serve(correlation_id)
        except Exception as error:
            answer = error_answer(error, correlation_id)
    answer.headers["x-ms-correlation-request-id"] = correlation_id
    return secured(answer)
