"""The run command stops when a part of the stack dies, stops on a signal in every phase, and
refuses a fleet the local Azurite cannot hold: real runs of ``python -m devstack.run``."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.supervision import CHILD_EXITED, Child, Supervisor, stop_process_group

REPO = Path(__file__).resolve().parents[2]
CATCH_UP = "Catching up reported hours"
# How each part of the stack shows in its command line.
PARTS = {
    "azurite": b"node_modules/.bin/azurite",
    "emulator": b"devstack.emulator_process",
    "host": b"devstack.host",
}


@dataclass
class Run:
    """``python -m devstack.run`` in a subprocess, its output read line by line."""

    process: subprocess.Popen[str]
    state_dir: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def wait_for_line(self, start: str, deadline_seconds: float = 120.0) -> str:
        """The first output line beginning with ``start``; fails at the deadline or exit."""
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            if line.startswith(start):
                return line
        pytest.fail(f"no line {start!r} from the run:\n{''.join(self.output)[-4000:]}")

    def children(self) -> dict[str, int]:
        """The stack's parts among the run's child processes now, by part (Linux). Other
        children come and go (``uname -p``, which the SDK's user agent runs)."""
        parts: dict[str, int] = {}
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except FileNotFoundError:
                    continue  # gone already
                for part, marker in PARTS.items():
                    if any(marker in argument for argument in argv):
                        parts[part] = int(pid)
        return parts

    def wait(self, deadline_seconds: float) -> tuple[int, float]:
        """(exit code, seconds it took) once the run exits, or fail at the deadline."""
        started = time.monotonic()
        try:
            code = self.process.wait(timeout=deadline_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the run went on past {deadline_seconds}s:\n{self.text()[-4000:]}")
        return code, time.monotonic() - started

    def text(self) -> str:
        """Everything the run printed (all of it once it has exited)."""
        if self.process.poll() is not None and self.reader is not None:
            self.reader.join(timeout=10)
        return "".join(self.output)


def start_run(state_dir: Path, *arguments: str) -> Run:
    """The run command on a free port with its own state folder, output collected."""
    process = subprocess.Popen(  # noqa: S603  # our own module, fixed argv
        [
            sys.executable,
            "-m",
            "devstack.run",
            "--port",
            "0",
            "--state-dir",
            str(state_dir),
            *arguments,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    run = Run(process, state_dir)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            run.output.append(line)
            run.lines.put(line)

    run.reader = threading.Thread(target=read, daemon=True)
    run.reader.start()
    return run


@contextlib.contextmanager
def run_until(state_dir: Path, line: str, *arguments: str) -> Iterator[Run]:
    """A small run (4 tenants) that has just printed ``line``; stopped if a test fails."""
    run = start_run(state_dir, "--tenants", "4", *arguments)
    try:
        run.wait_for_line(line)
        yield run
    finally:
        if run.process.poll() is None:  # a failed test: stop it as a user would
            run.process.terminate()
            try:
                run.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()


@pytest.fixture
def catching_up(tmp_path: Path) -> Iterator[Run]:
    """A small run (4 tenants, 3 hours) that has just begun its catch-up."""
    with run_until(tmp_path, CATCH_UP, "--hours", "3", "--once") as run:
        yield run


def assert_gone(children: dict[str, int]) -> None:
    """Every one of the children has exited and been reaped (no zombie left behind)."""
    left = [pid for pid in children.values() if Path(f"/proc/{pid}").exists()]
    assert left == [], [Path(f"/proc/{pid}/stat").read_text() for pid in left]


def test_azurite_dying_mid_catch_up_ends_the_run_naming_it_and_its_log(catching_up: Run) -> None:
    """SIGKILL to Azurite mid-catch-up: the run ends within 10 s, non-zero, quoting its log."""
    children = catching_up.children()
    assert children.keys() == PARTS.keys()
    os.kill(children["azurite"], signal.SIGKILL)
    code, seconds = catching_up.wait(deadline_seconds=10)
    output = catching_up.text()
    assert code == CHILD_EXITED
    assert seconds < 10
    log = catching_up.state_dir / "azurite.log"
    assert "Azurite exited (killed by SIGKILL (9)) while catching up" in output
    assert f"The end of its log, {log}:" in output
    assert "  | Azurite Table service is successfully listening" in output
    assert_gone(children)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_catch_up_stops_every_child_within_5s(
    catching_up: Run, signum: signal.Signals
) -> None:
    """SIGINT or SIGTERM mid-catch-up: every child stopped and reaped, the run gone in 5 s."""
    children = catching_up.children()
    assert children.keys() == PARTS.keys()
    catching_up.process.send_signal(signum)
    code, seconds = catching_up.wait(deadline_seconds=5)
    assert code == 128 + signum
    assert seconds < 5
    assert f"{signum.name} while catching up: stopping the local stack" in catching_up.text()
    assert_gone(children)


# Each phase: the line the run prints as it begins, and the run's arguments.
PHASES = {
    "starting": ("Azurite on ", ("--hours", "1", "--once")),
    "billing": ("Collected; waiting for the billing", ("--hours", "2", "--once")),
    "serving": ("Running; Ctrl-C stops.", ("--hours", "1")),
}


@pytest.mark.parametrize(
    ("phase", "signum"),
    [("starting", signal.SIGINT), ("billing", signal.SIGTERM), ("serving", signal.SIGTERM)],
    ids=["starting-SIGINT", "billing-SIGTERM", "serving-SIGTERM"],
)
def test_a_signal_in_the_other_phases_stops_every_child_within_5s(
    tmp_path: Path, phase: str, signum: signal.Signals
) -> None:
    """SIGINT or SIGTERM while starting, billing or serving: every child stopped and
    reaped, the run gone in 5 s (exit 0 once serving). The catch-up is tested above, and
    SIGINT while serving in test_run_end_to_end."""
    line, arguments = PHASES[phase]
    with run_until(tmp_path, line, *arguments) as run:
        children = run.children()
        assert set(children) <= PARTS.keys()
        assert "azurite" in children
        run.process.send_signal(signum)
        code, seconds = run.wait(deadline_seconds=5)
    assert code == (0 if phase == "serving" else 128 + signum)
    assert seconds < 5
    assert f"{signum.name} while {phase}: stopping the local stack" in run.text()
    assert_gone(children)


def test_a_run_killed_outright_takes_its_children_with_it(catching_up: Run) -> None:
    """SIGKILL (no handler sees it) to the run: the kernel stops its children anyway."""
    children = catching_up.children()
    assert children.keys() == PARTS.keys()
    catching_up.process.kill()
    catching_up.wait(deadline_seconds=5)

    def exited(pid: int) -> bool:  # gone, or a zombie of an init that does not reap
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 30
    while not all(exited(pid) for pid in children.values()) and time.monotonic() < deadline:
        threading.Event().wait(0.1)
    assert {part: exited(pid) for part, pid in children.items()} == dict.fromkeys(PARTS, True)


def test_a_fleet_past_the_local_limit_is_refused_naming_what_fits(tmp_path: Path) -> None:
    """--tenants far past what Azurite holds, hours given: refused before anything starts."""
    run = start_run(tmp_path, "--tenants", "50000", "--hours", "24", "--once")
    code, _ = run.wait(deadline_seconds=60)
    output = run.text()
    assert code == 2
    assert "24 hours of 50,000 tenants need ~" in output
    assert "the largest that fits is --hours " in output or "--tenants " in output
    assert not (tmp_path / "azurite").exists()  # nothing was started


def test_a_child_exit_ends_the_run_and_later_exits_change_nothing(tmp_path: Path) -> None:
    """The first unexpected exit stops the other children (newest first) and ends the run
    once, with the dead child's status and log tail; stopping after that is a no-op."""
    ended: list[int] = []
    said: list[str] = []
    stopped: list[str] = []
    supervisor = Supervisor(exit_process=ended.append, report=said.append)

    def child(name: str, script: str) -> Child:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(  # noqa: S603  # fixed argv
                [sys.executable, "-c", script], stdout=output, stderr=output,
                start_new_session=True,
            )  # fmt: skip

        def stop(grace: float) -> None:
            stopped.append(name)
            process.terminate()
            process.wait()

        return Child(name, process, log, stop)

    sleeper = "import time; print('up', flush=True); time.sleep(60)"
    first, second = child("first", sleeper), child("second", sleeper)
    supervisor.watch(first)
    supervisor.watch(second)
    supervisor.phase = "billing"
    dying = child("dying", "import sys; print('out of memory', flush=True); sys.exit(7)")
    supervisor.watch(dying)
    deadline = time.monotonic() + 10
    while not ended and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    assert ended == [CHILD_EXITED]
    assert said[0].startswith("dying exited (status 7) while billing; the run stops.")
    assert "  | out of memory" in said[0]
    assert stopped == ["dying", "second", "first"]  # its own clean-up, then newest first
    assert first.process.returncode is not None
    assert second.process.returncode is not None
    supervisor.stop_all()
    assert stopped == ["dying", "second", "first"]


def test_a_signal_during_the_normal_end_kills_what_is_left(tmp_path: Path) -> None:
    """The normal end waits for a slow child (Azurite saving a large store); SIGTERM
    meanwhile kills it at once and ends the run with 128 + SIGTERM."""
    ended: list[int] = []
    supervisor = Supervisor(exit_process=ended.append, report=lambda message: None)
    log = tmp_path / "slow.log"
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('saving', flush=True); time.sleep(120)"
    )
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603  # fixed argv
            [sys.executable, "-c", stubborn], stdout=output, start_new_session=True
        )
    wait_for_line_in(log, "saving")

    def stop(grace: float) -> None:
        stop_process_group(process, grace)

    supervisor.watch(Child("slow", process, log, stop))
    started = time.monotonic()
    with supervisor.handling_signals():
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        supervisor.stop_all()  # would wait CLEAN_STOP_SECONDS for it
    assert ended == [128 + signal.SIGTERM]
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def wait_for_line_in(path: Path, text: str, deadline_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {path}"
        threading.Event().wait(0.05)
