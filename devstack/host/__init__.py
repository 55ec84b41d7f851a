"""A local Azure Functions host: runs the app's real entry points by their ``function.json``.

Azure Functions Core Tools cannot be installed without internet, so this is how the project
runs locally and end to end in tests. It loads the same folders ``func start`` would (v1
layout: one folder per function with ``function.json`` and ``__init__.py`` exposing ``main``)
and reproduces the host behaviour the app relies on, one module per part of the host; each
module's docstring says what it mirrors and how:

``config``  app loading: ``host.json`` (with ``//`` comments), ``function.json``, app settings
            as environment variables, ``%Setting%`` resolution, disabled functions, imports.
``timer``   the timer trigger: NCRONTAB schedules, one run at a time, ``past_due`` catch-up
            runs, the schedule status, ``trigger_timer``.
``queue``   the queue trigger (Storage Queues extension v5): polling, batches, base64,
            visibility, the poison queue; and queue output bindings.
``http``    the HTTP trigger: route templates, the server and its handler, optional TLS.
``app``     ``LocalFunctionsHost``, which ties them together (start, stop, invoke, log),
            the local stack's own HTTP endpoints (``LocalHttpRoute``, e.g. the portal's
            local sign-in), and the command line.
``process`` ``HostProcess``: that command line as a child process, as the run command
            starts, watches and stops it.

Every invocation logs one line: function, trigger, outcome (``Succeeded`` or ``Failed`` with
the exception type) and duration. Exceptions in functions never stop the host.

Errors::

    HostError                      anything this host refuses
    ├── HostConfigurationError     host.json, function.json, a missing setting, an import
    └── FunctionNotFoundError      trigger_timer() named no loaded timer function

Run it: ``python -m devstack.host --app-root . --settings-file local.settings.json``.
"""

from devstack.host.app import Invocation, LocalFunctionsHost, LocalHttpRoute, main
from devstack.host.config import (
    FunctionNotFoundError,
    HostConfigurationError,
    HostError,
    load_settings_file,
    parse_timespan,
    strip_line_comments,
)
from devstack.host.config import _HostOptions as _HostOptions
from devstack.host.http import ensure_certificate

__all__ = [
    "FunctionNotFoundError",
    "HostConfigurationError",
    "HostError",
    "Invocation",
    "LocalFunctionsHost",
    "LocalHttpRoute",
    "ensure_certificate",
    "load_settings_file",
    "main",
    "parse_timespan",
    "strip_line_comments",
]
