#!/usr/bin/env bash
# API fuzzing: schemathesis (installed from PyPI into target/fuzz-venv) against the served
# OpenAPI document, as an authenticated user, with a fixed example budget and seed. Fails on
# any 5xx, any response that does not match its documented schema or content type.
# Phases: explicit examples, the coverage of each schema's boundaries, random fuzzing, and the
# stateful phase, which chains calls along the OpenAPI links (a new chat's uuid → its tree…).
# One worker: CPython 3.11's AST constructor is not safe across schemathesis' worker threads
# ("AST constructor recursion depth mismatch" inside its coverage phase).
# Usage: fuzz-api.sh [EXAMPLES_PER_OPERATION] [SEED]
set -euo pipefail
cd "$(dirname "$0")/../.."
examples=${1:-${FUZZ_EXAMPLES:-50}}
seed=${2:-${FUZZ_SEED:-20261128}}
cargo=${CARGO:-cargo}
venv=target/fuzz-venv
# shellcheck source=live.sh
source tests/scripts/live.sh

if [ ! -x "$venv/bin/st" ]; then
  echo "==> installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'schemathesis==4.32.5'
fi

echo "==> building"
$cargo build --quiet -p arbor -p fake-provider

start_fake_provider
ARBOR__AUTH__LOGIN_PER_WINDOW=100000 \
ARBOR__AUTH__REGISTER_PER_WINDOW=100000 \
ARBOR__RATE_LIMITS__ENABLED=false \
ARBOR__GENERATION__PER_USER_LIMIT=100 \
  start_arbor fuzz "$provider_url" ""
base=$arbor_url
work_log="$work/fuzz/arbor.log"

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
  --phases examples,coverage,fuzzing,stateful \
  --generation-deterministic \
  --request-timeout 30 \
  --workers 1 \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "==> server log (last 50 lines)"
  tail -50 "$work_log"
fi
exit "$status"
