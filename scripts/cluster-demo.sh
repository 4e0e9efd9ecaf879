#!/usr/bin/env bash
# `make cluster-demo`: a whole charattr cluster on this machine, the sample through it, then gone.
#
#   Redis (broker) + PostgreSQL (Dagster instance and results database) + dagster-daemon (run
#   monitoring frees the pool slots of dead runs) + two Celery workers, `default` and `gpu`,
#   + `charattr run --executor celery` over the sample; everything is stopped and removed at the
#   end, also on failure or Ctrl-C. docs/cluster.md explains each piece for real machines.
#
# Usage: scripts/cluster-demo.sh SAMPLE [charattr run options...]   (run from the repository root)
set -euo pipefail
SAMPLE=${1:?usage: scripts/cluster-demo.sh SAMPLE [charattr run options]}
shift
BIN=${BIN:-.venv/bin}
source .ci/postgres.sh
source .ci/redis.sh
DEMO=$(mktemp -d /tmp/charattr-cluster-demo.XXXXXX)
PIDS=()

teardown() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done  # workers: warm shutdown
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_test_redis
    stop_test_postgres
    rm -rf "$DEMO"
    echo "cluster-demo: stopped Redis, PostgreSQL, the daemon and both workers" >&2
}
trap teardown EXIT

unset CHARATTR_TEST_POSTGRES_URL CHARATTR_TEST_REDIS_URL
start_test_redis
start_test_postgres
PG_PORT=$(echo "$CHARATTR_TEST_POSTGRES_URL" | sed -E 's#.*:([0-9]+)/.*#\1#')
PG_PASSWORD=$(echo "$CHARATTR_TEST_POSTGRES_URL" | sed -E 's#postgresql://charattr:([^@]*)@.*#\1#')
# Two databases on the server: the Dagster instance (`dagster`) and charattr's results (`charattr_test`).
_pg_as_owner "$CHARATTR_PG_BIN/psql" -h "$CHARATTR_PG_DIR" -p "$PG_PORT" -U postgres -d postgres -q \
    -c "CREATE DATABASE dagster OWNER charattr"

# What every machine of a cluster shares (docs/cluster.md): these variables and the paths below.
export DAGSTER_HOME="$DEMO/dagster_home" DAGSTER_PG_USERNAME=charattr DAGSTER_PG_PASSWORD="$PG_PASSWORD" \
       DAGSTER_PG_HOST=127.0.0.1 DAGSTER_PG_PORT="$PG_PORT" DAGSTER_PG_DB=dagster
export CHARATTR_EXECUTOR=celery CHARATTR_CELERY_BROKER="$CHARATTR_TEST_REDIS_URL/0" \
       CHARATTR_CELERY_BACKEND="$CHARATTR_TEST_REDIS_URL/1" CHARATTR_DATABASE_URL="$CHARATTR_TEST_POSTGRES_URL" \
       CHARATTR_WAREHOUSE="$DEMO/warehouse" CHARATTR_REPORTS="$DEMO/reports" CHARATTR_SHARDS_PER_RUN=1 \
       CHARATTR_CELERY_SHARD_SECONDS=300
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l || true)
mkdir -p "$DAGSTER_HOME"
cat > "$DAGSTER_HOME/dagster.yaml" <<YAML
storage:
  postgres:
    postgres_db:
      username: {env: DAGSTER_PG_USERNAME}
      password: {env: DAGSTER_PG_PASSWORD}
      hostname: {env: DAGSTER_PG_HOST}
      port: {env: DAGSTER_PG_PORT}
      db_name: {env: DAGSTER_PG_DB}
      scheme: postgresql+psycopg2
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 60
concurrency:
  pools:
    default_limit: $(( GPUS > 0 ? GPUS : 1 ))
telemetry:
  enabled: false
YAML

"$BIN/dagster-daemon" run -w workspace.yaml >"$DEMO/daemon.log" 2>&1 &
PIDS+=($!)
# Workers need no DAGSTER_HOME: each task names the instance (PostgreSQL) it reports to.
env -u DAGSTER_HOME "$BIN/charattr" worker --queue default --concurrency 2 --name default@demo >"$DEMO/default.log" 2>&1 &
PIDS+=($!)
if [ "$GPUS" -gt 0 ]; then GPU_OPTION="--gpu 0"; else GPU_OPTION=""; fi
env -u DAGSTER_HOME "$BIN/charattr" worker --queue gpu $GPU_OPTION --name gpu@demo >"$DEMO/gpu.log" 2>&1 &
PIDS+=($!)
for log in default gpu; do
    for _ in $(seq 1 300); do
        grep -q "$log@demo ready" "$DEMO/$log.log" && break
        sleep 0.5
    done
    grep -q "$log@demo ready" "$DEMO/$log.log" || { echo "cluster-demo: the $log worker did not start:" >&2; tail -20 "$DEMO/$log.log" >&2; exit 1; }
done
echo "cluster-demo: Redis, PostgreSQL, dagster-daemon and workers default@demo + gpu@demo are up" >&2

"$BIN/charattr" run "$SAMPLE" "$@"
echo "cluster-demo: steps per worker:" >&2
for log in default gpu; do
    echo "  $log@demo: $(grep -c "Task execute_plan.*succeeded" "$DEMO/$log.log") steps" >&2
done
