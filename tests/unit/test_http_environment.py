"""The clients' proxies and CA bundle, resolved once from the settings, are what
``requests`` resolves on every request from the same environment."""

from __future__ import annotations

import pytest
import requests

from shared.core.config import Settings
from shared.core.http_environment import ca_bundle, proxies_for, transport_options
from tests.app_settings import LOCAL_VALUES

STORAGE = "https://account.table.core.windows.net"
LOCAL = "http://127.0.0.1:10002/devstoreaccount1"
NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
         "CURL_CA_BUNDLE")  # fmt: skip


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
        {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": ".windows.net,127.0.0.0/8"},
        {"ALL_PROXY": "http://all.corp:1080", "NO_PROXY": "example.com"},
        {
            "https_proxy": "http://lower.corp:8080",
            "HTTPS_PROXY": "http://upper.corp:8080",
            "REQUESTS_CA_BUNDLE": "/etc/corp-ca.pem",
        },
        {"CURL_CA_BUNDLE": "/etc/curl-ca.pem"},
        {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "*"},
        {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "Table.Core.Windows.NET"},
        {"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": " 127.0.0.1 , example.com"},
        {"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": "0.0.1"},
    ],
)
@pytest.mark.parametrize("url", [STORAGE, LOCAL])
def test_resolved_once_as_requests_resolves_it_per_request(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str
) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_environ(
        {**LOCAL_VALUES, "AzureWebJobsStorage": "UseDevelopmentStorage=true", **environment}
    )
    expected = per_request(url)
    assert proxies_for(url, settings) == expected["proxies"]
    assert ca_bundle(settings) == expected["verify"]
    options = transport_options(url, settings)
    assert options["use_env_settings"] is False
    assert options.get("proxies", {}) == expected["proxies"]
