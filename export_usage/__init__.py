"""Timer trigger: write every configured export's month-to-date (and, on days 1-5, the
previous month's final files) to Blob storage."""

import logging

import azure.functions as func

from shared.app import LazyApp

app = LazyApp()


def main(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logging.info("export_usage: timer is past due; exporting now")
    for run in app().export():
        logging.info(run.summary_line())
