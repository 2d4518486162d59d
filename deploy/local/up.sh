#!/usr/bin/env bash
# The production topology as plain processes on this machine: PostgreSQL (the machine's),
# one control plane, three data planes and a fake OpenAI provider.
#
#   deploy/local/up.sh [RUN_DIR]      start everything, wait until it serves, print addresses
#   deploy/local/down.sh [RUN_DIR]    stop it
#
# Environment: DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test),
# CP_PORT (50051), DP_PORTS ("8001 8002 8003"), FAKE_PORT (9000), PYTHON (python3 on PATH).
set -euo pipefail

RUN_DIR="${1:-${TMPDIR:-/tmp}/meterline-local}"
DATABASE_URL="${DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
CP_PORT="${CP_PORT:-50051}"
DP_PORTS="${DP_PORTS:-8001 8002 8003}"
FAKE_PORT="${FAKE_PORT:-9000}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$RUN_DIR"

start() {  # name, command...
  local name="$1"; shift
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
}

wait_for() {  # what, command...
  local what="$1"; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $what; logs in $RUN_DIR" >&2
  exit 1
}

http_status_is() {  # url, status
  "$PYTHON" - "$1" "$2" <<'PY'
import sys, urllib.request, urllib.error
try:
    code = urllib.request.urlopen(sys.argv[1], timeout=1).status
except urllib.error.HTTPError as e:
    code = e.code
sys.exit(0 if str(code) == sys.argv[2] else 1)
PY
}

"$PYTHON" -m controlplane migrate --db "$DATABASE_URL"
start fake "$PYTHON" -m dataplane.fakeprovider --listen "127.0.0.1:$FAKE_PORT"
start controlplane "$PYTHON" -m controlplane controlplane --db "$DATABASE_URL" \
  --listen "127.0.0.1:$CP_PORT"
wait_for "fake provider" http_status_is "http://127.0.0.1:$FAKE_PORT/_fake/requests" 200
wait_for "control plane" "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $CP_PORT), 1)"
i=0
for port in $DP_PORTS; do
  i=$((i + 1))
  start "dataplane-$i" "$PYTHON" -m controlplane dataplane --cp "127.0.0.1:$CP_PORT" \
    --listen "127.0.0.1:$port" --node-id "local-dataplane-$i"
done
for port in $DP_PORTS; do
  # 503 until the first snapshot arrives; 404 for an unmatched path once it serves.
  wait_for "data plane on port $port" http_status_is "http://127.0.0.1:$port/_health_probe" 404
done
echo "control plane  127.0.0.1:$CP_PORT"
echo "data planes    $(for p in $DP_PORTS; do printf 'http://127.0.0.1:%s ' "$p"; done)"
echo "fake provider  http://127.0.0.1:$FAKE_PORT"
echo "logs and pids  $RUN_DIR"
