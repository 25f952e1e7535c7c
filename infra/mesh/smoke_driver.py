#!/usr/bin/env python3
"""The user's side of the mesh smoke test (infra/mesh/smoke.sh runs it against a running mesh).

Speaks grpc-web over HTTP/1.1 to the balanced gateway address, as the browser does, with
messages from the repository's .proto files (compiled at start with grpcio-tools). Checks:
  session    POST /auth/session; the token works on every gateway replica
  stream     SendMessage streams Started, the upstream's text, Completed; both stored
  reattach   a "refresh" mid-answer, then Attach from the last sequence seen, on other replicas
  stop       StopGeneration ends a running answer quickly, whichever replica it lands on
  upload     a chunked upload whose consecutive calls land on different files replicas
  kill       SIGKILL one replica of every service during traffic: no acknowledged user
             message lost, every answer complete or readable as interrupted
nginx's per-service logs ($MESH_DIR/nginx/nginx-<service>.log) say which replica served
each call. Exit status 0 only when every check passed; failures are listed at the end.
"""
import argparse
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

ANSWER = "Hello from the fake upstream."
results = []  # (name, ok, detail)


def check(name, ok, detail=""):
    results.append((name, bool(ok), detail))
    print(f"[smoke] {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def load_stubs(proto_root, out):
    import grpc_tools
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [f"confab/{s}/v1/{s}.proto" for s in ("chat", "conversation", "files", "ratelimit")]
    os.makedirs(out, exist_ok=True)
    if protoc.main(["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}", *files]) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)
    global chat, conv, files_pb, quota_pb
    from confab.chat.v1 import chat_pb2 as chat
    from confab.ratelimit.v1 import ratelimit_pb2 as quota_pb
    from confab.conversation.v1 import conversation_pb2 as conv
    from confab.files.v1 import files_pb2 as files_pb


class RpcError(Exception):
    def __init__(self, status, message):
        super().__init__(f"grpc-status {status}: {message}")
        self.status, self.message = status, message


class Cut(Exception):
    """The stream ended without trailers: a replica on the way died."""


class GrpcWeb:
    def __init__(self, port, token, timeout=60):
        self.port, self.token, self.timeout = port, token, timeout

    def _open(self, method, msg):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        body = msg.SerializeToString()
        conn.request("POST", f"/{method}", body=b"\0" + len(body).to_bytes(4, "big") + body, headers={
            "content-type": "application/grpc-web+proto", "x-grpc-web": "1", "accept": "application/grpc-web+proto",
            "authorization": f"Bearer {self.token}"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RpcError(-resp.status, resp.read(300).decode(errors="replace"))
        if resp.getheader("grpc-status") not in (None, "0"):
            raise RpcError(int(resp.getheader("grpc-status")), resp.getheader("grpc-message", ""))
        return conn, resp

    def stream(self, method, msg, cls, conn_out=None):
        """Yields messages; raises RpcError on a non-OK status, Cut when the stream breaks."""
        conn, resp = self._open(method, msg)
        if conn_out is not None:
            conn_out.append(conn)
        try:
            while True:
                try:
                    head = resp.read(5)
                except (http.client.IncompleteRead, ConnectionError, OSError) as e:
                    raise Cut(str(e))
                if len(head) < 5:
                    if resp.getheader("grpc-status") == "0":
                        return
                    raise Cut("stream ended without trailers")
                n = int.from_bytes(head[1:5], "big")
                try:
                    data = resp.read(n)
                except (http.client.IncompleteRead, ConnectionError, OSError) as e:
                    raise Cut(str(e))
                if len(data) < n:
                    raise Cut("short frame")
                if head[0] & 0x80:
                    trailers = dict(
                        (k.strip().lower(), v.strip())
                        for k, _, v in (line.partition(":") for line in data.decode().split("\r\n") if line))
                    status = int(trailers.get("grpc-status", "2"))
                    if status != 0:
                        raise RpcError(status, urllib.parse.unquote(trailers.get("grpc-message", "")))
                    return
                yield cls.FromString(data)
        finally:
            conn.close()

    def unary(self, method, msg, cls):
        out = list(self.stream(method, msg, cls))
        if len(out) != 1:
            raise RpcError(-1, f"{len(out)} messages for a unary call")
        return out[0]


def new_token(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/auth/session", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["token"]


def kind(ev):
    return ev.WhichOneof("event")


def text_of(events):
    return "".join(e.delta.text for e in events if kind(e) == "delta")


def shaped(n, delay_ms, words="Tell me something"):
    return f"{words} [pieces={n} delay={delay_ms}]"


def expected(n):
    return "".join(f" t{i}" for i in range(n))


class Log:
    """One nginx access log: which replica served each call to a method."""

    def __init__(self, mesh_dir, service):
        self.path = os.path.join(mesh_dir, "nginx", f"nginx-{service}.log")

    def mark(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def replicas(self, since, method):
        time.sleep(0.3)  # nginx writes the line when the request ends
        with open(self.path) as f:
            f.seek(since)
            lines = [line.split() for line in f if method in line]
        # "$upstream_addr" lists every replica tried ("a, b") when the first failed: the last served.
        return [parts[-3] if len(parts) >= 5 else "?" for parts in lines]


def list_messages(api, conversation_id):
    return api.unary("confab.conversation.v1.ConversationService/ListMessages",
                     conv.ListMessagesRequest(conversation_id=conversation_id, page_size=200, omit_context=True),
                     conv.ListMessagesResponse).messages


def send(api, conversation_id, content, detach=False, conn_out=None):
    req = chat.SendMessageRequest(conversation_id=conversation_id, content=content, detach_on_disconnect=detach)
    return api.stream("confab.chat.v1.ChatService/SendMessage", req, chat.ChatEvent, conn_out)


# --- checks ------------------------------------------------------------------------------------

def check_session_and_stream(a):
    api = GrpcWeb(a.gateway, new_token(a.gateway))
    ok = True
    # Each quota read lands on the next gateway replica; all accept the token.
    gw = Log(a.mesh_dir, "gateway")
    mark = gw.mark()
    for _ in range(4):
        api.unary("confab.chat.v1.ChatService/GetQuota", chat.GetQuotaRequest(), quota_pb.Quota)
    served = gw.replicas(mark, "GetQuota")
    ok &= check("session token accepted by every gateway replica", len(set(served)) >= 2, f"served by {served}")
    events = list(send(api, "", "Say hello"))
    kinds = [kind(e) for e in events]
    seqs = [e.sequence for e in events]
    ok &= check("SendMessage streams Started … Completed", kinds and kinds[0] == "started" and "completed" in kinds
                and "failed" not in kinds and seqs == sorted(set(seqs)), f"{kinds}")
    ok &= check("streamed text is the upstream's", text_of(events) == ANSWER, repr(text_of(events)))
    cid = events[0].conversation_id
    msgs = list_messages(api, cid)
    ok &= check("user + assistant stored", len(msgs) == 2 and msgs[1].content == ANSWER
                and msgs[1].status == conv.MESSAGE_STATUS_COMPLETE, f"{len(msgs)} messages")
    return api, cid


def check_reattach(a, api):
    chat_log = Log(a.mesh_dir, "chat")
    mark = chat_log.mark()
    failures = []
    n = 40
    for attempt in range(3):
        conns, seen = [], []
        try:
            for ev in send(api, "", shaped(n, 40, f"refresh {attempt}"), detach=True, conn_out=conns):
                seen.append(ev)
                if kind(ev) == "delta" and len(text_of(seen)) > 0 and len(seen) >= 4:
                    break  # the user refreshes the page
        except (RpcError, Cut) as e:
            failures.append(f"send: {e}")
            continue
        for c in conns:
            c.close()
        gid, last = seen[0].generation_id, seen[-1].sequence
        got = list(seen)
        try:
            got += list(api.stream("confab.chat.v1.ChatService/Attach",
                                   chat.AttachRequest(generation_id=gid, after_sequence=last), chat.ChatEvent))
            replay = list(api.stream("confab.chat.v1.ChatService/Attach",
                                     chat.AttachRequest(generation_id=gid, after_sequence=0), chat.ChatEvent))
        except (RpcError, Cut) as e:
            failures.append(f"attach {attempt}: {e}")
            continue
        if text_of(got) != expected(n) or "completed" not in [kind(e) for e in got]:
            failures.append(f"attach {attempt}: text {text_of(got)[-40:]!r}, kinds {[kind(e) for e in got][-3:]}")
        if text_of(replay) != expected(n):
            failures.append(f"replay {attempt}: {text_of(replay)[-40:]!r}")
    served = chat_log.replicas(mark, "/Attach")
    check("refresh + Attach from the last sequence (and a full replay) complete the answer",
          not failures, "; ".join(failures[:3]))
    check("Attach calls landed on both chat replicas", len(set(served)) >= 2, f"{served}")


def check_stop(a, api):
    chat_log = Log(a.mesh_dir, "chat")
    mark = chat_log.mark()
    failures, took = [], []
    n = 200
    for attempt in range(4):
        events, stopped, t0 = [], None, time.monotonic()
        try:
            for ev in send(api, "", shaped(n, 30, f"stop {attempt}")):
                events.append(ev)
                if stopped is None and kind(ev) == "delta" and len(events) >= 3:
                    t0 = time.monotonic()
                    r = api.unary("confab.chat.v1.ChatService/StopGeneration",
                                  chat.StopGenerationRequest(generation_id=ev.generation_id),
                                  chat.StopGenerationResponse)
                    stopped = r.stopped
        except (RpcError, Cut) as e:
            failures.append(f"stop {attempt}: {e}")
            continue
        took.append(time.monotonic() - t0)
        last = events[-1]
        if not stopped or kind(last) != "completed" or last.completed.finish_reason != chat.FINISH_REASON_STOPPED:
            failures.append(f"stop {attempt}: stopped={stopped}, last {kind(last)}")
        elif took[-1] > 2:
            failures.append(f"stop {attempt}: the stream ended {took[-1]:.1f} s after Stop")
        msgs = list_messages(api, events[0].conversation_id)
        if msgs[-1].status != conv.MESSAGE_STATUS_STOPPED or len(msgs[-1].content) >= len(expected(n)):
            failures.append(f"stop {attempt}: stored status {msgs[-1].status}")
    served = chat_log.replicas(mark, "/StopGeneration")
    check("StopGeneration ends the answer (stored as stopped, partial)", not failures,
          "; ".join(failures[:3]) or f"stream ended {max(took):.2f} s after Stop at most")
    check("StopGeneration calls landed on both chat replicas", len(set(served)) >= 2, f"{served}")


def upload(api, data, name="notes.txt", chunk=64 * 1024, retries=0):
    """Chunked upload; returns (FileInfo, attempts retried). Retries resend the same chunk."""
    retried = 0

    def call(method, req, cls):
        nonlocal retried
        for attempt in range(retries + 1):
            try:
                return api.unary(f"confab.files.v1.FileService/{method}", req, cls)
            except (RpcError, Cut, OSError):
                if attempt == retries:
                    raise
                retried += 1
                time.sleep(0.3)

    s = call("StartUpload", files_pb.StartUploadRequest(filename=name, declared_size=len(data)),
             files_pb.StartUploadResponse)
    for off in range(0, len(data), chunk):
        r = call("UploadChunk", files_pb.UploadChunkRequest(upload_id=s.upload_id, offset=off,
                                                            data=data[off:off + chunk]), files_pb.UploadChunkResponse)
        assert r.received_bytes == min(off + chunk, len(data)), r.received_bytes
    sha = hashlib.sha256(data).hexdigest()
    done = call("FinishUpload", files_pb.FinishUploadRequest(upload_id=s.upload_id, sha256=sha),
                files_pb.FinishUploadResponse)
    return done.file, retried


def check_upload(a, api):
    files_log = Log(a.mesh_dir, "files")
    mark = files_log.mark()
    data = ("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(8000))).encode()
    info, _ = upload(api, data)
    served = files_log.replicas(mark, "/UploadChunk")
    differ = sum(1 for x, y in zip(served, served[1:]) if x != y)
    check("chunked upload finished with the right sha256", info.sha256 == hashlib.sha256(data).hexdigest()
          and info.size_bytes == len(data), f"{info.size_bytes} bytes, {info.part_count} parts")
    check("consecutive chunks landed on different files replicas", len(set(served)) >= 2 and differ >= 1,
          f"{len(served)} chunks: {served[:6]}…")
    got = b"".join(c.data for c in api.stream("confab.files.v1.FileService/DownloadFile",
                                             files_pb.DownloadFileRequest(file_id=info.id),
                                             files_pb.DownloadFileChunk))
    check("download returns the uploaded bytes", got == data)


def check_kill(a):
    """Traffic from several users; one replica of every service SIGKILLed in the middle."""
    stop_at = time.monotonic() + a.traffic_secs
    lock = threading.Lock()
    acked, outcomes, errors, after_kill = [], [], [], []
    killed_at = [None]
    n = 25  # pieces per answer, 40 ms apart: about a second each

    def worker(w):
        api = GrpcWeb(a.gateway, new_token(a.gateway), timeout=30)
        cid, i = "", 0
        while time.monotonic() < stop_at:
            i += 1
            turn, result, evs = None, "cut", []
            try:
                for ev in send(api, cid, shaped(n, 40, f"user {w} message {i}"), detach=True):
                    evs.append(ev)
                    if kind(ev) == "started":
                        cid = ev.conversation_id
                        turn = (cid, ev.started.user_message_id, ev.started.assistant_message_id)
                        with lock:
                            acked.append(turn)
                    elif kind(ev) == "completed":
                        result = "completed" if text_of(evs) == expected(n) else f"completed with {text_of(evs)!r}"
                    elif kind(ev) == "failed":
                        result = "failed: " + ev.failed.message
            except (RpcError, Cut, OSError) as e:
                result = f"error: {e}"
            with lock:
                if turn:
                    outcomes.append((turn, result))
                else:
                    errors.append(result)
                if result == "completed" and killed_at[0] and time.monotonic() > killed_at[0] + 1:
                    after_kill.append(turn)
            if not turn:
                time.sleep(0.3)

    upload_result = []

    def uploader():
        api = GrpcWeb(a.gateway, new_token(a.gateway), timeout=30)
        data = os.urandom(16).hex().encode() * 40000  # 1.28 MB of text, 20 chunks
        time.sleep(max(0.0, a.kill_after - 0.5))
        try:
            info, retried = upload(api, data, "during-kill.txt", retries=4)
            upload_result.append((info.sha256 == hashlib.sha256(data).hexdigest(), retried))
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            upload_result.append((False, f"{type(e).__name__}: {e}"))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(a.users)]
    threads.append(threading.Thread(target=uploader, daemon=True))
    for t in threads:
        t.start()
    time.sleep(a.kill_after)
    victims = [f"{s}-1" for s in ("chat", "files", "conversation", "ratelimit", "gateway")]
    for v in victims:
        subprocess.run([a.run_mesh, "kill", v], check=True, stdout=subprocess.DEVNULL)
    killed_at[0] = time.monotonic()
    print(f"[smoke] SIGKILLed {', '.join(victims)} after {a.kill_after:.1f} s of traffic", flush=True)
    for t in threads:
        t.join(timeout=a.traffic_secs + 60)

    completed = sum(1 for _, r in outcomes if r == "completed")
    check("traffic: user messages acknowledged", len(acked) >= a.users,
          f"{len(acked)} acknowledged, {completed} streamed to the end, {len(errors)} refused before Started")
    check("the surviving replicas keep serving after the kill", len(after_kill) >= 1,
          f"{len(after_kill)} answers completed after the kill")
    ok, detail = upload_result[0] if upload_result else (False, "no result")
    check("a chunked upload across the kill completes (chunks retried on the other replica)", ok is True,
          f"retried {detail} call(s)" if ok is True else str(detail))

    # Every acknowledged user message is stored; every answer is complete or reads as interrupted.
    api = GrpcWeb(a.gateway, new_token(a.gateway))
    deadline = time.monotonic() + a.interrupted_within
    lost, bad = [], []
    while True:
        lost, bad, pending = [], [], []
        by_conv = {}
        for cid, _, _ in acked:
            if cid not in by_conv:
                by_conv[cid] = {m.id: m for m in list_messages(api, cid)}
        for cid, user_id, answer_id in acked:
            msgs = by_conv[cid]
            if user_id not in msgs:
                lost.append(user_id)
                continue
            m = msgs.get(answer_id)
            if m is None:
                bad.append(f"{answer_id}: missing")
            elif m.status == conv.MESSAGE_STATUS_STREAMING:
                pending.append(answer_id)
            elif m.status == conv.MESSAGE_STATUS_COMPLETE and m.content != expected(n):
                bad.append(f"{answer_id}: complete with {len(m.content)} of {len(expected(n))} chars")
            elif m.status == conv.MESSAGE_STATUS_FAILED and "interrupt" not in m.error_message.lower():
                bad.append(f"{answer_id}: failed, {m.error_message!r}")
        if not pending or time.monotonic() > deadline:
            bad += [f"{p}: still streaming {a.interrupted_within:.0f} s after the kill" for p in pending]
            break
        time.sleep(1)
    interrupted = sum(1 for cid, _, aid in acked
                      if by_conv[cid].get(aid) is not None and by_conv[cid][aid].status == conv.MESSAGE_STATUS_FAILED)
    check("no acknowledged user message lost", not lost, f"{len(lost)} of {len(acked)} lost: {lost[:3]}")
    check("every answer is complete or reads as interrupted", not bad,
          f"{interrupted} interrupted, {len(bad)} otherwise: {bad[:3]}" if bad else f"{interrupted} interrupted")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mesh-dir", required=True)
    p.add_argument("--proto-root", required=True)
    p.add_argument("--gateway", type=int, required=True, help="the balanced gateway port (HTTP)")
    p.add_argument("--run-mesh", required=True)
    p.add_argument("--users", type=int, default=6)
    p.add_argument("--traffic-secs", type=float, default=9)
    p.add_argument("--kill-after", type=float, default=3)
    p.add_argument("--interrupted-within", type=float, default=30)
    a = p.parse_args()
    load_stubs(a.proto_root, os.path.join(a.mesh_dir, "py"))
    t0 = time.monotonic()
    api, _ = check_session_and_stream(a)
    check_reattach(a, api)
    check_stop(a, api)
    check_upload(a, api)
    check_kill(a)
    failed = [r for r in results if not r[1]]
    print(f"[smoke] {len(results) - len(failed)} passed, {len(failed)} failed in {time.monotonic() - t0:.0f} s",
          flush=True)
    for name, _, detail in failed:
        print(f"[smoke]   FAIL {name}: {detail}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
