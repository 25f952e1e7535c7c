# Confab — see README.md. Every target installs what it needs (idempotently).
SHELL := /bin/bash
# One shared build directory outside the clone: CI and later runs on this machine reuse it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/confab/target
export CONFAB_TEST_OUTPUT ?= $(CURDIR)/tests-output
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/debug

.PHONY: all setup build run test test-rust lint fmt web run-mesh stop-mesh smoke-mesh infra-check test-web clean-data \
        bench-conversation bench-files bench-ratelimit bench-chat bench-gateway

all: build

setup:
	@bash scripts/setup.sh test

build:
	$(CARGO) build --workspace --bins

## make run: the whole product in one process (SQLite, local files, in-process limits,
## embedded model) on http://localhost:8080
run:
	@bash scripts/setup.sh run
	@if [ -f web/build.sh ]; then bash web/build.sh; fi
	$(CARGO) build -p confab-gateway --bin confab-gateway
	$(BIN)/confab-gateway

## make test: installs what tests need, then every test of every crate, lint, fuzz (briefly),
## the web client in Chromium, infra checks, and the distributed mode end to end.
test: setup
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) lint
	bash services/extract/fuzz/run.sh 10
	$(MAKE) test-web
	bash infra/checks/run.sh
	$(MAKE) smoke-mesh

## The web client: host unit tests of its logic, then the wasm build and browser tests in
## headless Chromium against a real gateway (installs chromium, playwright-core, wasm toolchain).
test-web:
	cd web/core && $(CARGO) test
	bash web/e2e/run.sh

test-rust: setup
	$(CARGO) test --workspace --no-fail-fast

## make lint: rustfmt and clippy (-D warnings) over the root workspace and the web client
## (its own workspace; clippy over web/core, the host-testable part), then unused
## dependencies: cargo-machete per crate (installed once when missing) and the
## workspace table (an entry no member uses).
lint:
	$(CARGO) fmt --all --check
	# -p, not --all: --all also formats path dependencies, i.e. the root workspace through confab-proto.
	cd web && $(CARGO) fmt -p confab-web -p confab-web-core --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd web/core && $(CARGO) clippy --all-targets -- -D warnings
	"$$(bash scripts/install-machete.sh)" --skip-target-dir
	python3 scripts/unused-workspace-deps.py

fmt:
	$(CARGO) fmt --all

web:
	bash web/build.sh

run-mesh: build
	bash infra/mesh/run-mesh.sh

stop-mesh:
	bash infra/mesh/stop-mesh.sh

## The distributed mode end to end on this machine (redis, MongoDB-wire server, one process per service).
smoke-mesh: build
	bash infra/mesh/smoke.sh

## Offline checks of infra/ and .github/ (cfn-lint, checkov, hadolint, actionlint, schemas, botocore, metric names).
infra-check:
	bash infra/checks/run.sh

clean-data:
	rm -rf ./data

# Benchmarks (same dev profile as tests; each prints ratios against a baseline measured in the same run).
bench-conversation: setup
	$(CARGO) run -p confab-conversation --example bench-conversation
bench-files: setup
	$(CARGO) run -p confab-files --example bench-files
bench-ratelimit: setup
	$(CARGO) run -p confab-ratelimit --example bench-ratelimit
bench-chat: setup
	$(CARGO) run -p confab-chat --example bench-chat
bench-gateway: setup
	$(CARGO) run -p confab-gateway --example bench-gateway
