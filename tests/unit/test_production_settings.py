"""Production never meets a simulator (design invariant 8): settings refuse local-only parts."""

from __future__ import annotations

import pytest

from shared.core.config import Settings
from shared.core.errors import ConfigurationError
from tests.app_settings import LOCAL_VALUES

# A complete production configuration: a real stamp, Entra ID, the Marketplace endpoint.
PRODUCTION = {
    **LOCAL_VALUES,
    "APP_MODE": "production",
    "AzureWebJobsStorage__tableServiceUri": "https://stusage.table.core.windows.net",
    "AzureWebJobsStorage": "",
    "USAGE_SOURCE": "azurestack",
    "AZURESTACK_ADMIN_ARM_ENDPOINT": "https://adminmanagement.local.azurestack.external",
    "AZURESTACK_PROVIDER_SUBSCRIPTION_ID": "00000000-0000-4000-8000-0000000000aa",
    "AZURESTACK_AUDIENCE": "https://adminmanagement.contoso.onmicrosoft.com/3a1b7f2e",
    "AUTH_JWKS_URI": "https://login.microsoftonline.com/t/discovery/v2.0/keys",
    "CONTINUATION_TOKEN_KEY": "k" * 40,
    "COMMERCE_BASE_URL": "https://marketplaceapi.microsoft.com",
    "COMMERCE_AUTH": "managed_identity",
    "COMMERCE_STATIC_TOKEN": "",
    "PUBLIC_BASE_URL": "https://func-usage.azurewebsites.net",
}


def test_a_complete_production_configuration_loads() -> None:
    """The baseline the refusals below change one setting of."""
    settings = Settings.from_environ(PRODUCTION)
    assert (settings.app_mode.value, settings.usage_source) == ("production", "azurestack")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"USAGE_SOURCE": "simulated"}, "USAGE_SOURCE"),
        ({"USAGE_SOURCE": ""}, "USAGE_SOURCE"),
        (
            {"COMMERCE_AUTH": "static", "COMMERCE_STATIC_TOKEN": "local-emulator-token"},
            "COMMERCE_AUTH",
        ),
        ({"COMMERCE_BASE_URL": "http://marketplaceapi.microsoft.com"}, "COMMERCE_BASE_URL"),
        ({"COMMERCE_BASE_URL": "https://127.0.0.1:7071"}, "COMMERCE_BASE_URL"),
        ({"COMMERCE_BASE_URL": "https://localhost:7071/"}, "COMMERCE_BASE_URL"),
        ({"COMMERCE_BASE_URL": "https://[::1]:8443"}, "COMMERCE_BASE_URL"),
        ({"AUTH_JWKS_URI": ".local/auth/jwks.json"}, "AUTH_JWKS_URI"),
        ({"AUTH_JWKS_URI": "https://127.0.0.2/keys"}, "AUTH_JWKS_URI"),
        ({"AUTH_JWKS_URI": "https://issuer.localhost/keys"}, "AUTH_JWKS_URI"),
        (
            {"AZURESTACK_ADMIN_ARM_ENDPOINT": "http://adminmanagement.local.azurestack.external"},
            "AZURESTACK_ADMIN_ARM_ENDPOINT",
        ),
        (
            {"AZURESTACK_ADMIN_ARM_ENDPOINT": "https://127.0.0.1:8443"},
            "AZURESTACK_ADMIN_ARM_ENDPOINT",
        ),
        ({"AZURESTACK_ADMIN_ARM_ENDPOINT": "https://0.0.0.0"}, "AZURESTACK_ADMIN_ARM_ENDPOINT"),
        ({"PUBLIC_BASE_URL": "http://func-usage.azurewebsites.net"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "https://127.0.0.1:7071"}, "PUBLIC_BASE_URL"),
        (
            {
                "AZURESTACK_AUTH": "client_secret",
                "AZURESTACK_AUTHORITY": "https://localhost/adfs",
                "AZURESTACK_TENANT_ID": "adfs",
                "AZURESTACK_CLIENT_ID": "app",
                "AZURESTACK_CLIENT_SECRET": "s",
            },
            "AZURESTACK_AUTHORITY",
        ),
    ],
)
def test_production_refuses_local_only_parts(change: dict[str, str], named: str) -> None:
    """The simulated source, the emulator's static token, plain-http and loopback endpoints
    are refused at load in production, naming the setting; local mode takes each of them."""
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_environ({**PRODUCTION, **change})
    Settings.from_environ({**PRODUCTION, **change, "APP_MODE": "local"})
