"""`alphaswarm serve` and `alphaswarm auth` as a user runs them: the embedded default says it
runs without authentication on loopback, refuses a public address without `--insecure`, and
with `ALPHASWARM_AUTH=tokens` takes the tokens `alphaswarm auth create-token` prints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.uvicorn_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLI = [sys.executable, "-m", "alphaswarm.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHASWARM_")}
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)


@contextmanager
def _serving(home: Path, *args: str, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = home / f"serve-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*CLI, "serve", "--home", str(home), "--port", str(port), "--grpc-port", str(free_port()), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("serve did not start:\n" + log.read_text())
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_public_address_without_auth_is_refused_and_insecure_says_so(tmp_path: Path) -> None:
    refused = _cli(
        "serve", "--home", str(tmp_path), "--host", "0.0.0.0", "--port", str(free_port()), env=_env()
    )
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in refused.stderr
    assert "--insecure" in refused.stderr
    with _serving(tmp_path, "--host", "0.0.0.0", "--insecure", env=_env()) as (url, log):
        assert httpx.get(url + "/backtests", timeout=30).status_code == 200
        assert "authentication: NONE on 0.0.0.0 (--insecure)" in log.read_text()


def test_tokens_from_the_cli_open_the_api(tmp_path: Path) -> None:
    env = _env()
    made = _cli(
        "auth", "create-token", "--role", "researcher", "--name", "ci", "--home", str(tmp_path), env=env
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("asw_") and "shown once" in made.stderr
    viewer = _cli("auth", "create-token", "--role", "viewer", "--home", str(tmp_path), env=env).stdout.strip()
    listed = _cli("auth", "list", "--home", str(tmp_path), env=env)
    assert '"name": "ci"' in listed.stdout and token not in listed.stdout
    duplicate = _cli(
        "auth", "create-token", "--role", "admin", "--name", "ci", "--home", str(tmp_path), env=env
    )
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr

    with _serving(tmp_path, env=_env(ALPHASWARM_AUTH="tokens", ALPHASWARM_TOKEN_CACHE_SECONDS="0")) as (
        url,
        log,
    ):
        assert "authentication: tokens" in log.read_text()
        anonymous = httpx.get(url + "/backtests", timeout=30)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(url + "/backtests", headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(url + "/backtests", headers={"authorization": f"Bearer {viewer}"}).status_code == 200
        denied = httpx.post(url + "/backtests", content=b"{}", headers={"authorization": f"Bearer {viewer}"})
        assert denied.status_code == 403
        revoked = _cli("auth", "revoke", "ci", "--home", str(tmp_path), env=env)
        assert revoked.returncode == 0 and "revoked ci" in revoked.stdout
        assert httpx.get(url + "/backtests", headers={"authorization": f"Bearer {token}"}).status_code == 401
        assert token not in log.read_text()
