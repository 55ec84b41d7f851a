"""Queue trigger: collect one slice of one usage source's reported hour (collect_usage plans
the slices). Failures raise, so the host redelivers and, after maxDequeueCount, poisons;
the next planning run sends a slice that is still not durable again."""

import logging

import azure.functions as func

from shared.app import LazyApp

app = LazyApp()


def main(msg: func.QueueMessage) -> None:
    result = app().collect_slice_message(msg.get_body())
    if result is None:
        logging.info("collect_slice: message %s: slice already durable", msg.id)
        return
    logging.info(
        "collect_slice: reported hour %s: %d rows, %d subscriptions, %d quarantined, %.2fs%s",
        f"{result.hour:%Y-%m-%dT%H}Z",
        result.rows,
        result.subscriptions,
        result.quarantined,
        result.seconds,
        "" if result.watermark is None else f", hour closed (watermark {result.watermark})",
    )
