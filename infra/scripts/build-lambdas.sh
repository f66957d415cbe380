#!/usr/bin/env bash
# Builds every Recoup Lambda function with cargo-lambda (profile `lambda`: release optimised
# for size, see Cargo.toml; x86_64) and leaves, for
# each function <name>:
#   target/lambda/<name>/bootstrap.zip   the deployment package (what SAM / Lambda upload)
#   target/lambda/<name>/bootstrap       the executable in it (what the runtime-API tests run)
#
# Run from the repository root: infra/scripts/build-lambdas.sh
#
# Linking: cargo-lambda compiles C and links through zig (cargo-zigbuild) by default, against
# zig's glibc stubs rather than the build machine's glibc, so the binaries need no newer
# glibc than the Lambda `provided.al2023` runtime has (they reference GLIBC_2.30 at most;
# al2023 has 2.34). It finds zig as `python3 -m ziglang`, so .venv/bin (whose python3 has
# the ziglang wheel) must come first on PATH. The only C/asm is ring's (rustls with ring,
# see shared/src/aws.rs; no aws-lc, so no cmake), which zig's clang builds as is.
#
# Only x86_64 is built: the aarch64 Rust target is not installed on this machine.
#
# PAYMENT_PROVIDERS picks the payment providers compiled in (default: "sandbox stripe", so
# one package set runs with either PaymentProvider). A build for real money leaves the
# sandbox out: PAYMENT_PROVIDERS=stripe infra/scripts/build-lambdas.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV="$ROOT/.venv"

if [[ ! -x "$VENV/bin/cargo-lambda" ]]; then
    echo "error: $VENV/bin/cargo-lambda is missing; run \`make tools\` first" >&2
    exit 1
fi
export PATH="$VENV/bin:$PATH"

# Every function crate (a directory under functions/ with a binary). The template test
# checks these are exactly the functions of the registry (functions/registry).
FUNCTIONS=()
for main in functions/*/src/main.rs; do
    FUNCTIONS+=("$(basename "$(dirname "$(dirname "$main")")")")
done

packages=()
for f in "${FUNCTIONS[@]}"; do
    packages+=(-p "$f")
done

features=lambda
for provider in ${PAYMENT_PROVIDERS:-sandbox stripe}; do
    case "$provider" in
        sandbox|stripe) features+=",$provider" ;;
        *) echo "error: unknown payment provider \"$provider\" in PAYMENT_PROVIDERS (sandbox, stripe)" >&2; exit 1 ;;
    esac
done

started=$(date +%s)

# One build: cargo-lambda compiles every function and writes the deployment packages,
# target/lambda/<name>/bootstrap.zip (a single `bootstrap` entry, mode 0755). With
# `--output-format zip` it writes only the zip, so the executable is taken out of it: the
# bootstrap the tests run is byte for byte the one that ships. (A second
# `--output-format binary` build would be a separate cargo run that can pick up sources
# edited in between.)
cargo lambda build --profile lambda --x86-64 --output-format zip --no-default-features --features "$features" "${packages[@]}"

for f in "${FUNCTIONS[@]}"; do
    dir="target/lambda/$f"
    rm -f "$dir/bootstrap"
    python3 - "$dir" <<'PY'
import os, sys, zipfile
d = sys.argv[1]
with zipfile.ZipFile(os.path.join(d, "bootstrap.zip")) as z:
    z.extract("bootstrap", d)
os.chmod(os.path.join(d, "bootstrap"), 0o755)
PY
done

elapsed=$(($(date +%s) - started))

# The size budget: every package at most 3,000,000 bytes (a hello-world function is about
# 0.9 MB). A dependency that breaks it fails the build, so growth is a decision.
BUDGET=3000000
failed=0
printf '%-22s %12s %12s\n' function bootstrap zip
for f in "${FUNCTIONS[@]}"; do
    dir="target/lambda/$f"
    if [[ ! -x "$dir/bootstrap" || ! -f "$dir/bootstrap.zip" ]]; then
        echo "error: $dir/bootstrap or $dir/bootstrap.zip was not produced" >&2
        failed=1
        continue
    fi
    zip_size=$(stat -c %s "$dir/bootstrap.zip")
    printf '%-22s %12s %12s\n' "$f" "$(stat -c %s "$dir/bootstrap")" "$zip_size"
    if (( zip_size > BUDGET )); then
        echo "error: $dir/bootstrap.zip is $zip_size bytes, over the budget of $BUDGET" >&2
        failed=1
    fi
done
echo "built ${#FUNCTIONS[@]} functions (features: $features) in ${elapsed}s; every zip within $BUDGET bytes unless said above"
exit "$failed"
