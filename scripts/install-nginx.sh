#!/usr/bin/env bash
# Installs nginx for the local two-replica mesh (infra/mesh), only when missing (idempotent):
# Debian's nginx-light has the HTTP/2 and grpc_pass modules the mesh's balancers use.
# The package's own service is not started (the mesh runs its own nginx per mesh directory).
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[nginx] missing: install Debian's nginx-light (apt-get install nginx-light)" >&2
  exit 1
fi
echo "[nginx] apt-get install nginx-light"
# policy-rc.d exit 101 = "do not start services": the package would otherwise bind port 80.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
fi
trap '[ "$created" = 1 ] && rm -f "$policy"' EXIT
# Other installers may hold dpkg's lock for a while: wait for it rather than fail.
apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install nginx-light >/dev/null ||
  { apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install nginx-light >/dev/null; }
