# Shared by the scripts that run live servers (interop.sh, browser.sh, fuzz-api.sh): a
# scratch directory ($work) and the processes started ($pids), both gone when the script
# exits; free ports, waiting for a URL, the fake provider and an Arbor on its own SQLite
# file. Source it from the repository's root.

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # url log
  for _ in $(seq 1 150); do curl -sf "$1" > /dev/null && return 0; sleep 0.2; done
  echo "$1 did not answer" >&2; tail -40 "$2" >&2; return 1
}

# The fake provider on a free port; its base URL in $provider_url. Arguments: extra model ids
# for its catalogue.
start_fake_provider() {
  local port; port=$(free_port)
  target/debug/fake-provider "127.0.0.1:$port" "$@" > "$work/provider.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$port/api/v1/models" "$work/provider.log"
  provider_url="http://127.0.0.1:$port/api/v1"
}

# An Arbor on its own SQLite file; its URL in $arbor_url. Extra ARBOR__* settings can be
# exported by the caller.
# Usage: start_arbor NAME UPSTREAM_URL UPSTREAM_KEY
start_arbor() {
  local port; port=$(free_port)
  mkdir -p "$work/$1"
  ARBOR_ENV=test \
  DATABASE_URL="sqlite://$work/$1/arbor.db?mode=rwc" \
  ARBOR__SERVER__PORT=$port \
  ARBOR__LLM__BASE_URL="$2" \
  ARBOR__LLM__API_KEY="$3" \
  ARBOR__LLM__MAX_RETRIES=0 \
  ARBOR__AUTH__ARGON2_MEMORY_KIB=1024 \
  ARBOR__AUTH__ARGON2_ITERATIONS=1 \
  ARBOR__LOG__LEVEL=warn \
    target/debug/arbor --config-dir "$work/$1" serve > "$work/$1/arbor.log" 2>&1 &
  pids+=($!)
  arbor_url="http://127.0.0.1:$port"
  wait_for "$arbor_url/api/v1/ready" "$work/$1/arbor.log"
}
