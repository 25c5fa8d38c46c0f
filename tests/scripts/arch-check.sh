#!/usr/bin/env bash
# The hexagon's dependency rules, checked on the resolved dependency graph.
set -euo pipefail
cargo=${CARGO:-cargo}
fail=0

deps() { $cargo tree -p "$1" -e normal --prefix none --offline 2>/dev/null || $cargo tree -p "$1" -e normal --prefix none; }

domain=$(deps domain | sort -u)
if [ "$(printf '%s\n' "$domain" | grep -c .)" -ne 1 ]; then
  echo "arch-check: domain must depend on nothing, but has:"; printf '%s\n' "$domain" | sed 1d
  fail=1
fi

bad=$(deps usecase | grep -E '^(sea-orm|sea-query|sqlx|actix-web|actix-http|async-openai|reqwest|serde|hyper) ' || true)
if [ -n "$bad" ]; then
  echo "arch-check: usecase must not depend on SQL, HTTP or provider crates:"; echo "$bad" | sort -u
  fail=1
fi

bad=$(deps api | grep -E '^(infra-db|infra-llm|sea-orm|sea-query|sqlx|async-openai|reqwest) ' || true)
if [ -n "$bad" ]; then
  echo "arch-check: api must not depend on adapters or their libraries:"; echo "$bad" | sort -u
  fail=1
fi

bad=$(deps infra-db | grep -E '^(actix-web|async-openai|api|infra-llm) ' || true)
if [ -n "$bad" ]; then
  echo "arch-check: infra-db must not depend on HTTP or provider crates:"; echo "$bad" | sort -u
  fail=1
fi

bad=$(deps infra-llm | grep -E '^(sea-orm|sqlx|actix-web|api|infra-db) ' || true)
if [ -n "$bad" ]; then
  echo "arch-check: infra-llm must not depend on storage or HTTP-server crates:"; echo "$bad" | sort -u
  fail=1
fi

[ "$fail" -eq 0 ] && echo "arch-check: ok (domain has no dependencies; usecase, api and adapters respect the hexagon)"
exit "$fail"
