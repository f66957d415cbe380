# Recoup — the two commands: `make run` (the whole product on this machine) and
# `make test` (installs every tool the tests need, then runs them all).

VENV      := .venv
TOOLS     := $(VENV)/.installed
# ministack and its SAM translator, for `make e2e-aws` (docs/deployed-stack.md).
E2E_VENV  := .venv-ministack
E2E_TOOLS := $(E2E_VENV)/.installed
CARGO     ?= cargo

.PHONY: run test tools lint-template build-lambdas bench e2e-aws clean-venv

run:
	$(CARGO) run --release -p recoup-local -- serve

tools: $(TOOLS) $(E2E_TOOLS)

$(TOOLS): requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	@command -v cargo-nextest >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest
	infra/scripts/install-chromium.sh
	touch $@

test: tools
	infra/scripts/test.sh

lint-template: tools
	infra/scripts/lint-template.sh

build-lambdas: tools
	infra/scripts/build-lambdas.sh

bench: tools
	infra/scripts/bench.sh

$(E2E_TOOLS): infra/e2e/requirements.txt
	infra/scripts/ministack-venv.sh

# Deploys template.yaml on ministack and runs the walkthroughs through it; needs the zips
# of `make build-lambdas`.
e2e-aws: $(E2E_TOOLS)
	infra/scripts/e2e-aws.sh

clean-venv:
	rm -rf $(VENV) $(E2E_VENV)
