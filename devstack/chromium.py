"""Debian's headless Chromium as the portal's browser tests and ``bench portal`` start it:
one place for its paths and flags, so what the benchmark times is the browser the tests
check (selenium is a development dependency: imported only when a browser is started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Every host but loopback fails to resolve: nothing the page does leaves the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


def installed() -> bool:
    """Whether Debian's chromium and chromium-driver are there."""
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def start_chromium(profile: Path, logs: dict[str, str]) -> Any:
    """A headless Chromium with its own ``profile`` folder, keeping the ``logs`` asked for
    (``goog:loggingPrefs``: the console, or the network for ``bench portal``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", logs)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
