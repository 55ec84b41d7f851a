"""The Azure Stack source's pure parts: wire rows, admin subscriptions, the spool, settings."""

from __future__ import annotations

import itertools
import json
import math
import random
import resource
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.collection.sources.azurestack import (
    RowSpool,
    group_key,
    instance_field,
    record_from_row,
    subscription_from_item,
)
from shared.collection.validation import validate
from shared.core.config import Settings
from shared.core.errors import ConfigurationError
from shared.core.meters import catalogue
from shared.storage.quarantine import Rejection
from shared.storage.subscriptions import SubscriptionState
from tests.app_settings import LOCAL_VALUES

SUB = "09065051-cfe9-4fcf-b90c-87f2af292fc9"
PROVIDER = "39c82aed-b2b7-4a66-abdb-611de00bf11e"
HOUR = datetime(2019, 12, 10, 19, tzinfo=UTC)
URI = f"/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.Storage/storageAccounts/sa1"
BASE = {**LOCAL_VALUES, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
STAMP = {
    "USAGE_SOURCE": "azurestack",
    "AZURESTACK_ADMIN_ARM_ENDPOINT": "https://adminmanagement.local.azurestack.external",
    "AZURESTACK_PROVIDER_SUBSCRIPTION_ID": PROVIDER,
    "AZURESTACK_AUDIENCE": "https://adminmanagement.contoso.onmicrosoft.com/3a1b7f2e",
}


def wire_row(instance_data: Any, **properties: Any) -> dict[str, Any]:
    """A row shaped like the recorded Get-AzsSubscriberUsage response."""
    return {
        "id": f"/subscriptions/{PROVIDER}/providers/Microsoft.Commerce/UsageAggregate/{SUB}-X",
        "name": f"{SUB}-X",
        "type": "Microsoft.Commerce/UsageAggregate",
        "properties": {
            "subscriptionId": SUB,
            "usageStartTime": "2019-12-10T18:00:00+00:00",
            "usageEndTime": "2019-12-10T19:00:00+00:00",
            "instanceData": instance_data,
            "quantity": 16.461425899527967,
            "meterId": "B5C15376-6C94-4FDD-B655-1A69D138ACA3",
            **properties,
        },
    }


def resources(tags: Any, info: Any) -> str:
    body = {"resourceUri": URI, "location": "northwest", "tags": tags, "additionalInfo": info}
    return json.dumps({"Microsoft.Resources": body})


def test_recorded_row_with_empty_string_fields_normalises() -> None:
    """The recorded shape (tags and additionalInfo as "") gives None, window and meter kept."""
    record = record_from_row(wire_row(resources("", "")))
    assert record.subscription_id == SUB
    assert record.meter_id == "B5C15376-6C94-4FDD-B655-1A69D138ACA3"
    assert record.usage_start == datetime(2019, 12, 10, 18, tzinfo=UTC)
    assert record.usage_end == datetime(2019, 12, 10, 19, tzinfo=UTC)
    assert record.quantity == 16.461425899527967
    assert (record.resource_uri, record.location) == (URI, "northwest")
    assert record.tags is None
    assert record.additional_info is None


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("", None),
        ("null", None),
        (" null ", None),
        (None, None),
        ('{"env":"prod"}', {"env": "prod"}),
        ({"env": "prod"}, {"env": "prod"}),
        (json.dumps('{"env":"prod"}'), {"env": "prod"}),
        ("not json", "not json"),
        ("[1,2]", [1, 2]),
    ],
)
def test_instance_fields_accept_every_observed_encoding(wire: Any, expected: Any) -> None:
    """ "", "null", JSON text, objects and double-encoded text parse; junk passes through."""
    assert instance_field(wire) == expected


def test_instance_data_as_an_object_and_mixed_case_meter() -> None:
    """instanceData sent as an object (not text) parses; a lower-case meter id is kept."""
    data = {"Microsoft.Resources": {"resourceUri": URI, "location": "local", "tags": "null"}}
    record = record_from_row(wire_row(data, meterId="b5c15376-6c94-4fdd-b655-1a69d138aca3"))
    assert record.resource_uri == URI
    assert record.tags is None
    assert record.meter_id == "b5c15376-6c94-4fdd-b655-1a69d138aca3"
    row = validate(record, HOUR, catalogue(), {SUB})
    assert not isinstance(row, Rejection)
    assert row.meter_id == "B5C15376-6C94-4FDD-B655-1A69D138ACA3"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (wire_row("{not json"), "MalformedResourceUri"),
        (wire_row(None), "MalformedResourceUri"),
        (wire_row(resources("{bad", "")), "InvalidInstanceData"),
        (wire_row(resources("", "[]")), "InvalidInstanceData"),
        (wire_row(resources("", ""), usageStartTime="yesterday"), "MalformedRecord"),
        (wire_row(resources("", ""), quantity=None), "MalformedRecord"),
        (wire_row(resources("", ""), subscriptionId=None), "MalformedSubscriptionId"),
        ({"id": "x"}, "MalformedSubscriptionId"),
        ("a string, not a row", "MalformedSubscriptionId"),
    ],
)
def test_unreadable_rows_become_records_validation_quarantines(row: Any, reason: str) -> None:
    """Nothing is dropped: an unparseable field travels raw and validation names why."""
    verdict = validate(record_from_row(row), HOUR, catalogue(), {SUB})
    assert isinstance(verdict, Rejection)
    assert verdict.reason == reason


def test_unreadable_instance_data_keeps_the_wire_text() -> None:
    """instanceData that is not JSON is kept in the record, so the quarantine shows it."""
    record = record_from_row(wire_row("{not json"))
    kept: object = record.tags
    assert kept == "{not json"


def test_group_key_matches_the_collectors() -> None:
    """Rows group by lower-case subscription id, as the collector groups records."""
    assert group_key(wire_row("", subscriptionId=SUB.upper())) == SUB
    assert group_key({"properties": {}}) == "None"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("Enabled", SubscriptionState.ACTIVE),
        ("Disabled", SubscriptionState.SUSPENDED),
        ("Warned", SubscriptionState.SUSPENDED),
        ("PastDue", SubscriptionState.SUSPENDED),
        ("Deleting", SubscriptionState.DELETED),
        ("Deleted", SubscriptionState.DELETED),
        ("PartiallyDeleted", SubscriptionState.DELETED),
        ("SomethingNew", SubscriptionState.SUSPENDED),
    ],
)
def test_admin_states_map_to_subscription_states(state: str, expected: SubscriptionState) -> None:
    """Every documented admin state has a meaning here; an unknown one is not 'active'."""
    item = {"subscriptionId": SUB, "state": state}
    assert subscription_from_item(item, PROVIDER).state is expected


def test_admin_subscription_fields_map() -> None:
    """Owner UPN (lower-cased), tenant, offer, display name and delegated provider map."""
    item = {
        "id": f"/subscriptions/{PROVIDER}/providers/Microsoft.Subscriptions.Admin/"
        f"subscriptions/{SUB}",
        "subscriptionId": SUB,
        "delegatedProviderSubscriptionId": "8158498d-27b1-4ccf-9aa1-de0f925731e6",
        "displayName": "Contoso prod",
        "owner": "TenantAdmin1@contoso.onmicrosoft.com",
        "tenantId": "d9b782d5-d098-4374-8f2c-3907cc34611c",
        "offerId": f"/subscriptions/{PROVIDER}/resourceGroups/rg/providers/"
        "Microsoft.Subscriptions.Admin/offers/gold",
        "state": "Enabled",
    }
    subscription = subscription_from_item(item, PROVIDER)
    assert subscription.owners == ("tenantadmin1@contoso.onmicrosoft.com",)
    assert subscription.tenant_id == "d9b782d5-d098-4374-8f2c-3907cc34611c"
    assert subscription.provider_subscription_id == "8158498d-27b1-4ccf-9aa1-de0f925731e6"
    assert subscription.offer.endswith("/offers/gold")
    assert subscription.display_name == "Contoso prod"
    no_provider = subscription_from_item({"subscriptionId": SUB, "state": "Enabled"}, PROVIDER)
    assert no_provider.provider_subscription_id == PROVIDER
    assert no_provider.owners == ()


def test_spool_groups_rows_by_subscription_in_arrival_order() -> None:
    """Interleaved subscriptions come back contiguous, each in the order the wire sent."""
    subs = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(5)]
    rows = [wire_row("", subscriptionId=subs[i % 5], quantity=float(i)) for i in range(50)]
    spool = RowSpool()
    spool.add(rows[:20])
    spool.add(rows[20:])
    out = list(spool.grouped())
    spool.close()
    keys = [group_key(row) for row in out]
    assert sorted(keys) == sorted(group_key(row) for row in rows)
    changes = sum(1 for a, b in itertools.pairwise(keys) if a != b)
    assert changes == 4
    for sub in subs:
        mine = [row["properties"]["quantity"] for row in out if group_key(row) == sub]
        assert mine == sorted(mine)


def test_spool_memory_stays_bounded_for_a_large_hour() -> None:
    """100,000 rows pass through a 4 MiB page cache without the process growing with them."""
    rng = random.Random(7)
    subs = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(400)]
    page = [
        wire_row(resources('{"env":"prod"}', ""), subscriptionId=rng.choice(subs))
        for _ in range(1000)
    ]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    spool = RowSpool(cache_kib=4096)
    for _ in range(100):
        spool.add(page)
    count = sum(1 for _ in spool.grouped())
    spool.close()
    seconds = time.perf_counter() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"spool: 100,000 rows in {seconds:.2f}s, peak RSS grew {grown_mib:.1f} MiB")
    assert count == 100_000
    # The rows' JSON alone is ~60 MiB; holding them would grow the process by that much.
    assert grown_mib < 40


def test_settings_require_the_stamp_only_for_azurestack() -> None:
    """USAGE_SOURCE=azurestack names each missing setting; the simulated source needs none."""
    Settings.from_environ(BASE)
    with pytest.raises(ConfigurationError) as error:
        Settings.from_environ({**BASE, "USAGE_SOURCE": "azurestack"})
    for name in ("AZURESTACK_ADMIN_ARM_ENDPOINT", "AZURESTACK_PROVIDER_SUBSCRIPTION_ID",
                 "AZURESTACK_AUDIENCE"):  # fmt: skip
        assert name in str(error.value)
    settings = Settings.from_environ({**BASE, **STAMP})
    assert settings.azurestack_auth == "managed_identity"
    # A stamp aggregates usage about once an hour: wait one whole cycle after the hour.
    assert settings.collect_delay_hours == 1


def test_settings_client_secret_needs_authority_tenant_client_and_secret() -> None:
    """A service principal needs all four; the secret is a SecretStr."""
    with pytest.raises(ConfigurationError) as error:
        Settings.from_environ({**BASE, **STAMP, "AZURESTACK_AUTH": "client_secret"})
    for name in ("AZURESTACK_AUTHORITY", "AZURESTACK_TENANT_ID", "AZURESTACK_CLIENT_ID",
                 "AZURESTACK_CLIENT_SECRET"):  # fmt: skip
        assert name in str(error.value)
    settings = Settings.from_environ(
        {
            **BASE,
            **STAMP,
            "AZURESTACK_AUTH": "client_secret",
            "AZURESTACK_AUTHORITY": "https://adfs.local.azurestack.external",
            "AZURESTACK_TENANT_ID": "adfs",
            "AZURESTACK_CLIENT_ID": "2b3c4d5e-0000-4000-8000-000000000001",
            "AZURESTACK_CLIENT_SECRET": "s3cret",
        }
    )
    assert settings.azurestack_client_secret is not None
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"AZURESTACK_ADMIN_ARM_ENDPOINT": "http://adminmanagement.local"}, "AZURESTACK_ADMIN"),
        ({"AZURESTACK_PROVIDER_SUBSCRIPTION_ID": "not-a-guid"}, "AZURESTACK_PROVIDER"),
        ({"AZURESTACK_ADMIN_ARM_ENDPOINT": "ftp://x"}, "AZURESTACK_ADMIN"),
        ({"USAGE_SOURCE": "stamp"}, "USAGE_SOURCE"),
    ],
)
def test_settings_refuse_bad_stamp_values_in_production(
    override: dict[str, str], named: str
) -> None:
    """Production wants https; ids must be GUIDs; unknown sources are refused at load."""
    production = {
        **BASE,
        **STAMP,
        "APP_MODE": "production",
        "CONTINUATION_TOKEN_KEY": "k" * 40,
        "COMMERCE_AUTH": "managed_identity",
        "COMMERCE_BASE_URL": "https://marketplaceapi.microsoft.com",
        "AUTH_JWKS_URI": "https://login.microsoftonline.com/t/discovery/v2.0/keys",
        "PUBLIC_BASE_URL": "https://usage.example.test",
    }
    Settings.from_environ(production)
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_environ({**production, **override})


def test_the_registry_builds_the_azurestack_source_without_calling_the_stamp() -> None:
    """SOURCES picks the stamp source; no token or request happens until a read."""
    from shared.collection.sources import SOURCES

    source = SOURCES.create(Settings.from_environ({**BASE, **STAMP}))
    assert source.name == "azurestack"
    assert math.isnan(record_from_row(None).quantity)
