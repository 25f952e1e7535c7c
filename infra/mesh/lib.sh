# shellcheck shell=bash disable=SC2034  # variables are used by the scripts sourcing this file
# Shared by run-mesh.sh, stop-mesh.sh and smoke.sh: where the mesh lives and how to reach it.
#
# Layout of $MESH_DIR (default ${CONFAB_DATA_DIR:-./data}/mesh):
#   ports.env          ports chosen at start (sourced by the other scripts)
#   <name>.pid         one per process: redis, mongo, ratelimit, conversation, files, chat, gateway
#   <name>.log         its stdout and stderr
#   data/<service>/    CONFAB_DATA_DIR of each service;  mongo/  SecantusDB's files

MESH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA_DIR="${CONFAB_DATA_DIR:-$MESH_ROOT/data}"
mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
MESH_DIR="${CONFAB_MESH_DIR:-$DATA_DIR/mesh}"
BIN_DIR="${CONFAB_BIN_DIR:-${CARGO_TARGET_DIR:-$MESH_ROOT/target}/debug}"
INFRA_VENV="${CONFAB_INFRA_VENV:-$HOME/.cache/confab/infra-venv}"
MONGO_VENV="${CONFAB_MONGO_VENV:-$HOME/.cache/confab/mongo-venv}"
SECANTUS_VERSION="0.7.0b3"

# Start order; stop order is the reverse (gateway first, so no new requests reach a stopping service).
SERVICES=(ratelimit conversation files chat gateway)
declare -A DEFAULT_PORT=([gateway]=8080 [chat]=50051 [conversation]=50052 [files]=50053 [ratelimit]=50054
  [redis]=6390 [mongo]=27117)

log() { printf '[mesh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A free loopback port: the preferred one when it is free, else one the kernel picks.
free_port() {
  local want="$1"
  if [[ "$want" != 0 ]] && port_free "$want"; then echo "$want"; return; fi
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pid_alive() {
  local f="$MESH_DIR/$1.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

load_ports() {
  [[ -f "$MESH_DIR/ports.env" ]] || die "no mesh in $MESH_DIR (start it with infra/mesh/run-mesh.sh)"
  # shellcheck disable=SC1091
  source "$MESH_DIR/ports.env"
}

port_of() {
  local var="PORT_${1^^}"
  echo "${!var}"
}

grpcurl_bin() {
  if command -v grpcurl >/dev/null; then command -v grpcurl
  elif [[ -x "$INFRA_VENV/bin/grpcurl" ]]; then echo "$INFRA_VENV/bin/grpcurl"
  fi
}

# Healthy = the gateway answers GET /health with 200; a gRPC service answers
# grpc.health.v1.Health/Check with SERVING (grpcurl), or accepts TCP when grpcurl is missing
# or CONFAB_MESH_HEALTH=tcp.
healthy() {
  local name="$1" port grpcurl
  port="$(port_of "$name")"
  case "$name" in
    gateway)
      curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null ;;
    redis)
      redis-cli -p "$port" ping 2>/dev/null | grep -q PONG ;;
    mongo)
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null ;;
    *)
      grpcurl="$(grpcurl_bin)"
      if [[ -n "$grpcurl" && "${CONFAB_MESH_HEALTH:-grpc}" != tcp ]]; then
        "$grpcurl" -plaintext -max-time 2 "127.0.0.1:$port" grpc.health.v1.Health/Check 2>/dev/null |
          grep -q '"SERVING"'
      else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
      fi ;;
  esac
}

wait_healthy() {
  local name="$1" timeout="${2:-30}" waited=0
  while ! healthy "$name"; do
    if ! pid_alive "$name"; then
      log "$name exited; last lines of $MESH_DIR/$name.log:"
      tail -n 20 "$MESH_DIR/$name.log" >&2 || true
      return 1
    fi
    if ((waited >= timeout * 5)); then
      log "$name not healthy after ${timeout}s; last lines of $MESH_DIR/$name.log:"
      tail -n 20 "$MESH_DIR/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
}

# SIGTERM, wait for the graceful drain, SIGKILL only after the grace period.
stop_process() {
  local name="$1" grace="${2:-25}" pid f="$MESH_DIR/$1.pid" i
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) still running after ${grace}s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}
