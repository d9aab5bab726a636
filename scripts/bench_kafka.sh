#!/usr/bin/env bash
# `make bench-kafka`: the Inspector in-process vs. behind a real Kafka broker and Redis, then
# exactly-once against at-least-once side by side (batch 1 and 8, 5 interleaved rounds each;
# BENCH_GUARANTEES=0 skips it).
# Starts a local broker + redis-server (state in .state/bench), runs
# `linewatch-worker bench --through-kafka` (its own topics and groups), stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
STATE=${BENCH_STATE_DIR:-.state/bench}

stop_servers() { "$PY" -m infra.servers stop --state-dir "$STATE" >&2 || true; }
trap stop_servers EXIT

"$PY" -m infra.servers start --state-dir "$STATE" >&2
set -a; . "$STATE/env"; set +a
echo "bench: kafka $LINEWATCH_KAFKA__BOOTSTRAP_SERVERS, redis $LINEWATCH_REDIS__URL" >&2

"$PY" -m worker.cli --log-level "${LOG_LEVEL:-WARNING}" bench --through-kafka --profile tiny \
    --foreground none --frames "${BENCH_FRAMES:-64}" --batch "${BENCH_BATCH:-8}" "$@"

if [ "${BENCH_GUARANTEES:-1}" != 0 ]; then
    "$PY" -m worker.cli --log-level "${LOG_LEVEL:-WARNING}" bench --through-kafka --profile tiny \
        --foreground none --frames "${BENCH_FRAMES:-64}" --guarantees "${BENCH_GUARANTEE_BATCHES:-1,8}" \
        --rounds "${BENCH_GUARANTEE_ROUNDS:-5}" "$@"
fi
