#!/usr/bin/env bash
# Stops the mesh started by infra/mesh/run-mesh.sh: SIGTERM to each process it recorded
# (gateway first, then the services, then redis and SecantusDB), waiting for each graceful
# drain; SIGKILL only after the grace period. Only pids from $MESH_DIR/*.pid are touched.
set -euo pipefail
# shellcheck source=infra/mesh/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -d "$MESH_DIR" ]] || { log "nothing to stop ($MESH_DIR does not exist)"; exit 0; }
grace=$(( ${CONFAB_SHUTDOWN_GRACE_SECS:-5} + 5 ))
stopped=0
for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
  name="${SERVICES[$i]}"
  if [[ -f "$MESH_DIR/$name.pid" ]]; then
    stop_process "$name" "$grace"
    stopped=$((stopped + 1))
  fi
done
for name in redis mongo; do
  if [[ -f "$MESH_DIR/$name.pid" ]]; then
    stop_process "$name" 10
    stopped=$((stopped + 1))
  fi
done
log "stopped $stopped process(es); logs kept in $MESH_DIR"
