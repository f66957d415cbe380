#!/usr/bin/env bash
# Every test, in the order a failure is cheapest to learn about:
#   1. the SAM template: cfn-lint and sam validate (offline)
#   2. clippy, warnings denied
#   3. the Lambda binaries: cargo lambda build --profile lambda (the runtime-API tests and
#      the deployed stack run them), each zip within 3 MB
#   then, beside step 4, the deployed stack: template.yaml on ministack and the README
#      walkthroughs through its HTTP API (infra/scripts/e2e-aws.sh, docs/deployed-stack.md)
#   4. cargo nextest over the whole workspace, with moto_server and localstripe on
#      127.0.0.1: unit tests,
#      the store contract on every backend, engine scenarios and the property test (10,000
#      cases), the Stripe adapter and the engine over localstripe, the dunning story
#      through EventBridge and SQS on moto, the local product end to end and its crash
#      test (50 SIGKILLs under load), the Lambda binaries through the Runtime API
#      (a charge worker killed between claim and settle included), the template and
#      OpenAPI checks
#   5. the API contract under a fuzzer: schemathesis against recoup-local, as the merchant
#      and as an owner, every check (infra/scripts/contract.sh)
#   6. the hosted card form in headless Chromium, on the sandbox and on localstripe
#      (infra/scripts/browser.sh)
# `make test` installs the tools first (.venv) and then runs this.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
step() { printf '\n== %s\n' "$*"; }

step "SAM template"
infra/scripts/lint-template.sh

step "clippy"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "Lambda binaries"
infra/scripts/build-lambdas.sh

# The deployed stack mostly waits (for the first run of its five-minute retry schedule),
# so it runs beside the tests, its output kept in target/e2e-aws.log and shown at the end.
step "the deployed stack on ministack (infra/scripts/e2e-aws.sh), in the background"
mkdir -p target
infra/scripts/e2e-aws.sh > target/e2e-aws.log 2>&1 &
e2e_pid=$!
# Whatever stops this script stops the deployed-stack run too (it tears its stack down).
trap 'kill -TERM "$e2e_pid" 2>/dev/null || true; wait "$e2e_pid" 2>/dev/null || true' EXIT

step "tests"
tests_status=0
infra/scripts/with-moto.sh infra/scripts/with-localstripe.sh \
    cargo nextest run --workspace --all-features --no-fail-fast || tests_status=$?

step "the deployed stack on ministack: its output"
e2e_status=0
wait "$e2e_pid" || e2e_status=$?
trap - EXIT
cat target/e2e-aws.log
(( tests_status == 0 )) || { echo "error: cargo nextest failed ($tests_status)" >&2; exit "$tests_status"; }
(( e2e_status == 0 )) || { echo "error: the deployed-stack test failed ($e2e_status)" >&2; exit "$e2e_status"; }

step "API contract (schemathesis)"
infra/scripts/contract.sh

step "the hosted card form in a browser (Chromium, Playwright)"
infra/scripts/with-localstripe.sh infra/scripts/browser.sh
