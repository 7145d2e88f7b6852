#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it.
#
# The five-minute training stage (marker `long_stage`) runs beside the rest, at a lower CPU
# priority: its fit is bounded by a time budget, not by an amount of work, so it lasts past
# five minutes however much CPU it gets, and the rest of the suite keeps the cores first.
# Extra arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
log="$(mktemp -t alphaswarm-long-stage-XXXXXX.log)"

nice -n 10 "$PY" -m pytest -q -p no:cacheprovider -m long_stage "$@" >"$log" 2>&1 &
long=$!
trap 'kill "$long" 2>/dev/null' INT TERM

"$PY" -m pytest -q -m "not long_stage" "$@"
main=$?
wait "$long"
long_rc=$?

echo
echo "---- pytest -m long_stage (ran beside the suite) ----"
cat "$log"
rm -f "$log"
[ "$main" -eq 0 ] && [ "$long_rc" -eq 0 ]
