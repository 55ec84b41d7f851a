"""Settings, the meter catalogue, hours and daily sums: the pure building blocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.collection.daily import sum_to_daily
from shared.core.config import Settings
from shared.core.errors import ConfigurationError
from shared.core.hours import hour_key, hours_between, last_closed_hour, parse_hour_key
from shared.core.meters import MeterKind, catalogue
from shared.storage.usage_rows import UsageRow, resource_hash
from tests.app_settings import LOCAL_VALUES

BASE = {**LOCAL_VALUES, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
PRODUCTION = {**BASE, "APP_MODE": "production", "PUBLIC_BASE_URL": "https://usage.example.test"}


def test_settings_defaults_in_local_mode() -> None:
    """Local mode may default the source to the simulated fleet; numbers parse from text."""
    settings = Settings.from_environ({**BASE, "USAGE_SOURCE": "", "COLLECT_LOOKBACK_HOURS": "30"})
    assert settings.usage_source == "simulated"
    assert settings.collect_lookback_hours == 30
    assert settings.table_name("hours") == "usagehours"
    # The simulated fleet has an hour's answer when it ends; the local host's address.
    assert settings.collect_delay_hours == 0
    assert settings.api_base_url == "http://127.0.0.1:7071"
    assert Settings.from_environ({**BASE, "COLLECT_DELAY_HOURS": "3"}).collect_delay_hours == 3


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({**BASE, "APP_MODE": ""}, "APP_MODE"),
        ({**BASE, "AzureWebJobsStorage": ""}, "AzureWebJobsStorage"),
        ({**BASE, "APP_MODE": "prod"}, "APP_MODE"),
        ({**BASE, "APP_MODE": "production", "USAGE_SOURCE": ""}, "USAGE_SOURCE"),
        ({**PRODUCTION}, "CONTINUATION_TOKEN_KEY"),
        ({**PRODUCTION, "CONTINUATION_TOKEN_KEY": "k" * 40}, "COMMERCE_AUTH"),
        (
            {**PRODUCTION, "CONTINUATION_TOKEN_KEY": "k" * 40, "COMMERCE_AUTH": "managed_identity"},
            "AUTH_JWKS_URI",
        ),
        ({**BASE, "CONTINUATION_TOKEN_KEY": "short"}, "CONTINUATION_TOKEN_KEY"),
        ({**BASE, "AUTH_ISSUER": ""}, "AUTH_ISSUER"),
        ({**BASE, "COMMERCE_AUTH": "client_secret"}, "COMMERCE_CLIENT_SECRET"),
        ({**BASE, "BILLING_CHARGEABLE_OVERRIDES": "abc"}, "BILLING_CHARGEABLE_OVERRIDES"),
        ({**BASE, "USAGE_QUEUE_NAME": "Bad_Queue"}, "USAGE_QUEUE_NAME"),
        ({**BASE, "COLLECT_LOOKBACK_HOURS": "soon"}, "COLLECT_LOOKBACK_HOURS"),
        ({**BASE, "COLLECT_TIME_BUDGET_SECONDS": "-1"}, "COLLECT_TIME_BUDGET_SECONDS"),
        ({**BASE, "USAGE_TABLE_PREFIX": "bad-prefix"}, "USAGE_TABLE_PREFIX"),
        ({**BASE, "USAGE_SOURCE": "azure"}, "USAGE_SOURCE"),
        ({**BASE, "COLLECT_SCHEDULE": "0 * * * *"}, "COLLECT_SCHEDULE"),
        ({**BASE, "COLLECT_DELAY_HOURS": "-1"}, "COLLECT_DELAY_HOURS"),
        ({**PRODUCTION, "PUBLIC_BASE_URL": ""}, "PUBLIC_BASE_URL"),
        ({**PRODUCTION, "PUBLIC_BASE_URL": "http://usage.example.test"}, "PUBLIC_BASE_URL"),
        ({**BASE, "PUBLIC_BASE_URL": "https://usage.example.test/?x=1"}, "PUBLIC_BASE_URL"),
        ({**BASE, "PUBLIC_BASE_URL": "https://evil.example@usage.example.test"}, "PUBLIC_BASE_URL"),
    ],
)
def test_bad_settings_fail_at_load_naming_the_setting(environ: dict, named: str) -> None:
    """Missing or malformed settings fail at load with the setting's name in the message."""
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_environ(environ)
    assert named in str(raised.value)


def test_production_accepts_real_values_and_parses_overrides() -> None:
    """Production settings with https endpoints, a real key and no emulator token load."""
    settings = Settings.from_environ(
        {
            **PRODUCTION,
            "USAGE_SOURCE": "azurestack",
            "AZURESTACK_ADMIN_ARM_ENDPOINT": "https://adminmanagement.local.azurestack.external",
            "AZURESTACK_PROVIDER_SUBSCRIPTION_ID": "00000000-0000-4000-8000-0000000000aa",
            "AZURESTACK_AUDIENCE": "https://adminmanagement.contoso.onmicrosoft.com/3a1b7f2e",
            "CONTINUATION_TOKEN_KEY": "k" * 40,
            "COMMERCE_AUTH": "managed_identity",
            "COMMERCE_STATIC_TOKEN": "",
            "COMMERCE_BASE_URL": "https://marketplaceapi.microsoft.com",
            "AUTH_JWKS_URI": "https://login.microsoftonline.com/t/discovery/v2.0/keys",
            "AUTH_AUDIENCE": "api://usage, 11111111-2222-3333-4444-555555555555",
            "AUTH_ISSUER": "https://login.microsoftonline.com/t/v2.0, https://sts.windows.net/t/",
            "BILLING_CHARGEABLE_OVERRIDES": "F271A8A388C44D93956A063E1D2FA80B=true; x=false",
            "PUBLIC_BASE_URL": "https://usage.example.test/",
        }
    )
    assert settings.api_base_url == "https://usage.example.test"
    assert settings.auth_audiences == ("api://usage", "11111111-2222-3333-4444-555555555555")
    assert settings.auth_issuers == (
        "https://login.microsoftonline.com/t/v2.0",
        "https://sts.windows.net/t/",
    )
    assert settings.chargeable_overrides() == {
        "f271a8a388c44d93956a063e1d2fa80b": True,
        "x": False,
    }


def test_connection_string_never_appears_in_errors() -> None:
    """A secret-bearing setting is not echoed when another setting is wrong."""
    secret = "DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0"
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_environ({**BASE, "APP_MODE": "nope", "AzureWebJobsStorage": secret})
    assert "c2VjcmV0" not in str(raised.value)
    assert "c2VjcmV0" not in repr(Settings.from_environ({**BASE, "AzureWebJobsStorage": secret}))


def test_catalogue_lookup_is_case_insensitive_and_complete() -> None:
    """Meter ids match in any case and keep the catalogue's spelling."""
    meters = catalogue()
    assert len(meters) == 80
    meter = meters.lookup("f271a8a388c44d93956a063e1d2fa80b")
    assert meter is not None
    assert meter.meter_id == "F271A8A388C44D93956A063E1D2FA80B"
    assert meter.kind is MeterKind.POINT_IN_TIME
    assert meters.lookup(" 9CD92D4C-bafd-4492-B278-BEDC2DE8232A ") is not None
    assert meters.lookup("unknown") is None


def test_chargeable_set_defaults_and_overrides() -> None:
    """The chargeable set is the catalogue's, adjustable by operator overrides."""
    meters = catalogue()
    default = meters.chargeable()
    assert "fab6eb84-500b-4a09-a8ca-7358f8bbaea5" in default  # Base VM Size Hours
    assert "f271a8a388c44d93956a063e1d2fa80b" not in default  # Static IP
    changed = meters.chargeable({"F271A8A388C44D93956A063E1D2FA80B": True})
    assert changed == default | {"f271a8a388c44d93956a063e1d2fa80b"}


def test_hours_are_utc_keys_in_time_order() -> None:
    """Hour keys sort as time does and round-trip; the last closed hour has ended."""
    now = datetime(2026, 11, 27, 7, 4, 59, tzinfo=UTC)
    assert last_closed_hour(now) == datetime(2026, 11, 27, 6, tzinfo=UTC)
    hours = list(hours_between(now - timedelta(hours=30), last_closed_hour(now)))
    assert len(hours) == 30
    assert [hour_key(hour) for hour in hours] == sorted(hour_key(hour) for hour in hours)
    assert all(parse_hour_key(hour_key(hour)) == hour for hour in hours)


def test_resource_hash_ignores_case_and_is_key_safe() -> None:
    """ARM ids are case-insensitive, and hashes never hold characters RowKeys forbid."""
    uri = "/subscriptions/x/resourceGroups/RG/providers/P/t/N#?\\"
    assert resource_hash(uri) == resource_hash(uri.upper())
    assert resource_hash(uri).isalnum()


def test_daily_sum_groups_by_usage_day_and_resource() -> None:
    """Hourly rows of one resource and usage day add up to one daily row."""
    day = datetime(2026, 11, 26, tzinfo=UTC)
    hour = timedelta(hours=1)

    def row(
        start: datetime, quantity: float, uri: str = "/subscriptions/s/providers/a/b/c"
    ) -> UsageRow:
        return UsageRow("s", "M", start, start + hour, quantity, uri, "local", None, None)

    rows = [row(day + n * hour, 0.1) for n in range(24)] + [row(day - hour, 2.0)]
    entities = sum_to_daily(day, rows)
    sums = sorted((entity["UsageStartTime"], entity["Quantity"]) for entity in entities)
    assert sums == [(day - timedelta(days=1), 2.0), (day, pytest.approx(2.4, rel=1e-15))]
