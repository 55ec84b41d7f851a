"""The portal's files, headers and sign-in configuration (shared/portal), without a browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.core.config import AppMode, Settings
from shared.core.errors import ConfigurationError
from shared.portal.site import STATIC_ROOT, PortalRequest, PortalSite, load_assets
from shared.rating.rollups import LABELS
from tests.app_settings import LOCAL_VALUES

REPO = Path(__file__).resolve().parents[2]
VALUES = {**LOCAL_VALUES, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
CLIENT_ID = "6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a5b"
AUTHORITY = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47"


def site(**overrides: str) -> PortalSite:
    return PortalSite.from_settings(Settings.from_environ({**VALUES, **overrides}))


def get(portal: PortalSite, path: str, url: str = "", method: str = "GET", **headers: str):
    return portal.answer(
        PortalRequest(method, url or f"http://localhost/portal/{path}", path, headers)
    )


def directives(answer) -> dict[str, str]:
    policy = answer.headers["Content-Security-Policy"]
    return {part.split()[0]: part for part in (p.strip() for p in policy.split(";"))}


def test_the_page_is_served_with_a_strict_policy() -> None:
    """/portal/ is index.html; scripts, styles and fetches from this origin only, no framing."""
    answer = get(site(), "")
    assert answer.status == 200
    assert answer.mimetype == "text/html; charset=utf-8"
    assert b'<script type="module" src="portal.js">' in answer.body
    policy = directives(answer)
    assert policy["default-src"] == "default-src 'none'"
    assert policy["script-src"] == "script-src 'self'"
    assert policy["style-src"] == "style-src 'self'"
    assert policy["connect-src"] == "connect-src 'self'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert "unsafe" not in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"


def test_the_bare_path_redirects_so_relative_links_resolve() -> None:
    """/portal answers 308 to /portal/ (the page's links are relative to it), at
    PUBLIC_BASE_URL whatever host or path the request names."""
    for url in ("https://app.example/portal", "http://x/\\evil.example/portal"):
        answer = get(site(PUBLIC_BASE_URL="http://127.0.0.1:7071"), "", url=url)
        assert answer.status == 308
        assert answer.headers["Location"] == "http://127.0.0.1:7071/portal/"
        assert answer.mimetype == "application/json"


@pytest.mark.parametrize(
    "path",
    [
        "../host.json",
        "..%2fhost.json",
        "%2e%2e/host.json",
        "vendor/../../app.py",
        "/etc/passwd",
        "..\\..\\host.json",
        "site.py",
        "../site.py",
        ".hidden",
        "portal.js\x00.png",
        "PORTAL.JS",
        "index.html/",
        "a" * 5000,
    ],
)
def test_anything_but_the_portals_own_files_is_not_found(path: str) -> None:
    """Traversal, absolute, hidden and unknown paths are 404 with the same strict headers."""
    answer = get(site(), path)
    assert answer.status == 404
    assert answer.mimetype == "application/json"
    assert json.loads(answer.body) == {
        "error": {"code": "NotFound", "message": "the portal has no such file"}
    }
    assert answer.headers["x-ms-error-code"] == "NotFound"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]


def test_files_revalidate_with_their_etag() -> None:
    """Every file has a strong ETag and no-cache; If-None-Match answers 304 with no body."""
    portal = site()
    first = get(portal, "portal.js")
    assert first.status == 200
    assert first.mimetype == "text/javascript; charset=utf-8"
    assert first.headers["Cache-Control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', first.headers["ETag"])
    again = get(portal, "portal.js", **{"If-None-Match": first.headers["ETag"]})
    assert (again.status, again.body) == (304, b"")
    stale = get(portal, "portal.js", **{"if-none-match": '"0000"'})
    assert stale.status == 200


def test_head_has_no_body_and_other_methods_are_refused() -> None:
    """HEAD answers the headers only; POST is 405 with Allow."""
    portal = site()
    head = get(portal, "portal.css", method="HEAD")
    assert (head.status, head.body) == (200, b"")
    post = get(portal, "portal.css", method="POST")
    assert post.status == 405
    assert post.headers["Allow"] == "GET, HEAD"
    assert json.loads(post.body)["error"]["code"] == "MethodNotAllowed"


def test_config_names_the_local_sign_in_only_when_set() -> None:
    """Local sign-in when PORTAL_LOCAL_SIGN_IN_URL is set; otherwise not configured."""
    local = get(site(PORTAL_LOCAL_SIGN_IN_URL="/local-sign-in"), "config.json")
    assert local.mimetype == "application/json"
    assert local.body == b'{"signIn":"local","localSignInUrl":"/local-sign-in"}'
    assert get(site(), "config.json").body == b'{"signIn":"none"}'


def test_entra_sign_in_adds_only_the_authority_to_the_policy() -> None:
    """With a client id: MSAL settings, the API's scope, and the authority origin for tokens."""
    portal = site(
        PORTAL_CLIENT_ID=CLIENT_ID,
        PORTAL_AUTHORITY=AUTHORITY + "/",
        AUTH_AUDIENCE="api://usage-reporter,6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a5b",
    )
    config = get(portal, "config.json")
    assert config.body == (
        b'{"signIn":"entra","clientId":"6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a5b",'
        b'"authority":"' + AUTHORITY.encode() + b'",'
        b'"scopes":["api://usage-reporter/.default"],"adminRole":"UsageAdmin"}'
    )
    policy = directives(config)
    assert policy["connect-src"] == "connect-src 'self' https://login.microsoftonline.com"
    assert policy["frame-src"] == "frame-src https://login.microsoftonline.com"
    assert policy["script-src"] == "script-src 'self'"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PORTAL_LOCAL_SIGN_IN_URL": "/local-sign-in"}, "local-only"),
        ({"PORTAL_CLIENT_ID": CLIENT_ID, "PORTAL_AUTHORITY": "http://login.example/t"}, "https"),
    ],
)
def test_production_refuses_demo_sign_in_and_plain_http(
    overrides: dict[str, str], message: str
) -> None:
    """Settings refuse the local sign-in and a non-https authority in production."""
    values = {
        **VALUES,
        "APP_MODE": AppMode.PRODUCTION.value,
        "CONTINUATION_TOKEN_KEY": "x" * 40,
        "COMMERCE_AUTH": "managed_identity",
        "AUTH_JWKS_URI": "https://login.example/keys",
        "COMMERCE_BASE_URL": "https://commerce.example",
        "PUBLIC_BASE_URL": "https://usage.example.test",
        "USAGE_SOURCE": "azurestack",
        "AZURESTACK_ADMIN_ARM_ENDPOINT": "https://adminmanagement.local.azurestack.external",
        "AZURESTACK_PROVIDER_SUBSCRIPTION_ID": "00000000-0000-0000-0000-00000000000a",
        "AZURESTACK_AUDIENCE": "https://adminmanagement.adfs.azurestack.local/app",
    }
    Settings.from_environ(values)  # the baseline is valid production settings
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_environ({**values, **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {"PORTAL_CLIENT_ID": CLIENT_ID},  # no authority
        {"PORTAL_CLIENT_ID": "not-a-guid", "PORTAL_AUTHORITY": AUTHORITY},
        {"PORTAL_LOCAL_SIGN_IN_URL": "//evil.example/sign-in"},
        {"PORTAL_LOCAL_SIGN_IN_URL": "https://evil.example/sign-in"},
    ],
)
def test_malformed_portal_settings_fail_at_load(overrides: dict[str, str]) -> None:
    """A client id without authority, a bad id, or a sign-in that is not a local path."""
    with pytest.raises(ConfigurationError, match="PORTAL_"):
        Settings.from_environ({**VALUES, **overrides})


def test_only_regular_visible_files_of_known_kinds_are_served(tmp_path: Path) -> None:
    """Symbolic links, hidden files and unknown kinds under static/ are never served."""
    (tmp_path / "page.html").write_text("<p>hi</p>")
    (tmp_path / ".secret.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "link.js").symlink_to(REPO / "shared" / "app.py")
    assert sorted(load_assets(tmp_path)) == ["page.html"]


def test_the_static_files_hold_no_inline_code_and_no_other_origin() -> None:
    """No inline script or style, no http(s) origin, no innerHTML/eval, nothing logged."""
    html = (STATIC_ROOT / "index.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.DOTALL)
    assert scripts
    assert all('src="' in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html, flags=re.IGNORECASE)
    modules = sorted(path.name for path in STATIC_ROOT.glob("*.js"))
    assert "portal.js" in modules
    assert len(modules) > 5  # split by concern: session and API, views, charts, formatting
    for name in ("index.html", "portal.css", *modules):
        text = (STATIC_ROOT / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), name
    for name in modules:
        script = (STATIC_ROOT / name).read_text(encoding="utf-8")
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|eval\(|new Function", script)
        assert "console." not in script, name
        assert "localStorage" not in script, name  # the token stays in this tab
        for imported in re.findall(r'from "\./([\w-]+\.js)"', script):
            assert (STATIC_ROOT / imported).is_file(), (name, imported)


def test_every_file_the_page_names_is_served() -> None:
    """Each src/href of index.html is a file of the portal (vendor files after ./dev setup)."""
    html = (STATIC_ROOT / "index.html").read_text(encoding="utf-8")
    named = set(re.findall(r'(?:src|href)="([^"#]+)"', html))
    dev = (REPO / "dev").read_text(encoding="utf-8")
    copied = {f"vendor/{Path(p).name}" for p in re.findall(r"node_modules/\S+\.js", dev)}
    files = {path.relative_to(STATIC_ROOT).as_posix() for path in STATIC_ROOT.rglob("*")}
    assert named <= files | copied
    assert "vendor/msal-browser.min.js" in copied  # loaded by portal.js for Entra sign-in


def test_the_cost_view_names_a_providers_money_with_the_roll_ups_labels() -> None:
    """The cost view's summary labels are the roll-up's (and so the CLI's), word for word."""
    text = (STATIC_ROOT / "cost-view.js").read_text(encoding="utf-8")
    block = re.search(r"const LABELS = \{(.*?)\};", text, re.DOTALL)
    assert block is not None
    shown = dict(re.findall(r'(\w+): "([^"]+)"', block.group(1)))
    assert shown == dict(LABELS)
