#!/usr/bin/env bash
# Every test, in the order a failure is cheapest to learn about:
#   1. the SAM template: cfn-lint and sam validate (offline)
#   2. clippy, warnings denied
#   3. the Lambda binaries: cargo lambda build --profile lambda (the runtime-API tests run them)
#   4. cargo nextest over the whole workspace, with moto_server and localstripe on
#      127.0.0.1: unit tests,
#      the store contract on both backends, engine scenarios and the property test, the
#      Stripe adapter and the engine over localstripe, the
#      dunning story through EventBridge and SQS on moto, the local product end to end, the
#      Lambda binaries through the Runtime API, the template and OpenAPI checks
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

step "tests"
infra/scripts/with-moto.sh infra/scripts/with-localstripe.sh \
    cargo nextest run --workspace --all-features --no-fail-fast

step "API contract (schemathesis)"
infra/scripts/contract.sh

step "the hosted card form in a browser (Chromium, Playwright)"
infra/scripts/with-localstripe.sh infra/scripts/browser.sh
