"""The local host's timer trigger.

Mirrors ``TimerTriggerAttribute`` with ``useMonitor``:
    Six-field NCRONTAB schedules (``devstack.ncrontab``), evaluated on the injected clock in
    UTC. One run at a time per function: a run that overruns later slots is followed by ONE
    catch-up run with ``past_due=True``, never by overlapping runs or one run per missed
    slot. The last scheduled run per function is kept in memory (``schedule_status``, shared
    by hosts in one process by default), standing in for the host's persisted schedule
    status: a host that starts after a slot passed since the recorded run invokes a
    ``past_due=True`` run at once. ``run_timers_at_start`` (or ``runOnStartup``) adds a run at
    start even when nothing was missed. ``trigger_timer`` runs a timer function on demand, as
    the host's admin endpoint does, without moving the schedule status.

The behaviour is ``_TimerTriggers``, a mixin of ``LocalFunctionsHost`` (in ``app``); the
annotations at the top of the class name the host state it uses. The host starts one
``_timer_loop`` thread per timer function.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from azure.functions.timer import TimerRequest

from devstack.host.config import FunctionNotFoundError, _Function

if TYPE_CHECKING:
    from devstack.host.app import Invocation

# How often a waiting timer re-reads the clock: injected clocks move without notice.
_TIMER_TICK_SECONDS = 0.05
# The process-wide stand-in for the host's persisted timer schedule status.
_SCHEDULE_STATUS: dict[str, dt.datetime] = {}


class _TimerTriggers:
    """Runs timer functions on their schedule, on demand, and to catch up missed slots."""

    # Owned by LocalFunctionsHost.
    functions: dict[str, _Function]
    _key: str
    _clock: Callable[[], dt.datetime]
    _run_timers_at_start: bool
    _schedule_status: MutableMapping[str, dt.datetime]
    _timer_locks: dict[str, threading.Lock]
    _started: bool
    _stopping: threading.Event

    if TYPE_CHECKING:

        def _invoke(self, fn: _Function, trigger_value: Any, detail: str = "") -> Invocation: ...

    def trigger_timer(self, name: str, past_due: bool = False) -> Invocation:
        """Run timer function ``name`` once now, after any run in progress; return the outcome.

        Like the host's admin endpoint: it does not move the schedule status.
        """
        fn = self.functions.get(name)
        if not self._started or fn is None or fn.trigger_type != "timerTrigger":
            raise FunctionNotFoundError(f"no running timer function named {name!r}")
        return self._run_timer(fn, past_due=past_due, record=None, reason="manual")

    def _status_key(self, fn: _Function) -> str:
        return f"{self._key}/{fn.name}"

    def _run_timer(
        self, fn: _Function, *, past_due: bool, record: dt.datetime | None, reason: str
    ) -> Invocation:
        assert fn.schedule is not None
        with self._timer_locks[fn.name]:  # never two runs of one timer at once
            last = self._schedule_status.get(self._status_key(fn))
            now = self._clock()
            request = TimerRequest(
                past_due=past_due,
                schedule_status={
                    "Last": last.isoformat() if last else None,
                    "Next": fn.schedule.next_after(now).isoformat(),
                    "LastUpdated": now.isoformat(),
                },
                schedule={"AdjustForDST": True},
            )
            invocation = self._invoke(fn, request, f" reason={reason} past_due={past_due}")
            if record is not None:
                self._schedule_status[self._status_key(fn)] = record
            return invocation

    def _timer_loop(self, fn: _Function) -> None:
        schedule = fn.schedule
        assert schedule is not None
        key = self._status_key(fn)
        use_monitor = fn.trigger.get("useMonitor", True) is not False
        now = self._clock()
        last = self._schedule_status.get(key) if use_monitor else None
        if last is not None and schedule.next_after(last) <= now:
            self._run_timer(fn, past_due=True, record=now, reason="missed while stopped")
        elif self._run_timers_at_start or fn.trigger.get("runOnStartup") is True:
            self._run_timer(fn, past_due=False, record=now, reason="startup")
        reference = self._schedule_status.get(key, now) if use_monitor else now
        while not self._stopping.is_set():
            slot = schedule.next_after(reference)
            now = self._clock()
            if slot <= now:
                # The slot passed while a run was in progress (or the host slept): one
                # catch-up run for every slot missed, as the real host does.
                self._run_timer(fn, past_due=True, record=now, reason="overran slot")
                reference = now
                continue
            while not self._stopping.is_set() and (now := self._clock()) < slot:
                self._stopping.wait(min((slot - now).total_seconds(), _TIMER_TICK_SECONDS))
            if self._stopping.is_set():
                return
            # Noticed late enough that a later slot also passed: that slot was missed.
            late = schedule.next_after(slot) <= now
            self._run_timer(fn, past_due=late, record=now if late else slot, reason="schedule")
            reference = now if late else slot
