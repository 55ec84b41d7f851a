"""The SDK's private names are used in one module only: the direct tables transport."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from azure.data.tables import TableClient, TableServiceClient

REPO = Path(__file__).resolve().parents[2]
ALLOWED = "shared/storage/transport/direct.py"
THIS = "tests/unit/test_private_names.py"  # names them to prove the check finds them
CONNECTION = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:1/a;"


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def sdk_private_attributes() -> set[str]:
    """Every private attribute of the SDK's table clients (class and instance)."""
    names: set[str] = set()
    for client in (
        TableClient.from_connection_string(CONNECTION, "t"),
        TableServiceClient.from_connection_string(CONNECTION),
    ):
        names |= {name for name in [*dir(type(client)), *vars(client)] if private(name)}
    return names


def private_uses(source: str, attributes: set[str]) -> list[str]:
    """Imports of an Azure SDK's private module or name, and private SDK attributes read
    on anything but ``self``/``cls`` (or named in a string, as ``getattr`` would)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            found += [
                m for m in modules if m.startswith("azure.") and any(map(private, m.split(".")))
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("azure"):
            names = [alias.name for alias in node.names]
            if any(map(private, (node.module or "").split("."))) or any(map(private, names)):
                found.append(f"from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Attribute) and node.attr in attributes:
            receiver = node.value
            if not (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")):
                found.append(f"{ast.unparse(node)} (line {node.lineno})")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in attributes
        ):
            found.append(f"{node.value!r} (line {node.lineno})")
    return found


def test_private_sdk_names_live_only_in_the_direct_transport() -> None:
    """Every tracked Python file but the direct transport uses only the SDKs' public API."""
    attributes = sdk_private_attributes()
    assert {"_primary_hostname", "_client"} <= attributes  # what the direct path reads
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"],  # noqa: S607 (git from PATH lists what is committed)
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    offenders = {
        path: uses
        for path in tracked
        if path not in (ALLOWED, THIS) and (REPO / path).exists()
        for uses in [private_uses((REPO / path).read_text(encoding="utf-8"), attributes)]
        if uses
    }
    assert offenders == {}
    assert private_uses((REPO / ALLOWED).read_text(encoding="utf-8"), attributes)


def test_the_check_finds_each_kind_of_use() -> None:
    """Private modules, private names, attributes and getattr strings are all caught."""
    attributes = sdk_private_attributes()
    for source in (
        "import azure.data.tables._serialize",
        "from azure.data.tables._error import RequestTooLargeError",
        "from azure.data.tables import _version",
        "host = table._primary_hostname",
        "table._client.send_request(request)",
        "getattr(table, '_primary_hostname')",
    ):
        assert private_uses(source, attributes), source
    assert not private_uses(
        "self._client = client\nfrom azure.core import MatchConditions", attributes
    )
