"""Clients read the environment once, and read what ``requests`` reads per request."""

from __future__ import annotations

import pytest
import requests

from shared.core.http_environment import ca_bundle, proxies_for, transport_options

STORAGE = "https://account.table.core.windows.net"
LOCAL = "http://127.0.0.1:10002/devstoreaccount1"


def per_request(url: str) -> dict[str, object]:
    """What a session trusting the environment resolves for one request to ``url``."""
    resolved: dict[str, object] = requests.Session().merge_environment_settings(
        url, {}, None, None, None
    )
    return resolved


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"HTTPS_PROXY": "http://proxy.corp:3128", "HTTP_PROXY": "http://proxy.corp:3128"},
        {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "core.windows.net,127.0.0.1"},
        {"https_proxy": "http://lower.corp:8080", "REQUESTS_CA_BUNDLE": "/etc/corp-ca.pem"},
        {"CURL_CA_BUNDLE": "/etc/curl-ca.pem"},
    ],
)
@pytest.mark.parametrize("url", [STORAGE, LOCAL])
def test_resolved_once_as_requests_resolves_it_per_request(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str
) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "REQUESTS_CA_BUNDLE",
                 "CURL_CA_BUNDLE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    expected = per_request(url)
    assert proxies_for(url) == expected["proxies"]
    assert ca_bundle() == expected["verify"]
    options = transport_options(url)
    assert options["use_env_settings"] is False
    assert options.get("proxies", {}) == expected["proxies"]
