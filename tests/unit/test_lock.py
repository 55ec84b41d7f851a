"""What is deployed is what was tested: the locks, their inputs, and this environment."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from tests.unit.test_package import deployed_files

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock(path: str) -> dict[str, tuple[str, frozenset[str]]]:
    """A lock's pins: name -> (version, hashes). Every requirement must be pinned."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    text = (REPO / path).read_text()
    for entry in re.split(r"\n(?=\S)", text):
        if entry.startswith("#") or not entry.strip():
            continue
        found = PIN.match(entry)
        assert found, f"{path}: not an exact pin: {entry.splitlines()[0]}"
        pins[canonical(found[1])] = (found[2], frozenset(HASH.findall(entry)))
    return pins


def direct_dependencies(path: str) -> list[tuple[str, str]]:
    """(requirement, the comment lines just above it) for each line of an input file."""
    found, comments = [], ""
    for line in (REPO / path).read_text().splitlines():
        if line.startswith("#"):
            comments += line
        elif line.strip() and not line.startswith("-"):
            found.append((line, comments))
            comments = ""
        else:
            comments = ""
    return found


def test_every_pin_of_both_locks_is_exact_and_hashed() -> None:
    """requirements.txt and requirements-dev.txt pin every package with its hashes, so pip
    installs them in hash-checking mode (the Functions remote build included)."""
    for path in ("requirements.txt", "requirements-dev.txt"):
        pins = lock(path)
        assert pins, path
        assert all(hashes for _, hashes in pins.values()), path


def test_the_runtime_lock_holds_every_direct_dependency_and_its_transitive_ones() -> None:
    """Each direct dependency of requirements.in, and what the installed ones require, is
    pinned in requirements.txt at the version installed here."""
    runtime = lock("requirements.txt")
    for requirement, _ in direct_dependencies("requirements.in"):
        name, version = PIN.match(requirement).groups()  # type: ignore[union-attr]
        assert runtime[canonical(name)][0] == version, requirement
    pending, seen = ["azure-data-tables", "azure-identity", "pyarrow", "pydantic"], set()
    while pending:  # the installed dependency closure of some direct dependencies
        name = canonical(pending.pop())
        if name in seen:
            continue
        seen.add(name)
        assert name in runtime, f"{name} is installed but not locked"
        for requirement in metadata.requires(name) or []:
            if "extra ==" not in requirement:
                pending.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    assert {"azure-core", "urllib3", "msal", "isodate"} <= seen


def test_the_development_lock_keeps_the_runtime_pins() -> None:
    """The development set installs exactly the runtime lock's versions and files."""
    runtime, development = lock("requirements.txt"), lock("requirements-dev.txt")
    assert {name: development.get(name) for name in runtime} == runtime


def test_every_direct_dependency_says_why() -> None:
    """Each line of requirements.in and requirements-dev.in has its reason above it."""
    for path in ("requirements.in", "requirements-dev.in"):
        for requirement, comments in direct_dependencies(path):
            assert comments, f"{path}: {requirement} has no reason"


def test_this_environment_is_exactly_the_development_lock() -> None:
    """What the tests run on (pip freeze, pip and setuptools too) equals the lock."""
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert installed == {
        name: version for name, (version, _) in lock("requirements-dev.txt").items()
    }


def test_the_package_deploys_the_lock_and_not_its_inputs() -> None:
    """The Functions remote build runs pip install -r requirements.txt: the runtime lock."""
    files = deployed_files()
    assert "requirements.txt" in files
    assert not {"requirements.in", "requirements-dev.in", "requirements-dev.txt"} & set(files)
