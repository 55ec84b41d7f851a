"""Timer trigger: collect every closed reported hour the watermark has not reached yet."""

import logging

import azure.functions as func

from shared.collector import collect_due_hours
from shared.config import get_settings


def main(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logging.info("collect_usage: timer is past due; catching up from the watermark")
    run = collect_due_hours(get_settings())
    logging.info(run.summary_line())
