#!/usr/bin/env bash
# Creates .venv-ministack, the virtualenv of the deployed-stack test (ministack, the SAM
# translator, boto3, PyJWT), from infra/e2e/requirements.txt; does nothing when it is
# already installed from the current requirements. ministack gets a virtualenv of its
# own: with the SAM translator beside it, it needs a botocore that aws-sam-cli in .venv
# does not accept.
#
# Run from anywhere: infra/scripts/ministack-venv.sh (`make tools` and
# infra/scripts/e2e-aws.sh call it).
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-ministack
REQUIREMENTS=infra/e2e/requirements.txt
STAMP="$VENV/.installed"

if [[ -f "$STAMP" && "$STAMP" -nt "$REQUIREMENTS" && -x "$VENV/bin/python" ]]; then
    exit 0
fi
echo "creating $VENV from $REQUIREMENTS" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
touch "$STAMP"
