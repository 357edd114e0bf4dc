#!/usr/bin/env bash
# Set up and run the whole test suite: lint, type check, and every test on SQLite and
# PostgreSQL. PostgreSQL is started (or installed, on a bare Debian machine) when not running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/ensure-postgres.sh

bin=.venv/bin
"$bin/ruff" check src tests benchmarks
"$bin/ruff" format --check src tests benchmarks
"$bin/mypy"
"$bin/pytest" "$@"
