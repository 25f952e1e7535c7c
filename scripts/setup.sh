#!/usr/bin/env bash
# Installs what building and testing Confab needs, only when missing (idempotent).
#   scripts/setup.sh test   → toolchain components, redis-server, the MongoDB-wire test server
#   scripts/setup.sh run    → toolchain components and the embedded model file
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}
cache="${CONFAB_CACHE:-$HOME/.cache/confab}"
mkdir -p "$cache"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Rust toolchain pieces (rustup is on this machine kind).
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

if [ "$mode" = test ]; then
  command -v redis-server >/dev/null || apt_install redis-server
  # MongoDB-wire server for tests (no real mongod can be installed here): see RECIPES.md.
  venv="$cache/mongo-venv"
  if [ ! -x "$venv/bin/secantusd-py" ]; then
    log "installing SecantusDB (MongoDB-wire test server) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q secantusdb==0.7.0b3
  fi
fi

[ "$mode" = test ] && bash scripts/install-machete.sh >/dev/null # make lint: unused dependencies

if [ "$mode" = run ]; then
  bash scripts/fetch-model.sh
fi
log "ready ($mode)"
