#!/usr/bin/env bash
# Stops the mesh started by infra/mesh/run-mesh.sh: SIGTERM to each process it recorded
# (the gateways first, then the services' replicas, then nginx, redis and SecantusDB),
# waiting for each graceful drain; SIGKILL only after the grace period. A service's replicas
# drain together. Only pids from $MESH_DIR/*.pid are touched.
set -euo pipefail
# shellcheck source=infra/mesh/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -d "$MESH_DIR" ]] || { log "nothing to stop ($MESH_DIR does not exist)"; exit 0; }
grace=$((${CONFAB_SHUTDOWN_GRACE_SECS:-5} + 5))
stopped=0
for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
  pids=()
  for name in $(replicas_of "${SERVICES[$i]}"); do
    if [[ -f "$MESH_DIR/$name.pid" ]]; then
      stop_process "$name" "$grace" &
      pids+=($!)
      stopped=$((stopped + 1))
    fi
  done
  ((${#pids[@]} == 0)) || wait "${pids[@]}"
done
for name in nginx redis mongo; do
  if [[ -f "$MESH_DIR/$name.pid" ]]; then
    stop_process "$name" 10
    stopped=$((stopped + 1))
  fi
done
log "stopped $stopped process(es); logs kept in $MESH_DIR"
