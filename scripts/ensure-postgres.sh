# Sourced by scripts/test.sh: make a PostgreSQL server answer on 127.0.0.1:5432 and export
# HEPAI_TEST_POSTGRES_URL for the tests. Uses a running server when there is one, starts the
# machine's cluster when it is stopped, and installs Debian's package as a last resort.
url=${HEPAI_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}

pg_answers() {
    .venv/bin/python - "$url" <<'PY' 2>/dev/null
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
}

if ! pg_answers; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        echo "PostgreSQL not found: installing Debian's package" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        version=$(ls /etc/postgresql | sort -n | tail -1)
        # Tests connect over TCP as postgres without a password, as on the project's machines.
        sed -i 's/^\(host\s.*\)\s\(scram-sha-256\|md5\)$/\1 trust/' \
            "/etc/postgresql/$version/main/pg_hba.conf"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -n | tail -1)" main start || true
    for _ in $(seq 1 30); do pg_answers && break; sleep 1; done
    pg_answers || { echo "PostgreSQL does not answer at $url" >&2; exit 1; }
fi
export HEPAI_TEST_POSTGRES_URL=$url
