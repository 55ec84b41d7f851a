"""Timer trigger: send every source's due reported hours, slice by slice, to the collection
queue (collect_slice collects them, on as many instances as the scale controller runs)."""

import logging

import azure.functions as func

from shared.app import LazyApp

app = LazyApp()


def main(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logging.info("collect_usage: timer is past due; planning from the watermarks")
    for plan in app().plan_collection():
        logging.info(plan.summary_line())
