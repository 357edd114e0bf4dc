#!/usr/bin/env bash
# Set everything up and serve the platform on the embedded default (SQLite, one process).
# First run: creates the admin account and an API key and prints them once.
# Without HEPAI_SERVER_CONFIG, serves two demo models from the bundled mock upstream so the
# whole workflow can be tried offline; point HEPAI_SERVER_CONFIG at your providers file for
# real ones (see examples/providers.yaml). It also serves the platform's own tools
# (hepai/markitdown, hepai/mineru, and embeddings and rerank on the packaged MiniLM), so every
# example of the user guide works offline; QUICKSTART_BUILTINS names fewer ("" for none).
set -euo pipefail
cd "$(dirname "$0")/.."
# QUICKSTART_SKIP_SETUP=1: the environment is ready (the test of this script sets it).
[ -n "${QUICKSTART_SKIP_SETUP:-}" ] || bash scripts/setup.sh
bin=.venv/bin
host=${HOST:-127.0.0.1}
port=${PORT:-4260}

if [ -z "${HEPAI_SERVER_CONFIG:-}" ]; then
    demo_port=${DEMO_UPSTREAM_PORT:-4269}
    "$bin/python" -m hepai_server.testing.mock_upstream --port "$demo_port" &
    demo_pid=$!
    trap 'kill $demo_pid 2>/dev/null' EXIT
    config_dir=$(mktemp -d)
    sed "s/{DEMO_PORT}/$demo_port/" examples/demo-providers.yaml > "$config_dir/providers.yaml"
    export HEPAI_SERVER_CONFIG=$config_dir/providers.yaml
fi

if ! "$bin/hepai-server" user list | grep -q "^admin	"; then
    password=$("$bin/hepai-server" user create admin --admin </dev/null)
    key=$("$bin/hepai-server" key create --user admin --name quickstart)
    cat <<MSG

  hepai-server is starting at http://$host:$port/apiv2
  web portal:    http://$host:$port/
  admin login:   admin / $password
  API key:       $key      (shown once; keep it)

  export HEPAI_API_KEY=$key

MSG
else
    cat <<MSG

  hepai-server is starting at http://$host:$port/apiv2
  web portal:    http://$host:$port/
  The admin login and first key were printed on the first run.
  A new key: $bin/hepai-server key create --user admin

MSG
fi
builtins=()
for name in ${QUICKSTART_BUILTINS-markitdown mineru embeddings rerank}; do
    builtins+=(--builtin "$name")
done
if [ ${#builtins[@]} -gt 0 ]; then
    echo "  The built-in tools start once the gateway answers; each logs when it has loaded."
    echo
fi
"$bin/hepai-server" serve --host "$host" --port "$port" "${builtins[@]}"
