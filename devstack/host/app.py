"""``LocalFunctionsHost``: the local host's lifecycle, invocations and log, and its command line.

Mirrors the host's own lifecycle: start loads the app (``config``) and starts every trigger
(``timer``, ``queue``, ``http``), failing fast and cleanly on bad configuration; stop stops
polling and timers, waits for in-flight invocations and closes the server.

The app builds its links from ``PUBLIC_BASE_URL`` (never from a request's ``Host`` header);
when the settings leave it unset, the host sets it to its own address once it listens (a
free port is only known then), as the Bicep sets the function app's host name in Azure.

Every invocation logs one line: function, trigger, outcome (``Succeeded`` or ``Failed`` with
the exception type) and duration. Exceptions in functions never stop the host. Each named
output binding is handed to the function as a ``func.Out``; the value of the ``http`` output
(a named one, or ``$return``) is what an HTTP trigger answers.

Run it: ``python -m devstack.host --app-root . --settings-file local.settings.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

from devstack.fleet import register_simulated_source
from devstack.host.config import (
    HostError,
    _app_key,
    _Function,
    _FunctionLoader,
    _HostOptions,
    load_settings_file,
)
from devstack.host.http import _HttpServer, _HttpTriggers, _Route
from devstack.host.queue import _QueueTriggers
from devstack.host.timer import _SCHEDULE_STATUS, _TimerTriggers
from shared.core.errors import ConfigurationError

# The app setting holding the API's public base URL (shared.core.config).
PUBLIC_BASE_URL = "PUBLIC_BASE_URL"
LOG = logging.getLogger("devstack.host")


@dataclass(frozen=True)
class LocalHttpRoute:
    """An HTTP endpoint of the local stack served beside the app's functions (never deployed).

    Routed, invoked and logged as an HTTP function of that ``route`` would be; e.g. the
    portal's local sign-in (``devstack.sign_in``), which must share the portal's origin.
    """

    name: str
    route: str
    methods: frozenset[str]
    handler: Callable[[func.HttpRequest], func.HttpResponse]


@dataclass(frozen=True)
class Invocation:
    """The outcome of one invocation, as the host logs it."""

    function: str
    trigger: str
    started: dt.datetime
    duration_ms: float
    error: Exception | None = None
    result: Any = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def outcome(self) -> str:
        if self.error is None:
            return "Succeeded"
        return f"Failed ({type(self.error).__name__})"


class _Out(func.Out):  # type: ignore[misc]  # azure.functions ships no complete stubs
    """The ``func.Out`` the host hands a function for each named output binding."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class LocalFunctionsHost(_FunctionLoader, _TimerTriggers, _QueueTriggers, _HttpTriggers):
    """Run a v1-layout function app's timer, queue and HTTP triggers in this process."""

    def __init__(
        self,
        app_root: Path,
        settings: Mapping[str, str],
        *,
        http_port: int = 0,
        tls: bool = False,
        tls_dir: Path | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        run_timers_at_start: bool = True,
        schedule_status: MutableMapping[str, dt.datetime] | None = None,
        logger: logging.Logger | None = None,
        local_routes: Sequence[LocalHttpRoute] = (),
    ) -> None:
        self.app_root = Path(app_root).resolve()
        self.settings = {str(k): str(v) for k, v in settings.items()}
        self._http_port = http_port
        self._tls = tls
        self._tls_dir = tls_dir if tls_dir is not None else self.app_root / ".local" / "tls"
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._run_timers_at_start = run_timers_at_start
        self._schedule_status = _SCHEDULE_STATUS if schedule_status is None else schedule_status
        self.log = logger or LOG
        self._local_routes = tuple(local_routes)
        self._key = _app_key(self.app_root)
        self.options = _HostOptions()
        self.functions: dict[str, _Function] = {}
        self._stopping = threading.Event()
        self._started = False
        self._threads: list[threading.Thread] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._timer_locks: dict[str, threading.Lock] = {}
        self._server: _HttpServer | None = None
        self._saved_environ: dict[str, str | None] = {}
        self._added_sys_path = False
        self.certificate_path: Path | None = None

    # -- lifecycle --

    def start(self) -> LocalFunctionsHost:
        """Load the app and start every trigger; fails fast (and cleanly) on bad config."""
        if self._started:
            raise HostError("host already started")
        self._stopping.clear()
        self._apply_environment()
        try:
            self.options = _HostOptions.load(self.app_root / "host.json", self.settings)
            self.functions = self._load_functions()
            self.functions.update(self._local_functions())
            queue_clients = {
                name: self._queue_client(fn)
                for name, fn in self.functions.items()
                if fn.trigger_type == "queueTrigger"
            }
            if any(fn.route for fn in self.functions.values()):
                self._start_http()
                self._announce_address()
        except BaseException:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None
            for thread in self._threads:
                thread.join()
            self._threads.clear()
            self._restore_environment()
            raise
        self._started = True
        for name, fn in self.functions.items():
            if fn.trigger_type == "timerTrigger":
                self._timer_locks[name] = threading.Lock()
                self._spawn(f"timer-{name}", self._timer_loop, fn)
            elif fn.trigger_type == "queueTrigger":
                self._spawn(f"queue-{name}", self._queue_loop, fn, queue_clients[name])
        self._log_functions()
        return self

    def stop(self) -> None:
        """Stop polling and timers, wait for in-flight invocations, close the server."""
        if not self._started:
            return
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()  # stop accepting
            self._server.server_close()  # joins request threads (block_on_close)
            self._server = None
        for thread in self._threads:
            thread.join()
        for executor in self._executors:
            executor.shutdown(wait=True)
        self._threads.clear()
        self._executors.clear()
        self._started = False
        self._restore_environment()
        self.log.info("Host stopped")

    def _announce_address(self) -> None:
        """PUBLIC_BASE_URL = where this host listens, unless the settings name one."""
        if PUBLIC_BASE_URL in self.settings:
            return
        self._saved_environ.setdefault(PUBLIC_BASE_URL, os.environ.get(PUBLIC_BASE_URL))
        os.environ[PUBLIC_BASE_URL] = self.base_url

    @property
    def stopping(self) -> bool:
        """True from the moment ``stop`` begins."""
        return self._stopping.is_set()

    def __enter__(self) -> LocalFunctionsHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>`` of the HTTP triggers (start first)."""
        if self._server is None:
            raise HostError("no HTTP server: the host is not started or has no HTTP functions")
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"host-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _log_functions(self) -> None:
        for name, fn in self.functions.items():
            if fn.route is not None:
                verbs = ",".join(sorted(fn.route.methods)) if fn.route.methods else "all"
                prefix = self.options.route_prefix.strip("/")
                path = "/".join(p for p in (prefix, fn.route.template.strip("/")) if p)
                self.log.info("Function %s: [%s] %s/%s", name, verbs, self.base_url, path)
            else:
                detail = fn.trigger.get("schedule") or fn.trigger.get("queueName")
                self.log.info("Function %s: %s (%s)", name, fn.trigger_type, detail)

    def _local_functions(self) -> dict[str, _Function]:
        functions: dict[str, _Function] = {}
        for local in self._local_routes:
            if local.name in self.functions:
                raise HostError(f"local route {local.name!r} has the name of a function")
            trigger = {"type": "httpTrigger", "direction": "in", "name": "req"}
            functions[local.name] = _Function(
                name=local.name,
                folder=self.app_root,
                entry=local.handler,
                trigger=trigger,
                bindings=[trigger, {"type": "http", "direction": "out", "name": "$return"}],
                route=_Route.compile(
                    self.options.route_prefix,
                    local.route,
                    frozenset(m.upper() for m in local.methods),
                ),
            )
        return functions

    # -- invocation --

    def _invoke(self, fn: _Function, trigger_value: Any, detail: str = "") -> Invocation:
        outputs = {b["name"]: _Out() for b in fn.outputs() if b["name"] != "$return"}
        started = dt.datetime.now(dt.UTC)
        begin = time.perf_counter()
        error: Exception | None = None
        result: Any = None
        try:
            result = fn.entry(**{fn.trigger["name"]: trigger_value}, **outputs)
            self._send_queue_outputs(fn, outputs, result)
        except Exception as caught:  # a function's failure never stops the host
            error = caught
        http_output = self._http_output(fn)
        if http_output in outputs:
            result = outputs[http_output].get()
        invocation = Invocation(
            function=fn.name,
            trigger=fn.trigger_type,
            started=started,
            duration_ms=(time.perf_counter() - begin) * 1000,
            error=error,
            result=result,
        )
        self.log.log(
            logging.INFO if error is None else logging.ERROR,
            "Executed 'Functions.%s' (%s, trigger=%s, Duration=%.0fms)%s",
            fn.name,
            invocation.outcome,
            fn.trigger_type,
            invocation.duration_ms,
            detail,
            exc_info=error,
        )
        return invocation

    @staticmethod
    def _http_output(fn: _Function) -> str:
        for binding in fn.outputs():
            if binding.get("type") == "http":
                return str(binding["name"])
        return "$return"


# --- command line ------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_set(event: threading.Event) -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: event.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.host", description="Run the function app locally."
    )
    parser.add_argument("--app-root", type=Path, default=Path())
    parser.add_argument("--settings-file", type=Path, default=Path("local.settings.json"))
    parser.add_argument("--port", type=int, default=7071, help="HTTP port (0: any free port)")
    parser.add_argument("--tls", action="store_true", help="serve https, self-signed")
    parser.add_argument("--tls-dir", type=Path, default=None)
    parser.add_argument(
        "--no-startup-timers", action="store_true", help="skip the catch-up timer runs at start"
    )
    args = parser.parse_args(argv)
    # Run on its own, the host serves this project's app: its local settings may name the
    # simulated fleet (USAGE_SOURCE=simulated), which only the local stack provides.
    register_simulated_source()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every HTTP call at INFO
    try:
        settings = load_settings_file(args.settings_file)
    except (OSError, json.JSONDecodeError, HostError) as error:
        parser.error(f"settings file: {error}")
    # The portal's local sign-in, when the settings name it (it imports this package).
    from devstack.sign_in import sign_in_route

    try:
        sign_in = sign_in_route(settings)
    except ConfigurationError as error:
        parser.error(str(error))
    stop = threading.Event()
    host = LocalFunctionsHost(
        args.app_root,
        settings,
        http_port=args.port,
        tls=args.tls,
        tls_dir=args.tls_dir,
        run_timers_at_start=not args.no_startup_timers,
        local_routes=() if sign_in is None else (sign_in,),
    )
    with _signals_set(stop):
        try:
            host.start()
        except HostError as error:
            LOG.error("%s", error)
            return 2
        try:
            LOG.info("Host running; Ctrl-C (or SIGTERM) stops it cleanly")
            stop.wait()
        finally:
            LOG.info("Stopping: waiting for in-flight invocations")
            host.stop()
    return 0
