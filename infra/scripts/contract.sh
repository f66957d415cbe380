#!/usr/bin/env bash
# The API contract under a fuzzer: schemathesis (from .venv) against recoup-local with
# docs/openapi.yaml, every check and every phase (examples, coverage, fuzzing, stateful),
# a bounded number of examples, once as the merchant and once as a customer's owner.
# Fails on any 5xx and on any disagreement between the code and the document; prints how
# many requests the product served.
#   RECOUP_CONTRACT_EXAMPLES=25   examples per operation in the fuzzing phase
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ST="$ROOT/.venv/bin/schemathesis"
[[ -x "$ST" ]] || { echo "error: $ST is missing; run \`make tools\` first" >&2; exit 1; }
EXAMPLES=${RECOUP_CONTRACT_EXAMPLES:-25}

# Built as the test run builds it (the workspace's test targets, all features, which
# includes the recoup-local binary the end-to-end tests run): after `make test`'s nextest
# step this compiles nothing.
cargo test --quiet --workspace --all-features --no-run 2>/dev/null
RL="$ROOT/target/debug/recoup-local"
data=$(mktemp -d)
source infra/scripts/emulator.sh
port=$(free_port)
log="$ROOT/target/contract-recoup-local.log"
# A webhook signing secret, so the Stripe webhook route answers (400 invalid_signature to
# everything the fuzzer sends) rather than 503 not configured.
RECOUP_STRIPE_WEBHOOK_SECRET=whsec_contract_fuzzing \
    "$RL" serve --addr "127.0.0.1:$port" --data-dir "$data" --tick-seconds 0 > "$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -fs -o /dev/null "$base/health" && break
    kill -0 "$pid" 2>/dev/null || { echo "error: recoup-local exited; see $log" >&2; exit 1; }
    sleep 0.1
done

merchant=$("$RL" token --role merchant)
# A customer with a card, so operations on a customer's data reach the engine.
customer=$(curl -fs -X POST "$base/v1/customers" -H "Authorization: Bearer $merchant" \
    -d '{"email": "contract@example.com", "name": "Contract"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
owner=$("$RL" token --role owner --customer "$customer")
curl -fs -o /dev/null -X POST "$base/v1/payment-methods" -H "Authorization: Bearer $owner" \
    -d '{"payment_method": "pm_card_visa"}'

status=0
passed=0
failed=0
for role in merchant owner; do
    token=$merchant
    [[ $role == owner ]] && token=$owner
    echo "== schemathesis as the $role"
    out="$ROOT/target/contract-$role.log"
    # Run from target/ so schemathesis's and hypothesis's caches stay out of the tree.
    mkdir -p "$ROOT/target/contract"
    (cd "$ROOT/target/contract" && "$ST" --config-file "$ROOT/infra/contract/schemathesis.toml" run \
        "$ROOT/docs/openapi.yaml" --url "$base" -H "Authorization: Bearer $token" \
        --checks all --max-examples "$EXAMPLES" --seed 20261203 \
        --generation-database none) > "$out" 2>&1 && passed=$((passed + 1)) || { status=1; failed=$((failed + 1)); }
    cat "$out"
    sent=$(grep -Eo '[0-9]+ generated' "$out" | grep -Eo '[0-9]+' || echo 0)
    echo "contract: $sent requests sent as the $role"
done
# Every request that reached a function logs one `request` line (ANSI colours stripped).
requests=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -c ' request method=' || true)
echo "contract: recoup-local's functions answered $requests requests (refusals at the gateway, 401 and unknown routes, are not counted)"
echo "contract: $passed passed, $failed failed"
exit "$status"
