#!/usr/bin/env bash
# Set up and run the tests.
#
#   bash scripts/test.sh [pytest args]          everything CI runs: ruff, mypy, then every test
#                                               (SQLite; PostgreSQL where the database can differ;
#                                               Chromium) on two processes, with the coverage
#                                               report and its floor (pyproject.toml)
#   bash scripts/test.sh --fast [pytest args]   ruff and the in-process tier only: no server
#                                               process, no PostgreSQL, no Chromium, no coverage
#
# PostgreSQL is started (or installed, on a bare Debian machine) when not running.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=false
if [ "${1:-}" = "--fast" ]; then
    fast=true
    shift
fi
if $fast; then bash scripts/setup.sh --fast; else bash scripts/setup.sh; fi

bin=.venv/bin
"$bin/ruff" check src tests benchmarks
"$bin/ruff" format --check src tests benchmarks
# The tests and the processes they start import hepai-server from this checkout's src.
export PYTHONPATH=$PWD/src
if $fast; then
    exec "$bin/pytest" -m "not e2e and not browser and not postgres" "$@"
fi
source scripts/ensure-postgres.sh
"$bin/mypy"
# Coverage counts what every process the tests start runs too (patch = subprocess).
"$bin/pytest" -n "${HEPAI_TEST_PROCESSES:-2}" --dist loadscope --cov "$@"
