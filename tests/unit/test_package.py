"""What `func azure functionapp publish` deploys: the repository less what .funcignore names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pathspec

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
        "shared/app.py",
        "shared/core/meters.csv",
        "shared/query/openapi.json",
    ):
        assert needed in files


def test_the_package_holds_no_local_stack_or_demo_code() -> None:
    """No simulator, emulator, token issuer, tests, benchmarks or local settings are deployed."""
    files = deployed_files()
    top_level = {path.split("/")[0] for path in files}
    assert not top_level & {"devstack", "tests", "bench", "ops", "infra", "node_modules", "docs"}
    assert "local.settings.example.json" not in files
    for path in files:
        if path.endswith(".py"):
            text = (REPO / path).read_text(encoding="utf-8")
            assert "SimulatedFleet" not in text, path
            assert "from devstack" not in text, path
            assert "import devstack" not in text, path
