"""The commerce emulator in a process of its own, for benchmarks that time the app's CPU.

In production the metering endpoint is remote: judging and storing events costs the app
nothing. Served from a thread of the benchmark's own process, the emulator's request
handling takes the same interpreter lock as the app under test, so a benchmark would time
the emulator's work as the app's. In its own process (as Azurite runs in its own) it only
shares the machine's cores. The benchmark steers it over the child's standard input and
output, one JSON line per command: reset, and the test-only inspection the emulator
offers (accepted events, call count).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from types import TracebackType
from typing import IO, Any

from devstack.commerce_emulator import CommerceEmulator


def _serve(now: datetime, latency: float, commands: IO[str], answers: IO[str]) -> None:
    """The child: print the base URL, then answer one JSON line per command line."""
    with CommerceEmulator(clock=lambda: now, latency=latency) as emulator:
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
    """A :class:`CommerceEmulator` with a fixed clock, served by a child process."""

    def __init__(self, now: datetime, latency: float) -> None:
        self._process = subprocess.Popen(  # noqa: S603  # our own module, fixed argv
            [sys.executable, "-m", "bench.emulator_process", now.isoformat(), str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.base_url: str = self._read()

    def _read(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the commerce emulator exited ({self._process.wait()})")
        return json.loads(line)

    def _ask(self, command: str) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
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

    def stop(self) -> None:
        """Close the command stream: the child stops serving and exits."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_process")
    parser.add_argument("now", type=datetime.fromisoformat, help="the emulator's fixed clock")
    parser.add_argument("latency", type=float, help="seconds added before every answer")
    args = parser.parse_args(argv)
    _serve(args.now, args.latency, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
