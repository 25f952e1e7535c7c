#!/usr/bin/env bash
# Runs every files fuzz target briefly (FUZZ_SECS each, default 20) with rustup's nightly.
# Installs cargo-fuzz only if it is missing.
set -euo pipefail
cd "$(dirname "$0")"
SECS="${FUZZ_SECS:-20}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/confab/fuzz-target}"
for target in pdf docx xlsx image detect_text; do
  echo "== fuzz $target (${SECS}s)"
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -max_len=1048576
done
