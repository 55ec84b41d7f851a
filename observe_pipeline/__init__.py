"""Timer trigger: read the objectives from stored state, keep the observation, record the
gauges Azure Monitor alerts on (docs/operations.md); once a day, reconcile the day before."""

import logging

import azure.functions as func

from shared.app import LazyApp

app = LazyApp()


def main(timer: func.TimerRequest) -> None:
    status = app().observe_pipeline()
    if status.breached:
        names = ", ".join(objective.value for objective in status.breached)
        logging.warning("observe_pipeline: objectives breached: %s", names)
    else:
        logging.info("observe_pipeline: every objective met or not yet measurable")
