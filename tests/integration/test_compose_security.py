"""deploy/docker-compose.yml as `docker-compose config` resolves it: only the gateway publishes
ports, on loopback by default; every other service sits on the internal network; services speak
mTLS and require tokens; no secret value appears in the file or in the resolved configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from alphaswarm_common.tls import make_secrets

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
OURS = {"persistence", "trainer", "registry", "backtester", "gateway"}


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("compose-secrets")
    make_secrets(d)
    return d


@pytest.fixture(scope="module")
def resolved(secrets_dir: Path) -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("docker-compose is required in CI (scripts/ensure_services.sh installs it)")
        pytest.skip("docker-compose is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHASWARM_")}
    env["ALPHASWARM_SECRETS_DIR"] = str(secrets_dir)
    check = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    out = subprocess.run([exe, "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    doc["_text"] = out.stdout
    return doc


def _published(ports: list[Any]) -> list[tuple[str, str]]:
    """(host ip, published port) of every port mapping, short or long syntax."""
    out = []
    for p in ports:
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), str(p.get("published", ""))))
        else:
            parts = str(p).split("/")[0].split(":")
            out.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) > 1 else ""))
    return out


def test_only_the_gateway_publishes_ports_and_on_loopback(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    publishing = {name for name, spec in services.items() if spec.get("ports")}
    assert publishing == {"gateway"}
    assert _published(services["gateway"]["ports"]) == [("127.0.0.1", "8000"), ("127.0.0.1", "50051")]
    for name, spec in services.items():
        assert not spec.get("network_mode"), name
        networks = set(spec.get("networks") or [])
        assert "internal" in networks, name
        if name != "gateway":
            assert networks == {"internal"}, name
    assert resolved["networks"]["internal"].get("internal") is True


def test_services_require_tokens_and_mutual_tls(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name in OURS:
        env = services[name]["environment"]
        assert env["ALPHASWARM_AUTH"] in ("tokens", "jwt"), name
        assert env.get("ALPHASWARM_INSECURE", "false") == "false", name
        sources = {s["source"] if isinstance(s, dict) else s for s in services[name]["secrets"]}
        for key in ("ALPHASWARM_TLS_CA", "ALPHASWARM_TLS_CERT", "ALPHASWARM_TLS_KEY"):
            assert env[key].startswith("/run/secrets/"), (name, key)
            assert env[key].removeprefix("/run/secrets/") in sources, (name, key)
        assert env["ALPHASWARM_TLS_CERT"] == f"/run/secrets/{name}_cert"


def test_no_secret_value_in_the_file_or_the_resolved_configuration(
    resolved: dict[str, Any], secrets_dir: Path
) -> None:
    text = COMPOSE.read_text()
    values = [
        (secrets_dir / "postgres_password").read_text().strip(),
        (secrets_dir / "admin_token").read_text().strip(),
        (secrets_dir / "certs" / "gateway.key").read_text().split("\n")[1],
    ]
    for value in values:
        assert value not in text
        assert value not in resolved["_text"]
    # No credentials inside any URL, no password variables, no literal keys.
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URL carries a password"
    assert "PRIVATE KEY" not in text
    for spec in resolved["services"].values():
        env = spec.get("environment") or {}
        assert "POSTGRES_PASSWORD" not in env
        for key in env:
            assert not re.search(r"(PASSWORD|TOKEN|SECRET)$", key), key
    assert "mlflow" in resolved["services"] and not resolved["services"]["mlflow"].get("ports")
