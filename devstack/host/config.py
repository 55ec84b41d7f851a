"""App loading for the local host: host.json, function.json, app settings and imports.

Mirrors the host's startup and app settings:
    ``host.json`` may carry ``//`` line comments, as the real host accepts.
    App settings become environment variables; the app root is put first on ``sys.path`` so
    functions import the shared code absolutely (``from shared.x import y``); ``%Setting%``
    in binding properties resolves from the settings (a missing one fails start, naming it);
    ``"disabled": true`` and ``AzureWebJobs.<name>.Disabled`` switch a function off;
    ``scriptFile`` / ``entryPoint`` are honoured. Each function module gets a name unique to
    its app (``functions_<hash>.<folder>``) so two apps in one process never collide.

The loading steps are ``_FunctionLoader``, a mixin of ``LocalFunctionsHost`` (in ``app``);
the annotations at the top of the class name the host state it reads and sets.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack import ncrontab
from devstack.host.http import _Route


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


def load_settings_file(path: Path) -> dict[str, str]:
    """The ``Values`` of a local.settings.json-style file, as strings."""
    document = json.loads(path.read_text(encoding="utf-8"))
    values = document.get("Values")
    if not isinstance(values, dict):
        raise HostConfigurationError(f"{path}: no 'Values' object")
    return {str(k): str(v) for k, v in values.items()}


# --- host.json ---------------------------------------------------------------------------


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
    def load(cls, path: Path, settings: Mapping[str, str] | None = None) -> _HostOptions:
        """``host.json``, with the app settings that override it (``settings``)."""
        try:
            document = json.loads(strip_line_comments(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise HostConfigurationError(f"{path} is missing") from None
        except json.JSONDecodeError as error:
            raise HostConfigurationError(f"{path}: {error}") from None
        _override(document, settings or {})
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


# App settings named AzureFunctionsJobHost__<path> override host.json values, as the
# Functions host does (``AzureFunctionsJobHost__extensions__queues__batchSize=2``).
HOST_JSON_OVERRIDE = "AzureFunctionsJobHost__"


def _override(document: dict[str, Any], settings: Mapping[str, str]) -> None:
    """Set each overridden value into ``document``; names match case-insensitively."""
    for name, value in settings.items():
        if not name.lower().startswith(HOST_JSON_OVERRIDE.lower()):
            continue
        *parents, leaf = name[len(HOST_JSON_OVERRIDE) :].split("__")
        section = document
        for part in parents:
            key = next((k for k in section if k.lower() == part.lower()), part)
            child = section.get(key)
            if not isinstance(child, dict):
                child = section[key] = {}
            section = child
        section[next((k for k in section if k.lower() == leaf.lower()), leaf)] = value


# --- function.json -----------------------------------------------------------------------


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


class _FunctionLoader:
    """Applies the app settings and loads every function folder of the app."""

    # Owned by LocalFunctionsHost.
    app_root: Path
    settings: dict[str, str]
    options: _HostOptions
    log: logging.Logger
    _key: str
    _saved_environ: dict[str, str | None]
    _added_sys_path: bool

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
