"""The end of `alphaswarm run` (what was tested, metrics with units, verdict against buy-and-hold, the
tearsheet it wrote, what to open), `alphaswarm report` from the embedded store and from a gateway with a
token, and `alphaswarm ui` serving the browser over the embedded store."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import small_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CLI = str(Path(sys.executable).parent / "alphaswarm")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "MLFLOW_"))}
    return {**env, "COLUMNS": "200", **extra}


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=_env(**env), cwd=cwd, timeout=900)


def _values(page: str, side: str = "trading") -> dict[str, str]:
    return dict(re.findall(rf'data-metric="{side}\.([a-z_]+)" data-value="([^"]*)"', page))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-report")


@pytest.fixture(scope="module")
def ran(workdir: Path) -> dict[str, Any]:
    config = workdir / "run.yaml"
    config.write_text(yaml.safe_dump(small_run(run_name="cli-report")))
    proc = _cli("run", str(config), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(_cli("runs", "list", cwd=workdir).stdout)["items"]
    assert len(listed) == 1
    return {"stdout": proc.stdout, "run": listed[0]}


def test_run_ends_with_what_was_tested_units_verdict_and_where_things_are(
    workdir: Path, ran: dict[str, Any]
) -> None:
    out, run = ran["stdout"], ran["run"]
    trading = run["combined_metrics"]["trading_all"]
    for text in ("what was tested", "universe", "window", "strategy", "costs", "benchmark"):
        assert text in out, text
    assert "2017-01-03 to 2018-12-31" in out and "long_short_topk" in out
    assert "fees 10.0 bp + slippage 10.0 bp" in out
    # Metrics with their units: percent for returns and drawdown, annualised ratios.
    assert f"{trading['total_return'] * 100:.2f} %" in out
    assert f"{trading['max_drawdown'] * 100:.2f} %" in out
    assert f"{trading['sharpe']:.3f}" in out and "annualised" in out and "percent" in out
    assert "sum |w[s] - w[s-1]|" in out  # conventions are printed as text, not read as markup
    assert re.search(
        r"verdict: (beat|trailed) buy-and-hold of the universe by [0-9.]+ percentage points", out
    )
    tearsheet = workdir / ".alphaswarm" / "tearsheets" / f"{run['backtest_id']}.html"
    assert f"tearsheet: {tearsheet}" in out.replace("\n", "") or str(tearsheet) in out
    assert tearsheet.is_file()
    page = tearsheet.read_text()
    shown = _values(page)
    assert {"sharpe", "total_return", "max_drawdown"} <= set(shown)
    for name, value in trading.items():  # the catalog keeps 4 decimals (2 for currency): its columns
        if name in shown and value is not None:
            assert float(shown[name]) == pytest.approx(value, rel=1e-5, abs=5.1e-5), name
    assert "plots:" in out and "/plots/" in out
    assert "alphaswarm ui --home" in out and "mlflow ui --backend-store-uri sqlite:///" in out


def test_report_from_the_embedded_store(workdir: Path, ran: dict[str, Any]) -> None:
    backtest_id = ran["run"]["backtest_id"]
    proc = _cli("report", backtest_id, "-o", "report.html", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    page = (workdir / "report.html").read_text()
    assert _values(page) == _values(
        (workdir / ".alphaswarm" / "tearsheets" / f"{backtest_id}.html").read_text()
    )
    assert _values(page, "ml")["icir"] == repr(float(ran["run"]["combined_metrics"]["ml"]["icir"]))
    assert re.findall(r'data-chart="([a-z_]+)"', page)[-3:] == ["ic", "ic_decay", "deciles"]

    missing = _cli("report", "0b0e7d1c-1111-4a4a-9c9c-123456789abc", cwd=workdir)
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    bad = _cli("report", "nope", cwd=workdir)
    assert bad.returncode == 2 and "backtest_id" in bad.stderr
    empty = _cli("report", backtest_id, "--home", str(workdir / "nothing-here"), cwd=workdir)
    assert empty.returncode == 2 and "no catalog" in empty.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ui(workdir: Path, ran: dict[str, Any]) -> Iterator[tuple[str, str, Path]]:
    """`alphaswarm ui` with token authentication over the run's store: (URL, viewer token, its stderr)."""
    made = _cli("auth", "create-token", "--role", "viewer", "--name", "cli-viewer", cwd=workdir)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    port = _free_port()
    log = workdir / "ui.stderr"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [CLI, "ui", "--port", str(port)],
            cwd=workdir,
            env=_env(ALPHASWARM_AUTH="tokens"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "alphaswarm ui did not answer"
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url, token, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ui_serves_the_store_and_report_reads_a_gateway_with_a_token(
    workdir: Path, ran: dict[str, Any], ui: tuple[str, str, Path]
) -> None:
    url, token, _ = ui
    backtest_id = ran["run"]["backtest_id"]
    assert httpx.get(f"{url}/backtests/{backtest_id}/tearsheet.html", timeout=60).status_code == 401
    denied = _cli("report", backtest_id, "--url", url, "-o", "remote.html", cwd=workdir)
    assert denied.returncode == 2 and "401" in denied.stderr and "ALPHASWARM_TOKEN" in denied.stderr
    proc = _cli("report", backtest_id, "--url", url, "-o", "remote.html", cwd=workdir, ALPHASWARM_TOKEN=token)
    assert proc.returncode == 0, proc.stderr
    remote = (workdir / "remote.html").read_text()
    local = (workdir / ".alphaswarm" / "tearsheets" / f"{backtest_id}.html").read_text()
    assert _values(remote) == _values(local) and _values(remote, "ml") == _values(local, "ml")


def test_ui_announces_the_url_and_how_to_sign_in(workdir: Path, ui: tuple[str, str, Path]) -> None:
    url, _, log = ui
    banner = log.read_text()
    assert f"AlphaSwarm browser over {workdir / '.alphaswarm'}: {url}/" in banner
    assert f"alphaswarm auth create-token --role viewer --home {workdir / '.alphaswarm'}" in banner
