"""The one settings object: read from app settings once, validated at load.

App settings arrive as environment variables (Functions app settings, ``local.settings.json``
locally). Every setting the code reads is a field here, named by its app-setting name; a
missing or malformed one fails at load with one line per problem, never later with a
plausible fake value. Local mode (the emulators) may default what production must set.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.core.errors import ConfigurationError

# Local settings files carry keys starting with this; production refuses them.
LOCAL_PLACEHOLDER_PREFIX = "local-only-"
# Where the local Functions host (and `func start`) listens by default.
LOCAL_PUBLIC_BASE_URL = "http://127.0.0.1:7071"

# Queue names: lower-case letters and digits, single hyphens between them; 3-56 characters,
# so "{name}-poison" (the host's poison queue) is still within the service's 63.
QUEUE_NAME = r"^[a-z0-9](-?[a-z0-9])+$"

# A stamp's name keys its watermark and its work items and is spelled upper-case in its
# settings' names (STAMP_{NAME}__...), so it is short, plain and must never change.
STAMP_NAME = r"^[a-z][a-z0-9]{0,15}$"
# STAMP_{NAME}__{SETTING}: one stamp's own value of SETTING. NAME runs to the first "__", so
# a name with characters a stamp name cannot have is still caught as an unknown stamp.
STAMP_VARIABLE = re.compile(r"^STAMP_(?P<name>.+?)__(?P<setting>.*)$")
# What may differ between stamps: where usage comes from and how it is collected. Storage,
# tables, auth and commerce belong to the one app; a per-stamp value there would split it.
STAMP_SETTINGS = frozenset(
    {"USAGE_SOURCE", "COLLECT_DELAY_HOURS", "COLLECT_SLICES", "COLLECT_LOOKBACK_HOURS"}
)
STAMP_SETTING_PREFIXES = ("FLEET_", "AZURESTACK_")


def _check_production_url(name: str, url: str) -> None:
    """Production endpoints are https and not on this machine (an emulator's address)."""
    if not url.startswith("https://"):
        raise ValueError(f"{name} must be an https URL in production")
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    else:
        loopback = address.is_loopback or address.is_unspecified
    if loopback:
        raise ValueError(f"{name} points at this machine ({host}); production needs the real one")


class AppMode(StrEnum):
    LOCAL = "local"
    PRODUCTION = "production"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    app_mode: AppMode = Field(alias="APP_MODE")

    # Storage: a connection string (Azurite, or an account key you chose to use), or the
    # identity-based service URIs that the Bicep sets (no keys in settings).
    storage_connection_string: SecretStr | None = Field(None, alias="AzureWebJobsStorage")
    table_service_uri: str | None = Field(None, alias="AzureWebJobsStorage__tableServiceUri")
    queue_service_uri: str | None = Field(None, alias="AzureWebJobsStorage__queueServiceUri")
    # export_usage writes its files to blob containers of the same account.
    blob_service_uri: str | None = Field(None, alias="AzureWebJobsStorage__blobServiceUri")
    storage_client_id: str | None = Field(None, alias="AzureWebJobsStorage__clientId")

    # Table names are "{prefix}{role}" and "{prefix}u{subscription}" (per-tenant usage);
    # 63 characters at most, so the prefix is short. A prefix per test isolates tests.
    table_prefix: str = Field(
        "usage", alias="USAGE_TABLE_PREFIX", pattern=r"^[A-Za-z][A-Za-z0-9]{2,23}$"
    )

    collect_schedule: str = Field("0 5 * * * *", alias="COLLECT_SCHEDULE")
    collect_time_budget_seconds: float = Field(
        420.0, alias="COLLECT_TIME_BUDGET_SECONDS", gt=0, le=3600
    )
    collect_lookback_hours: int = Field(24, alias="COLLECT_LOOKBACK_HOURS", ge=1, le=24 * 90)
    # Hours to wait after a reported hour ends before collecting it, so the source has
    # finished it. Unset: 1 for Azure Stack Hub, whose usage service collects and aggregates
    # usage "approximately once every hour" (Microsoft Learn, "Report Azure Stack Hub usage
    # data to Azure"), so one whole cycle has run; 0 for the simulated fleet, which has every
    # hour's answer as soon as it ends. Read it as ``collect_delay_hours``.
    collect_delay_setting: int | None = Field(None, alias="COLLECT_DELAY_HOURS", ge=0, le=72)
    write_parallelism: int = Field(8, alias="STORAGE_WRITE_PARALLELISM", ge=1, le=64)
    # How table transactions and queries are sent (shared.storage.transport): "sdk" (the
    # SDK's own calls) or "direct" (the fast path); unset, direct only on the SDK versions
    # it was proved on.
    tables_transport: Literal["sdk", "direct"] | None = Field(None, alias="TABLES_TRANSPORT")

    # rate_usage: its timer (%RATING_SCHEDULE% in function.json; often, so the ledger follows
    # collection within minutes) and the time one run may spend (the next run continues).
    rating_schedule: str = Field("0 */10 * * * *", alias="RATING_SCHEDULE")
    rating_time_budget_seconds: float = Field(
        420.0, alias="RATING_TIME_BUDGET_SECONDS", gt=0, le=3600
    )
    # finalise_statements: its timer (%STATEMENTS_SCHEDULE% in function.json; hourly, so a
    # month's ledger is frozen soon after rating passed its last hour) and the time one run
    # may spend (below functionTimeout; the next run continues).
    statements_schedule: str = Field("0 35 * * * *", alias="STATEMENTS_SCHEDULE")
    statements_time_budget_seconds: float = Field(
        420.0, alias="STATEMENTS_TIME_BUDGET_SECONDS", gt=0, le=3600
    )
    # export_usage: daily, after collect_usage's 00:05 run has collected the day's last hour.
    export_schedule: str = Field("0 30 0 * * *", alias="EXPORT_SCHEDULE")

    usage_source: Literal["simulated", "azurestack"] | None = Field(None, alias="USAGE_SOURCE")
    # Several sources (Azure Stack Hub stamps) in one app: "east,west". Each stamp is this
    # app's settings overlaid with its STAMP_{NAME}__{SETTING} variables (``stamps()``).
    # Empty: one source, the app's own settings, as before stamps existed.
    usage_stamps: str = Field("", alias="USAGE_STAMPS")
    # Set by the stamp overlay only (the stamp's name), never as an app setting: it is the
    # stamp's watermark key, so a stray value would restart collection under a new key.
    usage_source_name: str | None = Field(None, alias="USAGE_SOURCE_NAME", pattern=STAMP_NAME)
    # Slices of subscriptions each reported hour of a source is cut into, one collection work
    # item each, so a big stamp's hour is collected by several function runs at once.
    collect_slices: int = Field(1, alias="COLLECT_SLICES", ge=1, le=64)
    fleet_seed: int = Field(1, alias="FLEET_SEED", ge=0)
    fleet_tenants: int = Field(12, alias="FLEET_TENANTS", ge=1, le=100_000)
    fleet_late_share: float = Field(0.1, alias="FLEET_LATE_SHARE", ge=0, le=1)
    fleet_scale: float = Field(1.0, alias="FLEET_SCALE", gt=0, le=1000)

    # USAGE_SOURCE=azurestack: the stamp's admin ARM endpoint and default provider
    # subscription, and the identity that reads them (docs/azurestack.md). Required only
    # for that source.
    azurestack_admin_arm_endpoint: str | None = Field(
        None, alias="AZURESTACK_ADMIN_ARM_ENDPOINT", pattern=r"^https?://[^\s/]+(/[^\s]*)?$"
    )
    azurestack_provider_subscription_id: str | None = Field(
        None,
        alias="AZURESTACK_PROVIDER_SUBSCRIPTION_ID",
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    )
    # The admin ARM's token audience (its metadata endpoint's authentication.audiences[0]).
    azurestack_audience: str | None = Field(None, alias="AZURESTACK_AUDIENCE")
    azurestack_auth: Literal["managed_identity", "client_secret"] = Field(
        "managed_identity", alias="AZURESTACK_AUTH"
    )
    # Entra ID (https://login.microsoftonline.com) or the stamp's AD FS (tenant "adfs").
    azurestack_authority: str | None = Field(None, alias="AZURESTACK_AUTHORITY")
    azurestack_tenant_id: str | None = Field(None, alias="AZURESTACK_TENANT_ID")
    # Service principal (client_secret) or user-assigned managed identity client id.
    azurestack_client_id: str | None = Field(None, alias="AZURESTACK_CLIENT_ID")
    azurestack_client_secret: SecretStr | None = Field(None, alias="AZURESTACK_CLIENT_SECRET")
    # Read timeout of one request; a slower all-tenants page counts as a gateway timeout.
    azurestack_timeout_seconds: float = Field(
        120.0, alias="AZURESTACK_TIMEOUT_SECONDS", gt=0, le=600
    )

    # query_usage: bearer tokens (Entra ID in production; the local issuer in local mode).
    # Comma-separated: one tenant's Entra ID v2 (https://login.microsoftonline.com/{tid}/v2.0)
    # and v1 (https://sts.windows.net/{tid}/) issuers, so both token versions pass.
    auth_issuer: str = Field(alias="AUTH_ISSUER", min_length=1)
    # Comma-separated: Entra tokens carry the app id URI or the client id as audience.
    auth_audience: str = Field(alias="AUTH_AUDIENCE", min_length=1)
    # https URL of the issuer's JWKS; in local mode also a file path (the local issuer's).
    auth_jwks_uri: str = Field(alias="AUTH_JWKS_URI", min_length=1)
    auth_admin_role: str = Field("UsageAdmin", alias="AUTH_ADMIN_ROLE", min_length=1)
    # query_usage: HMAC key signing continuation tokens (Key Vault in production).
    continuation_token_key: SecretStr = Field(alias="CONTINUATION_TOKEN_KEY")
    continuation_token_ttl_seconds: int = Field(
        3600, alias="CONTINUATION_TOKEN_TTL_SECONDS", ge=60, le=7 * 24 * 3600
    )
    # query_usage: where clients reach the API (scheme, host, optional path prefix), the base
    # of every nextLink and Link header. Never taken from the request's Host header, which
    # the caller controls. Azure: https://{the function app's host name} (the Bicep sets it);
    # local mode defaults to the local host's address.
    public_base_url: str | None = Field(
        None, alias="PUBLIC_BASE_URL", pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
    )

    # report_to_azure: the queue of billing work items (%USAGE_QUEUE_NAME% in function.json).
    usage_queue_name: str = Field(
        "usage-to-report",
        alias="USAGE_QUEUE_NAME",
        pattern=QUEUE_NAME,
        min_length=3,
        max_length=56,
    )
    # collect_usage: the queue of collection work items (one per source, hour and slice).
    # Its own queue: billing and collection messages are different work with different
    # consumers, and one queue's poison messages must not hold up the other's.
    collect_queue_name: str = Field(
        "collect-work",
        alias="COLLECT_QUEUE_NAME",
        pattern=QUEUE_NAME,
        min_length=3,
        max_length=56,
    )
    # Subscriptions per work item: small enough that one message's work fits a function run.
    report_subscriptions_per_message: int = Field(
        50, alias="REPORT_SUBSCRIPTIONS_PER_MESSAGE", ge=1, le=1000
    )
    # report_to_azure: the commerce (Marketplace metering) endpoint and how we authenticate.
    commerce_base_url: str = Field(alias="COMMERCE_BASE_URL", pattern=r"^https?://[^\s]+$")
    commerce_auth: Literal["managed_identity", "client_secret", "static"] = Field(
        "managed_identity", alias="COMMERCE_AUTH"
    )
    commerce_client_id: str | None = Field(None, alias="COMMERCE_CLIENT_ID")
    commerce_tenant_id: str | None = Field(None, alias="COMMERCE_TENANT_ID")
    commerce_client_secret: SecretStr | None = Field(None, alias="COMMERCE_CLIENT_SECRET")
    # Local mode only: the commerce emulator's fixed bearer token.
    commerce_static_token: SecretStr | None = Field(None, alias="COMMERCE_STATIC_TOKEN")
    # report_to_azure: how long after the endpoint accepted an event its day's row of GET
    # usageEvents may still not show it (absent, smaller, or Submitted). The docs promise no
    # latency (spec/commerce-api.md, "What the docs do not promise"), so an absent or smaller
    # row proves an event was not accepted only once this horizon has passed since the last
    # moment it could have been accepted; until then its decision waits. A whole day by
    # default: far beyond any processing delay seen in practice, and waiting longer costs only
    # delay (usage proved unsent is carried into a later event either way), while a horizon
    # shorter than the real delay would carry accepted usage forward: billed twice.
    commerce_processing_horizon_hours: int = Field(
        24, alias="COMMERCE_PROCESSING_HORIZON_HOURS", ge=0, le=168
    )
    # Where unmapped subscriptions are billed (the registration's resource and plan).
    billing_default_resource_id: str = Field(alias="BILLING_DEFAULT_RESOURCE_ID", min_length=1)
    billing_default_plan_id: str = Field(alias="BILLING_DEFAULT_PLAN_ID", min_length=1)
    # Operator changes to the catalogue's chargeable set: "METERID=true;METERID=false".
    billing_chargeable_overrides: str = Field("", alias="BILLING_CHARGEABLE_OVERRIDES")

    # portal: Entra ID sign-in in the browser (MSAL.js, authorization code + PKCE) for the
    # API's app registration; the portal asks for "{first AUTH_AUDIENCE}/.default". Without a
    # client id the portal says sign-in is not configured (the API works either way).
    portal_client_id: str | None = Field(
        None,
        alias="PORTAL_CLIENT_ID",
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    )
    portal_authority: str | None = Field(
        None, alias="PORTAL_AUTHORITY", pattern=r"^https?://[^\s/]+(/[^\s]*)?$"
    )
    # Local mode only: the local stack's "sign in as" endpoint, a path on the portal's own
    # host (the run command serves it); production refuses it.
    portal_local_sign_in_url: str | None = Field(
        None, alias="PORTAL_LOCAL_SIGN_IN_URL", pattern=r"^/([A-Za-z0-9._~-][A-Za-z0-9._~/-]*)?$"
    )

    # The HTTP environment the storage and commerce clients honour, named and ordered as
    # ``requests`` reads it (lower-case names win): proxies, the hosts that bypass them, a
    # CA bundle. ``shared.core.http_environment`` turns them into client options.
    http_proxy: str | None = Field(None, validation_alias=AliasChoices("http_proxy", "HTTP_PROXY"))
    https_proxy: str | None = Field(
        None, validation_alias=AliasChoices("https_proxy", "HTTPS_PROXY")
    )
    all_proxy: str | None = Field(None, validation_alias=AliasChoices("all_proxy", "ALL_PROXY"))
    no_proxy: str | None = Field(None, validation_alias=AliasChoices("no_proxy", "NO_PROXY"))
    ca_bundle: str | None = Field(
        None, validation_alias=AliasChoices("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    )

    # Metrics (shared/core/telemetry.py, docs/operations.md): Application Insights' connection
    # string, which the Bicep sets for the host too; with it the app sends its metrics to
    # Azure Monitor. TELEMETRY_CONSOLE (local mode only) prints them instead.
    applicationinsights_connection_string: SecretStr | None = Field(
        None, alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    telemetry_console: bool = Field(False, alias="TELEMETRY_CONSOLE")
    # observe_pipeline: how often the objectives are read from stored state and their gauges
    # recorded (%STATUS_SCHEDULE% in its function.json); alerts evaluate every 5 minutes.
    status_schedule: str = Field("0 */5 * * * *", alias="STATUS_SCHEDULE")

    # One Settings per stamp, built by ``from_environ`` (the only place that sees the raw
    # STAMP_ variables); None when built any other way.
    _stamps: tuple[Settings, ...] | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: object) -> object:
        """An empty app setting means "not set" (Bicep writes '' for an omitted secret)."""
        if isinstance(values, dict):
            return {name: value for name, value in values.items() if value != ""}
        return values

    @field_validator("usage_stamps")
    @classmethod
    def _stamp_names(cls, value: str) -> str:
        """USAGE_STAMPS as "east,west": each a valid stamp name, none twice."""
        names = [name.strip() for name in value.split(",")] if value.strip() else []
        bad = [name for name in names if not re.fullmatch(STAMP_NAME, name)]
        if bad:
            raise ValueError(
                f"stamp names are a lower-case letter, then up to 15 lower-case letters or "
                f"digits, comma-separated: not {', '.join(repr(name) for name in bad)}"
            )
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"stamp names must be unique: {', '.join(twice)} repeated")
        return ",".join(names)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.storage_connection_string is None and self.table_service_uri is None:
            raise ValueError(
                "set AzureWebJobsStorage (a connection string) or "
                "AzureWebJobsStorage__tableServiceUri (identity-based)"
            )
        if self.usage_source is None:
            if self.app_mode is AppMode.PRODUCTION:
                raise ValueError("USAGE_SOURCE must be set in production")
            object.__setattr__(self, "usage_source", "simulated")
        self._fill_dependent_settings()
        if len(self.collect_schedule.split()) != 6:
            raise ValueError("COLLECT_SCHEDULE must be a six-field NCRONTAB expression")
        if len(self.rating_schedule.split()) != 6:
            raise ValueError("RATING_SCHEDULE must be a six-field NCRONTAB expression")
        if len(self.statements_schedule.split()) != 6:
            raise ValueError("STATEMENTS_SCHEDULE must be a six-field NCRONTAB expression")
        if len(self.export_schedule.split()) != 6:
            raise ValueError("EXPORT_SCHEDULE must be a six-field NCRONTAB expression")
        if len(self.status_schedule.split()) != 6:
            raise ValueError("STATUS_SCHEDULE must be a six-field NCRONTAB expression")
        key = self.continuation_token_key.get_secret_value()
        if len(key) < 32:
            raise ValueError("CONTINUATION_TOKEN_KEY must be at least 32 characters")
        if self.commerce_auth == "client_secret" and self.commerce_client_secret is None:
            raise ValueError("COMMERCE_AUTH=client_secret needs COMMERCE_CLIENT_SECRET")
        if self.commerce_auth == "static" and self.commerce_static_token is None:
            raise ValueError("COMMERCE_AUTH=static needs COMMERCE_STATIC_TOKEN")
        self.chargeable_overrides()  # malformed overrides fail at load
        if self.portal_client_id is not None and self.portal_authority is None:
            raise ValueError("PORTAL_CLIENT_ID needs PORTAL_AUTHORITY (the Entra ID authority)")
        if self.collect_queue_name == self.usage_queue_name:
            raise ValueError(
                "COLLECT_QUEUE_NAME must differ from USAGE_QUEUE_NAME: collection and billing "
                "work items would reach each other's function"
            )
        if self.usage_stamps and self.usage_source_name is not None:
            raise ValueError("USAGE_SOURCE_NAME is one stamp's; it cannot go with USAGE_STAMPS")
        # With stamps, the app's own AZURESTACK_* are only what stamps inherit: each stamp
        # checks the values it ends up with, so a value every stamp replaces is not required.
        if self.usage_source == "azurestack" and not self.usage_stamps:
            self._check_azurestack()
        if self.app_mode is AppMode.PRODUCTION:
            self._check_production(key)
        return self

    def _check_production(self, key: str) -> None:
        """What local mode may relax and production may not (design invariant 8): no
        simulator, no emulator token, no placeholders, every endpoint https and not loopback."""
        if key.startswith(LOCAL_PLACEHOLDER_PREFIX):
            raise ValueError("CONTINUATION_TOKEN_KEY is the local placeholder; set a real secret")
        if self.commerce_auth == "static":
            raise ValueError("COMMERCE_AUTH=static (the emulator's token) is local-only")
        if self.portal_local_sign_in_url is not None:
            raise ValueError("PORTAL_LOCAL_SIGN_IN_URL (demo tokens) is local-only")
        if self.telemetry_console:
            raise ValueError("TELEMETRY_CONSOLE (metrics printed to the console) is local-only")
        if self.portal_authority is not None and not self.portal_authority.startswith("https://"):
            raise ValueError("PORTAL_AUTHORITY must be an https URL in production")
        for name, url in (("AUTH_JWKS_URI", self.auth_jwks_uri), ("COMMERCE_BASE_URL",
                          self.commerce_base_url)):  # fmt: skip
            _check_production_url(name, url)
        if self.usage_source == "simulated":
            raise ValueError(
                "USAGE_SOURCE=simulated (the local stack's simulated fleet) is local-only: "
                "its usage would be billed for real; set USAGE_SOURCE=azurestack"
            )

    def _fill_dependent_settings(self) -> None:
        """Fill what depends on other settings: the source's publishing delay, the API's
        public address (required in production, https there)."""
        if self.collect_delay_setting is None:
            delay = 0 if self.usage_source == "simulated" else 1
            object.__setattr__(self, "collect_delay_setting", delay)
        base = self.public_base_url
        if base is None:
            if self.app_mode is AppMode.PRODUCTION:
                raise ValueError("PUBLIC_BASE_URL must be set in production")
            base = LOCAL_PUBLIC_BASE_URL
        if self.app_mode is AppMode.PRODUCTION:
            _check_production_url("PUBLIC_BASE_URL", base)
        object.__setattr__(self, "public_base_url", base.rstrip("/"))

    @property
    def collect_delay_hours(self) -> int:
        """COLLECT_DELAY_HOURS, or the source's default (filled at load)."""
        assert self.collect_delay_setting is not None
        return self.collect_delay_setting

    @property
    def source_name(self) -> str:
        """The source's key (its watermark, its work items): the stamp's name, or USAGE_SOURCE
        when there are no stamps, so a one-source app keeps its key from before stamps."""
        if self.usage_source_name is not None:
            return self.usage_source_name
        assert self.usage_source is not None  # filled at load
        return self.usage_source

    def source_names(self) -> list[str]:
        """Every source's name (its watermark's key), in USAGE_STAMPS order."""
        return [stamp.source_name for stamp in self.stamps()]

    def stamps(self) -> tuple[Settings, ...]:
        """One Settings per stamp, in USAGE_STAMPS order; ``(self,)`` without stamps.

        A stamp is this app's environment overlaid with its STAMP_{NAME}__{SETTING} variables
        and validated as a whole, production checks included. Only ``from_environ`` sees
        those variables, so it builds the stamps once at load and keeps them here: settings
        with USAGE_STAMPS built another way (``model_validate``) have none and refuse rather
        than pass for one source. ``model_copy`` keeps the stamps as they were loaded.
        """
        if self._stamps is not None:
            return self._stamps
        if self.usage_stamps:
            raise ConfigurationError(
                "USAGE_STAMPS is set but these settings were not loaded with "
                "Settings.from_environ, which alone reads the STAMP_{NAME}__ variables"
            )
        return (self,)

    @property
    def api_base_url(self) -> str:
        """PUBLIC_BASE_URL without a trailing slash (filled at load in local mode)."""
        assert self.public_base_url is not None
        return self.public_base_url

    def _check_azurestack(self) -> None:
        """USAGE_SOURCE=azurestack: where the stamp is and who we are, https in production."""
        missing = [
            name
            for name, value in (
                ("AZURESTACK_ADMIN_ARM_ENDPOINT", self.azurestack_admin_arm_endpoint),
                ("AZURESTACK_PROVIDER_SUBSCRIPTION_ID", self.azurestack_provider_subscription_id),
                ("AZURESTACK_AUDIENCE", self.azurestack_audience),
            )
            if not value
        ]
        if self.azurestack_auth == "client_secret":
            missing += [
                name
                for name, value in (
                    ("AZURESTACK_AUTHORITY", self.azurestack_authority),
                    ("AZURESTACK_TENANT_ID", self.azurestack_tenant_id),
                    ("AZURESTACK_CLIENT_ID", self.azurestack_client_id),
                    ("AZURESTACK_CLIENT_SECRET", self.azurestack_client_secret),
                )
                if not value
            ]
        if missing:
            raise ValueError(f"USAGE_SOURCE=azurestack needs {', '.join(missing)}")
        if self.app_mode is AppMode.PRODUCTION:
            urls = {
                "AZURESTACK_ADMIN_ARM_ENDPOINT": self.azurestack_admin_arm_endpoint,
                "AZURESTACK_AUTHORITY": self.azurestack_authority,
            }
            for name, url in urls.items():
                if url:
                    _check_production_url(name, url)

    def chargeable_overrides(self) -> dict[str, bool]:
        """BILLING_CHARGEABLE_OVERRIDES parsed: meter id -> chargeable."""
        overrides: dict[str, bool] = {}
        for item in filter(
            None, (part.strip() for part in self.billing_chargeable_overrides.split(";"))
        ):
            meter_id, _, flag = item.partition("=")
            if flag.strip().lower() not in ("true", "false") or not meter_id.strip():
                raise ValueError(
                    "BILLING_CHARGEABLE_OVERRIDES must look like METERID=true;METERID=false"
                )
            overrides[meter_id.strip().lower()] = flag.strip().lower() == "true"
        return overrides

    @property
    def auth_issuers(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.auth_issuer.split(",") if part.strip())

    @property
    def auth_audiences(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.auth_audience.split(",") if part.strip())

    @classmethod
    def from_process(cls) -> Settings:
        """The settings of this process: the app settings the Functions host put in its
        environment (read here and nowhere else)."""
        return cls.from_environ(os.environ)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Validate ``environ``; every problem is named by its app-setting name. With
        USAGE_STAMPS, also each stamp's settings (``stamps()``)."""
        if environ.get("USAGE_SOURCE_NAME"):
            raise ConfigurationError(
                "invalid app settings: USAGE_SOURCE_NAME is set per stamp from USAGE_STAMPS, "
                "never as an app setting (it would change the watermark key)"
            )
        settings = cls._validated(environ)
        overlays = _stamp_overlays(settings.usage_stamps, environ)
        base = {
            name: value
            for name, value in environ.items()
            if name != "USAGE_STAMPS" and not STAMP_VARIABLE.match(name)
        }
        stamps = tuple(
            cls._validated({**base, **overlay, "USAGE_SOURCE_NAME": stamp}, stamp, overlay)
            for stamp, overlay in overlays.items()
        )
        if stamps:
            settings._stamps = stamps
        return settings

    @classmethod
    def _validated(
        cls, environ: Mapping[str, str], stamp: str | None = None, overlay: Mapping[str, str] = {}
    ) -> Settings:
        """``model_validate`` with its problems in one line; a stamp's are prefixed with the
        stamp and name the STAMP_ variable a value came from."""
        try:
            return cls.model_validate(dict(environ))
        except ValidationError as error:
            issues = error.errors(include_url=False, include_input=False)
            problems = "; ".join(
                _problem(
                    f"{'.'.join(map(str, issue['loc'])) or 'settings'}: {issue['msg']}",
                    stamp,
                    overlay,
                )
                for issue in issues
            )
            raise ConfigurationError(f"invalid app settings: {problems}") from None

    def table_name(self, role: str) -> str:
        return f"{self.table_prefix}{role}"


def _stamp_overlays(usage_stamps: str, environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Each stamp's STAMP_{NAME}__{SETTING} values, by setting, in USAGE_STAMPS order.

    Refused: a NAME not in USAGE_STAMPS (a typo would silently collect nothing from that
    stamp) and a SETTING that is not a source setting (STAMP_SETTINGS, STAMP_SETTING_PREFIXES).
    """
    overlays: dict[str, dict[str, str]] = {stamp: {} for stamp in usage_stamps.split(",") if stamp}
    by_upper = {stamp.upper(): stamp for stamp in overlays}
    known = {field.alias for field in Settings.model_fields.values() if field.alias}
    problems = []
    for variable, value in sorted(environ.items()):
        match = STAMP_VARIABLE.match(variable)
        if match is None:
            continue
        name, setting = match["name"], match["setting"]
        if name not in by_upper:
            problems.append(
                f"{variable}: no stamp {name} in USAGE_STAMPS ({usage_stamps or 'empty'}); "
                "names are upper-cased in STAMP_{NAME}__{SETTING}"
            )
        elif setting not in known:
            problems.append(f"{variable}: {setting} is not a setting")
        elif setting not in STAMP_SETTINGS and not setting.startswith(STAMP_SETTING_PREFIXES):
            problems.append(
                f"{variable}: {setting} is the app's, not a stamp's; a stamp may set "
                f"{', '.join(sorted(STAMP_SETTINGS))}, FLEET_* and AZURESTACK_*"
            )
        else:
            overlays[by_upper[name]][setting] = value
    if problems:
        raise ConfigurationError(f"invalid app settings: {'; '.join(problems)}")
    return overlays


def _problem(text: str, stamp: str | None, overlay: Mapping[str, str]) -> str:
    """A stamp's problem names the stamp, and the STAMP_ variable of each overlaid setting
    it mentions (the operator fixes that variable, not the app's setting)."""
    if stamp is None:
        return text
    sources = [
        f"STAMP_{stamp.upper()}__{setting}"
        for setting in sorted(overlay)
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(setting)}(?![A-Za-z0-9_])", text)
    ]
    return f"stamp {stamp}: {text}" + (f" (from {', '.join(sources)})" if sources else "")
