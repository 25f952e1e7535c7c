#!/usr/bin/env bash
# Builds the Confab web client (Dioxus → wasm32) into web/dist/.
# Idempotent: installs only the toolchain pieces that are missing (see shared RECIPES.md):
#   Debian rustc-web 1.96 + std sources (rustup has no wasm32 target here), lld,
#   wasm-bindgen-cli pinned to Cargo.lock, binaryen's wasm-opt from npm.
# Env: CONFAB_CACHE (default ~/.cache/confab), WEB_DIST (default web/dist), SKIP_WASM_OPT=1.
set -euo pipefail

WEB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CONFAB_CACHE:-$HOME/.cache/confab}"
TOOLS="$CACHE/tools"
NODE_DIR="$CACHE/node"
TARGET_DIR="${WEB_TARGET_DIR:-$CACHE/web-target}"
DIST="${WEB_DIST:-$WEB_DIR/dist}"
start=$(date +%s)

log() { printf '\033[1mweb:\033[0m %s\n' "$*" >&2; }

# 1. Debian's wasm-capable compiler and linker.
need_apt=()
[ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || need_apt+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust/library ] || need_apt+=(rust-web-src)
ls /usr/lib/llvm-*/bin/ld.lld >/dev/null 2>&1 || command -v ld.lld-22 >/dev/null || need_apt+=(lld-22)
dpkg -s rust-web-llvm >/dev/null 2>&1 || need_apt+=(rust-web-llvm)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need_apt[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${need_apt[@]}"; }
fi

# 2. wasm-bindgen-cli at exactly the version in Cargo.lock (the two must match).
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$WEB_DIR/Cargo.lock")
[ -n "$WB_VERSION" ] || { log "wasm-bindgen not found in web/Cargo.lock"; exit 1; }
WASM_BINDGEN="$TOOLS/bin/wasm-bindgen"
if ! { [ -x "$WASM_BINDGEN" ] && "$WASM_BINDGEN" --version | grep -q " $WB_VERSION\$"; }; then
  log "installing wasm-bindgen-cli $WB_VERSION (takes several minutes once)"
  CARGO_TARGET_DIR="$CACHE/tools-target" cargo install wasm-bindgen-cli --version "$WB_VERSION" --root "$TOOLS" --force
fi

# 3. wasm-opt from binaryen 132 (Debian's 108 cannot parse this wasm).
WASM_OPT="$NODE_DIR/node_modules/.bin/wasm-opt"
if [ -z "${SKIP_WASM_OPT:-}" ] && [ ! -x "$WASM_OPT" ]; then
  log "installing binaryen@132 (npm)"
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund binaryen@132
fi

# 4. Build with Debian's compiler, std rebuilt for wasm32, in our own target dir.
log "cargo build (wasm32, release)"
(
  cd "$WEB_DIR"
  env -u RUSTUP_TOOLCHAIN PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_DIR="$TARGET_DIR" \
    /usr/bin/cargo build --locked --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort -p confab-web
)

# 5. Bindings, optimisation, static files.
STAGE="$TARGET_DIR/stage"
rm -rf "$STAGE" && mkdir -p "$STAGE"
"$WASM_BINDGEN" --target web --no-typescript --remove-name-section --out-dir "$STAGE" --out-name confab_web \
  "$TARGET_DIR/wasm32-unknown-unknown/release/confab-web.wasm"
if [ -z "${SKIP_WASM_OPT:-}" ]; then
  log "wasm-opt -Oz"
  "$WASM_OPT" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    -o "$STAGE/confab_web_bg.opt.wasm" "$STAGE/confab_web_bg.wasm"
  mv "$STAGE/confab_web_bg.opt.wasm" "$STAGE/confab_web_bg.wasm"
fi
cp "$WEB_DIR/static/index.html" "$WEB_DIR/static/app.css" "$STAGE/"
cp "$WEB_DIR/static/favicon.svg" "$STAGE/"
# Swap into place in one step so a running gateway never serves a half-written bundle.
mkdir -p "$(dirname "$DIST")"
rm -rf "$DIST.old"; [ -d "$DIST" ] && mv "$DIST" "$DIST.old"
cp -r "$STAGE" "$DIST"
rm -rf "$DIST.old"

# 6. First-load transfer budget: wasm + js + css, gzipped, under 1 MB.
total=0
for f in confab_web_bg.wasm confab_web.js app.css index.html; do
  raw=$(stat -c %s "$DIST/$f"); gz=$(gzip -9 -c "$DIST/$f" | wc -c)
  total=$((total + gz))
  printf '  %-22s %9d B raw %9d B gzip\n' "$f" "$raw" "$gz" >&2
done
printf '  %-22s %29d B gzip (budget 1048576)\n' "first load" "$total" >&2
log "done in $(( $(date +%s) - start )) s → $DIST"
[ "$total" -lt 1048576 ] || { log "first-load size over the 1 MB budget"; exit 1; }
