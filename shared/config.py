"""The one settings object: read from app settings once, validated at load.

App settings arrive as environment variables (Functions app settings, ``local.settings.json``
locally). Every setting the code reads is a field here, named by its app-setting name; a
missing or malformed one fails at load with one line per problem, never later with a
plausible fake value. Local mode (the emulators) may default what production must set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from shared.errors import ConfigurationError


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
    write_parallelism: int = Field(8, alias="STORAGE_WRITE_PARALLELISM", ge=1, le=64)

    usage_source: Literal["simulated"] | None = Field(None, alias="USAGE_SOURCE")
    fleet_seed: int = Field(1, alias="FLEET_SEED", ge=0)
    fleet_tenants: int = Field(12, alias="FLEET_TENANTS", ge=1, le=100_000)
    fleet_late_share: float = Field(0.1, alias="FLEET_LATE_SHARE", ge=0, le=1)
    fleet_scale: float = Field(1.0, alias="FLEET_SCALE", gt=0, le=1000)

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
        if len(self.collect_schedule.split()) != 6:
            raise ValueError("COLLECT_SCHEDULE must be a six-field NCRONTAB expression")
        return self

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Validate ``environ``; every problem is named by its app-setting name."""
        try:
            return cls.model_validate(dict(environ))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in issue['loc']) or 'settings'}: {issue['msg']}"
                for issue in error.errors(include_url=False, include_input=False)
            )
            raise ConfigurationError(f"invalid app settings: {problems}") from None

    def table_name(self, role: str) -> str:
        return f"{self.table_prefix}{role}"


@cache
def get_settings() -> Settings:
    """The process's settings, loaded once from the environment."""
    return Settings.from_environ(os.environ)
