"""Timer trigger: rate every durable reported hour not rated yet into the ledger of charges."""

import logging

import azure.functions as func

from shared.app import LazyApp

app = LazyApp()


def main(timer: func.TimerRequest) -> None:
    run = app().rate_usage()
    logging.info(run.summary_line())
