#!/usr/bin/env bash
# Runs the test suites and prints how many tests ran on each database backend.
# Usage: run-tests.sh [unit|db|e2e|all]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo=${CARGO:-cargo}
threads=${TEST_THREADS:-4}
what=${1:-all}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# Always --workspace: building one package alone unifies features differently and rebuilds.
run() { # name, cargo test args...
  local name=$1; shift
  echo "==> $name"
  if ! $cargo test --workspace "$@" 2>&1 | tee "$log/$name.txt"; then
    echo "FAILED: $name"; exit 1
  fi
}

server_up() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

echo "==> database servers"
for b in "postgres 127.0.0.1 5432" "mysql 127.0.0.1 3306"; do
  set -- $b
  if server_up "$2" "$3"; then echo "    $1: up ($2:$3)";
  elif [ -n "${CI:-}" ]; then echo "    $1: DOWN ($2:$3) - CI requires it"; exit 1;
  else echo "    !!! $1: DOWN ($2:$3) - its tests will be SKIPPED (start it: see README) !!!"; fi
done

if [ "$what" = all ] || [ "$what" = unit ]; then
  run unit --lib --bins -- --test-threads "$threads"
  run doc --doc
  run cli --test cli -- --test-threads "$threads"
  # The provider adapter against the fake provider (a real local HTTP server).
  run llm-adapter --test protocol --test standalone --test gateway --test router -- --test-threads "$threads"
  # The import readers against real files (the original's database, ChatGPT exports).
  run import-readers --test readers -- --test-threads "$threads"
fi
if [ "$what" = all ] || [ "$what" = db ]; then
  # The contract part also runs on the in-memory store the use-case tests stand on.
  for backend in memory sqlite postgres mysql; do
    run "repositories-$backend" --test repositories -- --test-threads "$threads" "$backend::"
  done
  run repositories-cleanup --test repositories -- --exact the_database_of_a_test_that_panicked_is_dropped
  # The PostgreSQL coordination of replicas (leases, shared caps and limits, messages).
  run coordination-postgres --test coordination -- --test-threads 2
fi
if [ "$what" = all ] || [ "$what" = e2e ]; then
  run e2e --test it -- --test-threads "$threads"
  # The metrics alone in their process, one test at a time (the recorder is process-global).
  run metrics --test metrics -- --test-threads 1
  # The real binary killed (SIGKILL) and stopped (SIGTERM) mid-stream.
  run lifecycle --test lifecycle -- --test-threads 2
  # `arbor import` on every backend, and a 50 MB upload to the real binary.
  run import --test import -- --test-threads 2
  # Three replicas of the real binary on one PostgreSQL, no sticky sessions.
  run replicas --test replicas -- --test-threads 1
fi

echo
echo "==> summary (tests passed per suite and backend)"
for f in "$log"/*.txt; do
  name=$(basename "$f" .txt)
  total=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$f" | awk '{s+=$4} END {print s+0}')
  line="    $(printf '%-24s' "$name") $total passed"
  if [ "$name" = replicas ]; then
    line="$line | postgres: $total"
  elif [ "$name" = e2e ] || [ "$name" = lifecycle ] || [ "$name" = import ]; then
    for backend in sqlite postgres mysql; do
      n=$(grep -Ec "^test (.*\b$backend::|$backend|.*_on_$backend)_?.* ok$" "$f" || true)
      line="$line | $backend: $n"
    done
  fi
  echo "$line"
done
