"""The admin status route: ``GET /providers/Microsoft.Commerce.Admin/pipelineStatus
?api-version=2015-06-01-preview``.

The same document ``ops status --json`` prints (``shared.status.view``), as an ARM resource
(``id``, ``name``, ``type``, ``properties``), for the service admin only (the ``UsageAdmin``
role): it names stamps, queues, exports and counts across every tenant, so a provider or a
tenant gets 403 even though nothing in it is a subscription's data. Same bearer-token
validation, ``api-version`` rule and ARM-shaped errors as every route of the API
(``shared.query``). 200 whether or not an objective is breached: the answer says which;
503 with Retry-After when storage is busy, as everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

from shared.core.errors import NotAllowedError
from shared.core.hours import utc_now
from shared.query.arguments import query_arguments, versioned_arguments
from shared.query.arm_responses import HttpAnswer, answered, json_answer
from shared.query.auth import TokenValidator
from shared.query.usage_api import HttpCall
from shared.status.reader import StatusReader
from shared.status.view import History, document

RESOURCE_ID: Final = "/providers/Microsoft.Commerce.Admin/pipelineStatus/current"
RESOURCE_TYPE: Final = "Microsoft.Commerce.Admin/pipelineStatus"


class StatusApi:
    """The admin status route; built once per process by ``shared.app``."""

    def __init__(
        self,
        *,
        reader: StatusReader,
        validator: TokenValidator,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._reader = reader
        self._validator = validator
        self._clock = clock

    def answer(self, call: HttpCall) -> HttpAnswer:
        """The answer to ``call``; never raises."""
        return answered(call.method, lambda correlation_id: self._serve(call))

    def _serve(self, call: HttpCall) -> HttpAnswer:
        caller = self._validator.validate(call.header("Authorization"))
        versioned_arguments(query_arguments(call.url))
        if not caller.is_admin:
            raise NotAllowedError(
                "the pipeline's status is for the service admin", code="AuthorizationFailed"
            )
        status = self._reader.read(self._clock())
        history = History.read(self._reader.account, status.at)
        return json_answer(
            200,
            {
                "id": RESOURCE_ID,
                "name": "current",
                "type": RESOURCE_TYPE,
                "properties": document(status, history),
            },
            {"Cache-Control": "no-store"},
        )
