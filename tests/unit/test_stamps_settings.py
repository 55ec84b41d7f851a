"""Several usage sources (stamps) in one app: each stamp's settings, refused overlays, queues."""

from __future__ import annotations

import pytest

from shared.core.config import Settings
from shared.core.errors import ConfigurationError
from tests.app_settings import LOCAL_VALUES
from tests.unit.test_production_settings import PRODUCTION

LOCAL = {**LOCAL_VALUES, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}

# Two production stamps: the app's AZURESTACK_* are east's; west replaces where it differs.
STAMPED = {
    **PRODUCTION,
    "USAGE_STAMPS": "east,west",
    "STAMP_WEST__AZURESTACK_ADMIN_ARM_ENDPOINT": "https://adminmanagement.west.contoso.com",
    "STAMP_WEST__AZURESTACK_PROVIDER_SUBSCRIPTION_ID": "00000000-0000-4000-8000-0000000000bb",
    "STAMP_WEST__COLLECT_SLICES": "8",
}


def test_stamps_take_their_overlays_and_inherit_the_rest() -> None:
    """Each stamp replaces only its STAMP_ settings; everything else is the app's."""
    settings = Settings.from_environ(STAMPED)
    east, west = settings.stamps()
    assert (east.source_name, west.source_name) == ("east", "west")
    assert east.azurestack_admin_arm_endpoint == PRODUCTION["AZURESTACK_ADMIN_ARM_ENDPOINT"]
    assert west.azurestack_admin_arm_endpoint == "https://adminmanagement.west.contoso.com"
    assert west.azurestack_provider_subscription_id == "00000000-0000-4000-8000-0000000000bb"
    assert (east.collect_slices, west.collect_slices) == (1, 8)
    for stamp in (east, west):
        assert stamp.azurestack_audience == settings.azurestack_audience
        assert stamp.table_service_uri == settings.table_service_uri
        assert stamp.commerce_base_url == settings.commerce_base_url
        assert stamp.collect_queue_name == settings.collect_queue_name
        assert stamp.stamps() == (stamp,)


def test_stamps_keep_usage_stamps_order_and_fill_their_own_defaults() -> None:
    """USAGE_STAMPS order is stamps() order; a stamp's delay default follows its own source."""
    settings = Settings.from_environ(
        {
            **LOCAL,
            "USAGE_STAMPS": " west , east ",
            "STAMP_EAST__USAGE_SOURCE": "azurestack",
            "STAMP_EAST__AZURESTACK_ADMIN_ARM_ENDPOINT": "http://127.0.0.1:8443",
            "STAMP_EAST__AZURESTACK_PROVIDER_SUBSCRIPTION_ID": PRODUCTION[
                "AZURESTACK_PROVIDER_SUBSCRIPTION_ID"
            ],
            "STAMP_EAST__AZURESTACK_AUDIENCE": "https://adminmanagement.local/1",
            "STAMP_WEST__FLEET_SEED": "7",
        }
    )
    assert settings.usage_stamps == "west,east"
    west, east = settings.stamps()
    assert (west.source_name, west.usage_source, west.fleet_seed) == ("west", "simulated", 7)
    assert (east.source_name, east.usage_source, east.fleet_seed) == ("east", "azurestack", 1)
    assert (west.collect_delay_hours, east.collect_delay_hours) == (0, 1)


def test_without_stamps_the_app_is_its_one_source() -> None:
    """No USAGE_STAMPS: stamps() is (settings,) and source_name is USAGE_SOURCE (the old key)."""
    local = Settings.from_environ(LOCAL)
    assert local.stamps() == (local,)
    assert local.source_name == local.usage_source == "simulated"
    production = Settings.from_environ(PRODUCTION)
    assert production.stamps() == (production,)
    assert production.source_name == "azurestack"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"STAMP_NORTH__FLEET_SEED": "3"}, "STAMP_NORTH__FLEET_SEED"),
        ({"STAMP_east__FLEET_SEED": "3"}, "STAMP_east__FLEET_SEED"),
        ({"USAGE_STAMPS": "", "STAMP_EAST__FLEET_SEED": "3"}, "STAMP_EAST__FLEET_SEED"),
    ],
)
def test_a_stamp_variable_of_an_unknown_stamp_is_refused(
    change: dict[str, str], named: str
) -> None:
    """A STAMP_ variable whose NAME is not in USAGE_STAMPS fails (a typo collects nothing)."""
    with pytest.raises(ConfigurationError, match=f"{named}: no stamp"):
        Settings.from_environ({**LOCAL, "USAGE_STAMPS": "east,west", **change})


@pytest.mark.parametrize(
    "setting",
    ["USAGE_TABLE_PREFIX", "AzureWebJobsStorage", "AUTH_AUDIENCE", "COMMERCE_BASE_URL",
     "USAGE_QUEUE_NAME", "COLLECT_QUEUE_NAME", "APP_MODE", "USAGE_SOURCE_NAME"],
)  # fmt: skip
def test_a_stamp_may_not_override_the_apps_settings(setting: str) -> None:
    """Storage, tables, auth, commerce, queues and the mode are the app's, never a stamp's."""
    with pytest.raises(ConfigurationError, match=rf"STAMP_EAST__{setting}: .* not a stamp's"):
        Settings.from_environ({**LOCAL, "USAGE_STAMPS": "east", f"STAMP_EAST__{setting}": "x"})


def test_a_stamp_variable_naming_no_setting_is_refused() -> None:
    """A misspelt setting in a STAMP_ variable fails instead of being ignored."""
    with pytest.raises(ConfigurationError, match=r"STAMP_EAST__AZURESTACK_ENDPOINT: .* not a"):
        Settings.from_environ(
            {**LOCAL, "USAGE_STAMPS": "east", "STAMP_EAST__AZURESTACK_ENDPOINT": "https://x"}
        )


@pytest.mark.parametrize(
    "stamps", ["East", "1east", "east-1", "e_ast", "a" * 17, "east,,west", "east,", "east west"]
)
def test_bad_stamp_names_are_refused(stamps: str) -> None:
    """Stamp names are a lower-case letter then up to 15 lower-case letters or digits."""
    with pytest.raises(ConfigurationError, match=r"USAGE_STAMPS: .*stamp names are"):
        Settings.from_environ({**LOCAL, "USAGE_STAMPS": stamps})


def test_the_longest_stamp_name_is_taken() -> None:
    """Sixteen characters is the limit, not one less."""
    settings = Settings.from_environ({**LOCAL, "USAGE_STAMPS": "a" * 16})
    assert [stamp.source_name for stamp in settings.stamps()] == ["a" * 16]


def test_duplicate_stamp_names_are_refused() -> None:
    """A stamp listed twice would collect its hours twice."""
    with pytest.raises(ConfigurationError, match="unique: east repeated"):
        Settings.from_environ({**LOCAL, "USAGE_STAMPS": "east,west,east"})


def test_usage_source_name_is_not_an_app_setting() -> None:
    """USAGE_SOURCE_NAME comes from USAGE_STAMPS only: set by hand it would move the watermark."""
    with pytest.raises(ConfigurationError, match="USAGE_SOURCE_NAME"):
        Settings.from_environ({**LOCAL, "USAGE_SOURCE_NAME": "east"})


def test_a_simulated_production_stamp_is_refused_naming_the_stamp() -> None:
    """Production checks run per stamp: a simulated stamp fails, naming stamp and variable."""
    with pytest.raises(
        ConfigurationError,
        match=r"stamp west: .*USAGE_SOURCE=simulated .* local-only.*STAMP_WEST__USAGE_SOURCE",
    ):
        Settings.from_environ({**STAMPED, "STAMP_WEST__USAGE_SOURCE": "simulated"})
    local = Settings.from_environ(
        {**STAMPED, "STAMP_WEST__USAGE_SOURCE": "simulated", "APP_MODE": "local"}
    )
    assert [stamp.usage_source for stamp in local.stamps()] == ["azurestack", "simulated"]


def test_an_http_stamp_endpoint_in_production_is_refused_naming_the_stamp() -> None:
    """A plain-http admin ARM endpoint in one production stamp fails, naming that stamp."""
    endpoint = {"STAMP_WEST__AZURESTACK_ADMIN_ARM_ENDPOINT": "http://adminmanagement.west"}
    with pytest.raises(
        ConfigurationError,
        match=r"stamp west: .*AZURESTACK_ADMIN_ARM_ENDPOINT must be an https URL in production"
        r".*\(from STAMP_WEST__AZURESTACK_ADMIN_ARM_ENDPOINT\)",
    ):
        Settings.from_environ({**STAMPED, **endpoint})


def test_an_inherited_bad_value_names_the_stamp_and_the_apps_setting() -> None:
    """A bad value a stamp inherits is reported for that stamp, without a STAMP_ variable."""
    with pytest.raises(
        ConfigurationError, match=r"stamp east: .*AZURESTACK_ADMIN_ARM_ENDPOINT"
    ) as e:
        Settings.from_environ(
            {**STAMPED, "AZURESTACK_ADMIN_ARM_ENDPOINT": "http://adminmanagement.east"}
        )
    assert "STAMP_EAST" not in str(e.value)
    assert "stamp west" not in str(e.value)


def test_the_apps_stamp_settings_are_only_what_stamps_inherit() -> None:
    """With stamps, AZURESTACK_* every stamp sets need not be app settings too."""
    stamped = {
        name: value for name, value in STAMPED.items() if name != "AZURESTACK_ADMIN_ARM_ENDPOINT"
    }
    with pytest.raises(ConfigurationError, match=r"stamp east: .*AZURESTACK_ADMIN_ARM_ENDPOINT"):
        Settings.from_environ(stamped)
    stamped["STAMP_EAST__AZURESTACK_ADMIN_ARM_ENDPOINT"] = "https://adminmanagement.east"
    east, _ = Settings.from_environ(stamped).stamps()
    assert east.azurestack_admin_arm_endpoint == "https://adminmanagement.east"


def test_settings_not_loaded_from_the_environment_refuse_to_guess_their_stamps() -> None:
    """model_validate never sees STAMP_ variables, so stamps() refuses instead of (self,)."""
    settings = Settings.model_validate({**LOCAL, "USAGE_STAMPS": "east"})
    with pytest.raises(ConfigurationError, match="from_environ"):
        settings.stamps()
    unstamped = Settings.model_validate(LOCAL)
    assert unstamped.stamps() == (unstamped,)


@pytest.mark.parametrize(("slices", "valid"), [("0", False), ("1", True), ("64", True),
                                               ("65", False), ("two", False)])  # fmt: skip
def test_collect_slices_bounds(slices: str, valid: bool) -> None:
    """COLLECT_SLICES is 1-64, for the app and for each stamp (naming the STAMP_ variable)."""
    if valid:
        assert Settings.from_environ({**LOCAL, "COLLECT_SLICES": slices}).collect_slices == int(
            slices
        )
        return
    with pytest.raises(ConfigurationError, match="COLLECT_SLICES"):
        Settings.from_environ({**LOCAL, "COLLECT_SLICES": slices})
    with pytest.raises(ConfigurationError, match=r"stamp east: .*STAMP_EAST__COLLECT_SLICES"):
        Settings.from_environ(
            {**LOCAL, "USAGE_STAMPS": "east", "STAMP_EAST__COLLECT_SLICES": slices}
        )


def test_collect_queue_name_defaults_and_must_differ_from_the_usage_queue() -> None:
    """Collection and billing work items never share a queue; the name follows queue rules."""
    assert Settings.from_environ(LOCAL).collect_queue_name == "collect-work"
    with pytest.raises(ConfigurationError, match="COLLECT_QUEUE_NAME must differ"):
        Settings.from_environ({**LOCAL, "COLLECT_QUEUE_NAME": "work", "USAGE_QUEUE_NAME": "work"})
    with pytest.raises(ConfigurationError, match="COLLECT_QUEUE_NAME"):
        Settings.from_environ({**LOCAL, "COLLECT_QUEUE_NAME": "Bad_Queue"})
