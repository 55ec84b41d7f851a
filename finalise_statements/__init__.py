"""Timer trigger: store the final statements of every month the collection has closed."""

import logging

import azure.functions as func

from shared.app import LazyApp

app = LazyApp()


def main(timer: func.TimerRequest) -> None:
    run = app().finalise_statements()
    logging.info(run.summary_line())
