"""The commerce emulator in a process of its own: for the run command and the benchmarks.

In production the metering endpoint is remote: judging and storing events costs the app
nothing, and the endpoint lives or dies on its own. Served from a thread of the caller's
process, the emulator's request handling takes the same interpreter lock as the app (a
benchmark would time the emulator's work as the app's), and it cannot die apart from it
(the run command supervises it as it supervises Azurite: ``devstack.supervision``). In its
own process it only shares the machine's cores.

The parent steers it over the child's standard input and output, one JSON line per
command: reset, and the test-only inspection the emulator offers (accepted events, call
count); the first line the child prints is its base URL. The child's standard error (a
traceback, if it dies) goes to ``log_path``. Closing the command stream stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from devstack.azurite import free_port
from devstack.commerce_emulator import DEFAULT_TOKEN, CommerceEmulator
from devstack.supervision import die_with_parent, stop_process_group


def _serve(emulator: CommerceEmulator, commands: IO[str], answers: IO[str]) -> None:
    """The child: print the base URL, then answer one JSON line per command line."""
    with emulator:
        print(json.dumps(emulator.base_url), file=answers, flush=True)
        for line in commands:
            command = line.strip()
            answer: Any
            if command == "reset":
                emulator.reset()
                answer = None
            elif command == "accepted_events":
                answer = emulator.accepted_events()
            elif command == "total_calls":
                answer = emulator.total_calls
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), file=answers, flush=True)


class EmulatorProcess:
    """A :class:`CommerceEmulator` served by a child process.

    ``now`` fixes its clock (benchmarks; None: the real time), ``latency`` adds seconds
    before every answer, ``state_file`` keeps what it accepted between runs (the run
    command's), ``log_path`` receives its standard error (None: the caller's). The port is
    picked here (0: a free one), so ``base_url`` is known before the child listens.
    """

    def __init__(
        self,
        *,
        now: datetime | None = None,
        latency: float = 0.0,
        state_file: Path | None = None,
        token: str = DEFAULT_TOKEN,
        log_path: Path | None = None,
        port: int = 0,
    ) -> None:
        self.token = token
        self.log_path = log_path
        self.port = port or free_port()
        self._arguments = ["--port", str(self.port), "--latency", str(latency), "--token", token]
        if now is not None:
            self._arguments += ["--now", now.isoformat()]
        if state_file is not None:
            self._arguments += ["--state-file", str(state_file)]
        self._process: subprocess.Popen[str] | None = None

    @property
    def process(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError("the commerce emulator process is not launched")
        return self._process

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> subprocess.Popen[str]:
        """Start the child in a session of its own (not serving yet: ``wait_until_serving``)."""
        command = [sys.executable, "-m", "devstack.emulator_process", *self._arguments]
        if self.log_path is None:
            self._process = self._popen(command, None)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("wb") as log:  # the child keeps its own descriptor
                self._process = self._popen(command, log)
        return self._process

    @staticmethod
    def _popen(command: list[str], errors: IO[bytes] | None) -> subprocess.Popen[str]:
        return subprocess.Popen(  # noqa: S603  # our own module, fixed argv
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # one prctl call (resolved before the fork)
        )

    def wait_until_serving(self) -> None:
        """Read the base URL the child prints once it listens (``base_url``)."""
        if self._read() != self.base_url:
            raise ChildProcessError(f"the commerce emulator is not on {self.base_url}")

    def _read(self) -> Any:
        stdout = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise ChildProcessError(f"the commerce emulator exited ({self.process.wait()})")
        return json.loads(line)

    def _ask(self, command: str) -> Any:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()
        return self._read()

    def reset(self) -> None:
        """Forget accepted events and counters (``CommerceEmulator.reset``)."""
        self._ask("reset")

    def accepted_events(self) -> list[dict[str, Any]]:
        accepted: list[dict[str, Any]] = self._ask("accepted_events")
        return accepted

    @property
    def total_calls(self) -> int:
        return int(self._ask("total_calls"))

    def stop(self, grace: float = 10.0) -> None:
        """Close the command stream (the child stops serving and exits); after ``grace``
        seconds it is stopped as any child is. Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None and process.poll() is None:
            with contextlib.suppress(BrokenPipeError):  # it is gone already
                process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        stop_process_group(process, grace=0)  # killed if it is still there; reaped
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        self.launch()
        try:
            self.wait_until_serving()
        except BaseException:
            self.stop(grace=0)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.emulator_process")
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    parser.add_argument("--now", type=datetime.fromisoformat, help="a fixed clock")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answers")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the bearer token to require")
    parser.add_argument("--state-file", type=Path, help="keep accepted events here")
    args = parser.parse_args(argv)
    now: datetime | None = args.now
    emulator = CommerceEmulator(
        token=args.token,
        clock=None if now is None else (lambda: now),
        latency=args.latency,
        state_file=args.state_file,
        port=args.port,
    )
    _serve(emulator, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
