#!/usr/bin/env bash
# `make demo`: a local Kafka broker + Redis, one worker, the synthetic camera, a live summary,
# and the operator dashboard (its address is printed; it stays up until Enter when run in a terminal).
# The belt runs one product (grey metal washers, `--parts washers`). Before the line starts,
# DEMO_REFERENCES good frames spread over the belt become the reference bank of "metal washer" and the
# worker calibrates itself on DEMO_CALIBRATION_FRAMES good frames (learning mode, the bank in force);
# the summary then prints image AUROC and F1 against the producer's truth.
#
#   DEMO_FRAMES=40 bash scripts/demo.sh      # frames to send (default 40, at DEMO_FPS=2 frames/s)
#
# Uses the real models (profile `default`) when models/clip, models/clipseg and models/sam exist,
# otherwise the `demo` profile: tiny random-weight models whose CLIP sees a tile in 8 px patches, so
# the reference bank detects drawn defects (its zero-shot scores mean nothing).
# Servers keep their state in .state/demo and are stopped on exit, as is the worker.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=$VENV/bin/python
STATE=${DEMO_STATE_DIR:-.state/demo}
DEMO_FRAMES=${DEMO_FRAMES:-40}
DEMO_FPS=${DEMO_FPS:-2}
DEMO_REFERENCES=${DEMO_REFERENCES:-16}
DEMO_REFERENCE_GAP=${DEMO_REFERENCE_GAP:-5}  # belt frames between two references: they show the belt in many positions
DEMO_PARTS=${DEMO_PARTS:-washers}
DEMO_CALIBRATION_FRAMES=${DEMO_CALIBRATION_FRAMES:-12}  # >= 9 for the 10% false-alarm bound
DEMO_DEFECT_RATE=${DEMO_DEFECT_RATE:-0.3}
OBJECT="metal washer"
# generous: on a small CPU the tiny profile with IS-Net runs at ~0.5 frames/s, slower than DEMO_FPS
DEMO_TIMEOUT=${DEMO_TIMEOUT:-$(( 120 + 5 * DEMO_FRAMES ))}
WORKER_LOG=$STATE/worker.log
WORKER_PID=
DASHBOARD_LOG=$STATE/dashboard.log
DASHBOARD_PID=
DASHBOARD_PORT=${DASHBOARD_PORT:-8090}

cleanup() {
    local rc=$?
    if [[ -n "$DASHBOARD_PID" ]] && kill -0 "$DASHBOARD_PID" 2>/dev/null; then
        echo "demo: stopping the dashboard (pid $DASHBOARD_PID)"
        kill -TERM "$DASHBOARD_PID" 2>/dev/null || true
        wait "$DASHBOARD_PID" 2>/dev/null || true
    fi
    if [[ -n "$WORKER_PID" ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
        echo "demo: stopping the worker (SIGTERM, pid $WORKER_PID)"
        kill -TERM "$WORKER_PID" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$WORKER_PID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$WORKER_PID" 2>/dev/null; then
            echo "demo: worker still running after 30 s, killing it"
            kill -KILL "$WORKER_PID" 2>/dev/null || true
        fi
        wait "$WORKER_PID" 2>/dev/null || true
    fi
    echo "demo: stopping kafka and redis"
    "$PY" -m infra.servers stop --state-dir "$STATE" || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$STATE"
"$PY" -m infra.servers start --state-dir "$STATE"
set -a; . "$STATE/env"; set +a

# No collector in the demo: keep OpenTelemetry from trying to reach one (override to export).
export OTEL_TRACES_EXPORTER=${OTEL_TRACES_EXPORTER:-none}
export OTEL_METRICS_EXPORTER=${OTEL_METRICS_EXPORTER:-none}
export OTEL_LOGS_EXPORTER=${OTEL_LOGS_EXPORTER:-none}

if [[ -d models/clip && -d models/clipseg && -d models/sam ]]; then
    export LINEWATCH_MODELS__PROFILE=${LINEWATCH_MODELS__PROFILE:-default}
    echo "demo: real weights found in models/: profile $LINEWATCH_MODELS__PROFILE"
else
    export LINEWATCH_MODELS__PROFILE=demo
    export LINEWATCH_MODELS__FOREGROUND=isnet
    # 16 references of 3 tiles of 28 x 28 patches: ~38,000 patches (20 MB), kept whole (no coreset wait)
    export LINEWATCH_MODELS__REFERENCE_MAX_PATCHES=${LINEWATCH_MODELS__REFERENCE_MAX_PATCHES:-60000}
    cat <<'BANNER'

################################################################################
#                                                                              #
#   DEMO PROFILE: TINY RANDOM-WEIGHT MODELS                                    #
#                                                                              #
#   models/clip, models/clipseg and models/sam are not all present, so the     #
#   demo runs tiny random-weight models (foreground: IS-Net). Their zero-shot  #
#   scores mean nothing; what detects defects here is the reference bank       #
#   (nearest-patch distances), a fraction of what real weights do.             #
#                                                                              #
################################################################################

BANNER
fi

# The operator dashboard, with a demo login unless one is configured.
export LINEWATCH_DASHBOARD__USERS=${LINEWATCH_DASHBOARD__USERS:-operator:linewatch:operator}
"$VENV/bin/linewatch-worker" dashboard --port "$DASHBOARD_PORT" >"$DASHBOARD_LOG" 2>&1 &
DASHBOARD_PID=$!
echo "demo: dashboard on http://127.0.0.1:$DASHBOARD_PORT/ (log in as operator / linewatch unless LINEWATCH_DASHBOARD__USERS says otherwise; log in $DASHBOARD_LOG)"

echo "demo: worker log in $WORKER_LOG"
"$VENV/bin/linewatch-worker" serve >"$WORKER_LOG" 2>&1 &
WORKER_PID=$!

# Send frames only once the worker has loaded its models and joined the group, so the
# latencies shown are the pipeline's, not the model loading time.
echo "demo: waiting for the worker to load its models and get its partitions (up to ${DEMO_READY_TIMEOUT:-300} s)"
ready_deadline=$(( SECONDS + ${DEMO_READY_TIMEOUT:-300} ))
until grep -q "partitions assigned: linewatch\|partitions assigned: ${LINEWATCH_KAFKA__FRAMES_TOPIC:-linewatch.frames}" "$WORKER_LOG" 2>/dev/null; do
    if ! kill -0 "$WORKER_PID" 2>/dev/null; then
        echo "demo: the worker exited during start-up; last lines of $WORKER_LOG:" >&2
        tail -n 30 "$WORKER_LOG" >&2
        exit 1
    fi
    if (( SECONDS >= ready_deadline )); then
        echo "demo: the worker is not ready after ${DEMO_READY_TIMEOUT:-300} s; last lines of $WORKER_LOG:" >&2
        tail -n 30 "$WORKER_LOG" >&2
        exit 1
    fi
    sleep 0.5
done
echo "demo: worker ready after ${SECONDS} s"

# Learning from good parts: good frames of the belt (no defect drawn) become the scope's reference bank,
# announced on the control topic; then learning mode calibrates the threshold on fused scores.
REFS=$STATE/references
rm -rf "$REFS" && mkdir -p "$REFS"
"$PY" - "$REFS" "$DEMO_REFERENCES" "$DEMO_REFERENCE_GAP" "$DEMO_PARTS" <<'PYTHON'
import sys
from pathlib import Path

from common.codecs import encode_image
from producer.sources import SyntheticSource

count, gap, parts = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for frame in SyntheticSource(seed=101, defect_rate=0.0, limit=count * gap, parts=parts):
    if frame.index % gap == 0:
        (Path(sys.argv[1]) / f"good-{frame.index:03d}.png").write_bytes(encode_image(frame.rgb, "image/png"))
PYTHON
echo "demo: registering $DEMO_REFERENCES good frames as references of \"$OBJECT\""
"$VENV/bin/linewatch-worker" --log-level WARNING references add "$REFS"/*.png --object "$OBJECT"
echo "demo: learning mode: the worker calibrates on the next $DEMO_CALIBRATION_FRAMES good frames (10% false alarms)"
"$VENV/bin/linewatch-worker" --log-level WARNING control set --scope "object:$OBJECT" \
    --learning-frames "$DEMO_CALIBRATION_FRAMES" --target-fpr 0.1 >/dev/null
"$PY" scripts/demo_summary.py --expect "$DEMO_CALIBRATION_FRAMES" --timeout "$DEMO_TIMEOUT" --interval 10 &
SUMMARY_PID=$!
"$VENV/bin/linewatch-producer" --source synthetic --camera cam-1 --line line-1 --object "$OBJECT" \
    --fps "$DEMO_FPS" --limit "$DEMO_CALIBRATION_FRAMES" --defect-rate 0 --seed 202 --parts "$DEMO_PARTS" --log-level WARNING
wait "$SUMMARY_PID" || { echo "demo: calibration frames did not all come back" >&2; tail -n 30 "$WORKER_LOG" >&2; exit 1; }
sleep 2  # the calibrated record goes round the control topic

"$PY" scripts/demo_summary.py --expect "$DEMO_FRAMES" --timeout "$DEMO_TIMEOUT" --slack 0 &
SUMMARY_PID=$!

"$VENV/bin/linewatch-producer" --source synthetic --camera cam-1 --line line-1 --object "$OBJECT" \
    --fps "$DEMO_FPS" --limit "$DEMO_FRAMES" --defect-rate "$DEMO_DEFECT_RATE" --seed 303 --parts "$DEMO_PARTS" --log-level WARNING

summary_rc=0
wait "$SUMMARY_PID" || summary_rc=$?
if ! kill -0 "$WORKER_PID" 2>/dev/null; then
    echo "demo: the worker exited early; last lines of $WORKER_LOG:" >&2
    tail -n 30 "$WORKER_LOG" >&2
    exit 1
fi
if [[ $summary_rc -ne 0 ]]; then
    echo "demo: not every frame came back in time; last lines of $WORKER_LOG:" >&2
    tail -n 30 "$WORKER_LOG" >&2
fi
if kill -0 "$DASHBOARD_PID" 2>/dev/null; then
    echo "demo: dashboard still on http://127.0.0.1:$DASHBOARD_PORT/"
    if [[ -t 0 && -z "${DEMO_NO_WAIT:-}" ]]; then
        read -r -p "demo: press Enter to stop everything " _ || true
    fi
else
    echo "demo: the dashboard exited; last lines of $DASHBOARD_LOG:" >&2
    tail -n 30 "$DASHBOARD_LOG" >&2
fi
exit "$summary_rc"
