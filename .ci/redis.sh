# A throwaway Redis server for the Celery tests; sourced by .ci/run, usable by hand:
#
#   source .ci/redis.sh && start_test_redis    # exports CHARATTR_TEST_REDIS_URL
#   ...run tests...
#   stop_test_redis
#
# Installs the Debian `redis-server` package when the binary is missing, then starts a server
# with no persistence in a temporary folder, on 127.0.0.1 only, on a free port.

_redis_free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

start_test_redis() {
    if [ -n "${CHARATTR_TEST_REDIS_URL:-}" ]; then
        echo "redis: using the server in CHARATTR_TEST_REDIS_URL" >&2
        return 0
    fi
    if ! command -v redis-server >/dev/null; then
        echo "redis: installing the Debian package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq redis-server >/dev/null
    fi
    CHARATTR_REDIS_DIR=$(mktemp -d /tmp/charattr-redis.XXXXXX)
    export CHARATTR_REDIS_DIR
    local port
    port=$(_redis_free_port)
    redis-server --bind 127.0.0.1 --port "$port" --dir "$CHARATTR_REDIS_DIR" --save '' --appendonly no \
        --daemonize yes --pidfile "$CHARATTR_REDIS_DIR/redis.pid" --logfile "$CHARATTR_REDIS_DIR/redis.log"
    for _ in $(seq 1 50); do
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
            break
        fi
        sleep 0.1
    done
    export CHARATTR_TEST_REDIS_URL="redis://127.0.0.1:$port"
    echo "redis: throwaway server on 127.0.0.1:$port" >&2
}

stop_test_redis() {
    if [ -n "${CHARATTR_REDIS_DIR:-}" ] && [ -f "$CHARATTR_REDIS_DIR/redis.pid" ]; then
        kill "$(cat "$CHARATTR_REDIS_DIR/redis.pid")" 2>/dev/null || true
        sleep 0.2
        rm -rf "$CHARATTR_REDIS_DIR"
        unset CHARATTR_REDIS_DIR CHARATTR_TEST_REDIS_URL
    fi
}
