#!/usr/bin/env bash
# Runs a command with ministack (from .venv-ministack) on a free 127.0.0.1 port, exported
# as RECOUP_BENCH_MINISTACK_ENDPOINT; stops it afterwards, whatever happens. The bench uses
# it for the DynamoDB capacity that transactions consume, which moto does not report.
#
#   infra/scripts/with-ministack.sh target/release/recoup-bench store
set -euo pipefail
cd "$(dirname "$0")/../.."
infra/scripts/ministack-venv.sh

source infra/scripts/emulator.sh
port=$(free_port)
mkdir -p target
BIND_HOST=127.0.0.1 GATEWAY_PORT="$port" PERSIST_STATE=0 S3_PERSIST=0 IOT_MTLS_ENABLED=0 \
    setsid .venv-ministack/bin/ministack > target/ministack.log 2>&1 &
ministack_pid=$!
# ministack starts helper processes: stop its whole process group.
trap 'kill -TERM -- "-$ministack_pid" 2>/dev/null || true; wait "$ministack_pid" 2>/dev/null || true' EXIT

wait_until_up ministack "$ministack_pid" target/ministack.log "http://127.0.0.1:$port/_ministack/health"
export RECOUP_BENCH_MINISTACK_ENDPOINT="http://127.0.0.1:$port"
echo "ministack on $RECOUP_BENCH_MINISTACK_ENDPOINT" >&2
"$@"
