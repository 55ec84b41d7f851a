"""The portal entry point, driven by real func.HttpRequest objects."""

from __future__ import annotations

import azure.functions as func
import pytest

import portal
from shared.app import LazyApp
from tests.app_settings import LOCAL_VALUES


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local app settings in the environment, as the Functions host provides them."""
    for name, value in {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(portal, "app", LazyApp())  # this test's settings


def request(path: str, method: str = "GET") -> func.HttpRequest:
    return func.HttpRequest(
        method,
        f"http://localhost/portal/{path}",
        headers={},
        params={},
        route_params={"path": path} if path else {},
        body=b"",
    )


@pytest.mark.usefixtures("environment")
def test_the_page_and_its_files_come_with_their_headers() -> None:
    """index.html and the module script: 200, their content types, the strict policy."""
    page = portal.main(request(""))
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    script = portal.main(request("portal.js"))
    assert script.mimetype == "text/javascript"
    assert script.headers["ETag"]


@pytest.mark.usefixtures("environment")
def test_a_path_outside_the_portal_is_not_found() -> None:
    """A traversal through the entry point is a 404, never a file of the app."""
    answer = portal.main(request("../shared/app.py"))
    assert answer.status_code == 404
    assert b"import" not in answer.get_body()


def test_bad_settings_answer_500_with_a_correlation_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing settings: a plain 500 naming a correlation id, nothing about the settings."""
    monkeypatch.delenv("APP_MODE", raising=False)
    monkeypatch.setattr(portal, "app", LazyApp())
    answer = portal.main(request(""))
    assert answer.status_code == 500
    assert b"correlation id" in answer.get_body()
    assert b"APP_MODE" not in answer.get_body()
