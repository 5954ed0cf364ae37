"""Tests for edgee.py, starting with a loopback Edgee AI Gateway.

The gateway is a real HTTP/1.1 server on 127.0.0.1 (threads + raw sockets)
that speaks the shapes of the Edgee OpenAPI spec. Tests script it with
Reply/ErrorReply/SSE/Raw/Redirect, or let a deterministic fake LLM answer.

Run it on its own:  python test_edgee.py --serve [PORT]
"""
from __future__ import annotations

import collections
import http.client
import json
import os
import re
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import unittest
from http import HTTPStatus
from typing import Any, List, Optional

# ---- loopback gateway ----

CREATED = 1677652288
COMPLETION_ID = "chatcmpl-test"
DEFAULT_MODEL = "openai/gpt-5.2"
SOCKET_TIMEOUT = 30.0        # per-socket timeout, so nothing hangs forever
HOLD_SECONDS = 10.0          # Raw(then="hold") gives up after this long
MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024
MAX_REQUESTS_PER_CONN = 1000
MAX_CHOICES = 128
PIECE = 3                    # characters per streamed content piece
CHUNK_END = b"0\r\n\r\n"

# code -> (status, type, message), from edgee-error-codes.yml
ERROR_CODES = {
    "bad_model_id": (400, "invalid_request_error", "Invalid model ID: 'invalid-model'"),
    "model_not_found": (400, "invalid_request_error", "Model 'openai/gpt-1' not found"),
    "provider_not_supported": (400, "invalid_request_error",
                               "Provider 'anthropic' is not supported for model 'openai/gpt-5.2'"),
    "streaming_not_supported": (400, "invalid_request_error", "Streaming is not supported"),
    "invalid_json": (400, "invalid_request_error", "The request body could not be parsed as JSON."),
    "invalid_tokenizer": (400, "invalid_request_error", "The tokenizer is not valid."),
    "invalid_request": (400, "invalid_request_error", "Invalid request."),
    "unauthorized": (401, "authentication_error", "Missing Authorization header"),
    "forbidden": (403, "permission_error", "API key is inactive"),
    "usage_limit_exceeded": (429, "rate_limit_error",
                             "Usage limit exceeded: 1000.00 / 1000 tokens used"),
    "internal_error": (500, "server_error", "An internal error occurred."),
    "provider_error": (502, "provider_error", "The upstream LLM provider returned an error."),
}
STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden",
                429: "usage_limit_exceeded", 500: "internal_error", 502: "provider_error"}
STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "server_error",
                502: "provider_error"}
COMPRESSION = {"saved_tokens": 450, "cost_savings": 27000, "reduction": 48.99, "time_ms": 12}
MODELS = {"object": "list", "data": [
    {"id": "openai/gpt-5.2", "object": "model", "created": 1677610602, "owned_by": "openai"},
    {"id": "anthropic/claude-opus-4-6", "object": "model", "created": 1677610602,
     "owned_by": "anthropic"},
]}


def compact_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON (non-ASCII kept raw, as real gateways send it)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_type(status: int, code: Optional[str] = None) -> str:
    """The ErrorResponse `type` for a code (from the yml) or else a status."""
    if code in ERROR_CODES:
        return ERROR_CODES[code][1]
    if status in STATUS_TYPES:
        return STATUS_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, code: Optional[str], message: str, type: Optional[str] = None,
               param: Optional[str] = None) -> dict:
    """The OpenAPI ErrorResponse envelope."""
    return {"error": {"message": message, "type": type or error_type(status, code),
                      "code": code, "param": param}}


def make_usage(prompt: int = 10, completion: int = 10) -> dict:
    """A Usage object per the OpenAPI schema."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def completion_chunk(content=None, role=None, finish_reason=None, index=0, tool_calls=None,
                     usage=None, compression=None, model=DEFAULT_MODEL) -> dict:
    """A chat.completion.chunk; usage alone gives the `"choices": []` usage chunk."""
    delta = {}  # type: dict
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    chunk = {"id": COMPLETION_ID, "object": "chat.completion.chunk", "created": CREATED,
             "model": model, "choices": []}  # type: dict
    if delta or finish_reason is not None or usage is None:
        chunk["choices"] = [{"index": index, "delta": delta, "finish_reason": finish_reason}]
    if usage is not None:
        chunk["usage"] = usage
    if compression is not None:
        chunk["compression"] = compression
    return chunk


def sse_bytes(event: Any) -> bytes:
    """One `data:` event; bytes/str are the payload, anything else is dumped as JSON."""
    if isinstance(event, str):
        event = event.encode("utf-8")
    payload = event if isinstance(event, bytes) else compact_json(event)
    return b"data: " + payload + b"\n\n"


def chunk_frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (an empty one is the terminating chunk)."""
    return b"%X\r\n" % len(data) + data + b"\r\n"


def _items(headers: Any) -> list:
    if not headers:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def http_head(status: int = 200, headers: Any = None, chunked: bool = False,
              content_length: Optional[int] = None) -> bytes:
    """Status line + headers + blank line, exactly as given (no defaults added)."""
    lines = ["HTTP/1.1 %d %s" % (status, _reason(status))]
    lines += ["%s: %s" % (k, v) for k, v in _items(headers)]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if content_length is not None:
        lines.append("Content-Length: %d" % content_length)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _merge(base: list, extra: Any) -> list:
    """Header list `base` with `extra` replacing same-named entries."""
    extra = _items(extra)
    names = {k.lower() for k, _ in extra}
    return [(k, v) for k, v in base if k.lower() not in names] + extra


def _is_stall(part: Any) -> bool:
    return isinstance(part, (int, float)) and not isinstance(part, bool)


class _Closed(Exception):
    """The connection is over (client gone, timeout, or gateway closing)."""


class _BadRequest(Exception):
    """The request could not be parsed."""


# ---- scripted replies ----

class Reply:
    """A plain response; body may be bytes, str or a JSON-serialisable object."""

    def __init__(self, status=200, body=None, headers=None, chunked=False,
                 content_type="application/json"):
        self.status, self.body, self.headers = status, body, headers
        self.chunked, self.content_type = chunked, content_type

    def send(self, conn: "_Conn") -> bool:
        body = self.body
        if body is None:
            body = b""
        elif isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, bytes):
            body = compact_json(body)
        return conn.respond(self.status, body, self.headers, self.content_type, self.chunked)


class ErrorReply:
    """An ErrorResponse envelope; `type` defaults from the code (or status)."""

    def __init__(self, status, code, message, type=None, param=None, headers=None):
        self.status, self.headers = status, headers
        self.body = error_body(status, code, message, type, param)

    def send(self, conn: "_Conn") -> bool:
        return conn.respond(self.status, compact_json(self.body), self.headers)


class Redirect:
    """A 3xx with a Location header."""

    def __init__(self, status, location):
        self.status, self.location = status, location

    def send(self, conn: "_Conn") -> bool:
        body = ("Redirecting to %s\n" % self.location).encode("utf-8")
        return conn.respond(self.status, body, [("Location", self.location)],
                            "text/plain; charset=utf-8")


class SSE:
    """An event stream: dicts become `data: <json>`, bytes go verbatim, numbers stall."""

    def __init__(self, events, done=True, chunked=True, headers=None, status=200):
        self.events, self.done, self.chunked = list(events), done, chunked
        self.headers, self.status = headers, status

    def send(self, conn: "_Conn") -> bool:
        headers = _merge([("Cache-Control", "no-cache")], self.headers)
        keep = conn.start(self.status, headers, "text/event-stream", chunked=self.chunked,
                          close=not self.chunked)
        events = self.events + ([b"data: [DONE]\n\n"] if self.done else [])
        for event in events:
            if _is_stall(event):
                conn.stall(event)
                continue
            data = event if isinstance(event, bytes) else sse_bytes(event)
            conn.send(chunk_frame(data) if self.chunked and data else data)
        if self.chunked:
            conn.send(CHUNK_END)
        return keep


class Raw:
    """Exact bytes from the status line on; floats are stalls; then close/reset/hold."""

    def __init__(self, parts, then="close"):
        if then not in ("close", "reset", "hold"):
            raise ValueError("then must be 'close', 'reset' or 'hold'")
        self.parts, self.then = list(parts), then

    def send(self, conn: "_Conn") -> bool:
        for part in self.parts:
            if _is_stall(part):
                conn.stall(part)
            else:
                conn.send(bytes(part))
        if self.then == "reset":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.then == "hold":
            conn.hold()
        return False


# ---- connection handling ----

class Recorded:
    """One request as the gateway received it."""

    def __init__(self, method: str, path: str, version: str, headers: dict, body: bytes,
                 raw_head: bytes) -> None:
        self.method, self.path, self.version = method, path, version
        self.headers, self.body, self.raw_head = headers, body, raw_head
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None  # type: Any
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return "<Recorded %s %s %d bytes>" % (self.method, self.path, len(self.body))


class _Conn:
    """One accepted connection: buffered reads, writes, disconnect accounting."""

    def __init__(self, gw: "Gateway", sock: socket.socket) -> None:
        self.gw, self.sock = gw, sock
        self.buf = bytearray()
        self.keep_alive = True
        self.method = "GET"
        self.gone = False

    def lost(self) -> None:
        """The client closed or reset: count it once, unless we are shutting down."""
        if not self.gone and not self.gw._stop.is_set():
            self.gone = True
            self.gw._count_disconnect()

    def recv_more(self) -> None:
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise _Closed()
        except (OSError, ValueError):
            self.lost()
            raise _Closed()
        if not data:
            self.lost()
            raise _Closed()
        self.buf += data

    def readline(self) -> bytes:
        while b"\n" not in self.buf:  # grows by >= 1 byte per pass, capped by MAX_LINE
            if len(self.buf) > MAX_LINE:
                raise _BadRequest("line too long")
            self.recv_more()
        n = self.buf.index(b"\n") + 1
        line = bytes(self.buf[:n])
        del self.buf[:n]
        return line

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:  # grows by >= 1 byte per pass
            self.recv_more()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (OSError, ValueError):
            self.lost()
            raise _Closed()

    def stall(self, seconds: float) -> None:
        if self.gw._stop.wait(seconds):
            raise _Closed()

    def hold(self) -> None:
        """Keep the socket open, reading, until the client closes or HOLD_SECONDS pass."""
        deadline = time.monotonic() + HOLD_SECONDS
        while not self.gw._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(min(0.2, left))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (OSError, ValueError):
                data = b""
            if not data:
                self.lost()
                return

    def start(self, status, headers, content_type, length=None, chunked=False, close=False):
        """Write a response head with our default headers; returns keep-alive."""
        items = _merge([("Content-Type", content_type)], headers)
        asked_close = any(k.lower() == "connection" and "close" in str(v).lower()
                          for k, v in items)
        keep = self.keep_alive and not close and not asked_close
        items = _merge(items, [("Connection", "keep-alive" if keep else "close")])
        self.send(http_head(status, items, chunked, length))
        return keep

    def respond(self, status, body, headers=None, content_type="application/json",
                chunked=False) -> bool:
        """A complete response with Content-Length (or chunked); returns keep-alive."""
        if status < 200 or status in (204, 304):
            body, chunked = b"", False
            keep = self.start(status, headers, content_type)
        else:
            keep = self.start(status, headers, content_type,
                              None if chunked else len(body), chunked)
        if self.method == "HEAD":
            return keep
        if chunked:
            self.send((chunk_frame(body) if body else b"") + CHUNK_END)
        elif body:
            self.send(body)
        return keep

    def read_request(self) -> Recorded:
        line = b"\r\n"
        for _ in range(5):  # tolerate a few stray CRLFs between requests
            line = self.readline()
            if line.strip():
                break
        raw = [line]
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest("bad request line")
        method, path, version = parts
        headers = {}  # type: dict
        for _ in range(MAX_HEADERS + 1):
            line = self.readline()
            raw.append(line)
            if not line.strip():
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name.strip():
                raise _BadRequest("bad header")
            key, value = name.strip().lower(), value.strip()
            headers[key] = headers[key] + ", " + value if key in headers else value
        else:
            raise _BadRequest("too many headers")
        self.method = method
        conn = headers.get("connection", "").lower()
        self.keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        if "100-continue" in headers.get("expect", "").lower() and version == "HTTP/1.1":
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self.read_chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise _BadRequest("bad content-length")
            if not 0 <= length <= MAX_BODY:
                raise _BadRequest("bad content-length")
            body = self.read(length)
        else:
            body = b""
        return Recorded(method, path, version, headers, body, b"".join(raw))

    def read_chunked(self) -> bytes:
        body = bytearray()
        for _ in range(MAX_BODY):
            try:
                size = int(self.readline().split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest("bad chunk size")
            if size == 0:
                break
            if size < 0 or len(body) + size > MAX_BODY:
                raise _BadRequest("body too large")
            body += self.read(size)
            if self.read(2) != b"\r\n":
                raise _BadRequest("bad chunk end")
        for _ in range(MAX_HEADERS):  # trailers
            if not self.readline().strip():
                break
        return bytes(body)


# ---- the fake LLM ----

def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _check_chat(req: Recorded, body: Any):
    """Validation per the spec; returns (status, code, message, param) or None."""
    auth = req.headers.get("authorization", "")
    key = re.match(r"Bearer +(\S+)$", auth.strip(), re.I)
    if not key:
        msg = "Invalid Authorization header" if auth else "Missing Authorization header"
        return 401, "unauthorized", msg, None
    if key.group(1) == "forbidden-key":
        return 403, "forbidden", "API key is inactive", None
    if body is None:
        return 400, "invalid_json", ERROR_CODES["invalid_json"][2], None
    if not isinstance(body, dict):
        return 400, "invalid_request", "Request body must be a JSON object", None
    model = body.get("model")
    if model == "invalid-model":
        return 400, "bad_model_id", "Invalid model ID: 'invalid-model'", "model"
    wanted = re.match(r"error-(\d{3})$", model) if isinstance(model, str) else None
    if wanted:
        status = int(wanted.group(1))
        code = STATUS_CODES.get(status)
        return status, code, ERROR_CODES[code][2] if code else _reason(status), None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or \
            not all(isinstance(m, dict) for m in messages):
        return 400, "invalid_request", "'messages' must be a non-empty array", "messages"
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
        return 400, "invalid_request", "'n' must be an integer from 1 to 128", "n"
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(
            isinstance(t, dict) and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) for t in tools)):
        return 400, "invalid_request", "'tools' must be an array of function tools", "tools"
    return None


def _answer(body: dict):
    """(text, tool_call) for the request; exactly one of them is None."""
    messages = body["messages"]
    last = messages[-1]
    user = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    user_text = user[-1] if user else ""
    if last.get("role") == "tool":
        return "Tool said: " + _text(last.get("content")), None
    if body.get("tools"):
        fn = body["tools"][0]["function"]
        params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
        required = params.get("required") or []
        name = required[0] if isinstance(required, list) and required and \
            isinstance(required[0], str) else "input"
        args = compact_json({name: user_text}).decode("utf-8")
        return None, {"id": "call_1", "type": "function",
                      "function": {"name": fn["name"], "arguments": args}}
    return "Echo: " + user_text, None


def _pieces(text: str) -> List[str]:
    return [text[i:i + PIECE] for i in range(0, len(text), PIECE)]


def _chat(conn: _Conn, req: Recorded) -> bool:
    try:
        body = json.loads(req.body.decode("utf-8"))
    except ValueError:
        body = None
    problem = _check_chat(req, body)
    if problem:
        status, code, message, param = problem
        return conn.respond(status, compact_json(error_body(status, code, message, None, param)))
    model = body.get("model") if isinstance(body.get("model"), str) else DEFAULT_MODEL
    provider = [("X-Edgee-Provider", model.split("/")[0] if "/" in model else "openai")]
    n = body.get("n", 1)
    text, call = _answer(body)
    texts = [None if call else text + (" #%d" % i if n > 1 else "") for i in range(n)]
    finish = "tool_calls" if call else "stop"
    compress = bool(body.get("compression_model") or
                    req.headers.get("x-edgee-compression-model"))
    prompt = sum(_words(_text(m.get("content"))) for m in body["messages"])
    completion = sum(_words(t if t is not None else call["function"]["arguments"])
                     for t in texts)
    usage = make_usage(prompt, completion)
    if not body.get("stream"):
        choices = []
        for i, t in enumerate(texts):
            msg = {"role": "assistant", "content": t}  # type: dict
            if call:
                msg["tool_calls"] = [call]
            choices.append({"index": i, "message": msg, "finish_reason": finish})
        resp = {"id": COMPLETION_ID, "object": "chat.completion", "created": CREATED,
                "model": model, "choices": choices, "usage": usage}
        if compress:
            resp["compression"] = COMPRESSION
        return conn.respond(200, compact_json(resp), provider)
    events = [completion_chunk(role="assistant", index=i, model=model) for i in range(n)]
    if call:
        first = {"index": 0, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": ""}}
        frags = [[first]] + [[{"index": 0, "function": {"arguments": p}}]
                             for p in _pieces(call["function"]["arguments"])]
        deltas = [[{"tool_calls": f} for f in frags]] * n
    else:
        deltas = [[{"content": p} for p in _pieces(t)] for t in texts]
    for step in range(max(len(d) for d in deltas)):  # round-robin across choices
        for i, d in enumerate(deltas):
            if step < len(d):
                events.append(completion_chunk(index=i, model=model, **d[step]))
    for i in range(n):
        events.append(completion_chunk(finish_reason=finish, index=i, model=model,
                                       compression=COMPRESSION if compress and i == n - 1
                                       else None))
    if (body.get("stream_options") or {}).get("include_usage") is True:
        events.append(completion_chunk(usage=usage, model=model))
    return SSE(events, headers=provider).send(conn)


def fake_llm(conn: _Conn, req: Recorded) -> bool:
    """Default behaviour when no scripted reply is queued; returns keep-alive."""
    path = req.path.split("?", 1)[0]
    if req.method == "GET" and path == "/v1/models":
        return conn.respond(200, compact_json(MODELS))
    if req.method == "POST" and path == "/v1/chat/completions":
        return _chat(conn, req)
    msg = "Not found: %s %s" % (req.method, path)
    return conn.respond(404, compact_json(error_body(404, None, msg)))


# ---- TLS material (test-only; CA and localhost leaf, EC P-256, valid 2020-2119) ----

TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBljCCAT2gAwIBAgIUZRfufyhKVwP7hp021u+5+kfkZ14wCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNRWRnZWUgVGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTE5
MTIzMTIzNTk1OVowGDEWMBQGA1UEAwwNRWRnZWUgVGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABP0YaRHM3WsCokL2c/0W7Qody0bA/RpwZcnAKiu7xHrR
4h22Pp7Ps8ZtoNIiiE54Kr6DUmq2xWJcqPwY3HHEe+ajYzBhMA8GA1UdEwEB/wQF
MAMBAf8wDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBQe3ctEjAXuwNd9ZaCJF09/
+PNRNTAfBgNVHSMEGDAWgBQe3ctEjAXuwNd9ZaCJF09/+PNRNTAKBggqhkjOPQQD
AgNHADBEAiAemSSoRxPdpnMIcAo4KHtuoVWKKHS+is4nneaIBlHqWwIgRj8tFQTf
S+t/VLZ6s0BcJB7bZjAkw5el/8MTv2DhUJo=
-----END CERTIFICATE-----
"""

TEST_CERT_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBxDCCAWmgAwIBAgIUde3pfmioXBkuyvNgKmG2at/mUzowCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNRWRnZWUgVGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTE5
MTIzMTIzNTk1OVowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEse88Wwc2lceOJ8bO2Ax07MrAgaVV3pa8Xud2FI8JwHyDKuNK
6tf2Htken0sfU9MmkL2Lo6nWa64hX1EXeyEIg6OBkjCBjzAMBgNVHRMBAf8EAjAA
MA4GA1UdDwEB/wQEAwIFoDATBgNVHSUEDDAKBggrBgEFBQcDATAaBgNVHREEEzAR
gglsb2NhbGhvc3SHBH8AAAEwHQYDVR0OBBYEFFb/4S4jTe66rbilJGootHJsq8yv
MB8GA1UdIwQYMBaAFB7dy0SMBe7A131loIkXT3/481E1MAoGCCqGSM49BAMCA0kA
MEYCIQCOkgIS+8/Jyy16XScS6X9TLMBs8GcBt2MLfV/CaFBPFwIhANJ67X4ANbO0
3M/iBon0iX4W/NsiTj5z7Bbc9eSiTm1H
-----END CERTIFICATE-----
"""

TEST_KEY_PEM = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgIxjGr48x6Y0yboyE
nRzCDo1wnS3b/RP0Cn4fZqU6SvWhRANCAASx7zxbBzaVx44nxs7YDHTsysCBpVXe
lrxe53YUjwnAfIMq40rq1/Ye2R6fSx9T0yaQvYujqdZrriFfURd7IQiD
-----END PRIVATE KEY-----
"""

_server_ctx = None  # type: Optional[ssl.SSLContext]
_server_ctx_lock = threading.Lock()


def server_ssl_context() -> ssl.SSLContext:
    """The gateway's TLS context (built once; key material goes through a temp file)."""
    global _server_ctx
    with _server_ctx_lock:
        if _server_ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            fd, path = tempfile.mkstemp(prefix="edgee-test-", suffix=".pem")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(TEST_CERT_PEM + TEST_KEY_PEM)
                ctx.load_cert_chain(path)
            finally:
                os.remove(path)
            _server_ctx = ctx
        return _server_ctx


def client_ssl_context() -> ssl.SSLContext:
    """A client context that trusts only the test CA."""
    return ssl.create_default_context(cadata=TEST_CA_PEM)


# ---- the gateway ----

class Gateway:
    """Loopback gateway on 127.0.0.1 (ephemeral port unless given); close() stops it."""

    def __init__(self, tls: bool = False, port: int = 0) -> None:
        self.tls = tls
        self.requests = []  # type: List[Recorded]
        self.errors = []  # type: List[BaseException]  # unexpected exceptions in handlers
        self.connections = 0
        self.disconnects = 0
        self._replies = collections.deque()  # type: collections.deque
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._open = set()  # type: set
        self._threads = []  # type: List[threading.Thread]
        self._ctx = server_ssl_context() if tls else None
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind(("127.0.0.1", port))
            self._listener.listen(64)
        except OSError:
            self._listener.close()
            raise
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]  # type: int
        self.url = "%s://%s:%d" % ("https" if tls else "http",
                                   "localhost" if tls else "127.0.0.1", self.port)
        self._acceptor = threading.Thread(target=self._accept_loop, name="gateway-accept",
                                          daemon=True)
        self._acceptor.start()

    def push(self, *replies) -> None:
        """Queue scripted replies, consumed FIFO, one per request."""
        with self._cond:
            self._replies.extend(replies)

    def wait_requests(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout)

    def wait_disconnects(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.disconnects >= n, timeout)

    def serving(self) -> bool:
        return self._acceptor.is_alive()

    def close(self) -> None:
        """Stop serving, close the listener and all connections, join threads (bounded)."""
        self._stop.set()
        self._acceptor.join(2.0)
        self._listener.close()
        with self._cond:
            socks, threads = list(self._open), list(self._threads)
        for s in socks:
            try:
                socket.socket.shutdown(s, socket.SHUT_RDWR)  # wakes the handler; it closes
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _count_disconnect(self) -> None:
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():  # ends with close()
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(SOCKET_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._handle, args=(sock,), daemon=True,
                                 name="gateway-conn")
            with self._cond:
                self.connections += 1
                self._open.add(sock)
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _handle(self, sock: socket.socket) -> None:
        conn = _Conn(self, sock)
        try:
            if self._ctx is not None:
                with self._cond:
                    self._open.discard(sock)
                    sock = conn.sock = self._ctx.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False)
                    self._open.add(sock)
                try:
                    sock.do_handshake()
                except (OSError, ValueError):  # certificate refused or client gone
                    conn.lost()
                    return
            for _ in range(MAX_REQUESTS_PER_CONN):
                try:
                    req = conn.read_request()
                except _BadRequest as e:
                    conn.keep_alive = False
                    conn.respond(400, compact_json(error_body(400, "invalid_request", str(e))))
                    return
                with self._cond:
                    self.requests.append(req)
                    reply = self._replies.popleft() if self._replies else None
                    self._cond.notify_all()
                keep = reply.send(conn) if reply is not None else fake_llm(conn, req)
                if not keep or self._stop.is_set():
                    return
        except _Closed:
            pass
        except Exception as e:  # a bug in a reply or in the gateway: keep it for tests
            self.errors.append(e)
        finally:
            with self._cond:
                self._open.discard(sock)
            try:
                sock.close()
            except OSError:
                pass


# ---- gateway self-tests ----

def _chat_body(content="hi", **extra) -> bytes:
    body = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return json.dumps(body).encode("utf-8")


AUTH = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}


class GatewaySelfTest(unittest.TestCase):
    """The loopback gateway, exercised with http.client only."""

    def setUp(self) -> None:
        self.gw = Gateway()
        self.addCleanup(self.gw.close)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=5)
        self.addCleanup(self.conn.close)

    def post(self, body: bytes, headers=None):
        headers = AUTH if headers is None else headers
        self.conn.request("POST", "/v1/chat/completions", body, headers)
        resp = self.conn.getresponse()
        return resp, resp.read()

    def test_completion(self) -> None:
        headers = dict(AUTH, **{"X-Edgee-Compression-Model": "claude"})
        resp, data = self.post(_chat_body("héllo", n=2), headers)
        self.assertEqual(resp.status, 200)
        out = json.loads(data.decode("utf-8"))
        self.assertEqual((out["id"], out["object"]), ("chatcmpl-test", "chat.completion"))
        self.assertEqual([c["message"]["content"] for c in out["choices"]],
                         ["Echo: héllo #0", "Echo: héllo #1"])
        self.assertEqual(out["usage"]["output_tokens_details"], {"reasoning_tokens": 0})
        self.assertEqual(out["compression"]["saved_tokens"], 450)
        rec = self.gw.requests[0]
        self.assertEqual((rec.method, rec.path, rec.json["n"]), ("POST", "/v1/chat/completions", 2))
        self.assertEqual(rec.headers["authorization"], "Bearer test-key")
        self.assertTrue(rec.raw_head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n"))

    def test_stream(self) -> None:
        resp, data = self.post(_chat_body("wörld €", stream=True,
                                          stream_options={"include_usage": True}))
        self.assertEqual(resp.getheader("Content-Type"), "text/event-stream")
        self.assertEqual(resp.getheader("Transfer-Encoding"), "chunked")
        lines = [ln[6:] for ln in data.decode("utf-8").split("\n\n") if ln.startswith("data: ")]
        self.assertEqual(lines[-1], "[DONE]")
        chunks = [json.loads(ln) for ln in lines[:-1]]
        self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant"})
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1])
        self.assertEqual(text, "Echo: wörld €")
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "stop")
        self.assertEqual((chunks[-1]["choices"], chunks[-1]["usage"]["total_tokens"]), ([], 5))

    def test_stream_tool_call(self) -> None:
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}
        resp, data = self.post(_chat_body("Paris", stream=True, tools=[tool]))
        events = [json.loads(ln[6:]) for ln in data.decode("utf-8").split("\n\n")
                  if ln.startswith("data: {")]
        calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in events
                 if "tool_calls" in c["choices"][0]["delta"]]
        self.assertEqual((calls[0]["id"], calls[0]["function"]["name"]), ("call_1", "get_weather"))
        self.assertEqual("".join(c["function"]["arguments"] for c in calls), '{"city":"Paris"}')
        self.assertEqual(events[-1]["choices"][0]["finish_reason"], "tool_calls")

    def test_keep_alive_and_expect(self) -> None:
        self.post(_chat_body())
        headers = dict(AUTH, **{"Expect": "100-continue", "Transfer-Encoding": "chunked"})
        self.conn.putrequest("POST", "/v1/chat/completions", skip_accept_encoding=True)
        for k, v in headers.items():
            self.conn.putheader(k, v)
        self.conn.endheaders()
        body = _chat_body("two")
        self.conn.send(chunk_frame(body[:10]) + chunk_frame(body[10:]) + CHUNK_END)
        resp = self.conn.getresponse()
        self.assertIn(b"Echo: two", resp.read())
        self.assertEqual((self.gw.connections, len(self.gw.requests)), (1, 2))

    def test_raw_pause(self) -> None:
        self.gw.push(Raw([http_head(200, {"Content-Type": "text/plain"}, content_length=4),
                          b"ab", 0.2, b"cd"]))
        start = time.monotonic()
        self.conn.request("GET", "/x")
        self.assertEqual(self.conn.getresponse().read(), b"abcd")
        self.assertGreaterEqual(time.monotonic() - start, 0.18)

    def test_raw_reset(self) -> None:
        self.gw.push(Raw([http_head(200, content_length=100), b"partial"], then="reset"))
        with self.assertRaises((ConnectionError, http.client.IncompleteRead)):
            self.conn.request("GET", "/x")
            self.conn.getresponse().read()

    def test_hold_counts_disconnect(self) -> None:
        self.gw.push(Raw([http_head(200, chunked=True)], then="hold"))
        self.conn.request("GET", "/x")
        self.conn.getresponse().close()
        self.conn.close()
        self.assertTrue(self.gw.wait_disconnects(1, 2.0))

    def test_errors(self) -> None:
        self.gw.push(ErrorReply(429, "usage_limit_exceeded", "slow down",
                                headers={"Retry-After": "1"}))
        resp, data = self.post(_chat_body())
        self.assertEqual((resp.status, resp.getheader("Retry-After")), (429, "1"))
        self.assertEqual(json.loads(data.decode("utf-8")), {"error": {
            "message": "slow down", "type": "rate_limit_error",
            "code": "usage_limit_exceeded", "param": None}})
        for body, headers, status, code in [
                (_chat_body(), {}, 401, "unauthorized"),
                (b"{nope", AUTH, 400, "invalid_json"),
                (_chat_body(model="error-502"), AUTH, 502, "provider_error")]:
            resp, data = self.post(body, headers)
            self.assertEqual((resp.status, json.loads(data.decode("utf-8"))["error"]["code"]),
                             (status, code))
        self.conn.request("GET", "/v1/nothing")
        resp = self.conn.getresponse()
        self.assertEqual(json.loads(resp.read().decode("utf-8"))["error"]["type"],
                         "not_found_error")

    def test_tls(self) -> None:
        with Gateway(tls=True) as gw:
            ctx = client_ssl_context()
            ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # the 3.13 default, on every version
            conn = http.client.HTTPSConnection("localhost", gw.port, timeout=5, context=ctx)
            try:
                conn.request("GET", "/v1/models")
                resp = conn.getresponse()
                self.assertEqual(len(json.loads(resp.read().decode("utf-8"))["data"]), 2)
            finally:
                conn.close()
            self.assertTrue(gw.url.startswith("https://localhost:"))
            other = http.client.HTTPSConnection("localhost", gw.port, timeout=5,
                                                context=ssl.create_default_context())
            with self.assertRaises(ssl.SSLError):  # the test CA is not a system CA
                other.request("GET", "/v1/models")
            other.close()


# ---- tests ----
# Client tests for edgee.py go here (import edgee in this section only).


# ---- serve on its own ----

def serve(argv: List[str]) -> None:
    """python test_edgee.py --serve [PORT]: run the gateway until Ctrl-C."""
    port = int(argv[0]) if argv else 8787
    gw = Gateway(port=port)
    print("Edgee loopback gateway on http://127.0.0.1:%d" % gw.port, flush=True)
    try:
        while gw.serving():  # until Ctrl-C
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        gw.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
    else:
        unittest.main()
