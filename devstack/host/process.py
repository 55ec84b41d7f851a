"""``HostProcess``: the local host in a child process of its own (``python -m devstack.host``).

The run command runs the host as the Functions runtime runs a function app: a process apart
from whoever started it, which can be stopped at once (SIGTERM, then SIGKILL: an invocation
cut short is redelivered, and collection and billing are idempotent) and whose death the
run notices (``devstack.supervision``). In the run command's own process, stopping the host
waited for every invocation in flight (a catch-up slice takes a minute at scale), and it
could not die apart from the run.

Its output (one line per invocation, retries, tracebacks) goes to ``log_path`` and, line by
line, to ``echo`` (the terminal) as it did when the host ran in the run command.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from devstack.azurite import free_port, wait_for_port
from devstack.supervision import die_with_parent, stop_process_group


class HostProcess:
    """``python -m devstack.host`` over ``app_root`` with a settings file, on ``port``
    (0: a free one, picked here so the parent knows it)."""

    def __init__(
        self,
        app_root: Path,
        settings_file: Path,
        *,
        port: int,
        log_path: Path,
        tls: bool = False,
        tls_dir: Path | None = None,
        echo: IO[bytes] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._tls = tls
        self._echo = echo
        self._command = [
            sys.executable,
            "-m",
            "devstack.host",
            "--app-root", str(app_root),
            "--settings-file", str(settings_file),
            "--port", str(self.port),
        ]  # fmt: skip
        if tls:
            self._command.append("--tls")
            if tls_dir is not None:
                self._command += ["--tls-dir", str(tls_dir)]
        self._app_root = app_root
        self._process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the host process is not launched")
        return self._process

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the child in a session of its own (not serving yet: ``wait_until_serving``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(  # noqa: S603  # our own module, fixed argv
            self._command,
            cwd=self._app_root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),  # one prctl call (resolved before the fork)
        )
        self._pump = threading.Thread(
            target=self._copy_output, args=(self._process.stdout,), name="host-log", daemon=True
        )
        self._pump.start()
        return self._process

    def _copy_output(self, stdout: IO[bytes]) -> None:
        """Every line the host writes, into its log and to ``echo``, until it exits."""
        with self.log_path.open("wb") as log:
            for line in stdout:
                log.write(line)
                log.flush()
                if self._echo is not None:
                    self._echo.write(line)
                    self._echo.flush()

    def wait_until_serving(self, deadline_seconds: float = 60.0) -> None:
        """Wait until the HTTP port accepts connections; ``ChildProcessError`` if the host
        exits first (a bad setting, the port taken: its log says which)."""
        process = self.process
        wait_for_port(self.port, deadline_seconds, alive=lambda: process.poll() is None)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the host stops polling and waits for its invocations), SIGKILL after
        ``grace`` seconds; its log is complete on return. Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process_group(process, grace)
        if self._pump is not None:
            self._pump.join(timeout=1)
