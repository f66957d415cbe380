#!/usr/bin/env bash
# Runs a command with localstripe (a stateful fake of Stripe's API, from PyPI) on a free
# 127.0.0.1 port, exported as RECOUP_TEST_STRIPE_ENDPOINT; stops it afterwards, whatever
# happens. localstripe's own launcher listens on every interface, so it is started here
# bound to 127.0.0.1 only, with an empty store.
#
#   infra/scripts/with-localstripe.sh cargo nextest run -p recoup-stripe
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="$PWD/.venv/bin/python"
"$PY" -c 'import localstripe' 2>/dev/null || { echo "error: localstripe is missing from .venv; run \`make tools\` first" >&2; exit 1; }

source infra/scripts/emulator.sh
port=$(free_port)
mkdir -p target
"$PY" - "$port" > target/localstripe.log 2>&1 <<'PY' &
import logging, sys
from aiohttp import web
from localstripe.server import app
logging.basicConfig(level=logging.INFO)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=logging.getLogger("aiohttp.access"))
PY
ls_pid=$!
trap 'kill "$ls_pid" 2>/dev/null || true; wait "$ls_pid" 2>/dev/null || true' EXIT

wait_until_up localstripe "$ls_pid" target/localstripe.log -u sk_test_recoup: "http://127.0.0.1:$port/v1/customers"
export RECOUP_TEST_STRIPE_ENDPOINT="http://127.0.0.1:$port"
echo "localstripe on $RECOUP_TEST_STRIPE_ENDPOINT" >&2
"$@"
