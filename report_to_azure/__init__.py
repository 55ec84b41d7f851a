"""Queue trigger: report one billing work item to the commerce endpoint.

Transient failures raise, so the host redelivers and, after maxDequeueCount, poisons.
"""

import logging

import azure.functions as func

from shared.config import get_settings
from shared.reporter import report_message


def main(msg: func.QueueMessage) -> None:
    logging.info("report_to_azure: message %s, delivery %s", msg.id, msg.dequeue_count)
    result = report_message(msg.get_body(), get_settings())
    logging.info(result.summary_line())
