# Thin aliases over cargo. `make run` and `make test` are the two commands that matter.

CARGO        ?= cargo
# Test threads per test binary (database suites are I/O-bound; 2 cores are enough for 4).
TEST_THREADS ?= 4

.PHONY: run test lint fmt arch-check migrate test-unit test-db test-e2e clean-test-dbs fake-provider fuzz-api test-interop bench test-reliability web test-browser screenshots

## Start the server on the embedded SQLite file (created and migrated on first start).
run:
	$(CARGO) run -p arbor -- serve

## Everything CI runs: lint, architecture check, unit + doc tests, the repository suite on
## SQLite, PostgreSQL and MariaDB, and the end-to-end tests. Prints counts per backend.
test: lint arch-check
	TEST_THREADS=$(TEST_THREADS) CARGO=$(CARGO) bash tests/scripts/run-tests.sh

## Formatting check and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Fails if the hexagon's dependency rules are broken.
arch-check:
	bash tests/scripts/arch-check.sh

## The fake OpenAI-compatible provider on 127.0.0.1:8089 (no API key needed).
fake-provider:
	$(CARGO) run -p fake-provider -- 127.0.0.1:8089

## Apply pending migrations to the configured database.
migrate:
	$(CARGO) run -p arbor -- migrate up

## Partial runs.
test-unit:
	TEST_THREADS=$(TEST_THREADS) CARGO=$(CARGO) bash tests/scripts/run-tests.sh unit
test-db:
	TEST_THREADS=$(TEST_THREADS) CARGO=$(CARGO) bash tests/scripts/run-tests.sh db
test-e2e:
	TEST_THREADS=$(TEST_THREADS) CARGO=$(CARGO) bash tests/scripts/run-tests.sh e2e

## API fuzzing: schemathesis (from PyPI) against the served OpenAPI document, as a logged-in
## user; fails on any 5xx or any response that breaks its documented schema.
FUZZ_EXAMPLES ?= 50
FUZZ_SEED     ?= 20261128
fuzz-api:
	CARGO=$(CARGO) bash tests/scripts/fuzz-api.sh $(FUZZ_EXAMPLES) $(FUZZ_SEED)

## The official OpenAI SDKs (Python, Node) against a live Arbor, and the LiteLLM proxy as its
## upstream (clients installed from PyPI/npm into target/ on first use).
test-interop:
	CARGO=$(CARGO) bash tests/scripts/interop.sh

## The web client: rebuild crates/web/dist from crates/web/app (Node.js and npm; the built
## files are committed, so `make run` never needs this).
web:
	cd crates/web && npm ci --silent --no-audit --no-fund && node build.mjs

## The web client in headless Chromium (Debian's package) against a live Arbor; also fails
## when crates/web/dist is stale.
test-browser:
	CARGO=$(CARGO) bash tests/scripts/browser.sh

## Screenshots of the main views (docs/screenshots/, shown in the README).
screenshots:
	CARGO=$(CARGO) bash tests/scripts/browser.sh screenshots

## Load scenarios P1-P5 on a release build (SQLite and PostgreSQL); figures go to BENCHMARKS.md.
## One scenario: make bench SCENARIO=p3. Smaller sizes: make bench BENCH_FLAGS=--quick
SCENARIO    ?= all
BENCH_FLAGS ?=
bench:
	CARGO=$(CARGO) bash tests/scripts/bench.sh $(SCENARIO) $(BENCH_FLAGS)

## Reliability scenarios R1-R14 on every backend (full sizes; CI: RELIABILITY_SCALE=ci).
RELIABILITY_SCALE ?= full
test-reliability:
	RELIABILITY_SCALE=$(RELIABILITY_SCALE) CARGO=$(CARGO) bash tests/scripts/reliability.sh

## Drop test databases left behind by interrupted test runs.
clean-test-dbs:
	bash tests/scripts/clean-test-dbs.sh
