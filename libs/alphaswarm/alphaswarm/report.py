"""Tearsheets and run summaries for the command line (`alphaswarm report`, the end of `alphaswarm run`).

- `local_tearsheet(settings, backtest_id)`: the page of a backtest read
  from the catalog this process can reach (`ALPHASWARM_PERSISTENCE_ADDR`
  over gRPC, else the catalog itself: the embedded SQLite store under
  `--home` or `ALPHASWARM_DATABASE_URL`) and the MLflow store of `settings`.
- `remote_tearsheet(url, backtest_id, token)`: the same page downloaded
  from a gateway (`GET /backtests/{id}/tearsheet.html`, bearer token).
- `print_run_summary(...)`: what a run tested, its metrics with units, a
  verdict against buy-and-hold of the universe, where the plots and the
  tearsheet are and what to open next.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from alphaswarm_common.errors import (
    AlphaSwarmError,
    DependencyUnavailable,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from alphaswarm_common.reporting import (
    TearsheetData,
    alpha_run_id_from_notes,
    config_rows,
    format_metric,
    from_catalog,
    read_comparisons,
    render_tearsheet,
    verdict,
)
from alphaswarm_common.reporting.html import METRIC_FORMATS
from alphaswarm_common.settings import Settings

__all__ = [
    "local_tearsheet",
    "print_run_summary",
    "remote_tearsheet",
    "tearsheet_data",
    "tearsheet_path",
    "validate_backtest_id",
]


def validate_backtest_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(f"not a backtest id (a UUID): {value!r}", field="backtest_id") from None


def _persistence(settings: Settings) -> Any:
    """`rpc(name, request)` against PersistenceService: over gRPC when an address is configured, else
    in-process on the configured catalog (no server started)."""
    from alphaswarm_common.grpc_client import call, channel
    from alphaswarm_common.tls import client_credentials

    if settings.persistence_addr:
        from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc

        stub = ppb_grpc.PersistenceServiceStub(
            channel(
                settings.persistence_addr,
                tuning=settings.grpc_tuning(),
                credentials=client_credentials(settings),
            )
        )

        def remote(name: str, request: Any) -> Any:
            return call(
                getattr(stub, name), request, timeout=settings.deadline_default_seconds, target="persistence"
            )

        return remote

    from alphaswarm_persistence.db import Database
    from alphaswarm_persistence.repository import CatalogRepository
    from alphaswarm_persistence.servicer import PersistenceServicer

    url = settings.catalog_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise NotFound(
            f"no catalog at {url.removeprefix('sqlite:///')} (run something first, or pass --home)",
            field="home",
        )
    servicer = PersistenceServicer(CatalogRepository(Database(url)))

    def local(name: str, request: Any) -> Any:
        return getattr(servicer, name)(request, None)

    return local


def tearsheet_data(settings: Settings, backtest_id: str, *, tracker: Any = None) -> TearsheetData:
    """The tearsheet of a catalog backtest with its alpha-backtest run and logged comparisons, if any."""
    from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
    from alphaswarm_common.tracking import Tracker

    rpc = _persistence(settings)
    reply = rpc(
        "GetBacktestResult",
        ppb.GetBacktestResultRequest(backtest_id=validate_backtest_id(backtest_id), include_trades=True),
    )
    run = None
    comparisons = None
    run_id = alpha_run_id_from_notes(reply.result.notes)
    if run_id:
        try:
            run = rpc("GetAlphaBacktestRun", ppb.GetAlphaBacktestRunRequest(run_id=run_id)).run
        except NotFound:
            run = None
    if run is not None and run.backtest_id == reply.result.backtest_id and run.mlflow_backtest_run_id:
        tracker = tracker or Tracker(settings.tracking_uri(), artifact_root=settings.artifact_root())
        comparisons = read_comparisons(tracker, run.mlflow_backtest_run_id)
    return from_catalog(reply.result, reply.trades, run=run, comparisons=comparisons)


def local_tearsheet(settings: Settings, backtest_id: str) -> str:
    return render_tearsheet(tearsheet_data(settings, backtest_id))


def remote_tearsheet(url: str, backtest_id: str, token: str | None, *, timeout: float = 120.0) -> str:
    """The page from a gateway's REST API; HTTP errors become the domain errors the CLI reports."""
    import httpx

    bid = validate_backtest_id(backtest_id)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.get(
            f"{url.rstrip('/')}/backtests/{bid}/tearsheet.html", headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise DependencyUnavailable(f"gateway at {url}: {type(exc).__name__}: {exc}", field="url") from exc
    if resp.status_code == 200:
        return resp.text
    try:
        message = resp.json()["error"]["message"]
    except Exception:
        message = resp.text[:200]
    errors: dict[int, type[AlphaSwarmError]] = {
        401: Unauthenticated,
        403: PermissionDenied,
        404: NotFound,
        422: InvalidArgument,
    }
    hint = " (set ALPHASWARM_TOKEN to an API token)" if resp.status_code == 401 else ""
    raise errors.get(resp.status_code, DependencyUnavailable)(f"HTTP {resp.status_code}: {message}{hint}")


def tearsheet_path(settings: Settings, backtest_id: str) -> Path:
    """Where `alphaswarm run` writes the tearsheet of its backtest: `<home>/tearsheets/<id>.html`."""
    return settings.resolved_home() / "tearsheets" / f"{backtest_id}.html"


# --------------------------------------------------------------------------- the end of `alphaswarm run`

_RUN_METRICS = (
    ("trading", "total_return"),
    ("trading", "annualized_return"),
    ("trading", "volatility"),
    ("trading", "sharpe"),
    ("trading", "sortino"),
    ("trading", "max_drawdown"),
    ("trading", "calmar"),
    ("trading", "turnover"),
    ("trading", "turnover_adj_sharpe"),
    ("ml", "ic_spearman"),
    ("ml", "ic_pearson"),
    ("ml", "icir"),
    ("ml", "hit_rate"),
    ("ml", "mae"),
    ("ml", "rmse"),
)


def _config_from_run(cfg: Any, combined: dict[str, Any]) -> dict[str, Any]:
    """The "what was tested" rows when the catalog is out of reach (a remote gateway)."""
    window = combined.get("window") or {}
    strategy = cfg.strategy_cfg or cfg.strategy
    return {
        "universe": list(window.get("symbols") or cfg.dataset_cfg.symbols or []),
        "window": {"start": window.get("start"), "end": window.get("end"), "n_bars": window.get("n_dates")},
        "strategy": {"type": strategy.type, "params": strategy.params},
        "costs": {"fees": cfg.backtest_cfg.fees, "slippage": cfg.backtest_cfg.slippage},
        "benchmark": cfg.backtest_cfg.benchmark,
    }


def print_run_summary(
    console: Any,
    result: Any,
    cfg: Any,
    settings: Settings,
    *,
    data: TearsheetData | None,
    tearsheet: Path | None,
    plots: str | None,
    remote: bool,
    links: Any = None,
) -> None:
    """What was tested, the metrics with units, the verdict, where things are, what to open;
    `links()` prints the run's ids between the metrics and the verdict."""
    from rich.markup import escape
    from rich.table import Table

    combined = result.combined_metrics or {}
    config = data.config if data is not None else _config_from_run(cfg, combined)
    tested = Table(title="what was tested", show_header=False)
    tested.add_column("what", style="bold")
    tested.add_column("value")
    for label, text in config_rows(config):
        tested.add_row(escape(label), escape(text))
    console.print(tested)

    metrics = Table(title=f"{result.run_name}: combined metrics (net of costs; docs/metrics.md)")
    for col in ("metric", "value", "unit", "convention"):
        metrics.add_column(col, justify="right" if col == "value" else "left")
    reasons = combined.get("reasons") or {}
    trading_all = combined.get("trading_all") or combined.get("trading") or {}
    ml_all = combined.get("ml_all") or combined.get("ml") or {}
    for side, name in _RUN_METRICS:
        values = trading_all if side == "trading" else ml_all
        if name not in values:
            continue
        label, unit, conv = METRIC_FORMATS[name]
        value = values[name]
        shown = (
            format_metric(name, value)
            if value is not None
            else f"n/a ({reasons.get(f'{side}.{name}', 'undefined')})"
        )
        metrics.add_row(escape(label), escape(shown), "percent" if unit == "pct" else unit, escape(conv))
    if combined.get("score") is not None:
        metrics.add_row(
            "Combined score", format_metric("score", combined["score"]), "ratio", "in [-1, 1]", style="bold"
        )
    console.print(metrics)
    if links is not None:
        links()

    lines = []
    if data is not None:
        lines.append(f"[bold]verdict:[/] {escape(verdict(data))}")
    else:
        lines.append("[bold]verdict:[/] buy-and-hold of the universe: see the tearsheet")
    if plots:
        lines.append(
            f"[bold]plots:[/] {escape(plots)} (the training run's IC and quantile charts, gross of costs)"
        )
    if tearsheet is not None:
        lines.append(f"[bold]tearsheet:[/] {escape(str(tearsheet))}")
    elif result.backtest_id:
        lines.append(
            f"[bold]tearsheet:[/] alphaswarm report {result.backtest_id} -o report.html --url http://GATEWAY:8000"
        )
    if remote:
        lines.append("[bold]open:[/] the gateway's page, http://GATEWAY:8000/")
    else:
        home = settings.resolved_home()
        artifacts = settings.artifact_root()
        lines.append(f"[bold]open:[/] alphaswarm ui --home {escape(str(home))}   then http://127.0.0.1:8000/")
        lines.append(
            f"[bold]MLflow:[/] mlflow ui --backend-store-uri {escape(settings.tracking_uri())}"
            + (f" --default-artifact-root {escape(artifacts)}" if artifacts else "")
            + "   then http://127.0.0.1:5000/ (docs/mlflow.md)"
        )
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)
