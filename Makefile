# The verbs people reach for. Everything runs from the project's own virtualenv (.venv).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
UV      := $(BIN)/uv
CONFIG  ?= configs/ml/alpha_backtest/ridge_alpha_backtest.yaml

.PHONY: ui-vendor lock install install-dev run serve test test-long test-unit test-integration check static lint format typecheck protos protos-check bench up down config k8s-config migrate clean

UV_VERSION := 0.13.9
# Installs resolve from uv.lock (`make lock` refreshes it): a fresh clone gets the versions the tests ran with.
SYNC    := $(UV) sync --locked --inexact --compile-bytecode --python $(BIN)/python

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv==$(UV_VERSION)

install: $(BIN)/python            ## runtime dependencies + the alphaswarm command (kernels compiled into numba's cache)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(SYNC) --quiet
	$(BIN)/python -m compileall -q libs services
	$(BIN)/alphaswarm warmup

install-dev: $(BIN)/python        ## runtime + test/lint dependencies
	UV_PROJECT_ENVIRONMENT=$(VENV) $(SYNC) --quiet --extra dev
	$(BIN)/python -m compileall -q libs services
	$(BIN)/alphaswarm warmup

lock: $(BIN)/python               ## re-resolve uv.lock after a dependency change
	$(UV) lock

run: install                       ## the main job on the embedded default (no servers needed)
	$(BIN)/alphaswarm run $(CONFIG)

serve: install                     ## REST + SSE on :8000 and gRPC on :50051, embedded stack
	$(BIN)/alphaswarm serve --port 8000

test: check                        ## `make check` first (a broken contract fails the run), then every test; starts PostgreSQL and NATS when they are not running
	scripts/ensure_services.sh
	PYTHON=$(BIN)/python scripts/run_tests.sh

test-long: install-dev             ## only the real training stage longer than five minutes (`make test` runs it too)
	scripts/ensure_services.sh
	$(BIN)/python -m pytest -q -m long_stage

test-unit: install-dev
	$(BIN)/python -m pytest -q -m unit

test-integration: install-dev
	scripts/ensure_services.sh
	$(BIN)/python -m pytest -q -m "integration or e2e"

check: install-dev static          ## lint, types, architecture contract, fresh stubs

static: lint typecheck protos-check  ## what `make test` (and so CI) checks before the tests
	$(BIN)/lint-imports

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck:
	$(BIN)/mypy libs/alphaswarm_common/alphaswarm_common services libs/alphaswarm/alphaswarm

ui-vendor:                         ## refresh the Strategy Browser's chart libraries from the npm registry
	scripts/ui_vendor.sh

protos:                            ## regenerate the gRPC stubs from protos/
	$(BIN)/python scripts/gen_protos.py

protos-check:
	$(BIN)/python scripts/gen_protos.py --check

bench: install-dev                 ## benchmarks (figures go to stdout with the command that made them)
	$(BIN)/python benchmarks/bench_e2e.py
	$(BIN)/python benchmarks/bench_engine.py

up: deploy/secrets/admin_token     ## the distributed topology in containers
	docker-compose -f deploy/docker-compose.yml up --build -d

deploy/secrets/admin_token: | $(BIN)/python  ## DB password, first admin token, mTLS certificates (kept once made)
	$(BIN)/alphaswarm auth make-secrets deploy/secrets

down:
	docker-compose -f deploy/docker-compose.yml down

config:                            ## validate the compose file
	docker-compose -f deploy/docker-compose.yml config -q

k8s-config: install-dev            ## build the Kubernetes overlays (kustomize); tests validate them against the schemas
	for o in dev prod; do $(BIN)/kubectl kustomize deploy/k8s/overlays/$$o >/dev/null || exit 1; done

migrate: install
	$(BIN)/alphaswarm migrate

clean:
	rm -rf .alphaswarm .pytest_cache .ruff_cache .mypy_cache
