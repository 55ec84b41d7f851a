"""Timer trigger: collect every closed reported hour the watermark has not reached yet."""

import logging

import azure.functions as func

from shared.app import LazyApp

app = LazyApp()


def main(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logging.info("collect_usage: timer is past due; catching up from the watermark")
    run = app().collect_due_hours()
    logging.info(run.summary_line())
