#!/usr/bin/env bash
# Prints Recoup's measured figures (Markdown) — the ones in the README. Builds the Lambda
# functions and a hello-world baseline with cargo-lambda, then runs recoup-bench (release)
# with moto_server and ministack for the DynamoDB rows (ministack reports the capacity
# transactions consume).
#   RECOUP_BENCH_INVOICES=1000        invoices in the simulated dunning month
#   RECOUP_BENCH_SWEEP_ITEMS=100000   invoices stored for the embedded sweep
#   RECOUP_BENCH_MOTO_SWEEP_ITEMS=20000 invoices stored for the DynamoDB (moto) sweep
#   RECOUP_BENCH_SIM_INVOICES=1000000 invoices in the in-memory month (`sim`)
#   RECOUP_LOAD_SECONDS=10            seconds per client count in the HTTP load test
# Arguments choose sections (store month sim sweep binaries startup); none runs them all,
# then the HTTP load test (recoup-load) against recoup-local.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
infra/scripts/build-lambdas.sh >&2
cargo lambda build --profile lambda --x86-64 --output-format zip -p recoup-bench --bin hello-lambda >&2
python3 -c 'import zipfile; zipfile.ZipFile("target/lambda/hello-lambda/bootstrap.zip").extract("bootstrap", "target/lambda/hello-lambda")'
chmod 755 target/lambda/hello-lambda/bootstrap
cargo build --release -p recoup-bench --bin recoup-bench --bin recoup-load >&2
cargo build --release -p recoup-local --bin recoup-local >&2
echo "Measured on: $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d)"
echo
infra/scripts/with-moto.sh infra/scripts/with-ministack.sh target/release/recoup-bench "$@"
if [ $# -eq 0 ]; then
    seconds="${RECOUP_LOAD_SECONDS:-10}"
    target/release/recoup-load --seconds "$seconds" --clients 1,8
    target/release/recoup-load --seconds "$seconds" --clients 1,8 --shared-card
fi
