#!/usr/bin/env bash
# The deployed-stack test (`make e2e-aws`): deploys template.yaml on ministack (a local AWS
# emulator: CloudFormation with the SAM transform, Lambda running the bootstrap zips as
# processes, API Gateway v2 with its JWT authorizer, EventBridge, SQS, DynamoDB) on
# 127.0.0.1 and runs the README walkthroughs through the deployed HTTP API, then deletes
# the stack and stops ministack. See docs/deployed-stack.md.
#
# It deploys the zips infra/scripts/build-lambdas.sh left in target/lambda/<name>/bootstrap.zip
# and never builds them: run `make build-lambdas` first.
#
#   infra/scripts/e2e-aws.sh
#   E2E_RETRY_SCHEDULE=20s,40s infra/scripts/e2e-aws.sh   # one retry sweep per offset
#
# Logs (ministack's, the identity provider's certificate) go to target/e2e-aws/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV="$ROOT/.venv-ministack"
WORKDIR="$ROOT/target/e2e-aws"

missing=()
for main in functions/*/src/main.rs; do
    name=$(basename "$(dirname "$(dirname "$main")")")
    [[ -f "target/lambda/$name/bootstrap.zip" ]] || missing+=("$name")
done
if (( ${#missing[@]} )); then
    echo "error: no target/lambda/<name>/bootstrap.zip for: ${missing[*]}" >&2
    echo "       build the Lambda packages first: make build-lambdas" >&2
    exit 2
fi

infra/scripts/ministack-venv.sh
mkdir -p "$WORKDIR"

# The driver deletes the stack and stops ministack itself, on failure and on SIGTERM too.
# Should it die without doing so (SIGKILL), ministack's process group is stopped here.
stop_leftover_ministack() {
    local pidfile="$WORKDIR/ministack.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        echo "stopping ministack (pid $pid) left by the driver" >&2
        kill -TERM -- "-$pid" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}
trap stop_leftover_ministack EXIT

"$VENV/bin/python" infra/e2e/main.py --repo "$ROOT" --workdir "$WORKDIR" \
    --retry-schedule "${E2E_RETRY_SCHEDULE:-20s}" &
driver=$!
# A signal to this script is passed on to the driver, which then tears the stack down.
trap 'kill -TERM "$driver" 2>/dev/null || true' TERM INT HUP
status=0
wait "$driver" || status=$?
while kill -0 "$driver" 2>/dev/null; do
    status=0
    wait "$driver" || status=$?
done
exit "$status"
