#!/usr/bin/env bash
# Interoperability with real clients and a real third-party upstream:
#  1. the official OpenAI SDKs (Python from PyPI, Node from npm) against a live Arbor whose
#     upstream is the fake provider, with an Arbor API key (tests/interop/sdk_check.*);
#  2. the LiteLLM proxy (from PyPI, a `mock_response` model: its own SSE framing, headers and
#     model list) as Arbor's upstream: Arbor's own chat routes and /v1 both work through it.
# Clients are installed into target/ on first use (the package registries only).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo=${CARGO:-cargo}
venv=target/interop-venv
node_dir=target/interop-node
# shellcheck source=live.sh
source tests/scripts/live.sh

if [ ! -x "$venv/bin/litellm" ]; then
  echo "==> installing the OpenAI Python SDK and the LiteLLM proxy into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'openai==3.57.0' 'litellm[proxy]==1.108.7'
fi
if [ ! -f "$node_dir/node_modules/openai/package.json" ]; then
  echo "==> installing the OpenAI Node SDK into $node_dir"
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" 'openai@6.49.0'
fi

echo "==> building"
$cargo build --quiet -p arbor -p fake-provider


sdk_checks() { # base model expect
  local key; key=$("$venv/bin/python" tests/interop/arbor_setup.py "$1" "sdk-$RANDOM")
  ARBOR_BASE=$1 ARBOR_KEY=$key MODEL=$2 EXPECT=$3 "$venv/bin/python" tests/interop/sdk_check.py
  ARBOR_BASE=$1 ARBOR_KEY=$key MODEL=$2 EXPECT=$3 NODE_PATH="$node_dir/node_modules" \
    node tests/interop/sdk_check.cjs
}

echo "==> the OpenAI SDKs against Arbor (upstream: the fake provider)"
start_fake_provider
start_arbor fake "$provider_url" ""
sdk_checks "$arbor_url" "fake/small" "word0 word1 word2 word3 word4 word5 word6 word7"

echo "==> Arbor with the LiteLLM proxy as its upstream"
litellm_port=$(free_port)
cat > "$work/litellm.yaml" <<'YAML'
model_list:
  - model_name: mock/echo
    litellm_params:
      model: openai/mock-echo
      api_key: none
      mock_response: "Hello from LiteLLM"
general_settings:
  master_key: sk-interop-master
litellm_settings:
  telemetry: false
YAML
LITELLM_LOCAL_MODEL_COST_MAP=True "$venv/bin/litellm" --config "$work/litellm.yaml" \
  --host 127.0.0.1 --port "$litellm_port" > "$work/litellm.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$litellm_port/health/liveliness" "$work/litellm.log"
start_arbor litellm "http://127.0.0.1:$litellm_port/v1" "sk-interop-master"
proxied=$arbor_url
ARBOR_BASE=$proxied MODEL=mock/echo EXPECT="Hello from LiteLLM" \
  "$venv/bin/python" tests/interop/native_check.py
sdk_checks "$proxied" "mock/echo" "Hello from LiteLLM"
echo "==> interop: all checks passed"
