"""Export configurations: what to export, for whom, in which format, to where.

Kept in the ``{prefix}exports`` table (``PartitionKey`` ``export``, ``RowKey`` = the name,
lower case) and managed with ``python -m ops exports``. A configuration names:

- its **scope**: ``admin`` (every subscription, priced as the service admin bills it: the
  default provider's tenants at retail, each delegated provider's tenants at that
  provider's wholesale cost) or ``provider:{subscription id}`` (a delegated provider's
  direct tenants only, priced at its resale sheet: what it bills them);
- its **format** (``parquet``, the default, or ``csv``: gzip CSV);
- its **container** and **root folder** in the app's storage account;
- its **layout**: ``costmanagement`` (the Cost Management export layout and manifest) or
  ``finopshubs`` (FinOps hubs ingestion: Parquet only).

Everything is checked here, once: a configuration that is stored is valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.core.errors import BadInputError
from shared.core.retry import call_with_retry
from shared.export.files import FileFormat
from shared.storage.account import StorageAccount

ROLE: Final = "exports"
PARTITION: Final = "export"
ADMIN: Final = "admin"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")
_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Layout(StrEnum):
    COST_MANAGEMENT = "costmanagement"
    FINOPS_HUBS = "finopshubs"


@dataclass(frozen=True, slots=True)
class ExportConfig:
    name: str
    scope: str  # "admin" or "provider:{subscription id}"
    file_format: FileFormat = FileFormat.PARQUET
    container: str = "usage-exports"
    root_folder: str = "focus"
    layout: Layout = Layout.COST_MANAGEMENT

    @property
    def provider_id(self) -> str | None:
        """The delegated provider's subscription id, or None for the admin's export."""
        return None if self.scope == ADMIN else self.scope.partition(":")[2]

    @property
    def scope_path(self) -> str:
        """The scope as a folder path (FinOps hubs' ``{scope-path}``)."""
        provider = self.provider_id
        return "azurestack/admin" if provider is None else f"azurestack/providers/{provider}"

    @property
    def resource_id(self) -> str:
        """The export's id in manifests, shaped like a Cost Management export's."""
        provider = self.provider_id
        scope = "" if provider is None else f"/subscriptions/{provider}"
        return f"{scope}/providers/Microsoft.CostManagement/exports/{self.name}"


def make_config(
    name: str,
    scope: str,
    file_format: str = FileFormat.PARQUET.value,
    container: str = "usage-exports",
    root_folder: str = "focus",
    layout: str = Layout.COST_MANAGEMENT.value,
) -> ExportConfig:
    """A checked configuration; BadInputError names every problem."""
    problems: list[str] = []
    if not _NAME.match(name):
        problems.append(
            f"name {name!r} must be 3-64 letters, digits, '-' or '_' (starting with a letter "
            "or digit)"
        )
    scope = scope.strip().lower()
    kind, _, subject = scope.partition(":")
    if not (scope == ADMIN or (kind == "provider" and _GUID.match(subject))):
        problems.append(f"scope {scope!r} must be 'admin' or 'provider:<subscription id>'")
    try:
        chosen_format = FileFormat(file_format.strip().lower())
    except ValueError:
        problems.append(f"format {file_format!r} must be 'parquet' or 'csv'")
        chosen_format = FileFormat.PARQUET
    if not _CONTAINER.match(container):
        problems.append(
            f"container {container!r} must be 3-63 lower-case letters, digits and single '-'"
        )
    root = root_folder.strip().strip("/")
    if root and not all(_SEGMENT.match(part) for part in root.split("/")):
        problems.append(
            f"root folder {root_folder!r} must be '/'-separated names of letters, digits, "
            "'.', '-', '_' (no '..', no empty parts)"
        )
    if any(part in (".", "..") or part.strip(".") == "" for part in root.split("/") if root):
        problems.append(f"root folder {root_folder!r} may not hold '.' or '..' parts")
    try:
        chosen_layout = Layout(layout.strip().lower())
    except ValueError:
        problems.append(f"layout {layout!r} must be 'costmanagement' or 'finopshubs'")
        chosen_layout = Layout.COST_MANAGEMENT
    if chosen_layout is Layout.FINOPS_HUBS and chosen_format is not FileFormat.PARQUET:
        problems.append("the finopshubs layout takes Parquet only (FinOps hubs ingest Parquet)")
    if problems:
        raise BadInputError("; ".join(problems), code="InvalidExportConfiguration")
    return ExportConfig(name, scope, chosen_format, container, root, chosen_layout)


def _entity(config: ExportConfig) -> dict[str, Any]:
    return {
        "PartitionKey": PARTITION,
        "RowKey": config.name.lower(),
        "Name": config.name,
        "Scope": config.scope,
        "Format": config.file_format.value,
        "Container": config.container,
        "RootFolder": config.root_folder,
        "Layout": config.layout.value,
    }


def _config(entity: dict[str, Any]) -> ExportConfig:
    return make_config(
        entity["Name"],
        entity["Scope"],
        entity.get("Format", FileFormat.PARQUET.value),
        entity.get("Container", "usage-exports"),
        entity.get("RootFolder", ""),
        entity.get("Layout", Layout.COST_MANAGEMENT.value),
    )


class ExportConfigs:
    """The export configurations table."""

    def __init__(self, account: StorageAccount):
        self._account = account

    def all(self) -> list[ExportConfig]:
        """Every configuration, by name."""

        def read() -> list[ExportConfig]:
            table = self._account.table(ROLE)
            try:
                entities = list(
                    table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})
                )
            except ResourceNotFoundError:
                return []
            return sorted((_config(e) for e in entities), key=lambda c: c.name.lower())

        return call_with_retry(read, what="read export configurations")

    def get(self, name: str) -> ExportConfig | None:
        wanted = name.lower()
        return next((c for c in self.all() if c.name.lower() == wanted), None)

    def put(self, config: ExportConfig) -> None:
        """Create or replace the configuration of that name."""
        entity = _entity(config)
        self._account.ensure_tables([ROLE])  # a deployment older than exports lacks it
        call_with_retry(
            lambda: self._account.table(ROLE).upsert_entity(entity, mode=UpdateMode.REPLACE),
            what=f"store export configuration {config.name}",
        )

    def delete(self, name: str) -> bool:
        """Remove a configuration (its files stay); False if there was none."""
        if self.get(name) is None:
            return False
        call_with_retry(
            lambda: self._account.table(ROLE).delete_entity(PARTITION, name.lower()),
            what=f"delete export configuration {name}",
        )
        return True
