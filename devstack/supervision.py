"""The run command's children: watched while they run, stopped in order, never left behind.

The local stack is three processes beside the run command: Azurite, the commerce emulator
and the local Functions host. Any of them can die under it (Node aborting when the store
outgrows its longest string, a port taken, a bug); before this module the run went on
retrying against a closed port until its first cycle's timeout, and the dead process stayed
a zombie. Now:

- **A child that exits stops the run.** A thread per child waits for its exit (and so reaps
  it at once: no zombie). An exit the run did not ask for stops the other children and ends
  the run within seconds, exit code ``CHILD_EXITED``, naming the child, its exit status and
  the last lines of its log (``.local/azurite.log`` and the like).
- **Signals always work.** SIGINT and SIGTERM stop every child and end the run in whatever
  the main thread is doing (starting, catch-up, billing, printing, serving): the handler
  itself stops the children and leaves, rather than raising into code that may be waiting
  on a thread pool or retrying against storage for a minute. Stopping while serving is
  the normal end (exit 0); before that the first cycle was cut short (``128 + signal``).
- **Never outliving the run.** A run killed outright (SIGKILL, which no handler sees) takes
  its children with it: each asks the kernel for a signal when its parent dies
  (``die_with_parent``, Linux's ``PR_SET_PDEATHSIG``): SIGTERM for Azurite (it saves its
  data), SIGKILL for the host (whose SIGTERM waits for its invocations).
- **Stopped in order, in bounded time.** Each child runs in a session of its own, so a
  Ctrl-C at the terminal reaches the run command only; the run stops the host first (so
  nothing writes while storage stops), then the emulator, then Azurite (which saves its
  data on SIGTERM), each within its share of ``STOP_SECONDS`` (``CLEAN_STOP_SECONDS`` at
  the normal end of ``--once``, so a large store is saved whole), after which it is
  killed. A signal during that normal end kills the children at once.

Whatever ends the run first wins; a second signal, or a child exiting while the children are
being stopped, changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

# Exit code of a run ended by a child's unexpected exit.
CHILD_EXITED = 3
# Seconds from a signal (or a child's death) to every child stopped and reaped.
STOP_SECONDS = 4.0
# Seconds the normal ending (--once done) gives the children: Azurite saves its whole store
# on SIGTERM (30 s for 474 MB here). A signal meanwhile kills what is left at once.
CLEAN_STOP_SECONDS = 120.0
# What is left for SIGKILL and reaping once a child's grace is over.
KILL_SECONDS = 0.3
# Lines of a dead child's log quoted in the run's message.
TAIL_LINES = 15


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for a child: ``signum`` to it when the process that started it dies
    (Linux; nothing elsewhere). SIGKILL for a child whose SIGTERM may wait a long time
    (the host finishing its invocations), SIGTERM for one that should save its data. The
    kernel sends it when the *thread* that started the child ends: start children from the
    main thread."""

    def ask() -> None:  # runs in the child, between fork and exec: one system call
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signum)

    return ask


def stop_process_group(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds (at once when
    ``grace`` is 0), then reap it (a wait bounded too, so a stop never hangs).

    Children of the local stack run in sessions of their own, so their process group is
    their pid. A child that already exited is only reaped: its pid may be another
    process's by now.
    """
    if process.poll() is None:
        if grace > 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    # SIGKILL takes effect at once; bounded all the same, so a stop can never hang.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_SECONDS * 10)


def exit_status(returncode: int) -> str:
    """``status 1``, or ``killed by SIGKILL (9)`` for a signal (Popen's negative codes)."""
    if returncode >= 0:
        return f"status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "signal"
    return f"killed by {name} ({-returncode})"


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of a log (its last 64 KiB are enough)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 65536))
            text = log.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


@dataclass(frozen=True)
class Child:
    """A supervised process: what to call it, where it logs, and how it stops."""

    name: str  # as the run's messages say it: "Azurite", "the commerce emulator", ...
    process: subprocess.Popen[Any]
    log_path: Path
    stop: Callable[[float], None]  # stop within the seconds given, then kill; reaps
    grace: float | None = None  # the most it may take to stop cleanly (None: what is left)


def _exit_process(code: int) -> None:
    """End this process at once: the children are stopped, nothing else must be waited
    for (a thread pool draining its queue, a storage call still retrying)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a half-written line in the main thread
            stream.flush()
    os._exit(code)


class Supervisor:
    """Watches the children; stops them all, in reverse order of start, on any ending.

    ``phase`` names what the run is doing, for messages and the exit code of a signal
    (``"serving"`` stops with 0). Use as a context manager around the children's lives:
    leaving it stops them (the normal ending); ``handling_signals`` installs the SIGINT
    and SIGTERM handlers for its block.
    """

    def __init__(
        self,
        *,
        stop_seconds: float = STOP_SECONDS,
        exit_process: Callable[[int], None] = _exit_process,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.phase = "starting"
        self._children: list[Child] = []
        self._stop_seconds = stop_seconds
        self._exit_process = exit_process
        self._report = report or _write_stderr
        # Reentrant: a signal handler may run while the main thread holds it (in watch).
        self._lock = threading.RLock()
        self._ending = False
        self._stopping_cleanly = False  # the normal ending, which a signal may hurry
        self._ended = threading.Event()  # every child stopped
        self._watchers: list[threading.Thread] = []

    @property
    def ending(self) -> bool:
        """True once something has begun stopping the children."""
        return self._ending

    def watch(self, child: Child) -> None:
        """Supervise ``child`` from now on: its unexpected exit ends the run."""
        watcher = threading.Thread(
            target=self._wait_for, args=(child,), name=f"watch-{child.name}", daemon=True
        )
        with self._lock:
            self._children.append(child)
            self._watchers.append(watcher)
        watcher.start()

    def stop_all(self) -> None:
        """Stop every child (the normal ending), giving each the time it needs to stop
        cleanly; later exits change nothing, a signal kills what is left. If another ending
        is under way, wait for it."""
        if self._begin_ending():
            self._stopping_cleanly = True
            self._stop_children(seconds=CLEAN_STOP_SECONDS)
            self._ended.set()
        else:
            self._ended.wait(timeout=self._stop_seconds + 1)

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM stop the children and end the process, in this block."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()

    # -- endings ---------------------------------------------------------------------------

    def _wait_for(self, child: Child) -> None:
        returncode = child.process.wait()  # reaps it the moment it exits
        if self._ending or not self._begin_ending():
            return  # asked to stop, or the run is ending anyway
        child.stop(0.0)  # nothing to stop: its own clean-up (a log still being copied)
        lines = [
            f"{child.name} exited ({exit_status(returncode)}) while {self.phase}; "
            f"the run stops. The end of its log, {child.log_path}:"
        ]
        lines += [f"  | {line}" for line in log_tail(child.log_path)] or ["  | (empty)"]
        self._end(CHILD_EXITED, "\n".join(lines), stopped=child)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self._begin_ending():
            if self._stopping_cleanly:
                self._stopping_cleanly = False
                self._hurry(128 + signum, f"{name} while stopping: killing what is left")
            return  # already stopping, within its bound
        code = 0 if self.phase == "serving" else 128 + signum
        self._end(code, f"{name} while {self.phase}: stopping the local stack")

    def _begin_ending(self) -> bool:
        """True for the one caller that gets to end the run."""
        with self._lock:
            if self._ending:
                return False
            self._ending = True
            return True

    def _end(self, code: int, message: str, stopped: Child | None = None) -> None:
        started = time.monotonic()
        self._report(message)
        self._stop_children(besides=stopped)
        self._report(f"stopped in {time.monotonic() - started:.1f}s")
        self._ended.set()
        self._exit_process(code)

    def _hurry(self, code: int, message: str) -> None:
        """Kill every child now and leave, once their watchers have reaped them. (The main
        thread, interrupted, may be waiting on one of them: nothing here waits on a
        process itself.)"""
        self._report(message)
        with self._lock:
            children, watchers = list(self._children), list(self._watchers)
        for child in children:
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
        for watcher in watchers:
            watcher.join(timeout=KILL_SECONDS * 3)
        self._exit_process(code)

    def _stop_children(self, besides: Child | None = None, seconds: float | None = None) -> None:
        deadline = time.monotonic() + (self._stop_seconds if seconds is None else seconds)
        with self._lock:
            children = [child for child in reversed(self._children) if child is not besides]
        for child in children:
            left = deadline - time.monotonic() - KILL_SECONDS
            grace = left if child.grace is None else min(child.grace, left)
            try:
                child.stop(max(grace, 0.0))
            except Exception as error:  # one child's failure to stop must not keep the others
                self._report(f"stopping {child.name} failed: {error!r}")


def _write_stderr(message: str) -> None:
    """One message on stderr, written directly: safe inside a signal handler that may have
    interrupted a ``print`` of the main thread."""
    with contextlib.suppress(OSError):
        os.write(2, (message.rstrip("\n") + "\n").encode())
