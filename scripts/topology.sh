#!/usr/bin/env bash
# deploy/compose.yaml's topology without Docker: two gateway replicas on one PostgreSQL
# database, Redis, SeaweedFS, the built-in workers (--builtin NAME, repeatable; default
# markitdown) and nginx in front, each started with its container's command (deploy/bin/*).
# Prints the URL and a user's key; Ctrl-C stops everything. Needs PostgreSQL on 127.0.0.1:5432
# (started if stopped) and nginx and redis-server (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-postgres.sh
exec .venv/bin/python -m tests.topology "$@"
