#!/usr/bin/env bash
# Confab's distributed mode on one machine, without Docker: redis-server, SecantusDB (a
# MongoDB-wire test server) and each service binary as its own process on its own port, the
# gateway calling the services over gRPC.
#
#   cargo build --workspace --bins            # binaries from $CARGO_TARGET_DIR/debug
#   infra/mesh/run-mesh.sh                    # start (no-op when already running)
#   infra/mesh/run-mesh.sh status             # what runs where
#   infra/mesh/run-mesh.sh restart chat       # SIGTERM one service, start it again
#   infra/mesh/stop-mesh.sh                   # stop everything
#
# Ports: gateway 8080, chat 50051, conversation 50052, files 50053, ratelimit 50054,
# redis 6390, mongo 27117 when free, else any free port (see $MESH_DIR/ports.env);
# CONFAB_MESH_PORTS=random takes free ports for everything.
# Environment passed through: OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_MODEL, RUST_LOG, ...
set -Eeuo pipefail
# shellcheck source=infra/mesh/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_redis() {
  command -v redis-server >/dev/null && return
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    die "redis-server missing (apt-get install redis-server)"
  fi
  log "installing redis-server (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
}

ensure_secantus() {
  [[ -x "$MONGO_VENV/bin/secantusd-py" ]] && return
  log "installing SecantusDB $SECANTUS_VERSION into $MONGO_VENV"
  [[ -x "$MONGO_VENV/bin/python" ]] || python3 -m venv "$MONGO_VENV"
  "$MONGO_VENV/bin/pip" install --disable-pip-version-check -q "secantusdb==$SECANTUS_VERSION"
}

check_binaries() {
  local svc missing=()
  for svc in "${SERVICES[@]}"; do
    [[ -x "$BIN_DIR/confab-$svc" ]] || missing+=("confab-$svc")
  done
  ((${#missing[@]} == 0)) || die "missing in $BIN_DIR: ${missing[*]} (run: cargo build --workspace --bins)"
}

choose_ports() {
  local name
  {
    for name in redis mongo "${SERVICES[@]}"; do
      if [[ "${CONFAB_MESH_PORTS:-default}" == random ]]; then
        echo "PORT_${name^^}=$(free_port 0)"
      else
        echo "PORT_${name^^}=$(free_port "${DEFAULT_PORT[$name]}")"
      fi
    done
    for name in chat conversation files ratelimit; do
      echo "METRICS_PORT_${name^^}=$(free_port 0)"
    done
  } >"$MESH_DIR/ports.env"
}

# Starts a process detached from this shell (own session), output appended to its log.
spawn() {
  local name="$1"
  shift
  echo "---- $(date -u +%FT%TZ) start" >>"$MESH_DIR/$name.log"
  (cd "$MESH_DIR" && exec setsid "$@" >>"$MESH_DIR/$name.log" 2>&1 </dev/null) &
  echo $! >"$MESH_DIR/$name.pid"
}

start_redis() {
  spawn redis redis-server --bind 127.0.0.1 --port "$PORT_REDIS" --save "" --appendonly no \
    --daemonize no --dir "$MESH_DIR"
  wait_healthy redis 15
}

start_mongo() {
  spawn mongo "$MONGO_VENV/bin/secantusd-py" --host 127.0.0.1 --port "$PORT_MONGO" \
    --storage-path "$MESH_DIR/mongo" --log-level WARNING
  wait_healthy mongo 30
}

service_env() {
  local svc="$1" port
  port="$(port_of "$svc")"
  local -a env=(
    "CONFAB_ADDR=127.0.0.1:$port"
    "CONFAB_DATA_DIR=$MESH_DIR/data/$svc"
    "CONFAB_SHUTDOWN_GRACE_SECS=${CONFAB_SHUTDOWN_GRACE_SECS:-5}"
    "RUST_LOG=${RUST_LOG:-info}"
    "OTEL_SERVICE_NAME=confab-$svc"
  )
  local chat="http://127.0.0.1:$PORT_CHAT" conversation="http://127.0.0.1:$PORT_CONVERSATION"
  local files="http://127.0.0.1:$PORT_FILES" ratelimit="http://127.0.0.1:$PORT_RATELIMIT"
  local mongo="mongodb://127.0.0.1:$PORT_MONGO/?directConnection=true"
  if [[ "$svc" != gateway ]]; then
    local mvar="METRICS_PORT_${svc^^}"
    env+=("CONFAB_METRICS_ADDR=127.0.0.1:${!mvar}")
  fi
  case "$svc" in
    ratelimit) env+=("REDIS_URL=redis://127.0.0.1:$PORT_REDIS") ;;
    conversation | files) env+=("MONGODB_URI=$mongo" "MONGODB_DB_NAME=${MONGODB_DB_NAME:-confab}") ;;
    chat) env+=("CONFAB_CONVERSATION_URL=$conversation" "CONFAB_FILES_URL=$files" "CONFAB_RATELIMIT_URL=$ratelimit") ;;
    gateway)
      env+=("CONFAB_CHAT_URL=$chat" "CONFAB_CONVERSATION_URL=$conversation" "CONFAB_FILES_URL=$files"
        "CONFAB_RATELIMIT_URL=$ratelimit" "CONFAB_SESSION_SECRET=$(cat "$MESH_DIR/session-secret")"
        "CONFAB_WEB_DIR=${CONFAB_WEB_DIR:-$MESH_ROOT/web/dist}") ;;
  esac
  printf '%s\n' "${env[@]}"
}

start_service() {
  local svc="$1"
  mkdir -p "$MESH_DIR/data/$svc"
  local -a env
  mapfile -t env < <(service_env "$svc")
  spawn "$svc" env "${env[@]}" "$BIN_DIR/confab-$svc"
  wait_healthy "$svc" "${CONFAB_MESH_START_TIMEOUT:-30}"
}

status() {
  load_ports
  local name state
  for name in redis mongo "${SERVICES[@]}"; do
    if pid_alive "$name"; then
      if healthy "$name"; then state=healthy; else state=unhealthy; fi
      printf '  %-13s 127.0.0.1:%-6s pid %-8s %s\n' "$name" "$(port_of "$name")" "$(cat "$MESH_DIR/$name.pid")" "$state"
    else
      printf '  %-13s 127.0.0.1:%-6s %s\n' "$name" "$(port_of "$name")" "stopped"
    fi
  done
}

start() {
  mkdir -p "$MESH_DIR"
  local name running=0
  for name in redis mongo "${SERVICES[@]}"; do
    pid_alive "$name" && running=$((running + 1))
  done
  if ((running == 7)); then
    log "already running in $MESH_DIR"
    status
    return 0
  fi
  ((running == 0)) || die "a partial mesh runs in $MESH_DIR; run infra/mesh/stop-mesh.sh first"
  check_binaries
  ensure_redis
  ensure_secantus
  choose_ports
  load_ports
  [[ -f "$MESH_DIR/session-secret" ]] ||
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$MESH_DIR/session-secret")
  # Anything failing from here on stops what was started.
  trap 'log "start failed; stopping"; "$(dirname "${BASH_SOURCE[0]}")/stop-mesh.sh" >&2' ERR INT TERM
  start_redis
  start_mongo
  for name in "${SERVICES[@]}"; do
    start_service "$name"
    log "$name healthy on 127.0.0.1:$(port_of "$name")"
  done
  trap - ERR INT TERM
  log "mesh up: http://127.0.0.1:$PORT_GATEWAY  (logs and pids in $MESH_DIR; stop: infra/mesh/stop-mesh.sh)"
  status
}

restart() {
  local svc="${1:-}"
  [[ " ${SERVICES[*]} " == *" $svc "* ]] || die "restart which service? one of: ${SERVICES[*]}"
  load_ports
  stop_process "$svc" "$(( ${CONFAB_SHUTDOWN_GRACE_SECS:-5} + 5 ))"
  start_service "$svc"
  log "$svc restarted (pid $(cat "$MESH_DIR/$svc.pid"))"
}

case "${1:-start}" in
  start) start ;;
  status) status ;;
  restart) restart "${2:-}" ;;
  *) die "usage: $0 [start | status | restart SERVICE]" ;;
esac
