"""The operator CLI's aggregates, token, collect and subscriptions commands, run in-process
through ``ops.__main__.main`` (and once as ``python -m ops``) against real Azurite and the
real usage API behind the local Functions host.

Expected rows come from the API itself over plain HTTP (``follow``), or from the tables,
never from the CLI under test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack.azurite import Azurite
from devstack.host import LocalFunctionsHost
from ops.__main__ import main as ops_main
from shared.core.config import Settings
from shared.core.hours import floor_hour, utc_now
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.watermark import Watermark
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_query_support import (
    PROVIDER_PATH,
    REPO,
    World,
    call,
    follow,
    window,
)
from tests.scripted_source import PROVIDER, TENANT_A, TENANT_B, snapshot, subscription

START, END = "2026-11-20T00:00Z", "2026-11-21T00:00Z"  # DAY, the world's collected day


def run_ops(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one in-process ``python -m ops`` run."""
    try:
        code = ops_main(list(argv))
    except SystemExit as exit_info:  # argparse refusals
        code = int(exit_info.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def aggregates(
    capsys: pytest.CaptureFixture[str], host: LocalFunctionsHost, token: str, *argv: str
) -> tuple[int, str, str]:
    return run_ops(capsys, "aggregates", "--api-url", host.base_url, "--token", token, *argv)


def delegated_provider(world: World) -> str:
    """The delegated provider with the most usage: a day of it is several 1,000-row pages."""
    return world.fleet.delegated_providers[0].subscription_id


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    p = row["properties"]
    return (p["subscriptionId"], p["meterId"], p["usageStartTime"], p.get("instanceData", ""))


# --- aggregates ---------------------------------------------------------------------------


def test_aggregates_all_pages_equal_the_api_and_one_page_hands_on_its_token(
    world: World, host: LocalFunctionsHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """--all-pages gives every row of the paging run; one page gives 1,000 rows and a token
    that, passed back with --continuation-token, gives exactly the API's second page."""
    provider = delegated_provider(world)
    token = world.admin_token()
    expected, pages = follow(
        call(host.base_url, PROVIDER_PATH.format(provider), window(), token), token
    )
    assert len(pages) >= 3
    route = ["--provider-subscription", provider, "--reported-start", START]
    route += ["--reported-end", END, "--granularity", "hourly", "--output", "json"]

    code, out, err = aggregates(capsys, host, token, *route, "--all-pages")
    assert code == 0, err
    body = json.loads(out)
    assert "nextLink" not in body
    assert [row_key(r) for r in body["value"]] == [row_key(r) for r in expected]
    assert f"page {len(pages)}: {len(expected)} rows" in err

    code, out, err = aggregates(capsys, host, token, *route)
    assert code == 0, err
    first = json.loads(out)
    assert [row_key(r) for r in first["value"]] == [row_key(r) for r in pages[0].json()["value"]]
    (hint,) = [line for line in err.splitlines() if "--continuation-token" in line]
    continuation = hint.split("--continuation-token ", 1)[1]
    code, out, err = aggregates(capsys, host, token, *route, "--continuation-token", continuation)
    assert code == 0, err
    second = [row_key(r) for r in json.loads(out)["value"]]
    assert second == [row_key(r) for r in pages[1].json()["value"]]


def test_aggregates_provider_route_with_subscriber_as_table_and_csv(
    world: World, host: LocalFunctionsHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """--subscriber narrows to one direct tenant; the table and the CSV hold the same rows as
    the API's JSON (daily, every page), one table line and one CSV record per row."""
    provider = delegated_provider(world)
    subscriber = sorted(world.direct_tenants(provider) & world.reported_subscriptions())[0]
    token = world.admin_token()
    params = {**window(granularity="Daily"), "subscriberId": subscriber}
    expected, _ = follow(call(host.base_url, PROVIDER_PATH.format(provider), params, token), token)
    assert expected
    argv = ["--provider-subscription", provider, "--subscriber", subscriber]
    argv += ["--reported-start", START, "--reported-end", END, "--all-pages"]

    code, out, err = aggregates(capsys, host, token, *argv)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SUBSCRIPTION", "USAGE", "START"]
    assert lines[-1] == f"({len(expected)} rows)"
    assert all(line.startswith(subscriber) for line in lines[1:-1])
    assert len(lines) == len(expected) + 2

    code, out, err = aggregates(capsys, host, token, *argv, "--output", "csv")
    assert code == 0, err
    records = list(csv.DictReader(io.StringIO(out)))
    assert len(records) == len(expected)
    assert {r["subscriptionId"] for r in records} == {subscriber}
    assert sorted(float(r["quantity"]) for r in records) == pytest.approx(
        sorted(r["properties"]["quantity"] for r in expected)
    )


def test_aggregates_api_errors_are_one_line_with_exit_codes(
    world: World, host: LocalFunctionsHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ARM error is one line 'code: message' and exit 2; an unreachable API exit 3; no
    token is refused before any request."""
    provider = delegated_provider(world)
    stranger = str(uuid.uuid4())
    code, out, err = aggregates(
        capsys, host, world.admin_token(),
        "--provider-subscription", provider, "--subscriber", stranger,
        "--reported-start", START, "--reported-end", END,
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "SubscriberIdIsNotDirectTenant: subscriberId is not a direct tenant" in err

    future = (utc_now() + timedelta(days=2)).strftime("%Y-%m-%dT00:00Z")
    code, _, err = aggregates(
        capsys, host, world.admin_token(), "--subscription", provider,
        "--reported-start", START, "--reported-end", future,
    )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1
    assert "RequestEndTimeIsInFuture: " in err

    code, _, err = aggregates(
        capsys, host, "not-a-jwt", "--subscription", provider,
        "--reported-start", START, "--reported-end", END,
    )  # fmt: skip
    assert code == 2
    assert "InvalidAuthenticationToken: " in err

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = run_ops(
        capsys, "aggregates", "--api-url", f"http://127.0.0.1:{port}", "--token", "x",
        "--subscription", provider, "--reported-start", START, "--reported-end", END,
    )  # fmt: skip
    assert (code, out) == (3, "")
    assert err.count("\n") == 1
    assert "connection refused" in err

    code, _, err = run_ops(
        capsys, "aggregates", "--api-url", host.base_url, "--token", "",
        "--subscription", provider, "--reported-start", START, "--reported-end", END,
    )  # fmt: skip
    assert code == 2
    assert "no bearer token" in err


def test_python_m_ops_token_and_aggregates_in_a_subprocess(
    world: World, host: LocalFunctionsHost, tmp_path: Path
) -> None:
    """The entry point: ``python -m ops token tenant`` mints a token the API accepts, and
    ``python -m ops aggregates`` (no storage settings at all) reads that tenant's usage."""
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"Values": world.values}))
    minted = subprocess.run(  # noqa: S603  # our own module, fixed argv
        [sys.executable, "-m", "ops", "token", "tenant", "--verbose",
         "--settings-file", str(settings_file)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    assert "may read: tenant route: " in minted.stderr
    subscription_id = minted.stderr.split("tenant route: ", 1)[1].split(",")[0].split()[0]
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "USAGE_API_URL": host.base_url,
        "USAGE_API_TOKEN": minted.stdout.strip(),
    }
    result = subprocess.run(  # noqa: S603  # our own module, fixed argv
        [sys.executable, "-m", "ops", "aggregates", "--subscription", subscription_id,
         "--reported-start", START, "--reported-end", END, "--output", "json", "--all-pages"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["value"]
    assert {row["properties"]["subscriptionId"] for row in rows} <= {subscription_id}


# --- token -----------------------------------------------------------------------------------


def test_token_mints_for_the_fleet_in_local_mode_and_refuses_otherwise(
    azurite: Azurite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Local mode: a token signed by the issuer beside AUTH_JWKS_URI, for the fleet's admin;
    a bad --index is one line, exit 2; production settings: one line, exit 2, no token."""
    base = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": azurite.connection_string,
        "AUTH_JWKS_URI": str(tmp_path / "auth" / "jwks.json"),
    }
    for name, value in base.items():
        monkeypatch.setenv(name, value)
    code, out, err = run_ops(capsys, "token", "admin", "--verbose")
    assert code == 0, err
    assert out.count(".") == 2  # one JWT
    assert (tmp_path / "auth" / "jwks.json").exists()
    assert "every subscription" in err

    code, out, err = run_ops(capsys, "token", "delegated", "--index", "99")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "delegated providers" in err

    production = {
        "APP_MODE": "production",
        "USAGE_SOURCE": "azurestack",  # production refuses the simulated fleet
        "AZURESTACK_ADMIN_ARM_ENDPOINT": "https://adminmanagement.local.azurestack.external",
        "AZURESTACK_PROVIDER_SUBSCRIPTION_ID": "00000000-0000-4000-8000-0000000000aa",
        "AZURESTACK_AUDIENCE": "https://adminmanagement.contoso.onmicrosoft.com/3a1b7f2e",
        "AUTH_JWKS_URI": "https://login.example.test/keys",
        "COMMERCE_BASE_URL": "https://commerce.example.test",
        "COMMERCE_AUTH": "managed_identity",
        "CONTINUATION_TOKEN_KEY": "k" * 40,
        "PUBLIC_BASE_URL": "https://usage.example.test",
    }
    for name, value in production.items():
        monkeypatch.setenv(name, value)
    code, out, err = run_ops(capsys, "token", "admin")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "local mode only" in err


# --- collect ---------------------------------------------------------------------------------


def settings_file_for(settings: Settings, folder: Path) -> Path:
    """A local.settings.json holding ``settings``' storage, prefix and queue."""
    path = folder / "local.settings.json"
    assert settings.storage_connection_string is not None  # make_settings uses Azurite's
    values = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
        "USAGE_TABLE_PREFIX": settings.table_prefix,
        "USAGE_QUEUE_NAME": settings.usage_queue_name,
        "FLEET_TENANTS": str(settings.fleet_tenants),
    }
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def test_collect_recollects_a_range_idempotently_and_refuses_open_hours(
    make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Collecting three closed hours twice leaves identical tables; the watermark follows
    the range but never jumps a missing hour; an hour not yet ended is one line, exit 2."""
    settings = make_settings()
    account = StorageAccount(settings)
    settings_file = str(settings_file_for(settings, tmp_path))
    first = datetime(2026, 11, 20, 9, tzinfo=UTC)
    window_args = ["--from", "2026-11-20T09", "--to", "2026112011"]

    code, out, err = run_ops(capsys, "collect", "--settings-file", settings_file, *window_args)
    assert code == 0, err
    assert err.count(" rows, ") == 3
    assert "[3/3] 2026-11-20T11Z" in err
    assert "collected 3 reported hours" in out
    assert "watermark 2026-11-20T11Z" in out
    kinds = ("usage", "hours", "subscriptions", "quarantine", "state")
    before = snapshot(account, *kinds)
    assert any(kind.startswith("u") and rows for kind, rows in before.items())

    code, out, err = run_ops(capsys, "collect", "--settings-file", settings_file, *window_args)
    assert code == 0, err
    assert snapshot(account, *kinds) == before

    code, out, _ = run_ops(
        capsys, "collect", "--settings-file", settings_file,
        "--from", "2026-11-20T14", "--to", "2026-11-20T14",
    )  # fmt: skip
    assert code == 0
    assert "watermark 2026-11-20T11Z" in out  # 12 and 13 are missing: it stays
    assert Watermark(account, "simulated").read() == first + timedelta(hours=2)

    open_hour = floor_hour(utc_now())
    code, out, err = run_ops(
        capsys, "collect", "--settings-file", settings_file,
        "--from", f"{open_hour - timedelta(hours=1):%Y-%m-%dT%H}",
        "--to", f"{open_hour:%Y-%m-%dT%H}",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "not closed yet" in err

    code, _, err = run_ops(
        capsys, "collect", "--settings-file", settings_file, "--from", "2026-11-20T09:30",
        "--to", "2026-11-20T10",
    )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1


# --- subscriptions ---------------------------------------------------------------------------


def test_subscriptions_list_set_billing_grant_and_revoke_round_trip(
    make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Edits show in the listing and in storage; '' '' maps back to the default; an unknown
    subscription and half a billing mapping are one line, exit 2."""
    settings = make_settings()
    account = StorageAccount(settings)
    account.ensure_tables()
    store = SubscriptionStore(account)
    store.sync([subscription(PROVIDER, provider=None), subscription(TENANT_A),
                subscription(TENANT_B)], {})  # fmt: skip
    settings_file = str(settings_file_for(settings, tmp_path))
    ops = ["subscriptions", "--settings-file", settings_file]

    def listing(*argv: str) -> list[dict[str, Any]]:
        code, out, err = run_ops(capsys, *ops, "list", "--output", "json", *argv)
        assert code == 0, err
        return list(json.loads(out))

    assert [r["id"] for r in listing()] == sorted([PROVIDER, TENANT_A, TENANT_B])
    assert [r["id"] for r in listing("--provider", PROVIDER)] == [TENANT_A, TENANT_B]
    assert all(r["billingResourceId"] == "registration-local" for r in listing())

    code, out, err = run_ops(
        capsys, *ops, "set-billing", TENANT_A, "--resource", "res-a", "--plan", "plan-a"
    )
    assert code == 0, err
    assert "billing res-a/plan-a" in out
    reader = str(uuid.uuid4())
    assert run_ops(capsys, *ops, "grant-reader", TENANT_A, reader.upper())[0] == 0
    (row,) = [r for r in listing() if r["id"] == TENANT_A]
    assert (row["billingResourceId"], row["billingPlanId"], row["billingMapped"]) == (
        "res-a", "plan-a", True,
    )  # fmt: skip
    assert row["readers"] == [reader]
    code, out, _ = run_ops(capsys, *ops, "list")
    assert code == 0
    assert "res-a/plan-a" in out
    assert out.splitlines()[-1] == "(3 subscriptions)"

    assert run_ops(capsys, *ops, "revoke-reader", TENANT_A, reader)[0] == 0
    assert run_ops(capsys, *ops, "set-billing", TENANT_A, "--resource", "", "--plan", "")[0] == 0
    stored = store.get(TENANT_A)
    assert stored is not None
    assert (stored.readers, stored.billing_resource_id, stored.billing_plan_id) == ((), "", "")

    unknown = str(uuid.uuid4())
    code, out, err = run_ops(capsys, *ops, "grant-reader", unknown, reader)
    assert (code, out) == (2, "")
    assert err == f"python -m ops subscriptions: error: subscription {unknown} is not known\n"
    code, _, err = run_ops(capsys, *ops, "set-billing", TENANT_B, "--resource", "r", "--plan", "")
    assert code == 2
    assert err.count("\n") == 1
    assert "both" in err
    code, _, err = run_ops(capsys, *ops, "list", "--provider", unknown)
    assert code == 2
    assert err.count("\n") == 1
