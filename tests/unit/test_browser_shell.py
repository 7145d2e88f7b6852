"""The Strategy Browser's shell: the page and its assets are served by the gateway, public,
local (no CDN) and complete (every module the page imports exists and is packaged)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alphaswarm_gateway.auth import PUBLIC_PATHS
from alphaswarm_gateway.browser import STATIC_DIR
from alphaswarm_gateway.rest import create_app
from tests.unit.test_gateway_http import FakeGateway, _settings

pytestmark = pytest.mark.unit

_IMPORT = re.compile(
    r"""(?:import\s*\(\s*|(?:import|from)\s*(?:[^'";()]*?\sfrom\s*)?)["'](\.{1,2}/[^"']+)["']"""
)


@pytest.fixture
def client() -> Iterator[TestClient]:
    gateway = FakeGateway(_settings())
    app = create_app(gateway.settings, gateway=gateway, serve_grpc=False)  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_the_page_is_served_at_the_root_with_a_strict_policy(client: TestClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert '<script type="module" src="/ui/app.js">' in resp.text
    assert "/" in PUBLIC_PATHS and "/ui" in PUBLIC_PATHS


def _modules() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*.js") if "vendor" not in p.parts)


def test_every_module_the_page_imports_exists_and_is_served_as_javascript(client: TestClient) -> None:
    seen = set()
    for module in _modules():
        text = module.read_text()
        assert "http://" not in text and "https://" not in text, f"{module} loads from the network"
        for ref in _IMPORT.findall(text):
            target = (module.parent / ref).resolve()
            assert target.is_file(), f"{module.relative_to(STATIC_DIR)} imports a missing {ref}"
            seen.add(target)
    assert STATIC_DIR / "vendor" / "echarts" / "echarts.js" in seen  # loaded on first use
    for target in seen | {STATIC_DIR / "app.js"}:
        rel = target.relative_to(STATIC_DIR).as_posix()
        resp = client.get(f"/ui/{rel}")
        assert resp.status_code == 200, rel
        assert resp.headers["content-type"].startswith("text/javascript"), rel
    assert client.get("/ui/style.css").headers["content-type"].startswith("text/css")


def test_every_view_module_is_registered() -> None:
    index = (STATIC_DIR / "views" / "index.js").read_text()
    registered = set(re.findall(r'import "\./([\w-]+\.js)";', index))
    on_disk = {p.name for p in (STATIC_DIR / "views").glob("*.js")} - {"index.js"}
    assert registered == on_disk


def test_vendored_libraries_carry_their_licenses_and_versions() -> None:
    vendor = STATIC_DIR / "vendor"
    versions = (vendor / "VERSIONS").read_text()
    for name in ("lightweight-charts", "echarts"):
        assert (vendor / name / "LICENSE").is_file()
        assert re.search(rf"^{name}@\d+\.\d+\.\d+", versions, re.M), name
    lwc = (vendor / "lightweight-charts" / "lightweight-charts.js").read_text()
    assert "export{" in lwc.replace(" ", "")


def test_the_session_route_names_the_caller(client: TestClient) -> None:
    doc = client.get("/browser/session").json()
    assert set(doc) == {"subject", "role", "via", "can"}
    assert doc["can"]["view"] is True
