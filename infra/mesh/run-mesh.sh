#!/usr/bin/env bash
# Confab's distributed mode on one machine, in the production shape, without Docker: two
# replicas (CONFAB_MESH_REPLICAS) of every service, the gateway included, each service's
# replicas behind one nginx address that balances every request on its own (grpc_pass
# between services, as ECS Service Connect's proxy does; plain HTTP proxying in front of the
# gateways, as the ALB does), with redis-server and SecantusDB (a MongoDB-wire test server).
#
#   cargo build --workspace --bins            # binaries from $CARGO_TARGET_DIR/debug
#   infra/mesh/run-mesh.sh                    # start (no-op when already running)
#   infra/mesh/run-mesh.sh status             # what runs where
#   infra/mesh/run-mesh.sh restart chat       # rolling: SIGTERM each chat replica, start it again
#   infra/mesh/run-mesh.sh restart chat-1     # one replica
#   infra/mesh/run-mesh.sh kill chat-1        # SIGKILL one replica (no drain)
#   infra/mesh/run-mesh.sh start-one chat-1   # start a stopped or killed replica
#   infra/mesh/stop-mesh.sh                   # stop everything
#
# Balanced addresses: gateway 8080 (HTTP/1.1: grpc-web, /auth/session, the web client) and
# 8081 (native gRPC), chat 50051, conversation 50052, files 50053, ratelimit 50054; redis
# 6390, mongo 27117 — when free, else any free port (see $MESH_DIR/ports.env). Replicas
# always take free ports. CONFAB_MESH_PORTS=random takes free ports for everything.
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

ensure_nginx() {
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || bash "$MESH_ROOT/scripts/install-nginx.sh" >&2
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

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
  local name var
  {
    for name in redis mongo gateway_grpc "${SERVICES[@]}"; do
      if [[ "${CONFAB_MESH_PORTS:-default}" == random ]]; then
        echo "PORT_${name^^}=$(free_port 0)"
      else
        echo "PORT_${name^^}=$(free_port "${DEFAULT_PORT[$name]}")"
      fi
    done
    for name in $(instances); do
      var="${name//-/_}"
      echo "PORT_${var^^}=$(free_port 0)"
      [[ "$name" == gateway-* ]] || echo "METRICS_PORT_${var^^}=$(free_port 0)"
    done
  } >"$MESH_DIR/ports.env"
}

# One upstream block per service; each request picks a replica (round robin); a replica that
# refuses connections is skipped for a few seconds. Every request is logged with the replica
# that served it, so the smoke test can see the balancing.
write_nginx_conf() {
  local dir="$MESH_DIR/nginx" svc inst
  mkdir -p "$dir/tmp"
  {
    cat <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
  log_format replica '\$msec \$request_uri \$upstream_addr \$status \$request_time';
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
EOF
    for svc in "${SERVICES[@]}"; do
      echo "  upstream $svc {"
      for inst in $(replicas_of "$svc"); do
        echo "    server 127.0.0.1:$(port_of "$inst") max_fails=1 fail_timeout=3s;"
      done
      echo "    keepalive 32;"
      echo "  }"
    done
    for svc in chat conversation files ratelimit; do
      cat <<EOF
  server {
    listen 127.0.0.1:$(port_of "$svc") http2;
    access_log $dir/nginx-$svc.log replica;
    client_max_body_size 16m;
    location / {
      grpc_pass grpc://$svc;
      grpc_connect_timeout 2s;
      grpc_read_timeout 600s;
      grpc_send_timeout 600s;
      grpc_next_upstream error timeout;
    }
  }
EOF
    done
    cat <<EOF
  server {
    listen 127.0.0.1:$PORT_GATEWAY;
    access_log $dir/nginx-gateway.log replica;
    client_max_body_size 16m;
    location / {
      proxy_pass http://gateway;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_connect_timeout 2s;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
    }
  }
  server {
    listen 127.0.0.1:$PORT_GATEWAY_GRPC http2;
    access_log $dir/nginx-gateway-grpc.log replica;
    client_max_body_size 16m;
    location / {
      grpc_pass grpc://gateway;
      grpc_connect_timeout 2s;
      grpc_read_timeout 600s;
      grpc_send_timeout 600s;
    }
  }
}
EOF
  } >"$dir/nginx.conf"
  "$(nginx_bin)" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >&2 || die "nginx rejected $dir/nginx.conf"
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

start_nginx() {
  write_nginx_conf
  spawn nginx "$(nginx_bin)" -p "$MESH_DIR/nginx" -c "$MESH_DIR/nginx/nginx.conf" -e "$MESH_DIR/nginx/error.log"
  wait_healthy nginx 15
}

service_env() {
  local inst="$1" svc="${1%-*}" port mvar
  port="$(port_of "$inst")"
  local -a env=(
    "CONFAB_ADDR=127.0.0.1:$port"
    "CONFAB_DATA_DIR=$MESH_DIR/data/$inst"
    "CONFAB_SHUTDOWN_GRACE_SECS=${CONFAB_SHUTDOWN_GRACE_SECS:-5}"
    "RUST_LOG=${RUST_LOG:-info}"
    "OTEL_SERVICE_NAME=confab-$svc"
  )
  # Every replica calls the other services through their balanced address, never a replica.
  local chat="http://127.0.0.1:$PORT_CHAT" conversation="http://127.0.0.1:$PORT_CONVERSATION"
  local files="http://127.0.0.1:$PORT_FILES" ratelimit="http://127.0.0.1:$PORT_RATELIMIT"
  local mongo="mongodb://127.0.0.1:$PORT_MONGO/?directConnection=true"
  local redis="redis://127.0.0.1:$PORT_REDIS"
  if [[ "$svc" != gateway ]]; then
    mvar="${inst//-/_}"
    mvar="METRICS_PORT_${mvar^^}"
    env+=("CONFAB_METRICS_ADDR=127.0.0.1:${!mvar}")
  fi
  case "$svc" in
    ratelimit) env+=("REDIS_URL=$redis") ;;
    conversation | files) env+=("MONGODB_URI=$mongo" "MONGODB_DB_NAME=${MONGODB_DB_NAME:-confab}") ;;
    chat)
      # Redis carries the generations (Attach and Stop from any replica, orphaned answers).
      env+=("CONFAB_CONVERSATION_URL=$conversation" "CONFAB_FILES_URL=$files" "CONFAB_RATELIMIT_URL=$ratelimit"
        "REDIS_URL=$redis") ;;
    gateway)
      # One session secret for every gateway replica: a token signed by one verifies on all.
      env+=("CONFAB_CHAT_URL=$chat" "CONFAB_CONVERSATION_URL=$conversation" "CONFAB_FILES_URL=$files"
        "CONFAB_RATELIMIT_URL=$ratelimit" "CONFAB_SESSION_SECRET=$(cat "$MESH_DIR/session-secret")"
        "CONFAB_WEB_DIR=${CONFAB_WEB_DIR:-$MESH_ROOT/web/dist}") ;;
  esac
  printf '%s\n' "${env[@]}"
}

start_instance() {
  local inst="$1" svc="${1%-*}"
  mkdir -p "$MESH_DIR/data/$inst"
  local -a env
  mapfile -t env < <(service_env "$inst")
  spawn "$inst" env "${env[@]}" "$BIN_DIR/confab-$svc"
}

# Starts a service's replicas together, then waits for each.
start_service() {
  local inst
  for inst in $(replicas_of "$1"); do start_instance "$inst"; done
  for inst in $(replicas_of "$1"); do
    wait_healthy "$inst" "${CONFAB_MESH_START_TIMEOUT:-60}"
    log "$inst healthy on 127.0.0.1:$(port_of "$inst")"
  done
}

status() {
  load_ports
  local name state
  for name in $(processes); do
    if pid_alive "$name"; then
      if healthy "$name"; then state=healthy; else state=unhealthy; fi
      printf '  %-15s 127.0.0.1:%-6s pid %-8s %s\n' "$name" "$(port_of "$name")" "$(cat "$MESH_DIR/$name.pid")" "$state"
    else
      printf '  %-15s 127.0.0.1:%-6s %s\n' "$name" "$(port_of "$name")" "stopped"
    fi
  done
}

start() {
  mkdir -p "$MESH_DIR"
  local name running=0 total=0
  for name in $(processes); do
    total=$((total + 1))
    pid_alive "$name" && running=$((running + 1))
  done
  if ((running == total)); then
    log "already running in $MESH_DIR"
    status
    return 0
  fi
  ((running == 0)) || die "a partial mesh runs in $MESH_DIR; run infra/mesh/stop-mesh.sh first"
  check_binaries
  ensure_nginx
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
  start_nginx
  for name in "${SERVICES[@]}"; do
    start_service "$name"
  done
  # The balanced address (nginx → both gateways) answers too.
  for _ in $(seq 50); do healthy gateway && break; sleep 0.2; done
  healthy gateway || die "the balanced gateway address 127.0.0.1:$PORT_GATEWAY does not answer /health"
  trap - ERR INT TERM
  log "mesh up: http://127.0.0.1:$PORT_GATEWAY (grpc-web, HTTP), 127.0.0.1:$PORT_GATEWAY_GRPC (gRPC);" \
    "$MESH_REPLICAS replicas per service; logs and pids in $MESH_DIR; stop: infra/mesh/stop-mesh.sh"
  status
}

# A service name means all its replicas, one after another (a rolling restart).
targets() {
  local what="${1:-}" all
  all=" $(instances | tr '\n' ' ') "
  if [[ " ${SERVICES[*]} " == *" $what "* ]]; then
    replicas_of "$what"
  elif [[ -n "$what" && "$all" == *" $what "* ]]; then
    echo "$what"
  else
    die "which one? a service (${SERVICES[*]}) or a replica (${all})"
  fi
}

restart() {
  local inst
  load_ports
  for inst in $(targets "${1:-}"); do
    stop_process "$inst" "$((${CONFAB_SHUTDOWN_GRACE_SECS:-5} + 5))"
    start_instance "$inst"
    wait_healthy "$inst" "${CONFAB_MESH_START_TIMEOUT:-60}"
    log "$inst restarted (pid $(cat "$MESH_DIR/$inst.pid"))"
  done
}

start_one() {
  local inst
  load_ports
  for inst in $(targets "${1:-}"); do
    pid_alive "$inst" && continue
    start_instance "$inst"
    wait_healthy "$inst" "${CONFAB_MESH_START_TIMEOUT:-60}"
    log "$inst started (pid $(cat "$MESH_DIR/$inst.pid"))"
  done
}

# SIGKILL: what a crashed task looks like (no drain, no goodbye).
kill_one() {
  local inst
  load_ports
  for inst in $(targets "${1:-}"); do
    if pid_alive "$inst"; then
      kill -KILL "$(cat "$MESH_DIR/$inst.pid")"
      log "$inst killed (SIGKILL)"
    fi
  done
}

case "${1:-start}" in
  start) start ;;
  status) status ;;
  restart) restart "${2:-}" ;;
  start-one) start_one "${2:-}" ;;
  kill) kill_one "${2:-}" ;;
  *) die "usage: $0 [start | status | restart SERVICE|REPLICA | start-one REPLICA | kill REPLICA]" ;;
esac
