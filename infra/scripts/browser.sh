#!/usr/bin/env bash
# The hosted card form in a real browser (tests/browser): Debian's headless Chromium driven
# by Playwright for Python (both installed by `make tools`; Playwright never downloads a
# browser here), against recoup-local twice: on the sandbox, and on Stripe's API as
# localstripe fakes it, with localstripe's stand-in Stripe.js. Needs localstripe running:
#   infra/scripts/with-localstripe.sh infra/scripts/browser.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY="$ROOT/.venv/bin/python"
CHROMIUM=${RECOUP_CHROMIUM:-/usr/bin/chromium}
[[ -x $CHROMIUM ]] || { echo "error: $CHROMIUM is missing; run \`make tools\` first" >&2; exit 1; }
: "${RECOUP_TEST_STRIPE_ENDPOINT:?run under infra/scripts/with-localstripe.sh}"

# The recoup-local binary the end-to-end tests run: after `make test`'s nextest step this
# compiles nothing.
cargo test --quiet --workspace --all-features --no-run 2>/dev/null
RL="$ROOT/target/debug/recoup-local"
source infra/scripts/emulator.sh

pids=()
dirs=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# start NAME ENV...: recoup-local on a free port, with this environment; sets $url.
start() {
    local name=$1 port data log
    shift
    port=$(free_port)
    data=$(mktemp -d)
    log="$ROOT/target/browser-$name.log"
    env "$@" "$RL" serve --addr "127.0.0.1:$port" --data-dir "$data" --tick-seconds 0 > "$log" 2>&1 &
    pids+=($!)
    dirs+=("$data")
    wait_until_up "recoup-local ($name)" "$!" "$log" "http://127.0.0.1:$port/health"
    url="http://127.0.0.1:$port"
}

mkdir -p target
start sandbox RECOUP_PAYMENT_PROVIDER=sandbox
sandbox=$url
start stripe RECOUP_PAYMENT_PROVIDER=stripe \
    RECOUP_STRIPE_API_BASE="$RECOUP_TEST_STRIPE_ENDPOINT" \
    RECOUP_STRIPE_API_KEY=sk_test_recoup_browser \
    RECOUP_STRIPE_PUBLISHABLE_KEY=pk_test_recoup_browser
stripe=$url

RECOUP_LOCAL_BIN="$RL" RECOUP_CHROMIUM="$CHROMIUM" RECOUP_SANDBOX_URL="$sandbox" RECOUP_STRIPE_URL="$stripe" \
    "$PY" -m pytest -q -p no:cacheprovider "$ROOT/tests/browser"
