#!/usr/bin/env bash
# The web client in a real browser: Debian's Chromium (headless), driven by playwright-core
# from npm (which downloads no browser of its own), against a live Arbor whose upstream is
# the fake provider. Also checks that the committed crates/web/dist is what the sources
# build to.
#   tests/scripts/browser.sh              the browser tests (crates/web/tests/*.test.mjs)
#   tests/scripts/browser.sh screenshots  docs/screenshots/*.png (desktop and phone width)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo=${CARGO:-cargo}
mode=${1:-test}
# shellcheck source=live.sh
source tests/scripts/live.sh

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "==> installing Debian's chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -f crates/web/node_modules/playwright-core/package.json ] || \
   [ crates/web/package-lock.json -nt crates/web/node_modules/.package-lock.json ]; then
  echo "==> installing the client's packages (npm ci)"
  (cd crates/web && npm ci --silent --no-audit --no-fund)
fi
echo "==> checking that crates/web/dist matches its sources"
node crates/web/build.mjs --check > /dev/null

echo "==> building"
$cargo build --quiet -p arbor -p fake-provider

mapfile -t models < <(node -e 'for (const m of Object.values(require(process.argv[1]))) console.log(m)' "$PWD/crates/web/tests/models.json")
start_fake_provider "${models[@]}"
# Every test registers its own user from one address; one fills a list past its first page.
export ARBOR__AUTH__REGISTER_PER_WINDOW=100 ARBOR__AUTH__LOGIN_PER_WINDOW=100 \
  ARBOR__RATE_LIMITS__CREATE_CHAT_PER_MINUTE=100 ARBOR__RATE_LIMITS__HISTORY_PER_MINUTE=300
start_arbor browser "$provider_url" ""

export ARBOR_URL=$arbor_url CHROMIUM=$chromium
if [ "$mode" = screenshots ]; then
  # Japanese text needs a Japanese font (the tests do not: they read text, not pixels).
  if ! fc-list :lang=ja | grep -q .; then
    echo "==> installing a Japanese font for the screenshots"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-ipafont-gothic >/dev/null
  fi
  mkdir -p docs/screenshots
  node crates/web/tests/screenshots.mjs docs/screenshots
else
  node --test --test-concurrency=1 crates/web/tests/
fi
