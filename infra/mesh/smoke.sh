#!/usr/bin/env bash
# End-to-end smoke test of the production shape on one machine: its own mesh (two replicas
# of every service behind nginx, in $CONFAB_DATA_DIR/mesh-smoke, free ports) with chat
# pointed at a fake OpenAI-compatible upstream (infra/mesh/fake_openai.py). Then, as a user
# through the balanced gateway address only (grpc-web over HTTP/1.1, like the browser), what
# infra/mesh/smoke_driver.py lists: session, streaming, refresh + re-attach, stop, chunked
# upload across replicas, and one replica of every service SIGKILLed during traffic. Last, a
# rolling restart of the gateways keeps the same session working.
# Stops the mesh on exit. Needs `cargo build --workspace --bins` first (make smoke-mesh does).
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CONFAB_MESH_DIR="${CONFAB_MESH_DIR:-${CONFAB_DATA_DIR:-$ROOT/data}/mesh-smoke}"
export CONFAB_MESH_PORTS=random # never collide with a developer's mesh or gateway
# shellcheck source=infra/mesh/lib.sh
source "$ROOT/infra/mesh/lib.sh"
MESH="$ROOT/infra/mesh"
STARTED=$SECONDS

fail() { log "FAIL $*"; exit 1; }

# --- tools: the driver's protobuf compiler and grpcurl (health probes), pinned -------------------
stamp="$INFRA_VENV/.confab-mesh-requirements.sha256"
want="$(sha256sum "$MESH/requirements.txt" | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "installing $MESH/requirements.txt into $INFRA_VENV"
  [[ -x "$INFRA_VENV/bin/python" ]] || python3 -m venv "$INFRA_VENV"
  "$INFRA_VENV/bin/pip" install --disable-pip-version-check -q -r "$MESH/requirements.txt"
  echo "$want" >"$stamp"
fi

# --- fake upstream + mesh ----------------------------------------------------------------------
"$MESH/stop-mesh.sh" >/dev/null 2>&1 || true
rm -rf "$MESH_DIR"
mkdir -p "$MESH_DIR"
python3 "$MESH/fake_openai.py" --port 0 --port-file "$MESH_DIR/upstream.port" --log "$MESH_DIR/upstream.jsonl" \
  >"$MESH_DIR/upstream.log" 2>&1 &
UPSTREAM_PID=$!
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  "$MESH/stop-mesh.sh" >/dev/null 2>&1 || true
  kill "$UPSTREAM_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do [[ -s "$MESH_DIR/upstream.port" ]] && break; sleep 0.1; done
[[ -s "$MESH_DIR/upstream.port" ]] || fail "fake upstream did not start"
OPENAI_BASE_URL="http://127.0.0.1:$(cat "$MESH_DIR/upstream.port")/v1"
export OPENAI_BASE_URL
export OPENAI_API_KEY=sk-fake-smoke OPENAI_MODEL=fake-gpt OPENAI_TITLE_MODEL=fake-gpt
# Enough quota for the kill phase's traffic (several answers per user in a few seconds).
export RATE_LIMIT_PER_MINUTE=600 MAX_CONCURRENT_STREAMS=8
"$MESH/run-mesh.sh" start >"$MESH_DIR/run-mesh.out" 2>&1 || { tail -n 30 "$MESH_DIR/run-mesh.out" >&2; fail "mesh did not start (logs in $MESH_DIR)"; }
load_ports
log "mesh up in $((SECONDS - STARTED)) s: gateway 127.0.0.1:$PORT_GATEWAY, $MESH_REPLICAS replicas per service"

# --- the user's side ---------------------------------------------------------------------------
status=0
"$INFRA_VENV/bin/python" "$MESH/smoke_driver.py" --mesh-dir "$MESH_DIR" --proto-root "$ROOT/proto/proto" \
  --gateway "$PORT_GATEWAY" --run-mesh "$MESH/run-mesh.sh" || status=1

# --- a deploy: the killed replicas come back, then every gateway restarts in turn; the session holds
TOKEN="$(curl -fsS --max-time 10 -X POST "http://127.0.0.1:$PORT_GATEWAY/auth/session" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')" || fail "POST /auth/session"
for svc in "${SERVICES[@]}"; do "$MESH/run-mesh.sh" start-one "$svc" >/dev/null 2>&1 || fail "$svc did not come back"; done
"$MESH/run-mesh.sh" restart gateway >/dev/null 2>&1 || fail "rolling gateway restart"
for _ in 1 2 3 4; do
  # grpc-web: an empty ListModels request; an OK answer ends with the trailer "grpc-status:0".
  curl -sS --max-time 10 -X POST -D "$MESH_DIR/models.headers" -o "$MESH_DIR/models.body" \
    -H 'content-type: application/grpc-web+proto' -H 'x-grpc-web: 1' -H "authorization: Bearer $TOKEN" \
    --data-binary @<(printf '\0\0\0\0\0') "http://127.0.0.1:$PORT_GATEWAY/confab.chat.v1.ChatService/ListModels" ||
    fail "ListModels after the rolling gateway restart"
  grep -aq 'grpc-status:0' "$MESH_DIR/models.body" ||
    fail "after the rolling gateway restart the old token was refused: $(tr -d '\0' <"$MESH_DIR/models.headers" | grep -i grpc-)"
done
log "ok   rolling gateway restart: the same session token still works on every replica"

log "smoke: $([[ $status == 0 ]] && echo passed || echo FAILED) in $((SECONDS - STARTED)) s"
exit "$status"
