"""What `func azure functionapp publish` deploys: the repository less what .funcignore names."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pathspec

from tests.unit.test_infra import read_simple_yaml

REPO = Path(__file__).resolve().parents[2]


def deployed_files() -> list[str]:
    """Tracked files the Functions tooling would package (gitignore rules, as it applies)."""
    spec = pathspec.GitIgnoreSpec.from_lines((REPO / ".funcignore").read_text().splitlines())
    tracked = subprocess.run(
        ["git", "ls-files"],  # noqa: S607 (git from PATH lists what is committed)
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(path for path in tracked if not spec.match_file(path))


def test_the_package_holds_the_functions_and_shared_code() -> None:
    """Every function folder, shared/ with its data files, host.json and requirements ship."""
    files = deployed_files()
    for needed in (
        "host.json",
        "requirements.txt",
        "collect_usage/function.json",
        "report_to_azure/__init__.py",
        "query_usage/__init__.py",
        "commerce_operations/function.json",
        "shared/app.py",
        "shared/core/meters.csv",
        "shared/query/openapi.json",
        "portal/function.json",
        "shared/portal/static/index.html",
        "shared/portal/static/portal.js",
        "shared/portal/static/portal.css",
    ):
        assert needed in files


def test_the_portals_libraries_are_copied_into_the_package_before_it_is_built() -> None:
    """chart.js and msal-browser: pinned in package.json, copied by ./dev assets into a
    folder git ignores but the package keeps, and azure.yaml runs that before packaging."""
    spec = pathspec.GitIgnoreSpec.from_lines((REPO / ".funcignore").read_text().splitlines())
    pins = json.loads((REPO / "package.json").read_text())["dependencies"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["chart.js"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["@azure/msal-browser"])
    for library in ("chart.umd.min.js", "msal-browser.min.js"):
        assert not spec.match_file(f"shared/portal/static/vendor/{library}")
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "shared/portal/static/vendor/" in ignored
    hook = read_simple_yaml((REPO / "azure.yaml").read_text())["services"]["api"]["hooks"]
    assert hook["prepackage"]["run"] == "./dev assets"
    dev = (REPO / "dev").read_text()
    assert "node_modules/chart.js/dist/chart.umd.min.js" in dev
    assert "node_modules/@azure/msal-browser/lib/msal-browser.min.js" in dev


def test_the_package_holds_no_local_stack_or_demo_code() -> None:
    """No simulator, emulator, token issuer, tests, benchmarks or local settings are deployed."""
    files = deployed_files()
    top_level = {path.split("/")[0] for path in files}
    assert not top_level & {
        "devstack",
        "tests",
        "bench",
        "ops",
        "infra",
        "node_modules",
        "docs",
        "test-artifacts",
    }
    assert "local.settings.example.json" not in files
    for path in files:
        if path.endswith(".py"):
            text = (REPO / path).read_text(encoding="utf-8")
            assert "SimulatedFleet" not in text, path
            assert "from devstack" not in text, path
            assert "import devstack" not in text, path
