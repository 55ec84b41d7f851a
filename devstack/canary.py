"""``./dev canary``: the tables contract suite on whatever SDK versions this venv holds.

``./dev canary`` builds a throwaway venv with the runtime lock, pytest and the newest
azure-data-tables and azure-core the package index serves, and runs this there: the
contract suite (``tests/contract``) once per transport, then one line per transport with
the versions, pass or fail, and the first difference (the first failed test and the first
line of its message). Exit status 0 when both pass. Run it before moving either pin; a
direct-path failure means the versions stay unrecorded in
``shared/storage/transport/choice.py`` (the app would run on the SDK path there).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from pathlib import Path

TRANSPORTS = ("sdk", "direct")
PACKAGES = ("azure-data-tables", "azure-core")


def run_suite(transport: str) -> tuple[int, str | None]:
    """Run the contract suite on ``transport``: (tests run, first difference or None)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        subprocess.run(  # noqa: S603  # pytest of this interpreter, fixed arguments
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/contract",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--tables-transport={transport}",
                f"--junitxml={report}",
            ],
            check=False,
            capture_output=True,
        )
        if not report.exists():
            return 0, "the suite did not run (pytest wrote no report)"
        return first_difference(ElementTree.parse(report).getroot())  # noqa: S314  # our own file


def first_difference(root: ElementTree.Element) -> tuple[int, str | None]:
    """Tests run and the first failure or error of a JUnit XML report, in one line."""
    cases = list(root.iter("testcase"))
    ran = [case for case in cases if case.find("skipped") is None]
    for case in cases:
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            message = (problem.get("message") or problem.text or "").strip().splitlines()
            first = message[0] if message else problem.tag
            return len(ran), f"{case.get('name')}: {first[:400]}"
    if not ran:
        return 0, "no test ran"
    return len(ran), None


def main() -> int:
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in PACKAGES)
    passed = True
    for transport in TRANSPORTS:
        ran, difference = run_suite(transport)
        if difference is None:
            print(f"{transport}: {versions}: pass ({ran} tests)")
        else:
            passed = False
            print(f"{transport}: {versions}: FAIL ({ran} tests): {difference}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
