#!/usr/bin/env bash
# Installs cargo-machete (unused-dependency check of `make lint`) only when missing:
# a cargo-machete already on PATH is used as is, otherwise one is built once into
# ~/.cache/confab/tools. Prints the binary's path on stdout.
set -euo pipefail
cache="${CONFAB_CACHE:-$HOME/.cache/confab}"
version=0.9.1
bin="$cache/tools/bin/cargo-machete"
if command -v cargo-machete >/dev/null; then
  command -v cargo-machete
  exit 0
fi
if ! { [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; }; then
  printf '\033[1;34m[setup]\033[0m installing cargo-machete %s into %s (once)\n' "$version" "$cache/tools" >&2
  CARGO_TARGET_DIR="$cache/tools-target" cargo install cargo-machete --version "$version" --locked --root "$cache/tools" --force >&2
fi
echo "$bin"
