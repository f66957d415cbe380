#!/usr/bin/env bash
# Runs a command with moto_server (DynamoDB, EventBridge, SQS) on a free 127.0.0.1 port,
# exported as RECOUP_TEST_AWS_ENDPOINT; stops the emulator afterwards, whatever happens.
#
#   infra/scripts/with-moto.sh cargo nextest run --workspace
set -euo pipefail
cd "$(dirname "$0")/../.."
MOTO="$PWD/.venv/bin/moto_server"
[[ -x "$MOTO" ]] || { echo "error: $MOTO is missing; run \`make tools\` first" >&2; exit 1; }

source infra/scripts/emulator.sh
port=$(free_port)
mkdir -p target
# moto_server, with its DynamoDB backend taking one request at a time (the script says why).
"$PWD/.venv/bin/python" infra/scripts/moto_server_serialised.py -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT

wait_until_up moto_server "$moto_pid" target/moto.log "http://127.0.0.1:$port/moto-api/"
export RECOUP_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
echo "moto_server on $RECOUP_TEST_AWS_ENDPOINT" >&2
"$@"
