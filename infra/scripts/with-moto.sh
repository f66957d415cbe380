#!/usr/bin/env bash
# Runs a command with moto_server (DynamoDB, EventBridge, SQS) on a free 127.0.0.1 port,
# exported as RECOUP_TEST_AWS_ENDPOINT; stops the emulator afterwards, whatever happens.
#
#   infra/scripts/with-moto.sh cargo nextest run --workspace
set -euo pipefail
cd "$(dirname "$0")/../.."
MOTO="$PWD/.venv/bin/moto_server"
[[ -x "$MOTO" ]] || { echo "error: $MOTO is missing; run \`make tools\` first" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
"$MOTO" -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 60); do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/moto-api/"; then
        break
    fi
    kill -0 "$moto_pid" 2>/dev/null || { echo "error: moto_server exited; see target/moto.log" >&2; exit 1; }
    sleep 0.5
done
export RECOUP_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
echo "moto_server on $RECOUP_TEST_AWS_ENDPOINT" >&2
"$@"
