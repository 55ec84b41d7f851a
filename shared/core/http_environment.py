"""The storage and commerce clients' proxies and CA bundle, resolved once per client.

azure-core's own environment handling (``use_env_settings``, on by default) is requests'
``trust_env``: for every request it resolves the proxies (``HTTP(S)_PROXY``, ``NO_PROXY``),
the CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) and ``.netrc`` credentials,
walking the whole environment twice and probing the file system. Under ``python -m bench
report`` that was about 4% of the app's CPU, and a Functions worker's environment (its app
settings) is larger than this machine's; and a ``.netrc`` entry for a storage or commerce
host would replace the Authorization header both services authenticate with. So the
clients turn it off (``use_env_settings=False``) and take the same values through
azure-core's documented options instead: ``connection_verify`` for the CA bundle, and
``proxies`` for the proxies that apply to the one host they talk to (requests' ``verify``
and ``proxies`` for the commerce client), read once with the settings
(``Settings.http_proxy`` and its neighbours).

Hand-written, because neither library offers it without reading the process environment:
which proxies apply to a URL given a ``no_proxy`` value (:func:`proxies_for`), rule for rule
requests' ``get_environ_proxies``; ``tests/unit/test_http_environment.py`` holds it to what
a requests session trusting the environment resolves.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from requests.utils import address_in_network, is_ipv4_address, is_valid_cidr

from shared.core.config import Settings


def proxies_for(url: str, settings: Settings) -> dict[str, str]:
    """The proxies ``requests`` would use for ``url`` (``get_environ_proxies``): none when
    ``no_proxy`` covers its host, else every one set."""
    if _bypassed(url, settings.no_proxy):
        return {}
    named = {
        "http": settings.http_proxy,
        "https": settings.https_proxy,
        "all": settings.all_proxy,
        "no": settings.no_proxy,
    }
    return {scheme: value for scheme, value in named.items() if value}


def ca_bundle(settings: Settings) -> str | bool:
    """The CA bundle ``requests`` would verify with: the settings', else its own."""
    return settings.ca_bundle or True


def transport_options(url: str, settings: Settings) -> dict[str, Any]:
    """azure-core client options equal to trusting the environment for requests to ``url``."""
    options: dict[str, Any] = {"use_env_settings": False, "connection_verify": ca_bundle(settings)}
    proxies = proxies_for(url, settings)
    if proxies:
        options["proxies"] = proxies
    return options


def _bypassed(url: str, no_proxy: str | None) -> bool:
    """requests' ``should_bypass_proxies`` with ``no_proxy`` given rather than read from the
    environment (requests would set ``os.environ["no_proxy"]`` around the check, under every
    thread). Its rules: IPv4 addresses and CIDR blocks; host names with or without the port
    and a leading dot, matching the host or a domain above it; then urllib's, which it ends
    with: ``*`` for every host, and names (or address endings) compared without case."""
    parsed = urlparse(url)
    host = parsed.hostname
    if host is None:
        return True  # no host (a file: URL): nothing to proxy
    if not no_proxy:
        return False
    entries = [entry for entry in no_proxy.replace(" ", "").split(",") if entry]
    if is_ipv4_address(host):
        if any(
            address_in_network(host, entry) if is_valid_cidr(entry) else host == entry
            for entry in entries
        ):
            return True
    else:
        with_port = f"{host}:{parsed.port}" if parsed.port else host
        for entry in (entry.lstrip(".") for entry in entries):
            if entry in (host, with_port):
                return True
            if host.endswith("." + entry) or with_port.endswith("." + entry):
                return True
    if no_proxy == "*":
        return True
    names = [entry.strip().lstrip(".").lower() for entry in no_proxy.split(",") if entry.strip()]
    return any(host == name or host.endswith("." + name) for name in names)
