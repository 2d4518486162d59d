#!/usr/bin/env bash
# The production topology as plain processes on this machine: PostgreSQL (the machine's),
# one control plane, three data planes and a fake OpenAI provider.
#
#   deploy/local/up.sh [RUN_DIR]      start everything, wait until it serves, print addresses
#   deploy/local/down.sh [RUN_DIR]    stop it
#
# Environment: DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test),
# CP_PORT (50051, operator API), CLUSTER_PORT (50052, data planes over mTLS),
# DP_PORTS ("8001 8002 8003"), FAKE_PORT (9000), PYTHON (python3 on PATH).
#
# Trust as in production: a PKI in RUN_DIR/pki (one certificate per data plane), an admin
# operator token in RUN_DIR/admin.token (export METERLINE_TOKEN="$(cat RUN_DIR/admin.token)")
# and the key that encrypts provider keys in the database, RUN_DIR/secrets.key.
set -euo pipefail

RUN_DIR="${1:-${TMPDIR:-/tmp}/meterline-local}"
DATABASE_URL="${DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
CP_PORT="${CP_PORT:-50051}"
CLUSTER_PORT="${CLUSTER_PORT:-50052}"
DP_PORTS="${DP_PORTS:-8001 8002 8003}"
FAKE_PORT="${FAKE_PORT:-9000}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$RUN_DIR"
PKI="$RUN_DIR/pki"

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
if [ ! -f "$PKI/ca.key" ]; then
  "$PYTHON" -m controlplane pki init --dir "$PKI" --host 127.0.0.1 --host localhost >/dev/null
fi
if [ ! -f "$RUN_DIR/secrets.key" ]; then
  (umask 077; "$PYTHON" -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" \
    >"$RUN_DIR/secrets.key")
fi
if [ ! -f "$RUN_DIR/admin.token" ]; then
  (umask 077; "$PYTHON" -m controlplane tokens create local-admin --scope admin \
    --file "$RUN_DIR/tokens.yaml" >"$RUN_DIR/admin.token")
fi
start fake "$PYTHON" -m dataplane.testing.fake_openai --listen "127.0.0.1:$FAKE_PORT"
start controlplane "$PYTHON" -m controlplane controlplane --db "$DATABASE_URL" \
  --listen "127.0.0.1:$CP_PORT" --cluster-listen "127.0.0.1:$CLUSTER_PORT" \
  --tokens-file "$RUN_DIR/tokens.yaml" --cluster-ca "$PKI/ca.crt" \
  --cluster-cert "$PKI/controlplane.crt" --cluster-key "$PKI/controlplane.key" \
  --secrets-key-file "$RUN_DIR/secrets.key"
wait_for "fake provider" http_status_is "http://127.0.0.1:$FAKE_PORT/_fake/requests" 200
wait_for "control plane" "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $CP_PORT), 1)"
i=0
for port in $DP_PORTS; do
  i=$((i + 1))
  if [ ! -f "$PKI/local-dataplane-$i.key" ]; then
    "$PYTHON" -m controlplane pki issue-dataplane "local-dataplane-$i" --dir "$PKI" >/dev/null
  fi
  start "dataplane-$i" "$PYTHON" -m controlplane dataplane --cp "127.0.0.1:$CLUSTER_PORT" \
    --listen "127.0.0.1:$port" --node-id "local-dataplane-$i" --cluster-ca "$PKI/ca.crt" \
    --cluster-cert "$PKI/local-dataplane-$i.crt" --cluster-key "$PKI/local-dataplane-$i.key"
done
for port in $DP_PORTS; do
  # /readyz: 503 until the first snapshot arrives, 200 once the data plane serves it.
  wait_for "data plane on port $port" http_status_is "http://127.0.0.1:$port/readyz" 200
done
echo "control plane  127.0.0.1:$CP_PORT (operator token: $RUN_DIR/admin.token)"
echo "cluster mTLS   127.0.0.1:$CLUSTER_PORT (PKI: $PKI)"
echo "data planes    $(for p in $DP_PORTS; do printf 'http://127.0.0.1:%s ' "$p"; done)"
echo "fake provider  http://127.0.0.1:$FAKE_PORT"
echo "logs and pids  $RUN_DIR"
