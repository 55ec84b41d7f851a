"""Which tables transport the process runs: ``TABLES_TRANSPORT``, or the installed versions.

The direct path (``shared.storage.transport.direct``) reads the SDK's private names and
reproduces its wire format, so it is proved only for the versions the contract suite
(``tests/contract``) passed on, recorded here. Unset, the setting means: direct when the
installed azure-data-tables and azure-core are exactly those, else the SDK's own path with
one warning when the process first builds its storage account. ``sdk`` or ``direct`` chooses
outright (``./dev canary`` runs ``direct`` on newer versions to see whether they still pass).

Moving a pin: run ``./dev canary``, then the contract suite on the new versions, then record
them here.
"""

from __future__ import annotations

import functools
import logging
from importlib import metadata

from shared.core.errors import ConfigurationError
from shared.storage.transport.interface import TablesTransport
from shared.storage.transport.sdk import SdkTransport

log = logging.getLogger(__name__)

# The versions the contract suite passed on, on both paths (tests/contract).
DIRECT_PROVED_ON = {"azure-data-tables": "12.7.0", "azure-core": "1.41.0"}


def installed_versions() -> dict[str, str]:
    """The installed versions of the packages the direct path was proved on."""
    return {name: metadata.version(name) for name in DIRECT_PROVED_ON}


@functools.cache
def tables_transport(setting: str | None) -> TablesTransport:
    """The transport ``TABLES_TRANSPORT`` asks for (``None``: by the installed versions).

    Cached per process, so the warning is said once, however many accounts are built.
    """
    if setting == "sdk":
        return SdkTransport()
    installed = installed_versions()
    proved = installed == DIRECT_PROVED_ON
    if setting is None and not proved:
        log.warning(
            "tables transport: the SDK's (installed %s; the direct path was proved on %s: "
            "run ./dev canary, then record the versions in %s)",
            _versions(installed),
            _versions(DIRECT_PROVED_ON),
            __name__,
        )
        return SdkTransport()
    try:
        from shared.storage.transport.direct import DirectTransport
    except ImportError as error:  # a private name moved: the SDK path still works
        if setting == "direct":
            raise ConfigurationError(
                f"TABLES_TRANSPORT=direct: the direct path does not load with "
                f"{_versions(installed)} ({error})"
            ) from error
        log.warning("tables transport: the SDK's (the direct path does not load: %s)", error)
        return SdkTransport()
    if not proved:
        log.warning(
            "tables transport: direct, as TABLES_TRANSPORT says, on %s (proved on %s)",
            _versions(installed),
            _versions(DIRECT_PROVED_ON),
        )
    return DirectTransport()


def _versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
