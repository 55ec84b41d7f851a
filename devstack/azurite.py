"""Start and stop Azurite (Table + Queue storage emulator) from the project's node_modules.

Used by the run command, the tests and the benchmarks. Ports are picked free on loopback, so
parallel runs never collide. In-memory by default; pass ``location`` to keep data on disk
(the run command does, so its data survives restarts, and chaos tests need it to restart
Azurite without losing what was written).

The run command also keeps Azurite's output (``log_path``: what Node says when it dies, such
as a heap exhausted, lands there) and sizes Node's heap (``heap_mb``, from
``devstack.capacity``); it watches the process itself (``devstack.supervision``), so
``launch`` and ``wait_until_serving`` are separate steps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack.supervision import die_with_parent, stop_process_group

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's fixed, publicly documented development account (not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Where Azurite 3.35 keeps its tables under ``--location``: LokiJS saves the whole table store
# to this one file (as one JSON string) every 5 seconds. Its size is what ``devstack.capacity``
# counts against V8's longest string; this is the only place that knows Azurite's file name.
TABLE_STORE_FILE = "__azurite_db_table__.json"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(
    port: int, deadline_seconds: float = 30.0, alive: Callable[[], bool] | None = None
) -> None:
    """Poll until something accepts TCP connections on loopback ``port``.

    ``alive`` is the process that should listen there: once it returns False, waiting on is
    pointless and ``ChildProcessError`` says so at once.
    """
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if alive is not None and not alive():
                raise ChildProcessError(f"exited before listening on 127.0.0.1:{port}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


@dataclass
class Azurite:
    """One Azurite process serving Table and Queue storage on loopback."""

    location: Path | None = None
    table_port: int = field(default_factory=free_port)
    queue_port: int = field(default_factory=free_port)
    blob_port: int = field(default_factory=free_port)
    log_path: Path | None = None  # its output (None: discarded)
    heap_mb: int | None = None  # Node's old-space limit (None: Node's default)
    die_with_parent: bool = False  # SIGTERM it if the process that launched it dies
    _process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running Node process (launch first)."""
        if self._process is None:
            raise RuntimeError("Azurite is not launched")
        return self._process

    def start(self) -> Azurite:
        """Launch and wait until it serves; a failed start leaves no process behind."""
        self.launch()
        try:
            self.wait_until_serving()
        except BaseException:
            self.kill()
            raise
        return self

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process (not yet serving: ``wait_until_serving``).

        Output goes to ``log_path`` (truncated: one run's log) or nowhere. ``heap_mb`` sets
        Node's old-space limit through ``NODE_OPTIONS``; Node's own default (4,144 MB on a
        24 GB machine) is not what the machine can afford (``devstack.capacity``).
        """
        if not AZURITE_BIN.exists():
            raise FileNotFoundError(
                f"{AZURITE_BIN} is missing: run `npm ci` (or ./dev setup) in {REPO_ROOT}"
            )
        command = [
            str(AZURITE_BIN),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
        ]  # fmt: skip
        if self.location is None:
            command.append("--inMemoryPersistence")
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            command += ["--location", str(self.location)]
        environment = None
        if self.heap_mb is not None:
            flags = os.environ.get("NODE_OPTIONS", "")
            environment = {
                **os.environ,
                "NODE_OPTIONS": f"{flags} --max-old-space-size={self.heap_mb}".strip(),
            }
        if self.log_path is None:
            self._process = self._popen(command, environment, subprocess.DEVNULL)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("wb") as log:  # the child keeps its own descriptor
                self._process = self._popen(command, environment, log)
        return self._process

    def _popen(
        self, command: list[str], environment: dict[str, str] | None, output: Any
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603  # fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else output,
            env=environment,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM)
            if self.die_with_parent
            else None,  # one prctl call (resolved before the fork)
        )

    def wait_until_serving(self, deadline_seconds: float = 30.0) -> None:
        """Wait until the table and queue ports accept connections; ``ChildProcessError``
        if Azurite exits first (its ``log_path`` says why)."""
        process = self.process
        for port in (self.table_port, self.queue_port):
            wait_for_port(port, deadline_seconds, alive=lambda: process.poll() is None)

    def table_store_chars(self) -> int:
        """Characters of the table store as Azurite last saved it (0: none saved, or in
        memory): the file is the store's one JSON string in UTF-8, so its bytes are at
        least its characters (as many, for the ASCII our entities are)."""
        if self.location is None:
            return 0
        try:
            return (self.location / TABLE_STORE_FILE).stat().st_size
        except FileNotFoundError:
            return 0

    def memory_mb(self) -> tuple[int, int]:
        """(resident, peak resident) MiB of the running process, from ``/proc`` (Linux;
        (0, 0) elsewhere)."""
        found = {"VmRSS": 0, "VmHWM": 0}
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return (0, 0)
        for line in status.splitlines():
            name, _, value = line.partition(":")
            if name in found:
                found[name] = int(value.split()[0]) // 1024
        return (found["VmRSS"], found["VmHWM"])

    def stop(self, grace: float = 10.0) -> None:
        """Stop Azurite (it saves its data on SIGTERM); SIGKILL after ``grace`` seconds.
        Safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, grace)

    def kill(self) -> None:
        """Kill Azurite abruptly (SIGKILL), as a crash would; for fault tests."""
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, grace=0)

    def restart(self) -> None:
        """Start again on the same ports (and folder, if any)."""
        self.stop()
        self.start()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
