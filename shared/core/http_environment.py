"""What ``requests`` reads from the environment on every request, read once per client.

A ``requests`` session that trusts the environment (the default) resolves, for every
request, the proxies (``HTTP(S)_PROXY``, ``NO_PROXY``), the CA bundle
(``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) and ``.netrc`` credentials: it walks the whole
environment twice and probes the file system. Under ``python -m bench report`` that was
about 4% of the app's CPU, and a Functions worker's environment (its app settings) is
larger than this machine's. It does not change while the worker runs, so the storage and
commerce clients resolve it once, when they are built, for the one host they talk to,
and pass the result explicitly. ``.netrc`` is left out on purpose: both services
authenticate with their own headers, which a ``.netrc`` entry would replace.
"""

from __future__ import annotations

import os
from typing import Any

from requests.utils import get_environ_proxies


def proxies_for(url: str) -> dict[str, str]:
    """The proxies ``requests`` would use for ``url`` from the environment (none if
    ``NO_PROXY`` covers its host)."""
    return dict(get_environ_proxies(url))


def ca_bundle() -> str | bool:
    """The CA bundle ``requests`` would verify with: the environment's, else its own."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def transport_options(url: str) -> dict[str, Any]:
    """azure-core client options equal to trusting the environment for requests to ``url``."""
    options: dict[str, Any] = {"use_env_settings": False, "connection_verify": ca_bundle()}
    proxies = proxies_for(url)
    if proxies:
        options["proxies"] = proxies
    return options
