"""Queue trigger: report one billing work item to the commerce endpoint.

Transient failures raise, so the host redelivers and, after maxDequeueCount, poisons.
"""

import logging

import azure.functions as func

from shared.app import LazyApp

app = LazyApp()


def main(msg: func.QueueMessage) -> None:
    logging.info("report_to_azure: message %s, delivery %s", msg.id, msg.dequeue_count)
    app().report_message(msg.get_body())
