# A throwaway PostgreSQL server for the tests; sourced by .ci/run, usable by hand:
#
#   source .ci/postgres.sh && start_test_postgres    # exports CHARATTR_TEST_POSTGRES_URL
#   ...run tests...
#   stop_test_postgres
#
# Installs the Debian `postgresql` package when no server binaries are found, then creates a
# fresh cluster in a temporary folder (never the system's own cluster), listening on 127.0.0.1
# only, on a free port, with a password-protected role `charattr` (allowed to create databases,
# which the Dagster instance test needs) that owns the database `charattr_test`. Safe to run
# again and next to a PostgreSQL that is already installed or running.

_pg_bin_dir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

_pg_free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 20000))
        # Nothing answers on it: bash's /dev/tcp connect fails.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# Run a command as the cluster's owner: initdb and postgres refuse to run as root.
_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_test_postgres() {
    if [ -n "${CHARATTR_TEST_POSTGRES_URL:-}" ]; then
        echo "postgres: using the server in CHARATTR_TEST_POSTGRES_URL" >&2
        return 0
    fi
    local bin
    if ! bin=$(_pg_bin_dir); then
        echo "postgres: installing the Debian package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
        bin=$(_pg_bin_dir)
    fi
    CHARATTR_PG_DIR=$(mktemp -d /tmp/charattr-postgres.XXXXXX)
    export CHARATTR_PG_DIR CHARATTR_PG_BIN="$bin"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$CHARATTR_PG_DIR"
    fi
    local port password
    port=$(_pg_free_port)
    password="pw-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"  # random: tests check it never leaks
    _pg_as_owner "$bin/initdb" -D "$CHARATTR_PG_DIR/data" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 --no-instructions >"$CHARATTR_PG_DIR/initdb.log"
    # Test data is throwaway: no fsync. Sockets stay in the private folder, TCP on loopback only.
    _pg_as_owner "$bin/pg_ctl" -D "$CHARATTR_PG_DIR/data" -l "$CHARATTR_PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$CHARATTR_PG_DIR \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null
    _pg_as_owner "$bin/psql" -h "$CHARATTR_PG_DIR" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE charattr LOGIN CREATEDB PASSWORD '$password'" \
        -c "CREATE DATABASE charattr_test OWNER charattr"
    export CHARATTR_TEST_POSTGRES_URL="postgresql://charattr:$password@127.0.0.1:$port/charattr_test"
    echo "postgres: throwaway server on 127.0.0.1:$port (data in $CHARATTR_PG_DIR)" >&2
}

stop_test_postgres() {
    if [ -n "${CHARATTR_PG_DIR:-}" ] && [ -d "$CHARATTR_PG_DIR/data" ]; then
        _pg_as_owner "$CHARATTR_PG_BIN/pg_ctl" -D "$CHARATTR_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$CHARATTR_PG_DIR"
        unset CHARATTR_PG_DIR CHARATTR_TEST_POSTGRES_URL
    fi
}
