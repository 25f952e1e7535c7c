#!/usr/bin/env bash
# Browser end-to-end tests of the web client against a real confab-gateway (everything
# in-process: SQLite, local files, in-process limits) whose chat service talks to the fake
# OpenAI server in this directory. Installs what it needs (chromium, playwright-core),
# builds the web bundle and the gateway, runs the tests, stops what it started.
# Screenshots: $CONFAB_TEST_OUTPUT/web (default tests-output/web).
# Env: SKIP_WEB_BUILD=1 (reuse web/dist), GATEWAY_BIN (prebuilt binary), E2E_FILTER (test name regex).
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WEB_DIR="$(dirname "$E2E_DIR")"
ROOT="$(dirname "$WEB_DIR")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/confab/target}"
OUT="${CONFAB_TEST_OUTPUT:-$ROOT/tests-output}/web"
mkdir -p "$OUT"
log() { printf '\033[1mweb-e2e:\033[0m %s\n' "$*" >&2; }

# Tools.
if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium chromium-driver \
    || { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }
fi
if [ ! -d "$E2E_DIR/node_modules/playwright-core" ]; then
  log "installing playwright-core (npm; no browser download)"
  (cd "$E2E_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi

# Builds.
[ -n "${SKIP_WEB_BUILD:-}" ] && [ -f "$WEB_DIR/dist/index.html" ] || bash "$WEB_DIR/build.sh"
GATEWAY_BIN="${GATEWAY_BIN:-}"
if [ -z "$GATEWAY_BIN" ]; then
  log "building confab-gateway"
  (cd "$ROOT" && cargo build -p confab-gateway --bin confab-gateway)
  GATEWAY_BIN="$CARGO_TARGET_DIR/debug/confab-gateway"
fi

WORK="$(mktemp -d -t confab-web-e2e.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

python3 "$E2E_DIR/fixtures.py" "$WORK/fixtures"

FAKE_PORT=$(free_port)
node "$E2E_DIR/fake-openai.mjs" "$FAKE_PORT" > "$OUT/fake-openai.log" 2>&1 &
pids+=($!)

# start_gateway NAME PORT RATE_LIMIT_PER_MINUTE: one whole-product gateway with its own data dir.
start_gateway() {
  local name=$1 port=$2 rpm=$3
  CONFAB_ADDR="127.0.0.1:$port" \
  CONFAB_DATA_DIR="$WORK/data-$name" \
  CONFAB_WEB_DIR="$WEB_DIR/dist" \
  CONFAB_MODEL_PATH="$WORK/no-embedded-model.gguf" \
  CONFAB_SESSION_SECRET="e2e-session-secret-0123456789abcdef" \
  OPENAI_API_KEY="sk-e2e-fake" \
  OPENAI_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" \
  OPENAI_MODEL="gpt-4o" \
  OPENAI_TITLE_MODEL="gpt-4o-mini" \
  RATE_LIMIT_PER_MINUTE="$rpm" \
  DAILY_TOKEN_BUDGET=10000000 \
  MAX_CONCURRENT_STREAMS=20 \
  LOG_FORMAT=pretty RUST_LOG="${RUST_LOG:-info}" \
    "$GATEWAY_BIN" > "$OUT/gateway-$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { log "gateway $name exited; see $OUT/gateway-$name.log"; tail -20 "$OUT/gateway-$name.log" >&2; exit 1; }
    sleep 0.2
  done
  log "gateway $name not healthy after 60 s"; exit 1
}

GW_PORT=$(free_port)
start_gateway main "$GW_PORT" 1000
LIMITED_PORT=$(free_port)
start_gateway limited "$LIMITED_PORT" 2
log "gateways on :$GW_PORT and :$LIMITED_PORT (2 requests/min), fake OpenAI on :$FAKE_PORT"

cd "$E2E_DIR"
BASE_URL="http://127.0.0.1:$GW_PORT" LIMITED_URL="http://127.0.0.1:$LIMITED_PORT" FAKE_URL="http://127.0.0.1:$FAKE_PORT" \
FIXTURES="$WORK/fixtures" OUT_DIR="$OUT" \
  node --test --test-concurrency=1 --test-reporter=spec ${E2E_FILTER:+--test-name-pattern="$E2E_FILTER"} app.test.mjs
