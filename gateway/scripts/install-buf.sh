#!/usr/bin/env bash
# Installs `buf` (npm @bufbuild/buf) into ~/.cache/confab/node when missing; prints its path.
# The gateway's grpc-web tests use it as a third-party grpc-web client.
set -euo pipefail
prefix="${CONFAB_CACHE:-$HOME/.cache/confab}/node"
bin="$prefix/node_modules/.bin/buf"
if [ ! -x "$bin" ]; then
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" @bufbuild/buf@1.75.0 >&2
fi
"$bin" --version >/dev/null
echo "$bin"
