#!/usr/bin/env bash
# API fuzzing: schemathesis (installed from PyPI into target/fuzz-venv) against the served
# OpenAPI document, as an authenticated user, with a fixed example budget and seed. Fails on
# any 5xx, any response that does not match its documented schema or content type.
# One worker: CPython 3.11's AST constructor is not safe across schemathesis' worker threads
# ("AST constructor recursion depth mismatch" inside its coverage phase).
# Usage: fuzz-api.sh [EXAMPLES_PER_OPERATION] [SEED]
set -euo pipefail
cd "$(dirname "$0")/../.."
examples=${1:-${FUZZ_EXAMPLES:-50}}
seed=${2:-${FUZZ_SEED:-20261128}}
cargo=${CARGO:-cargo}
venv=target/fuzz-venv
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

if [ ! -x "$venv/bin/st" ]; then
  echo "==> installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'schemathesis==4.32.5'
fi

echo "==> building"
$cargo build --quiet -p arbor -p fake-provider

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
provider_port=$(free_port)
port=$(free_port)
target/debug/fake-provider "127.0.0.1:$provider_port" > "$work/provider.log" 2>&1 &
pids+=($!)
mkdir -p "$work/config"
ARBOR_ENV=test \
DATABASE_URL="sqlite://$work/fuzz.db?mode=rwc" \
ARBOR__SERVER__PORT=$port \
ARBOR__LLM__BASE_URL="http://127.0.0.1:$provider_port/api/v1" \
ARBOR__LLM__MAX_RETRIES=0 \
ARBOR__AUTH__ARGON2_MEMORY_KIB=1024 \
ARBOR__AUTH__ARGON2_ITERATIONS=1 \
ARBOR__AUTH__LOGIN_PER_WINDOW=100000 \
ARBOR__AUTH__REGISTER_PER_WINDOW=100000 \
ARBOR__RATE_LIMITS__ENABLED=false \
ARBOR__GENERATION__PER_USER_LIMIT=100 \
ARBOR__LOG__LEVEL=warn \
  target/debug/arbor --config-dir "$work/config" serve > "$work/arbor.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -sf "$base/api/v1/ready" > /dev/null && break
  sleep 0.2
done
curl -sf "$base/api/v1/ready" > /dev/null || { echo "arbor did not start"; cat "$work/arbor.log"; exit 1; }

credentials='{"username":"fuzzer","password":"fuzzing password 1"}'
curl -sf -X POST "$base/api/v1/users" -H 'content-type: application/json' -d "$credentials" > /dev/null
token=$(curl -sf -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' -d "$credentials" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

echo "==> schemathesis: $examples examples per operation, seed $seed"
status=0
"$venv/bin/st" run "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance \
  --max-examples "$examples" \
  --seed "$seed" \
  --phases examples,coverage,fuzzing \
  --generation-deterministic \
  --request-timeout 30 \
  --workers 1 \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "==> server log (last 50 lines)"
  tail -50 "$work/arbor.log"
fi
exit "$status"
