#!/usr/bin/env bash
# Lints template.yaml offline with the tools `make tools` installs into .venv:
#   1. cfn-lint                       CloudFormation schema and best-practice rules
#   2. sam validate                   the SAM transform itself (runs locally)
#   3. sam validate --lint            SAM's bundled cfn-lint pass over the template
# Any error fails the script. Whether the template agrees with the code (functions,
# routes, rules, queues, table) is checked by tests/tests/template/.
#
# Run from anywhere: infra/scripts/lint-template.sh
#
# Nothing here calls AWS: SAM translates and lints locally (the template names no managed
# policies, so no IAM lookups). A region is required and the SDK may look for
# credentials, so dummy ones are set unless real ones are already in the environment;
# telemetry is turned off so no network call is attempted.
#
# No cfn-lint rule is disabled. If one ever has to be, put `--ignore-checks <rule>` in
# CFN_LINT_ARGS below with a comment saying why.
set -euo pipefail

cd "$(dirname "$0")/../.."
VENV="$PWD/.venv"
TEMPLATE=template.yaml

for tool in cfn-lint sam; do
    if [[ ! -x "$VENV/bin/$tool" ]]; then
        echo "error: $VENV/bin/$tool is missing; run \`make tools\` first" >&2
        exit 1
    fi
done

export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="${AWS_REGION:-$AWS_DEFAULT_REGION}"
if [[ -z "${AWS_ACCESS_KEY_ID:-}" && -z "${AWS_PROFILE:-}" ]]; then
    export AWS_ACCESS_KEY_ID=lint AWS_SECRET_ACCESS_KEY=lint
fi
export SAM_CLI_TELEMETRY=0

CFN_LINT_ARGS=()

echo "== cfn-lint $TEMPLATE"
"$VENV/bin/cfn-lint" "${CFN_LINT_ARGS[@]}" -- "$TEMPLATE"
echo "ok"

echo "== sam validate --template $TEMPLATE"
"$VENV/bin/sam" validate --template "$TEMPLATE"

echo "== sam validate --lint --template $TEMPLATE"
"$VENV/bin/sam" validate --lint --template "$TEMPLATE"
