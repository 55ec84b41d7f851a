"""A local Azure Functions host: runs the app's real entry points by their ``function.json``.

Azure Functions Core Tools cannot be installed without internet, so this is how the project
runs locally and end to end in tests. It loads the same folders ``func start`` would (v1
layout: one folder per function with ``function.json`` and ``__init__.py`` exposing ``main``)
and reproduces the host behaviour the app relies on:

App loading (mirrors the host's startup and app settings)
    ``host.json`` may carry ``//`` line comments, as the real host accepts.
    App settings become environment variables; the app root is put first on ``sys.path`` so
    functions import the shared code absolutely (``from shared.x import y``); ``%Setting%``
    in binding properties resolves from the settings (a missing one fails start, naming it);
    ``"disabled": true`` and ``AzureWebJobs.<name>.Disabled`` switch a function off;
    ``scriptFile`` / ``entryPoint`` are honoured. Each function module gets a name unique to
    its app (``functions_<hash>.<folder>``) so two apps in one process never collide.

Timer trigger (mirrors ``TimerTriggerAttribute`` with ``useMonitor``)
    Six-field NCRONTAB schedules (``devstack.ncrontab``), evaluated on the injected clock in
    UTC. One run at a time per function: a run that overruns later slots is followed by ONE
    catch-up run with ``past_due=True``, never by overlapping runs or one run per missed
    slot. The last scheduled run per function is kept in memory (``schedule_status``, shared
    by hosts in one process by default), standing in for the host's persisted schedule
    status: a host that starts after a slot passed since the recorded run invokes a
    ``past_due=True`` run at once. ``run_timers_at_start`` (or ``runOnStartup``) adds a run at
    start even when nothing was missed. ``trigger_timer`` runs a timer function on demand, as
    the host's admin endpoint does, without moving the schedule status.

Queue trigger (mirrors the Storage Queues extension v5 with ``host.json`` ``extensions.queues``)
    Creates the queue if absent; polls with exponential backoff up to ``maxPollingInterval``
    while idle; receives up to ``batchSize`` messages and fetches the next batch once at most
    ``newBatchThreshold`` (default ``batchSize // 2``) are in flight; decodes base64 message
    text (``messageEncoding``, default base64; ``none`` passes text through); calls ``main``
    with a real ``azure.functions.queue.QueueMessage`` (``dequeue_count`` and times set).
    Success deletes the message. Failure makes it visible again after ``visibilityTimeout``;
    at ``maxDequeueCount`` (default 5) the ORIGINAL message text moves to ``<queue>-poison``
    (created on demand) and the message is deleted. A body that is not valid base64 is a
    failed invocation, so it too ends in the poison queue.

HTTP trigger (mirrors the host's ASP.NET Core routing)
    ``route`` templates (default: the function name) under ``extensions.http.routePrefix``
    (default ``api``; ``""`` means none), matched case-insensitively, with ``{param}``,
    ``{param?}``, ``{param:int}``-style constraints and ``{*catchAll}``; literal segments win
    over parameters, parameters over catch-alls. ``methods`` restricts the verbs (absent:
    all). As in the real host, a verb not listed simply does not match, so it answers 404
    (Azure/azure-functions-host#10098), not 405. A function that raises answers an empty 500;
    the host keeps serving. Optional TLS with a self-signed certificate made with
    ``cryptography``.

Every invocation logs one line: function, trigger, outcome (``Succeeded`` or ``Failed`` with
the exception type) and duration. Exceptions in functions never stop the host.

Errors::

    HostError                      anything this host refuses
    ├── HostConfigurationError     host.json, function.json, a missing setting, an import
    └── FunctionNotFoundError      trigger_timer() named no loaded timer function

Run it: ``python -m devstack.host --app-root . --settings-file local.settings.json``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import http.server
import importlib.util
import ipaddress
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageQueueMessage

from devstack import ncrontab

__all__ = [
    "FunctionNotFoundError",
    "HostConfigurationError",
    "HostError",
    "Invocation",
    "LocalFunctionsHost",
    "parse_timespan",
    "strip_line_comments",
]

LOG = logging.getLogger("devstack.host")

# Azurite's well-known development account, for "UseDevelopmentStorage=true" (not a secret).
_DEV_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
    "KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
)
# How long a received message stays invisible while its invocation runs (the real host uses
# 10 minutes and renews; locally an invocation that long is a bug worth seeing redelivered).
_RECEIVE_VISIBILITY_SECONDS = 600
_MIN_POLL_SECONDS = 0.05
# How often a waiting timer re-reads the clock: injected clocks move without notice.
_TIMER_TICK_SECONDS = 0.05
# The process-wide stand-in for the host's persisted timer schedule status.
_SCHEDULE_STATUS: dict[str, dt.datetime] = {}


class HostError(Exception):
    """Base of everything this host refuses."""


class HostConfigurationError(HostError):
    """host.json, a function.json, an app setting or a function import is unusable."""


class FunctionNotFoundError(HostError, KeyError):
    """No loaded function of the requested kind has that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "function not found"


def strip_line_comments(text: str) -> str:
    """``text`` without ``//`` line comments outside strings (host.json allows them).

    Line breaks are kept, so a JSON error still names the right line; ``//`` inside a
    string (a URL) is data, not a comment.
    """
    out: list[str] = []
    in_string = escaped = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", index):
            end = text.find("\n", index)
            index = len(text) if end < 0 else end
            continue
        else:
            out.append(char)
        index += 1
    return "".join(out)


def parse_timespan(value: str | int | float, what: str) -> float:
    """Seconds in a host.json timespan: ``"00:00:30"``, ``"1.02:00:00"``, ``"00:00:00.200"``.

    Plain numbers are milliseconds, as host.json v1 wrote ``maxPollingInterval``.
    """
    if isinstance(value, int | float):
        return float(value) / 1000.0
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", value.strip())
    if match is None:
        raise HostConfigurationError(f"{what}: {value!r} is not a timespan like 00:00:30")
    days, hours, minutes, seconds = match.groups()
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + float(seconds)


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


@dataclass(frozen=True)
class _QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 2.0  # the real default is 1 minute; 2 s suits local runs
    message_encoding: str = "base64"

    @property
    def threshold(self) -> int:
        if self.new_batch_threshold is not None:
            return self.new_batch_threshold
        return self.batch_size // 2


@dataclass(frozen=True)
class _HostOptions:
    route_prefix: str = "api"
    queues: _QueueOptions = field(default_factory=_QueueOptions)

    @classmethod
    def load(cls, path: Path) -> _HostOptions:
        try:
            document = json.loads(strip_line_comments(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise HostConfigurationError(f"{path} is missing") from None
        except json.JSONDecodeError as error:
            raise HostConfigurationError(f"{path}: {error}") from None
        extensions = document.get("extensions") or {}
        http_section = extensions.get("http") or {}
        queues = extensions.get("queues") or {}
        try:
            batch_size = int(queues.get("batchSize", 16))
            options = _QueueOptions(
                batch_size=batch_size,
                new_batch_threshold=(
                    int(queues["newBatchThreshold"]) if "newBatchThreshold" in queues else None
                ),
                max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
                visibility_timeout=parse_timespan(
                    queues.get("visibilityTimeout", "00:00:00"), "queues.visibilityTimeout"
                ),
                max_polling_interval=parse_timespan(
                    queues.get("maxPollingInterval", "00:00:02"), "queues.maxPollingInterval"
                ),
                message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
            )
        except (TypeError, ValueError) as error:
            raise HostConfigurationError(f"{path}: extensions.queues: {error}") from None
        if not 1 <= options.batch_size <= 32:
            raise HostConfigurationError(f"{path}: queues.batchSize must be 1-32")
        if options.max_dequeue_count < 1:
            raise HostConfigurationError(f"{path}: queues.maxDequeueCount must be >= 1")
        if options.message_encoding not in {"base64", "none"}:
            raise HostConfigurationError(f"{path}: queues.messageEncoding must be base64 or none")
        return cls(route_prefix=str(http_section.get("routePrefix", "api")), queues=options)


# --- HTTP routes -------------------------------------------------------------------------

_PARAMETER = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])",
    "guid": r"\{?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}\}?",
}


@dataclass(frozen=True)
class _Route:
    """One compiled route template; ``rank`` orders literals before parameters."""

    template: str
    pattern: re.Pattern[str]
    groups: dict[str, str]  # regex group -> route parameter name
    rank: tuple[int, ...]
    methods: frozenset[str] | None

    @classmethod
    def compile(cls, prefix: str, route: str, methods: frozenset[str] | None) -> _Route:
        segments = [part for part in f"{prefix.strip('/')}/{route.strip('/')}".split("/") if part]
        regex = ""
        groups: dict[str, str] = {}
        rank: list[int] = []
        for segment in segments:
            parameters = _PARAMETER.findall(segment)
            if not parameters:
                regex += "/" + re.escape(segment)
                rank.append(0)
                continue
            if len(parameters) == 1 and segment == "{" + parameters[0] + "}":
                name, kind, body = cls._parameter(parameters[0], groups)
                if kind == "catchall":
                    regex += f"(?:/(?P<{name}>.*))?"
                    rank.append(5)
                elif kind == "optional":
                    regex += f"(?:/(?P<{name}>{body}))?"
                    rank.append(4)
                else:
                    regex += f"/(?P<{name}>{body})"
                    rank.append(2 if body != "[^/]+" else 3)
                continue
            # A segment mixing literals and parameters, e.g. "{name}.{ext}".
            piece, position = "", 0
            for match in _PARAMETER.finditer(segment):
                piece += re.escape(segment[position : match.start()])
                name, _, body = cls._parameter(match.group(1), groups)
                piece += f"(?P<{name}>{body.replace('[^/]+', '[^/]+?')})"
                position = match.end()
            regex += "/" + piece + re.escape(segment[position:])
            rank.append(1)
        return cls(
            template=route,
            pattern=re.compile(f"^{regex or ''}/?$", re.IGNORECASE),
            groups=groups,
            rank=tuple(rank),
            methods=methods,
        )

    @staticmethod
    def _parameter(text: str, groups: dict[str, str]) -> tuple[str, str, str]:
        kind = "plain"
        if text.startswith("*"):
            kind, text = "catchall", text.lstrip("*")
        name, _, constraint = text.partition(":")
        name = name.partition("=")[0]
        if name.endswith("?"):
            kind, name = "optional", name[:-1]
        if constraint.endswith("?"):
            kind, constraint = "optional", constraint[:-1]
        body = _CONSTRAINTS.get(constraint.partition("(")[0].lower(), "[^/]+")
        group = f"p{len(groups)}"
        groups[group] = name
        return group, kind, body

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.methods is not None and method.upper() not in self.methods:
            return None
        found = self.pattern.match(path)
        if found is None:
            return None
        return {
            self.groups[group]: unquote(value)
            for group, value in found.groupdict().items()
            if value is not None
        }


# --- loaded functions --------------------------------------------------------------------


@dataclass
class _Function:
    name: str
    folder: Path
    entry: Callable[..., Any]
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    schedule: ncrontab.CronSchedule | None = None
    route: _Route | None = None

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    def outputs(self) -> list[dict[str, Any]]:
        return [b for b in self.bindings if b is not self.trigger and b.get("direction") == "out"]


class _Out(func.Out):  # type: ignore[misc]  # azure.functions ships no complete stubs
    """The ``func.Out`` the host hands a function for each named output binding."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


_SUPPORTED_TRIGGERS = {"timerTrigger", "queueTrigger", "httpTrigger"}
_SUPPORTED_OUTPUTS = {"http", "queue"}


def _app_key(app_root: Path) -> str:
    return hashlib.sha1(str(app_root).encode(), usedforsecurity=False).hexdigest()[:10]


def _resolve(value: Any, settings: Mapping[str, str], where: str) -> Any:
    """Replace ``%Name%`` in a binding property with the app setting ``Name``."""
    if not isinstance(value, str):
        return value

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise HostConfigurationError(
                f"{where} refers to app setting {name!r} (%{name}%), which is not set"
            )
        return settings[name]

    return re.sub(r"%([^%]+)%", setting, value)


# --- the host ----------------------------------------------------------------------------


class LocalFunctionsHost:
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
            self.options = _HostOptions.load(self.app_root / "host.json")
            self.functions = self._load_functions()
            queue_clients = {
                name: self._queue_client(fn)
                for name, fn in self.functions.items()
                if fn.trigger_type == "queueTrigger"
            }
            if any(fn.route for fn in self.functions.values()):
                self._start_http()
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

    def _apply_environment(self) -> None:
        self._saved_environ = {name: os.environ.get(name) for name in self.settings}
        os.environ.update(self.settings)
        if str(self.app_root) not in sys.path:
            sys.path.insert(0, str(self.app_root))
            self._added_sys_path = True

    def _restore_environment(self) -> None:
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environ = {}
        if self._added_sys_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(self.app_root))
            self._added_sys_path = False

    # -- loading --

    def _load_functions(self) -> dict[str, _Function]:
        package = f"functions_{self._key}"
        parent = types.ModuleType(package)
        parent.__path__ = [str(self.app_root)]
        sys.modules[package] = parent
        functions: dict[str, _Function] = {}
        for manifest in sorted(self.app_root.glob("*/function.json")):
            fn = self._load_function(package, manifest)
            if fn is not None:
                functions[fn.name] = fn
        return functions

    def _load_function(self, package: str, manifest: Path) -> _Function | None:
        folder = manifest.parent
        name = folder.name
        try:
            document = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise HostConfigurationError(f"{manifest}: {error}") from None
        disabled = self.settings.get(f"AzureWebJobs.{name}.Disabled", "").lower()
        if document.get("disabled") is True or disabled in {"true", "1"}:
            self.log.info("Function %s is disabled", name)
            return None
        bindings = [
            {
                key: _resolve(value, self.settings, f"{name}/function.json binding {key!r}")
                for key, value in binding.items()
            }
            for binding in document.get("bindings", [])
        ]
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise HostConfigurationError(f"{manifest}: needs exactly one trigger binding")
        trigger = triggers[0]
        if trigger["type"] not in _SUPPORTED_TRIGGERS:
            raise HostConfigurationError(f"{manifest}: trigger {trigger['type']!r} unsupported")
        for binding in bindings:
            if binding is trigger:
                continue
            if binding.get("direction") != "out" or binding.get("type") not in _SUPPORTED_OUTPUTS:
                raise HostConfigurationError(
                    f"{manifest}: binding {binding.get('name')!r} of type "
                    f"{binding.get('type')!r} is not supported by the local host"
                )
        entry = self._import_entry(package, folder, document)
        fn = _Function(name=name, folder=folder, entry=entry, trigger=trigger, bindings=bindings)
        if trigger["type"] == "timerTrigger":
            try:
                fn.schedule = ncrontab.parse(str(trigger.get("schedule", "")))
            except ncrontab.NcrontabError as error:
                raise HostConfigurationError(f"{name}: schedule: {error}") from None
        elif trigger["type"] == "httpTrigger":
            methods = trigger.get("methods")
            fn.route = _Route.compile(
                self.options.route_prefix,
                str(trigger.get("route") or name),
                frozenset(m.upper() for m in methods) if methods else None,
            )
        elif not trigger.get("queueName"):
            raise HostConfigurationError(f"{manifest}: queueTrigger needs queueName")
        return fn

    def _import_entry(self, package: str, folder: Path, document: dict[str, Any]) -> Any:
        script = folder / str(document.get("scriptFile", "__init__.py"))
        module_name = f"{package}.{folder.name}"
        if script.name != "__init__.py":
            module_name += f".{script.stem}"
        spec = importlib.util.spec_from_file_location(
            module_name,
            script,
            submodule_search_locations=[str(folder)] if script.name == "__init__.py" else None,
        )
        if spec is None or spec.loader is None:
            raise HostConfigurationError(f"{script}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            sys.modules.pop(module_name, None)
            raise HostConfigurationError(
                f"{folder.name}: importing {script.name} failed: {error!r}"
            ) from error
        entry_point = str(document.get("entryPoint", "main"))
        entry = getattr(module, entry_point, None)
        if not callable(entry):
            raise HostConfigurationError(f"{script}: no callable {entry_point!r}")
        return entry

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

    def _send_queue_outputs(self, fn: _Function, outputs: Mapping[str, _Out], result: Any) -> None:
        """Queue output bindings: base64 text, sent only after the function succeeded."""
        for binding in fn.outputs():
            if binding.get("type") != "queue":
                continue
            value = result if binding["name"] == "$return" else outputs[binding["name"]].get()
            if value is None:
                continue
            items = value if isinstance(value, list | tuple) else [value]
            client = self._queue_client(fn, binding)
            for item in items:
                if isinstance(item, func.QueueMessage):
                    item = item.get_body()
                data = item.encode() if isinstance(item, str) else bytes(item)
                client.send_message(self._encode(data))

    def _encode(self, data: bytes) -> str:
        if self.options.queues.message_encoding == "none":
            return data.decode("utf-8")
        return base64.b64encode(data).decode("ascii")

    # -- timers --

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

    # -- queues --

    def _queue_client(self, fn: _Function, binding: Mapping[str, Any] | None = None) -> QueueClient:
        binding = binding or fn.trigger
        setting = str(binding.get("connection") or "AzureWebJobsStorage")
        return self._client_for(setting, str(binding["queueName"]), fn.name)

    def _client_for(self, setting: str, queue_name: str, function: str) -> QueueClient:
        value = self.settings.get(setting)
        if value:
            if value.strip().lower().rstrip(";") == "usedevelopmentstorage=true":
                value = _DEV_STORAGE
            return QueueClient.from_connection_string(value, queue_name)
        service_uri = self.settings.get(f"{setting}__queueServiceUri")
        if service_uri:
            from azure.identity import DefaultAzureCredential  # only identity-based apps need it

            credential = DefaultAzureCredential(
                managed_identity_client_id=self.settings.get(f"{setting}__clientId")
            )
            return QueueClient(service_uri, queue_name, credential=credential)
        raise HostConfigurationError(
            f"{function}: connection setting {setting!r} is not set "
            f"(nor {setting}__queueServiceUri)"
        )

    @staticmethod
    def _ensure_queue(client: QueueClient) -> None:
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()

    def _queue_loop(self, fn: _Function, client: QueueClient) -> None:
        options = self.options.queues
        executor = ThreadPoolExecutor(
            max_workers=options.batch_size + options.threshold,
            thread_name_prefix=f"host-queue-{fn.name}",
        )
        self._executors.append(executor)
        in_flight = 0
        settled = threading.Condition()

        def done(_: object) -> None:
            nonlocal in_flight
            with settled:
                in_flight -= 1
                settled.notify_all()

        delay = _MIN_POLL_SECONDS
        created = False
        while not self._stopping.is_set():
            with settled:
                while in_flight > options.threshold and not self._stopping.is_set():
                    settled.wait(0.1)
            if self._stopping.is_set():
                break
            try:
                if not created:
                    self._ensure_queue(client)
                    created = True
                messages = list(
                    client.receive_messages(
                        messages_per_page=options.batch_size,
                        max_messages=options.batch_size,
                        visibility_timeout=_RECEIVE_VISIBILITY_SECONDS,
                    )
                )
            except Exception as error:  # storage down or refusing: back off, never die
                self.log.warning("Queue %s: polling failed: %r", client.queue_name, error)
                messages = []
            if not messages:
                self._stopping.wait(delay)
                delay = min(delay * 2, max(options.max_polling_interval, _MIN_POLL_SECONDS))
                continue
            delay = _MIN_POLL_SECONDS
            for message in messages:
                with settled:
                    in_flight += 1
                future = executor.submit(self._process_message, fn, client, message)
                future.add_done_callback(done)

    def _process_message(
        self, fn: _Function, client: QueueClient, message: StorageQueueMessage
    ) -> None:
        options = self.options.queues
        raw = message.content if isinstance(message.content, str) else str(message.content)
        detail = f" id={message.id} dequeue_count={message.dequeue_count}"
        try:
            if options.message_encoding == "base64":
                body = base64.b64decode("".join(raw.split()), validate=True)
            else:
                body = raw.encode("utf-8")
        except (binascii.Error, ValueError) as error:
            self.log.error(
                "Executed 'Functions.%s' (Failed (%s), trigger=queueTrigger): message is not "
                "base64 (host.json messageEncoding)%s",
                fn.name,
                type(error).__name__,
                detail,
            )
            succeeded = False
        else:
            trigger = TriggerQueueMessage(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            succeeded = self._invoke(fn, trigger, detail).succeeded
        try:
            if succeeded:
                client.delete_message(message.id, message.pop_receipt)
            elif (message.dequeue_count or 0) >= options.max_dequeue_count:
                poison = self._client_for(
                    str(fn.trigger.get("connection") or "AzureWebJobsStorage"),
                    f"{client.queue_name}-poison",
                    fn.name,
                )
                self._ensure_queue(poison)
                poison.send_message(raw)  # the original text, still encoded
                client.delete_message(message.id, message.pop_receipt)
                self.log.warning(
                    "Message %s moved to %s after %s attempts",
                    message.id,
                    poison.queue_name,
                    message.dequeue_count,
                )
            else:
                client.update_message(
                    message.id,
                    message.pop_receipt,
                    visibility_timeout=int(options.visibility_timeout),
                )
        except AzureError as error:
            # The message reappears when its receive visibility ends: at-least-once.
            self.log.warning(
                "Queue %s: settling %s failed: %s", client.queue_name, message.id, error
            )

    # -- HTTP --

    def _start_http(self) -> None:
        routes = sorted(
            ((fn.route, fn) for fn in self.functions.values() if fn.route is not None),
            key=lambda pair: pair[0].rank,
        )
        server = _HttpServer(("127.0.0.1", self._http_port), _HttpHandler)
        server.host = self
        server.routes = routes
        if self._tls:
            cert, key = ensure_certificate(self._tls_dir)
            self.certificate_path = cert
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            # Handshake in the request thread, so one slow client never blocks accepting.
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._spawn("http", server.serve_forever, 0.1)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # stop() waits for in-flight requests
    block_on_close = True
    host: LocalFunctionsHost
    routes: list[tuple[_Route, _Function]]


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (40 ms on Linux), a stall the real host does not add.
    disable_nagle_algorithm = True
    # Idle keep-alive connections close after this, so stop() never waits on a quiet client.
    timeout = 2
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        self.server.host.log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        host = self.server.host
        parts = urlsplit(self.path)
        body = self._read_body()
        matched = next(
            (
                (fn, params)
                for route, fn in self.server.routes
                if (params := route.match(self.command, parts.path)) is not None
            ),
            None,
        )
        if matched is None:  # no route, or a verb the function does not list (as the host)
            self._send(404, [], b"")
            return
        fn, route_params = matched
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        scheme = "https" if host._tls else "http"
        request = func.HttpRequest(
            self.command,
            f"{scheme}://{self.headers.get('Host', '127.0.0.1')}{self.path}",
            headers=headers,
            params=dict(parse_qsl(parts.query, keep_blank_values=True)),
            route_params=route_params,
            body=body,
        )
        invocation = host._invoke(fn, request, f" {self.command} {parts.path}")
        response = invocation.result
        if invocation.error is not None:
            self._send(500, [], b"")
        elif isinstance(response, func.HttpResponse):
            pairs = list(response.headers.items())
            if not any(name.lower() == "content-type" for name, _ in pairs):
                pairs.append(("Content-Type", f"{response.mimetype}; charset={response.charset}"))
            self._send(response.status_code, pairs, response.get_body())
        elif isinstance(response, str | bytes):
            data = response.encode() if isinstance(response, str) else response
            self._send(200, [("Content-Type", "text/plain; charset=utf-8")], data)
        else:
            self._send(204, [], b"")

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in {"content-length", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.server.host.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up do_<VERB>; every verb goes through the router.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)


def ensure_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost in ``folder``; reused while valid.

    Returns (certificate PEM, private key PEM). Clients verify with the certificate as CA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "localhost.crt", folder / "localhost.key"
    now = dt.datetime.now(dt.UTC)
    if cert_path.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if existing.not_valid_after_utc > now + dt.timedelta(days=1):
            return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# --- command line ------------------------------------------------------------------------


def load_settings_file(path: Path) -> dict[str, str]:
    """The ``Values`` of a local.settings.json-style file, as strings."""
    document = json.loads(path.read_text(encoding="utf-8"))
    values = document.get("Values")
    if not isinstance(values, dict):
        raise HostConfigurationError(f"{path}: no 'Values' object")
    return {str(k): str(v) for k, v in values.items()}


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every HTTP call at INFO
    try:
        settings = load_settings_file(args.settings_file)
    except (OSError, json.JSONDecodeError, HostError) as error:
        parser.error(f"settings file: {error}")
    stop = threading.Event()
    host = LocalFunctionsHost(
        args.app_root,
        settings,
        http_port=args.port,
        tls=args.tls,
        tls_dir=args.tls_dir,
        run_timers_at_start=not args.no_startup_timers,
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


if __name__ == "__main__":
    sys.exit(main())
