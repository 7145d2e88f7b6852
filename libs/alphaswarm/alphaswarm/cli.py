"""The `alphaswarm` command.

    alphaswarm run CONFIG.yaml [--output table|json]   run an alpha backtest (embedded stack unless
                                                       ALPHASWARM_GATEWAY_ADDR / --gateway is given)
    alphaswarm serve [--port 8000] [--grpc-port 50051] the whole stack in one process with REST + SSE
    alphaswarm ui [--port 8000]                        the same, announced as the browser over the embedded store
    alphaswarm report BACKTEST_ID -o report.html [--url URL]   the tearsheet of a backtest (one HTML file)
    alphaswarm runs list | runs get RUN_ID             read runs from a gateway (or the embedded stack)
    alphaswarm backtest [JOB.yaml] [--strategy sma_cross --param fast=10 ...]   a rule-strategy backtest
    alphaswarm optimize [JOB.yaml] [--strategy sma_cross --grid fast=5,10 ...]  a parameter search
    alphaswarm migrate [--url URL]                     upgrade the catalog to the latest schema
    alphaswarm auth create-token --role ROLE [--name NAME]   print a new API token (once)
    alphaswarm auth revoke NAME | auth list            revoke / list API tokens
    alphaswarm auth make-certs DIR                     a CA and one mTLS certificate per service
    alphaswarm auth make-secrets DIR                   every secret of deploy/docker-compose.yml

Exit status: 0 on success, 1 when the run failed, 2 for invalid input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from alphaswarm_common.errors import AlphaSwarmError


def _settings(args: argparse.Namespace) -> Any:
    from alphaswarm_common.settings import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "home", None):
        overrides["home"] = Path(args.home)
    settings = Settings()
    return settings.model_copy(update=overrides) if overrides else settings


def _integral(value: Any) -> Any:
    """Counts and integer parameters come back from protobuf Structs as floats; show them as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4f}"
    return str(_integral(value))


def _print_links(result: Any, console: Any) -> None:
    from rich.table import Table

    ids = Table(title="links", show_header=False)
    ids.add_column("id")
    ids.add_column("value")
    for label, value in (
        ("task id", result.task_id),
        ("run id", result.run_id),
        ("MLflow parent run id", result.mlflow_parent_run_id),
        ("MLflow train run id", result.mlflow_train_run_id),
        ("MLflow backtest run id", result.mlflow_backtest_run_id),
        ("model", f"{result.model_name} v{result.model_version}" if result.model_name else None),
        ("deployment id", result.deployment_id),
        ("backtest id", result.backtest_id),
        ("duration", f"{result.duration_seconds:.2f} s" if result.duration_seconds else None),
    ):
        ids.add_row(label, _fmt(value))
    console.print(ids)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from alphaswarm.client import RunFailed
    from alphaswarm.ml.alpha_backtest_experiment import AlphaBacktestExperiment, load_config

    err = Console(stderr=True)
    cfg = load_config(args.config)
    # one cold run: the embedded stack draws its charts in a worker on the second core
    settings = _settings(args)
    if "ALPHASWARM_CHART_WORKER" not in os.environ:
        settings = settings.model_copy(update={"chart_worker": True})
    experiment = AlphaBacktestExperiment.from_config(cfg, settings=settings, gateway_addr=args.gateway)
    as_json = args.output == "json"
    progress = Progress(
        TextColumn("[bold]{task.fields[stage]:<12}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=False,
        disable=as_json and not err.is_terminal,
    )
    with progress:
        bar = progress.add_task(
            "starting the embedded stack" if not args.gateway else "connecting", total=100, stage="starting"
        )

        def on_event(event: Any) -> None:
            progress.update(bar, completed=event.pct, description=event.message, stage=event.stage)
            if not progress.disable and not err.is_terminal:
                err.print(f"{event.stage:<12} {event.status:<9} {event.pct:5.1f}% {event.message}")

        try:
            result = experiment.run(on_event=on_event, raise_on_failure=False)
        except RunFailed as exc:  # pragma: no cover - raise_on_failure=False
            result = exc.result
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        out = Console()
        if result.status == "succeeded":
            _run_summary(result, cfg, args, out, err)
        else:
            e = result.error or {}
            out.print(
                f"[bold red]run {result.run_id} failed[/] at [bold]{e.get('stage')}[/]: {e.get('code')}: "
                f"{e.get('message')}"
            )
    return 0 if result.status == "succeeded" else 1


def _run_summary(result: Any, cfg: Any, args: argparse.Namespace, out: Any, err: Any) -> None:
    """The end of `alphaswarm run`: what was tested, metrics with units, verdict, tearsheet, what to open."""
    from alphaswarm.report import print_run_summary, tearsheet_data, tearsheet_path
    from alphaswarm_common.reporting import render_tearsheet

    settings = _settings(args)
    remote = bool(args.gateway or settings.gateway_addr)
    data = tearsheet = plots = None
    if result.backtest_id and (not remote or settings.persistence_addr):
        try:
            data = tearsheet_data(settings, result.backtest_id)
            tearsheet = tearsheet_path(settings, result.backtest_id)
            tearsheet.parent.mkdir(parents=True, exist_ok=True)
            tearsheet.write_text(render_tearsheet(data), encoding="utf-8")
        except (AlphaSwarmError, OSError) as exc:
            err.print(f"[yellow]no tearsheet written: {exc}[/]")
    if result.mlflow_train_run_id and not remote:
        try:
            from alphaswarm_common.tracking import Tracker

            tracker = Tracker(settings.tracking_uri(), artifact_root=settings.artifact_root())
            plots = f"{tracker.client.get_run(result.mlflow_train_run_id).info.artifact_uri}/plots/"
        except Exception as exc:  # the summary names what it can; the run itself succeeded
            err.print(f"[yellow]plots not located: {exc}[/]")
    print_run_summary(
        out,
        result,
        cfg,
        settings,
        data=data,
        tearsheet=tearsheet,
        plots=plots,
        remote=remote,
        links=lambda: _print_links(result, out),
    )


def cmd_report(args: argparse.Namespace) -> int:
    """`alphaswarm report BACKTEST_ID -o FILE`: the tearsheet from the local catalog or a gateway."""
    from alphaswarm.report import local_tearsheet, remote_tearsheet

    settings = _settings(args)
    if args.url:
        token = settings.token.get_secret_value() if settings.token else None
        page = remote_tearsheet(args.url, args.backtest_id, token)
    else:
        page = local_tearsheet(settings, args.backtest_id)
    if args.output == "-":
        sys.stdout.write(page)
    else:
        Path(args.output).write_text(page, encoding="utf-8")
        print(f"tearsheet of backtest {args.backtest_id} written to {args.output}", file=sys.stderr)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """`alphaswarm ui`: `serve` over the embedded store, announcing the page to open."""
    settings = _settings(args)
    host = args.host or settings.http_host
    port = args.port if args.port is not None else settings.http_port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"AlphaSwarm browser over {settings.resolved_home()}: http://{shown}:{port}/", file=sys.stderr)
    if settings.auth == "none":
        print("authentication is off (loopback only): no token needed", file=sys.stderr)
    else:
        print(
            f"sign in with an API token: alphaswarm auth create-token --role viewer --home {settings.resolved_home()}",
            file=sys.stderr,
        )
    if args.grpc_port is None:
        args.grpc_port = 0  # the browser needs no gRPC port: an ephemeral one, never a clash
    return cmd_serve(args)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from alphaswarm.embedded import start_services
    from alphaswarm_common.auth import check_exposure
    from alphaswarm_common.observability import log_format, setup
    from alphaswarm_common.service import configure_logging
    from alphaswarm_gateway.rest import create_app

    base = _settings(args)
    settings = base.model_copy(
        update={
            "http_host": args.host or base.http_host,
            "http_port": args.port if args.port is not None else base.http_port,
            "grpc_host": args.host or base.grpc_host,
            "grpc_port": args.grpc_port if args.grpc_port is not None else (base.grpc_port or 50051),
            "insecure": base.insecure or args.insecure,
        }
    )
    configure_logging(fmt=log_format(settings, "text"), service="embedded")  # ALPHASWARM_LOG_FORMAT=json
    setup(
        "embedded", settings, default_format="text", host=settings.http_host
    )  # one /metrics port, off unless set
    # Refuse before anything starts: auth=none on a non-loopback address needs --insecure.
    print(check_exposure(settings, [settings.http_host, settings.grpc_host]), file=sys.stderr, flush=True)
    settings, servers, tracker = start_services(settings)
    from alphaswarm_gateway.core import bootstrap

    app = create_app(settings, gateway=bootstrap(settings, tracker=tracker))
    try:
        uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="info", log_config=None)
    finally:
        for server in servers:
            server.stop(1).wait()
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from alphaswarm.client import gateway_client, result_from_run

    client = gateway_client(_settings(args), gateway_addr=args.gateway)
    if args.action == "list":
        page = client.list(page_size=args.page_size, page_token=args.page_token or "")
        doc: Any = {
            "items": [result_from_run(r, []).to_dict() for r in page.runs],
            "next_page_token": page.next_page_token or None,
        }
    else:
        doc = result_from_run(client.get(run_id=args.run_id), []).to_dict()
    print(json.dumps(doc, indent=2, default=str))
    return 0


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _job_document(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """A job document from a file (the REST body) and/or quick flags (flags win)."""
    from alphaswarm_common.configio import parse_config_document

    doc: dict[str, Any] = {}
    if args.job:
        doc = parse_config_document(Path(args.job).read_bytes(), field="job")
    dataset = {"source": args.dataset} if args.dataset else None
    source = dict(doc.get("source", {}))
    if dataset:
        source["dataset_cfg"] = {**source.get("dataset_cfg", {}), **{k: v for k, v in dataset.items() if v}}
    if args.symbols:
        source["symbols"] = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if source:
        source.setdefault("dataset_cfg", {"source": "sp500"})
        doc["source"] = source
    backtest = dict(doc.get("backtest_cfg", {}))
    # --start/--end set the traded window; the bars before it warm the indicators up.
    if args.start:
        backtest["start_date"] = args.start
    if args.end:
        backtest["end_date"] = args.end
    for name in ("fees", "slippage", "initial_capital"):
        if getattr(args, name, None) is not None:
            backtest[name] = getattr(args, name)
    if backtest:
        doc["backtest_cfg"] = backtest
    params = {k: _parse_value(v) for k, v in (p.split("=", 1) for p in (args.param or []))}
    if kind == "backtest":
        if args.strategy or params:
            strategy = dict(doc.get("strategy_cfg", {}))
            if args.strategy:
                strategy["type"] = args.strategy
            strategy["params"] = {**strategy.get("params", {}), **params}
            doc["strategy_cfg"] = strategy
    else:
        if args.strategy:
            doc["strategy_type"] = args.strategy
        grid = {
            k: [_parse_value(x) for x in v.split(",")]
            for k, v in (g.split("=", 1) for g in (args.grid or []))
        }
        if grid:
            doc["grid"] = {**doc.get("grid", {}), **grid}
        for name in ("objective", "method", "seed"):
            if getattr(args, name, None) is not None:
                doc[name] = getattr(args, name)
        if args.samples is not None:
            doc["n_samples"] = args.samples
    return doc


def cmd_job(args: argparse.Namespace) -> int:
    """`alphaswarm backtest` / `alphaswarm optimize`: one backtester call, printed."""
    from google.protobuf import json_format
    from rich.console import Console
    from rich.table import Table

    from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as bpb_grpc
    from alphaswarm_common.grpc_client import call, channel
    from alphaswarm_common.tls import client_credentials
    from alphaswarm_gateway.jobs import JOB_MODELS, parse_job

    kind = args.kind
    job = parse_job(kind, _job_document(args, kind))
    settings = _settings(args)
    address = settings.backtester_addr
    if not address:
        from alphaswarm.client import embedded_stack

        settings = embedded_stack(settings).settings  # with the stack's service secret when auth is on
        address = settings.backtester_addr
    spec = JOB_MODELS[kind]
    stub = bpb_grpc.BacktesterServiceStub(
        channel(address or "", tuning=settings.grpc_tuning(), credentials=client_credentials(settings))
    )
    request = spec.build(job, "")
    request.persist = not args.no_persist
    response = call(
        getattr(stub, spec.rpc), request, timeout=settings.deadline_backtest_seconds, target="backtester"
    )
    summary = spec.summarize(response)
    if args.output == "json":
        doc = json_format.MessageToDict(response, preserving_proto_field_name=True)
        doc.pop("weights_target", None)
        doc.pop("weights_held", None)
        print(json.dumps({"summary": summary, "response": doc}, indent=2, default=str))
        return 0
    console = Console()
    table = Table(title=f"{kind}: {summary.get('backtest_id') or ''}", show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict):
            for k2, v2 in value.items():
                table.add_row(f"{key}.{k2}", _fmt(v2))
        else:
            table.add_row(key, _fmt(value))
    console.print(table)
    if kind == "optimization":
        trials = Table(title="best parameter sets")
        for col in ("rank", "params", "objective"):
            trials.add_column(col)
        for t in list(response.trials)[:10]:
            skipped = t.HasField("skipped")
            trials.add_row(
                "skipped" if skipped else (str(t.rank) if t.HasField("rank") else "-"),
                json.dumps(_integral(json_format.MessageToDict(t.params))),
                t.skipped.reason
                if skipped
                else _fmt(t.objective_value if t.HasField("objective_value") else None),
            )
        console.print(trials)
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    """Compile the engine's numba kernels into numba's cache and build the MLflow store's schema
    template (run by `make install`)."""
    import numba

    from alphaswarm_backtester.engine.warmup import warm_up

    done = warm_up()
    where = (
        getattr(numba.config, "CACHE_DIR", "")
        or "__pycache__ beside the modules (~/.cache/numba if read-only)"
    )
    print(f"compiled kernels ready: {done['runs']} warm-up runs in {done['seconds']:.1f} s; cache: {where}")
    from alphaswarm_common.tracking import schema_template

    template = schema_template()  # a new embedded store copies it instead of migrating
    print(f"MLflow store schema: {template or 'not cached (the cache folder is not writable)'}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from alphaswarm_persistence.migrations import upgrade

    settings = _settings(args)
    url = args.url or settings.catalog_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    from sqlalchemy.engine import make_url

    print(f"catalog at {make_url(url).render_as_string(hide_password=True)} is at the latest revision")
    return 0


def _token_client(settings: Any) -> Any:
    """PersistenceService over gRPC when ALPHASWARM_PERSISTENCE_ADDR is set (mTLS service identity or an
    admin token), else the catalog itself (the embedded SQLite store or ALPHASWARM_DATABASE_URL)."""
    from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
    from alphaswarm_common.grpc_client import call, channel
    from alphaswarm_common.tls import client_credentials

    if settings.persistence_addr:
        stub = ppb_grpc.PersistenceServiceStub(
            channel(
                settings.persistence_addr,
                tuning=settings.grpc_tuning(),
                credentials=client_credentials(settings),
            )
        )

        def rpc(name: str, request: Any) -> Any:
            return call(
                getattr(stub, name), request, timeout=settings.deadline_default_seconds, target="persistence"
            )

        return rpc

    import getpass

    from alphaswarm_common.auth import SERVICE, Principal
    from alphaswarm_persistence.db import Database
    from alphaswarm_persistence.migrations import upgrade
    from alphaswarm_persistence.repo_tokens import AccessStore
    from alphaswarm_persistence.repository import CatalogRepository
    from alphaswarm_persistence.servicer_tokens import AccessRpc

    url = settings.catalog_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    store = AccessRpc(AccessStore(CatalogRepository(Database(url))))
    actor = Principal(f"cli:{getpass.getuser()}", SERVICE, "local")

    def local(name: str, request: Any) -> Any:
        from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb

        if name == "CreateApiToken":
            return ppb.CreateApiTokenResponse(token=store.create(request, actor))
        if name == "RevokeApiToken":
            return ppb.RevokeApiTokenResponse(token=store.revoke(request.name, actor))
        return ppb.ListApiTokensResponse(tokens=store.list(request.include_revoked))

    return local


def cmd_auth(args: argparse.Namespace) -> int:
    from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb

    if args.action == "make-secrets":
        from alphaswarm_common.tls import make_secrets

        for path in make_secrets(Path(args.dir)):
            print(path)
        print(f"secrets in {args.dir} (existing files kept); keep the folder private", file=sys.stderr)
        return 0
    if args.action == "make-certs":
        from alphaswarm_common.tls import make_certs

        written = make_certs(
            Path(args.dir), namespace=args.namespace or None, days=args.days, extra_names=args.dns or ()
        )
        for path in written:
            print(path)
        print(
            f"CA and {len(written) // 2 - 1} service certificates in {args.dir}; keep the *.key files secret",
            file=sys.stderr,
        )
        return 0
    settings = _settings(args)
    rpc = _token_client(settings)
    if args.action == "create-token":
        import secrets

        from alphaswarm_common.auth import hash_token, new_token

        token = new_token()
        name = args.name or f"{args.role}-{secrets.token_hex(4)}"
        stored = rpc(
            "CreateApiToken",
            ppb.CreateApiTokenRequest(
                name=name,
                role=args.role,
                token_hash=hash_token(token),
                expires_in_seconds=int(args.expires_days * 86400) if args.expires_days else 0,
            ),
        ).token
        print(f"token {stored.name} ({stored.role}); it is shown once, store it now:", file=sys.stderr)
        print(token)
        return 0
    if args.action == "revoke":
        if not args.name:
            print("alphaswarm auth revoke: NAME is required", file=sys.stderr)
            return 2
        stored = rpc("RevokeApiToken", ppb.RevokeApiTokenRequest(name=args.name)).token
        print(f"revoked {stored.name}")
        return 0
    tokens = rpc("ListApiTokens", ppb.ListApiTokensRequest(include_revoked=args.all)).tokens
    doc = [
        {
            "name": t.name,
            "role": t.role,
            "created_by": t.created_by or None,
            "created_at": t.created_at.ToJsonString() if t.HasField("created_at") else None,
            "revoked_at": t.revoked_at.ToJsonString() if t.HasField("revoked_at") else None,
            "expires_at": t.expires_at.ToJsonString() if t.HasField("expires_at") else None,
        }
        for t in tokens
    ]
    print(json.dumps(doc, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alphaswarm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an alpha backtest from a YAML/JSON config")
    run.add_argument("config", help="path of the run config (YAML or JSON)")
    run.add_argument("--output", choices=["table", "json"], default="table")
    run.add_argument("--home", help="folder of the embedded stores (default ./.alphaswarm)")
    run.add_argument("--gateway", help="host:port of a running gateway (default: start the embedded stack)")
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser("serve", help="serve REST, SSE and gRPC with the embedded stack")
    serve.add_argument("--host", help="HTTP host (default ALPHASWARM_HTTP_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default ALPHASWARM_HTTP_PORT, 8000)")
    serve.add_argument(
        "--grpc-port", type=int, help="gateway gRPC port (default ALPHASWARM_GRPC_PORT, else 50051)"
    )
    serve.add_argument("--home", help="folder of the embedded stores (default ./.alphaswarm)")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without authentication (anyone who can connect has full access)",
    )
    serve.set_defaults(func=cmd_serve)

    ui = sub.add_parser("ui", help="serve the browser (and the API) over the embedded store")
    ui.add_argument("--host", help="HTTP host (default ALPHASWARM_HTTP_HOST, 127.0.0.1)")
    ui.add_argument("--port", type=int, help="HTTP port (default ALPHASWARM_HTTP_PORT, 8000)")
    ui.add_argument("--grpc-port", type=int, help="gateway gRPC port (default: an ephemeral port)")
    ui.add_argument("--home", help="folder of the embedded stores (default ./.alphaswarm)")
    ui.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without authentication"
    )
    ui.set_defaults(func=cmd_ui)

    report = sub.add_parser("report", help="write the tearsheet of a backtest (one self-contained HTML file)")
    report.add_argument("backtest_id", help="the backtest id (alphaswarm run prints it)")
    report.add_argument("-o", "--output", default="report.html", help="output file, - for stdout")
    report.add_argument(
        "--url", help="a gateway's REST URL (http://host:8000); the token comes from ALPHASWARM_TOKEN"
    )
    report.add_argument("--home", help="folder of the embedded stores (default ./.alphaswarm)")
    report.set_defaults(func=cmd_report)

    runs = sub.add_parser("runs", help="read alpha-backtest runs")
    runs.add_argument("action", choices=["list", "get"])
    runs.add_argument("run_id", nargs="?")
    runs.add_argument("--page-size", type=int, default=20)
    runs.add_argument("--page-token")
    runs.add_argument("--home")
    runs.add_argument("--gateway")
    runs.set_defaults(func=cmd_runs)

    for kind, name, text in (
        ("backtest", "backtest", "backtest a rule strategy"),
        ("optimization", "optimize", "optimize a strategy's parameters"),
    ):
        job = sub.add_parser(
            name, help=text, description=f"{text}; JOB is a YAML/JSON job document (the REST body)"
        )
        job.add_argument("job", nargs="?", help="job document (YAML or JSON)")
        job.add_argument("--dataset", help="dataset source: sp500 (default) or a CSV/Parquet path")
        job.add_argument("--symbols", help="comma-separated symbols")
        job.add_argument("--start", help="first traded date (YYYY-MM-DD); earlier bars warm indicators up")
        job.add_argument("--end", help="last traded date (YYYY-MM-DD)")
        job.add_argument("--strategy", help="strategy type (sma_cross, rsi, macd, ...)")
        job.add_argument("--fees", type=float)
        job.add_argument("--slippage", type=float)
        job.add_argument("--initial-capital", dest="initial_capital", type=float)
        job.add_argument("--output", choices=["table", "json"], default="table")
        job.add_argument("--no-persist", action="store_true", help="do not save into the catalog")
        job.add_argument("--home")
        if kind == "backtest":
            job.add_argument("--param", action="append", help="strategy parameter NAME=VALUE (repeatable)")
        else:
            job.add_argument("--param", action="append", help=argparse.SUPPRESS)
            job.add_argument("--grid", action="append", help="NAME=V1,V2,... (repeatable)")
            job.add_argument("--objective")
            job.add_argument("--method", choices=["grid", "random"])
            job.add_argument("--samples", type=int)
            job.add_argument("--seed", type=int)
        job.set_defaults(func=cmd_job, kind=kind)

    warmup = sub.add_parser(
        "warmup", help="compile the backtest kernels into numba's cache (make install runs it)"
    )
    warmup.set_defaults(func=cmd_warmup)

    migrate = sub.add_parser("migrate", help="upgrade the catalog schema")
    migrate.add_argument("--url", help="SQLAlchemy URL (default: the configured catalog)")
    migrate.add_argument("--home")
    migrate.set_defaults(func=cmd_migrate)

    auth = sub.add_parser("auth", help="API tokens and service certificates (docs/security.md)")
    auth_sub = auth.add_subparsers(dest="action", required=True)
    create = auth_sub.add_parser("create-token", help="create an API token and print it once")
    create.add_argument("--role", required=True, choices=["viewer", "researcher", "admin"])
    create.add_argument("--name", help="unique name (recorded as the subject of what the token does)")
    create.add_argument("--expires-days", type=float, help="lifetime in days (default: no expiry)")
    revoke = auth_sub.add_parser("revoke", help="revoke an API token by name")
    revoke.add_argument("name", nargs="?")
    listing = auth_sub.add_parser("list", help="list API tokens (never the tokens themselves)")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    for p in (create, revoke, listing):
        p.add_argument("--home")
    certs = auth_sub.add_parser("make-certs", help="write a CA and one certificate+key per service")
    certs.add_argument("dir", help="output folder")
    certs.add_argument("--namespace", default="alphaswarm", help="Kubernetes namespace for the SANs")
    certs.add_argument("--dns", action="append", help="an extra DNS name on every certificate")
    certs.add_argument("--days", type=int, default=825)
    made = auth_sub.add_parser(
        "make-secrets", help="database password, pgpass, first admin token and certificates for compose"
    )
    made.add_argument("dir", help="output folder (deploy/secrets for docker-compose)")
    auth.set_defaults(func=cmd_auth)
    return parser


def _freeze_at_exit() -> None:
    """Spare the interpreter's final garbage collections (seconds over a stack's millions of objects).

    Registered first, so it runs after every other exit handler (the embedded stack's stop, the
    background artifact loggers' drain); the process is ending, its memory goes back to the system
    whole.
    """
    import gc

    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    import atexit

    atexit.unregister(_freeze_at_exit)
    atexit.register(_freeze_at_exit)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow\..*")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from alphaswarm_common.tracking import quiet_mlflow

    quiet_mlflow()
    args = build_parser().parse_args(argv)
    if args.command == "runs" and args.action == "get" and not args.run_id:
        print("alphaswarm runs get: RUN_ID is required", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except AlphaSwarmError as exc:
        print(f"error: {exc.grpc_code}: {exc}", file=sys.stderr)
        return 2 if exc.http_status < 500 else 1
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
