"""The local app settings: ``local.settings.example.json``'s values, pointed at our emulators."""

from __future__ import annotations

import json

from devstack.azurite import REPO_ROOT

EXAMPLE_SETTINGS = REPO_ROOT / "local.settings.example.json"


def local_values(connection_string: str, **overrides: str) -> dict[str, str]:
    """The example file's values with our Azurite's connection string and ``overrides``."""
    values: dict[str, str] = json.loads(EXAMPLE_SETTINGS.read_text())["Values"]
    values["AzureWebJobsStorage"] = connection_string
    values["AUTH_JWKS_URI"] = str(REPO_ROOT / values["AUTH_JWKS_URI"])
    values.update(overrides)
    return values
