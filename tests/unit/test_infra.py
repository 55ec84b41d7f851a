"""Offline checks of infra/ (Bicep) and azure.yaml: no compiler, no network, no Azure.

No Bicep compiler can be installed here, so ``pycep-parser`` (a Lark grammar for Bicep) is the
syntax check, and its JSON output is what the structural checks read. pycep is stricter than
Bicep in places (a loop-level ``if`` does not parse, so the templates loop over a conditionally
empty array instead) and looser in others (it does not type-check, resolve symbols or validate
resource schemas). It also returns identifiers and string literals alike as ``str``: the small
resolver below treats a string that names a ``param`` or ``var`` of the same file as a reference.

The parity check is the point: the app settings the Bicep sets on the function app must be
exactly the settings the code reads (shared/core/config.py's ``Settings`` aliases, every
``%SETTING%`` in a function.json, the identity-based connection behind each storage binding,
and the host's own storage and telemetry), minus an explicit list of local-only settings. A
setting the code reads but production never sets fails at load in Azure; a setting only the
Bicep knows is dead configuration.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser
from pydantic import AliasChoices

from shared.core.config import Settings
from shared.storage.account import TABLE_ROLES

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
AZURE_YAML = REPO / "azure.yaml"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

HOST_STORAGE = "AzureWebJobsStorage"

# Settings the code reads that production deliberately leaves unset. Each needs a reason.
LOCAL_ONLY = {
    # A storage connection string: "UseDevelopmentStorage=true" / Azurite locally. Production
    # connects by identity (AzureWebJobsStorage__* service URIs); a string would hold a key.
    "AzureWebJobsStorage",
    # Shape of the simulated fleet (local runs, tests, benchmarks); production keeps defaults.
    # The commerce emulator's fixed token; production refuses COMMERCE_AUTH=static.
    "COMMERCE_STATIC_TOKEN",
    "FLEET_SEED",
    "FLEET_TENANTS",
    "FLEET_LATE_SHARE",
    "FLEET_SCALE",
    # The local stack's "sign in as" endpoint (demo tokens); production refuses it.
    "PORTAL_LOCAL_SIGN_IN_URL",
    # Set per stamp by Settings.from_environ from USAGE_STAMPS; refused as an app setting.
    "USAGE_SOURCE_NAME",
    # Metrics printed to the console for a developer; production refuses it.
    "TELEMETRY_CONSOLE",
}

# The network's variables, honoured if an operator's network needs them (a proxy, its CA),
# as ``requests`` honours them (shared.core.http_environment); Azure needs none of them.
NETWORK_ENVIRONMENT = {
    *(f"{scheme}_proxy" for scheme in ("http", "https", "all", "no")),
    *(f"{scheme}_PROXY" for scheme in ("HTTP", "HTTPS", "ALL", "NO")),
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
}

# Read by the Functions host rather than by our code; the Bicep must still set them.
HOST_TELEMETRY = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    # Application Insights has local auth disabled: ingestion authenticates as the identity.
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}

# Things that would put a storage key, or a SAS signed with one, into a template or setting.
KEY_PATTERNS = re.compile(
    r"listkeys\s*\(|listaccountsas\s*\(|listservicesas\s*\(|accountkey|account[ _-]key"
    r"|sharedaccesssignature|\.keys\[",
    re.IGNORECASE,
)
SETTING_REFERENCE = re.compile(r"%([A-Za-z_][A-Za-z0-9_.:-]*)%")


# -- reading the templates ---------------------------------------------------------------------


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def parsed(path: Path) -> dict[str, Any]:
    """pycep's JSON for one Bicep file (raises on a syntax error)."""
    document: dict[str, Any] = _parser().parse(file_path=path)
    return document


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _body(config: dict[str, Any]) -> dict[str, Any]:
    """The resource or module body, under any loop or ``if`` wrapper pycep adds."""
    while "loop_type" in config or "condition" in config:
        config = config["config"]
    return config


def _module_calls() -> Iterator[tuple[Path, Path, dict[str, Any]]]:
    """(calling file, module file, module body) for every local module call in infra/."""
    for caller in BICEP_FILES:
        for module in parsed(caller).get("modules", {}).values():
            if module["type"] == "local":
                target = (caller.parent / module["detail"]["path"]).resolve()
                yield caller, target, _body(module["config"])


def _resources(resource_type: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, resource body) for every declared (not ``existing``) resource of a type."""
    for path in BICEP_FILES:
        for resource in parsed(path).get("resources", {}).values():
            if resource["type"].lower() == resource_type.lower() and not resource["existing"]:
                yield path, _body(resource["config"])


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def _resolve(value: Any, path: Path) -> list[tuple[Any, Path]]:
    """Follow a ``var`` or ``param`` name to the expressions that may give it its value.

    A param resolves to what each caller passes (in the caller's file), else its default.
    """
    if not isinstance(value, str):
        return [(value, path)]
    document = parsed(path)
    if value in document.get("variables", {}):
        return _resolve(document["variables"][value]["value"], path)
    if value in document.get("parameters", {}):
        default = document["parameters"][value].get("default")
        calls = [
            (caller, body) for caller, target, body in _module_calls() if target == path.resolve()
        ]
        if not calls:
            return [(default, path)]
        resolved: list[tuple[Any, Path]] = []
        for caller, body in calls:
            if value in body.get("params", {}):
                resolved += _resolve(body["params"][value], caller)
            else:
                resolved.append((default, path))
        return resolved
    return [(value, path)]


def _object_keys(value: Any, path: Path) -> set[str]:
    """The keys an object expression may have: literals, ``union(...)``, ``c ? a : b``, refs."""
    keys: set[str] = set()
    for expression, where in _resolve(value, path):
        if isinstance(expression, dict) and "function" in expression:
            function = expression["function"]
            assert function["type"] == "union", f"{_relative(where)}: cannot read {function}"
            for argument in function["parameters"].values():
                keys |= _object_keys(argument, where)
        elif isinstance(expression, dict) and "operator" in expression:
            operator = expression["operator"]
            assert operator["type"] == "conditional", f"{_relative(where)}: cannot read {operator}"
            operands = operator["operands"]
            keys |= _object_keys(operands["true_value"], where)
            keys |= _object_keys(operands["false_value"], where)
        elif isinstance(expression, dict):
            keys |= {_unquote(key) for key in expression}
        else:
            raise AssertionError(f"{_relative(where)}: {expression!r} is not an object")
    return keys


def _object_value(value: Any, path: Path, key: str) -> list[Any]:
    """Every value ``key`` may take in an object expression (through union and refs)."""
    found: list[Any] = []
    for expression, where in _resolve(value, path):
        if isinstance(expression, dict) and "function" in expression:
            for argument in expression["function"]["parameters"].values():
                found += _object_value(argument, where, key)
        elif isinstance(expression, dict):
            for name, item in expression.items():
                if _unquote(name) == key:
                    found += [resolved for resolved, _ in _resolve(item, where)]
    return found


def bicep_app_settings() -> set[str]:
    """Every app setting name the templates may set on a function app."""
    names: set[str] = set()
    for path, body in _resources("Microsoft.Web/sites/config"):
        if _resolve(body["name"], path)[0][0] == "appsettings":
            names |= _object_keys(body["properties"], path)
    for path, body in _resources("Microsoft.Web/sites"):
        for entry in body.get("properties", {}).get("siteConfig", {}).get("appSettings", []):
            names.add(str(_resolve(entry["name"], path)[0][0]))
    return names


# -- what the code reads -----------------------------------------------------------------------


def function_json_files() -> list[Path]:
    """The deployed function folders' bindings (tests/fixtures are not deployed)."""
    return sorted(REPO.glob("*/function.json"))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _identity_connection(prefix: str, services: set[str]) -> set[str]:
    """The settings of an identity-based connection named ``prefix`` (user-assigned identity)."""
    return {f"{prefix}__credential", f"{prefix}__clientId"} | {
        f"{prefix}__{service}ServiceUri" for service in services
    }


def settings_the_code_reads(function_jsons: list[Path] | None = None) -> set[str]:
    """Settings aliases, %SETTING% references, binding connections and host storage/telemetry."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, AliasChoices):  # several names for one value
            names |= {str(choice) for choice in field.validation_alias.choices}
        else:
            names.add(field.alias or name)
    # The host's own storage: blob for the timer's schedule monitor and singleton locks.
    names |= _identity_connection(HOST_STORAGE, {"blob"})
    names |= HOST_TELEMETRY
    for path in function_json_files() if function_jsons is None else function_jsons:
        document = json.loads(path.read_text(encoding="utf-8"))
        for text in _strings(document):
            names |= set(SETTING_REFERENCE.findall(text))
        for binding in document["bindings"]:
            if binding["type"].lower() in {"queuetrigger", "queue"}:
                connection = SETTING_REFERENCE.sub(r"\1", binding.get("connection", HOST_STORAGE))
                names |= _identity_connection(connection, {"queue"})
    return names - LOCAL_ONLY - NETWORK_ENVIRONMENT


# -- azure.yaml ----------------------------------------------------------------------------------


def read_simple_yaml(text: str) -> dict[str, Any]:
    """Nested ``key: value`` mappings only (all azure.yaml uses); anything else fails loudly."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        match = re.fullmatch(r"([A-Za-z0-9_.-]+):(?: (.*))?", line.strip())
        assert match, f"azure.yaml line {number}: only 'key: value' mappings are supported"
        while indent <= stack[-1][0]:
            stack.pop()
        key, value = match.group(1), (match.group(2) or "").strip()
        if value:
            stack[-1][1][key] = value.strip("'\"")
        else:
            child: dict[str, Any] = {}
            stack[-1][1][key] = child
            stack.append((indent, child))
    return root


def _azure_yaml() -> dict[str, Any]:
    return read_simple_yaml(AZURE_YAML.read_text(encoding="utf-8"))


def _strip_comments(text: str) -> str:
    """Bicep without ``//`` and ``/* */`` comments (quotes respected: ``'https://x'`` stays)."""
    out: list[str] = []
    index, quoted = 0, False
    while index < len(text):
        char = text[index]
        if quoted:
            out.append(char)
            if char == "\\":
                out.append(text[index + 1 : index + 2])
                index += 1
            elif char == "'":
                quoted = False
        elif text.startswith("//", index):
            index = text.find("\n", index)
            if index < 0:
                break
            continue
        elif text.startswith("/*", index):
            index = text.index("*/", index) + 2
            continue
        else:
            quoted = char == "'"
            out.append(char)
        index += 1
    return "".join(out)


# -- tests ---------------------------------------------------------------------------------------


def test_infra_has_a_main_template() -> None:
    """infra/main.bicep exists and is not the only template (one module per concern)."""
    assert MAIN in BICEP_FILES
    assert len(BICEP_FILES) > 1


@pytest.mark.parametrize("path", BICEP_FILES, ids=_relative)
def test_bicep_file_parses(path: Path) -> None:
    """Every .bicep file under infra/ is syntactically valid Bicep to pycep."""
    document = parsed(path)
    assert document.get("resources") or document.get("modules"), "declares nothing"


def test_parser_rejects_broken_bicep() -> None:
    """The syntax check has teeth: an unbalanced brace is an error, not a silent pass."""
    with pytest.raises(Exception, match=r"(?i)unexpected"):
        _parser().parse(text="param a string\nresource r 'A/b@2020-01-01' = {\n  name: 'x'\n")


def test_main_reaches_every_module_and_nothing_missing() -> None:
    """Every module path resolves to a file, and every template is reachable from main.bicep."""
    calls = list(_module_calls())
    missing = sorted(
        f"{_relative(caller)} -> {target}" for caller, target, _ in calls if not target.is_file()
    )
    assert not missing, f"module paths that do not exist: {missing}"
    reachable, frontier = {MAIN.resolve()}, [MAIN.resolve()]
    while frontier:
        current = frontier.pop()
        for caller, target, _ in calls:
            if caller.resolve() == current and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    orphans = sorted(_relative(path) for path in BICEP_FILES if path.resolve() not in reachable)
    assert not orphans, f"templates main.bicep never deploys: {orphans}"


def test_no_storage_keys_anywhere_in_infra() -> None:
    """No listKeys(), account key, SAS or AccountKey= in any infra file or azure.yaml."""
    files = [path for path in INFRA.rglob("*") if path.is_file()] + [AZURE_YAML]
    hits = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        code = _strip_comments(text) if path.suffix == ".bicep" else text
        hits += [f"{_relative(path)}: {match.group(0)}" for match in KEY_PATTERNS.finditer(code)]
    assert not hits, f"storage keys in infra: {hits}"


def test_storage_account_refuses_shared_keys() -> None:
    """The storage account disables shared keys and public blobs and requires TLS 1.2."""
    accounts = list(_resources("Microsoft.Storage/storageAccounts"))
    assert accounts
    for path, body in accounts:
        properties = body["properties"]
        assert properties["allowSharedKeyAccess"] is False, _relative(path)
        assert properties["allowBlobPublicAccess"] is False, _relative(path)
        assert properties["minimumTlsVersion"] == "TLS1_2", _relative(path)


def test_storage_declares_every_table_role_and_the_queues() -> None:
    """Bicep creates the tables of storage.account.TABLE_ROLES, the report and collect queues
    with their poison queues, and the app's COLLECT_QUEUE_NAME is the queue storage creates."""
    ((path, _),) = _resources("Microsoft.Storage/storageAccounts")
    document = parsed(path)
    assert document["variables"]["tableRoles"]["value"] == list(TABLE_ROLES)
    assert document["variables"]["queueNames"]["value"] == [
        "reportQueueName",
        "${reportQueueName}-poison",
        "collectQueueName",
        "${collectQueueName}-poison",
    ]
    defaults = {value for value, _ in _resolve("reportQueueName", path)}
    assert defaults == {"usage-to-report"}
    assert {value for value, _ in _resolve("collectQueueName", path)} == {"collect-work"}
    ((app_path, app),) = _resources("Microsoft.Web/sites/config")
    assert _object_value(app["properties"], app_path, "COLLECT_QUEUE_NAME") == ["collect-work"]
    assert {value for value, _ in _resolve("tablePrefix", path)} == {"usage"}


def test_app_settings_match_what_the_code_reads() -> None:
    """The function app's settings equal the settings the code and host read, minus local-only."""
    in_bicep = bicep_app_settings()
    in_code = settings_the_code_reads()
    only_bicep = sorted(in_bicep - in_code)
    only_code = sorted(in_code - in_bicep)
    assert (only_bicep, only_code) == ([], []), (
        f"set by Bicep but read by nothing: {only_bicep}; "
        f"read by the code but not set by Bicep: {only_code} "
        "(add a param and an appSettings line in infra/main.bicep, or a commented LOCAL_ONLY entry)"
    )


def test_queue_trigger_settings_count_as_read(tmp_path: Path) -> None:
    """A queue trigger's %QUEUE% and its connection's identity settings are required in Azure."""
    binding = {
        "type": "queueTrigger",
        "direction": "in",
        "name": "msg",
        "queueName": "%REPORT_QUEUE_NAME%",
        "connection": "UsageQueues",
    }
    function_json = tmp_path / "report_to_azure" / "function.json"
    function_json.parent.mkdir()
    function_json.write_text(json.dumps({"bindings": [binding]}), encoding="utf-8")
    extra = settings_the_code_reads([function_json]) - settings_the_code_reads([])
    assert extra == {
        "REPORT_QUEUE_NAME",
        "UsageQueues__credential",
        "UsageQueues__clientId",
        "UsageQueues__queueServiceUri",
    }


def test_production_settings_are_identity_based_and_production_mode() -> None:
    """APP_MODE is production; storage uses the managed identity; nothing carries a key."""
    settings: dict[str, list[Any]] = {}
    for path, body in _resources("Microsoft.Web/sites/config"):
        for name in _object_keys(body["properties"], path):
            settings[name] = _object_value(body["properties"], path, name)
    assert settings["APP_MODE"] == ["production"]
    assert settings[f"{HOST_STORAGE}__credential"] == ["managedidentity"]
    assert HOST_STORAGE not in settings
    assert not any(name.endswith(("__accountKey", "__connectionString")) for name in settings)


def test_function_app_runs_python_311_on_flex_consumption() -> None:
    """FC1 plan; functionAppConfig: python 3.11, deployment blob via the user identity."""
    plans = [body for _, body in _resources("Microsoft.Web/serverfarms")]
    assert [plan["sku"]["name"] for plan in plans] == ["FC1"]
    ((path, site),) = _resources("Microsoft.Web/sites")
    assert site["identity"]["type"] == "UserAssigned"
    properties = site["properties"]
    config = properties["functionAppConfig"]
    runtime = config["runtime"]
    assert [value for value, _ in _resolve(runtime["name"], path)] == ["python"]
    assert [value for value, _ in _resolve(runtime["version"], path)] == ["3.11"]
    deployment = config["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"]["type"] == "UserAssignedIdentity"
    assert deployment["authentication"]["userAssignedIdentityResourceId"] == "identityId"
    assert properties["keyVaultReferenceIdentity"] == "identityId"
    assert set(config["scaleAndConcurrency"]) >= {"instanceMemoryMB", "maximumInstanceCount"}


def test_role_assignments_are_named_with_guid() -> None:
    """Every role assignment's name is guid(...), so redeploying finds the same assignment."""
    assignments = list(_resources("Microsoft.Authorization/roleAssignments"))
    assert assignments
    for path, body in assignments:
        name = body["name"]
        assert isinstance(name, dict), _relative(path)
        assert name.get("function", {}).get("type") == "guid", _relative(path)


def test_key_vault_uses_rbac_and_soft_delete() -> None:
    """Key Vault is in RBAC mode with soft delete (access by role, deletions recoverable)."""
    vaults = [body for _, body in _resources("Microsoft.KeyVault/vaults")]
    assert vaults
    for vault in vaults:
        assert vault["properties"]["enableRbacAuthorization"] is True
        assert vault["properties"]["enableSoftDelete"] is True


def test_main_parameters_use_azd_substitutions() -> None:
    """main.parameters.json maps azd's env values onto main.bicep params that exist."""
    values = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    given = {name: entry["value"] for name, entry in values["parameters"].items()}
    assert given["environmentName"] == "${AZURE_ENV_NAME}"
    assert given["location"] == "${AZURE_LOCATION}"
    assert given["principalId"] == "${AZURE_PRINCIPAL_ID}"
    declared = parsed(MAIN)["parameters"]
    assert set(given) <= set(declared), f"undeclared: {sorted(set(given) - set(declared))}"
    required = {name for name, param in declared.items() if param["default"] is None}
    assert required <= set(given), f"azd would prompt for: {sorted(required - set(given))}"


def test_azure_yaml_service_matches_an_existing_function_app() -> None:
    """azure.yaml's service path holds host.json and the function app carries its tag."""
    document = _azure_yaml()
    services = document["services"]
    assert list(services) == ["api"]
    ((name, service),) = services.items()
    assert service["host"] == "function"
    assert service["language"] == "python"
    assert (REPO / service["project"] / "host.json").is_file()
    infra = document.get("infra", {})
    assert (REPO / infra.get("path", "infra") / f"{infra.get('module', 'main')}.bicep").is_file()
    ((path, site),) = _resources("Microsoft.Web/sites")
    assert _object_value(site["tags"], path, "azd-service-name") == [name]


def test_no_deployment_defaults_to_the_simulator() -> None:
    """USAGE_SOURCE can only be a real source: the Bicep cannot set ``simulated`` (not
    allowed, not the default), and the stamp settings azurestack needs have no defaults,
    so azd asks for them (main.parameters.json) instead of deploying half-configured."""
    settings: dict[str, list[Any]] = {}
    for path, body in _resources("Microsoft.Web/sites/config"):
        settings["USAGE_SOURCE"] = _object_value(body["properties"], path, "USAGE_SOURCE")
    declared = parsed(MAIN)["parameters"]
    assert settings["USAGE_SOURCE"] == ["azurestack"]  # the param, resolved to its default
    source = declared["usageSource"]
    allowed = [d["argument"] for d in source["decorators"] if d["type"] == "allowed"]
    assert allowed == [["azurestack"]]
    assert source["default"] in (None, "azurestack")
    values = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    given = {name: entry["value"] for name, entry in values["parameters"].items()}
    for name, setting in (
        ("azureStackAdminArmEndpoint", "AZURESTACK_ADMIN_ARM_ENDPOINT"),
        ("azureStackProviderSubscriptionId", "AZURESTACK_PROVIDER_SUBSCRIPTION_ID"),
        ("azureStackAudience", "AZURESTACK_AUDIENCE"),
    ):
        assert declared[name]["default"] is None, name
        assert given[name] == f"${{{setting}}}", name
