"""Tests for edgee.py, starting with a loopback Edgee AI Gateway.

The gateway is a real HTTP/1.1 server on 127.0.0.1 (threads + raw sockets)
that speaks the shapes of the Edgee OpenAPI spec. Tests script it with
Reply/ErrorReply/SSE/Raw/Redirect, or let a deterministic fake LLM answer.

Run it on its own:  python test_edgee.py --serve [PORT]
"""

from __future__ import annotations

import ast
import asyncio
import base64
import collections
import collections.abc
import contextlib
import copy
import dataclasses
import email.utils
import functools
import gzip
import http.client
import io
import json
import logging
import math
import os
import random
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import tracemalloc
import unittest
import urllib.error
import urllib.parse
from contextlib import redirect_stderr, redirect_stdout
from http import HTTPStatus
from typing import Any, ClassVar, Iterator, List, Optional

import edgee

# ---- loopback gateway ----

CREATED = 1677652288
COMPLETION_ID = "chatcmpl-test"
DEFAULT_MODEL = "openai/gpt-5.2"
SOCKET_TIMEOUT = 30.0  # per-socket timeout, so nothing hangs forever
HOLD_SECONDS = 10.0  # Raw(then="hold") gives up after this long
MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024
MAX_REQUESTS_PER_CONN = 1000
MAX_CHOICES = 128
PIECE = 3  # characters per streamed content piece
CHUNK_END = b"0\r\n\r\n"

# code -> (status, type, message), from edgee-error-codes.yml
ERROR_CODES = {
    "bad_model_id": (400, "invalid_request_error", "Invalid model ID: 'invalid-model'"),
    "model_not_found": (400, "invalid_request_error", "Model 'openai/gpt-1' not found"),
    "provider_not_supported": (
        400,
        "invalid_request_error",
        "Provider 'anthropic' is not supported for model 'openai/gpt-5.2'",
    ),
    "streaming_not_supported": (400, "invalid_request_error", "Streaming is not supported"),
    "invalid_json": (400, "invalid_request_error", "The request body could not be parsed as JSON."),
    "invalid_tokenizer": (400, "invalid_request_error", "The tokenizer is not valid."),
    "invalid_request": (400, "invalid_request_error", "Invalid request."),
    # from the OpenAPI description of edgee_tool_ids (not in the yml)
    "invalid_edgee_tool_ids": (400, "invalid_request_error", "Invalid Edge Tool IDs."),
    "unauthorized": (401, "authentication_error", "Missing Authorization header"),
    "forbidden": (403, "permission_error", "API key is inactive"),
    "usage_limit_exceeded": (
        429,
        "rate_limit_error",
        "Usage limit exceeded: 1000.00 / 1000 tokens used",
    ),
    "internal_error": (500, "server_error", "An internal error occurred."),
    "provider_error": (502, "provider_error", "The upstream LLM provider returned an error."),
}
STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    429: "usage_limit_exceeded",
    500: "internal_error",
    502: "provider_error",
}
STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "provider_error",
}
COMPRESSION = {"saved_tokens": 450, "cost_savings": 27000, "reduction": 48.99, "time_ms": 12}
MODELS = {
    "object": "list",
    "data": [
        {"id": "openai/gpt-5.2", "object": "model", "created": 1677610602, "owned_by": "openai"},
        {
            "id": "anthropic/claude-opus-4-6",
            "object": "model",
            "created": 1677610602,
            "owned_by": "anthropic",
        },
    ],
}


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


def error_body(
    status: int,
    code: Optional[str],
    message: str,
    type: Optional[str] = None,
    param: Optional[str] = None,
) -> dict:
    """The OpenAPI ErrorResponse envelope."""
    return {
        "error": {
            "message": message,
            "type": type or error_type(status, code),
            "code": code,
            "param": param,
        }
    }


def make_usage(prompt: int = 10, completion: int = 10, reasoning: int = 0) -> dict:
    """A Usage object per the OpenAPI schema (reasoning tokens are part of completion)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": reasoning},
    }


def completion_chunk(
    content=None,
    role=None,
    finish_reason=None,
    index=0,
    tool_calls=None,
    usage=None,
    compression=None,
    model=DEFAULT_MODEL,
    **fields,
) -> dict:
    """A chat.completion.chunk; usage alone gives the `"choices": []` usage chunk.

    Other keywords (reasoning_content=..., refusal=...) are further delta fields.
    """
    delta = {}  # type: dict
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    delta.update(fields)
    chunk = {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [],
    }  # type: dict
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


def http_head(
    status: int = 200,
    headers: Any = None,
    chunked: bool = False,
    content_length: Optional[int] = None,
) -> bytes:
    """Status line + headers + blank line, exactly as given (no defaults added)."""
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines += [f"{k}: {v}" for k, v in _items(headers)]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
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

    def __init__(
        self, status=200, body=None, headers=None, chunked=False, content_type="application/json"
    ):
        self.status, self.body, self.headers = status, body, headers
        self.chunked, self.content_type = chunked, content_type

    def send(self, conn: _Conn) -> bool:
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

    def send(self, conn: _Conn) -> bool:
        return conn.respond(self.status, compact_json(self.body), self.headers)


class Redirect:
    """A 3xx with a Location header."""

    def __init__(self, status, location):
        self.status, self.location = status, location

    def send(self, conn: _Conn) -> bool:
        body = (f"Redirecting to {self.location}\n").encode()
        return conn.respond(
            self.status, body, [("Location", self.location)], "text/plain; charset=utf-8"
        )


class SSE:
    """An event stream: dicts become `data: <json>`, bytes go verbatim, numbers stall."""

    def __init__(self, events, done=True, chunked=True, headers=None, status=200):
        self.events, self.done, self.chunked = list(events), done, chunked
        self.headers, self.status = headers, status

    def send(self, conn: _Conn) -> bool:
        headers = _merge([("Cache-Control", "no-cache")], self.headers)
        keep = conn.start(
            self.status, headers, "text/event-stream", chunked=self.chunked, close=not self.chunked
        )
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

    def send(self, conn: _Conn) -> bool:
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

    def __init__(
        self, method: str, path: str, version: str, headers: dict, body: bytes, raw_head: bytes
    ) -> None:
        self.method, self.path, self.version = method, path, version
        self.headers, self.body, self.raw_head = headers, body, raw_head
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None  # type: Any
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"<Recorded {self.method} {self.path} {len(self.body)} bytes>"


class _Conn:
    """One accepted connection: buffered reads, writes, disconnect accounting."""

    def __init__(self, gw: Gateway, sock: socket.socket) -> None:
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
            raise _Closed() from None
        except (OSError, ValueError):
            self.lost()
            raise _Closed() from None
        if not data:
            self.lost()
            raise _Closed() from None
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
            raise _Closed() from None

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
        asked_close = any(k.lower() == "connection" and "close" in str(v).lower() for k, v in items)
        keep = self.keep_alive and not close and not asked_close
        items = _merge(items, [("Connection", "keep-alive" if keep else "close")])
        self.send(http_head(status, items, chunked, length))
        return keep

    def respond(
        self, status, body, headers=None, content_type="application/json", chunked=False
    ) -> bool:
        """A complete response with Content-Length (or chunked); returns keep-alive."""
        if status < 200 or status in (204, 304):
            body, chunked = b"", False
            keep = self.start(status, headers, content_type)
        else:
            keep = self.start(
                status, headers, content_type, None if chunked else len(body), chunked
            )
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
                raise _BadRequest("bad content-length") from None
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
                raise _BadRequest("bad chunk size") from None
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


# ---- the OpenAPI schemas and a validator ----
# components.schemas of edgee-openapi.json without prose (GatewaySelfTest checks the copy).


def _s(spec: Any) -> dict:
    """Schema shorthand: a dict as is, "#Name" a $ref, anything else a type name."""
    if isinstance(spec, dict):
        return spec
    return {"$ref": "#/components/schemas/" + spec[1:]} if spec[0] == "#" else {"type": spec}


def _obj(required: str = "", props: Optional[dict] = None, **more: Any) -> dict:
    """An object schema: space-separated required names, then properties."""
    schema = dict(type="object", **more)
    if required:
        schema["required"] = required.split()
    if props is not None:
        schema["properties"] = {k: _s(v) for k, v in props.items()}
    return schema


def _arr(items: Any, **more: Any) -> dict:
    return dict(type="array", items=_s(items), **more)


def _enum(*values: str) -> dict:
    return {"type": "string", "enum": list(values)}


def _one(*alternatives: Any) -> dict:
    return {"oneOf": [_s(a) for a in alternatives]}


def _num(low: int, high: int) -> dict:
    return {"type": "number", "minimum": low, "maximum": high}


def _text_part(kind: str) -> dict:
    return _obj("type text", {"type": _enum(kind), "text": "string"})


COUNT = {"type": "integer", "minimum": 0}
POSITIVE = {"type": "integer", "minimum": 1}
FREE = {"type": "object", "additionalProperties": True}
NULLABLE = {"type": "string", "nullable": True}
FINISH = _enum("stop", "length", "content_filter", "tool_calls")
STRING_OR_OBJECTS = _one("string", _arr("object"))
TOOL_CHOICE_MODE = "#ToolChoiceTypedMode"
SCHEMAS = {
    "CountTokensRequest": _obj(
        "model",
        {
            "model": "string",
            "messages": _arr(
                _obj(
                    "role content",
                    {"role": "string", "content": STRING_OR_OBJECTS},
                    additionalProperties=True,
                )
            ),
            "system": STRING_OR_OBJECTS,
            "tokenizer": _enum("cl100k_base", "o200k_base"),
        },
    ),
    "CountTokensResponse": _obj("input_tokens", {"input_tokens": COUNT}),
    "ChatCompletionRequest": _obj(
        "model messages",
        {
            "model": "string",
            "messages": _arr("#Message", minItems=1),
            "max_tokens": POSITIVE,
            "stream": "boolean",
            "stream_options": _obj(props={"include_usage": "boolean"}),
            "tools": _arr("#Tool"),
            "tool_choice": _one(_enum("none", "auto"), TOOL_CHOICE_MODE, "#ToolChoiceSpecific"),
            "edgee_tool_ids": _arr("string"),
            "edgee_pending_id": "string",
            "tags": _arr("string"),
            "enable_debug": "boolean",
            "compression_model": "#CompressionModel",
        },
    ),
    "ToolChoiceTypedMode": _obj("type", {"type": _enum("auto", "none")}),
    "CompressionModel": _enum("claude", "opencode", "codex", "cursor"),
    "Message": _obj(
        "role",
        {
            "role": _enum("system", "user", "assistant", "tool", "developer"),
            "content": "string",
            "name": "string",
            "tool_call_id": "string",
            "refusal": "string",
            "tool_calls": _arr("#ToolCall"),
            "cache_control": FREE,
        },
    ),
    "Tool": _obj("type function", {"type": _enum("function"), "function": "#FunctionDefinition"}),
    "FunctionDefinition": _obj(
        "name", {"name": "string", "description": "string", "parameters": FREE}
    ),
    "ToolChoiceSpecific": _obj(
        "type function", {"type": _enum("function"), "function": "#ToolChoiceFunction"}
    ),
    "ToolChoiceFunction": _obj("name", {"name": "string"}),
    "ToolCall": _obj(
        "id type function",
        {"id": "string", "type": _enum("function"), "function": "#FunctionCall"},
    ),
    "FunctionCall": _obj("name arguments", {"name": "string", "arguments": "string"}),
    "ChatCompletionResponse": _obj(
        "id object created model choices usage",
        {
            "id": "string",
            "object": _enum("chat.completion"),
            "created": "integer",
            "model": "string",
            "choices": _arr("#ChatCompletionChoice"),
            "usage": "#Usage",
            "compression": "#CompressionInfo",
            "edgee_pending_id": "string",
            "edgee_tools_executed": _arr("#EdgeeToolExecuted"),
        },
    ),
    "EdgeeToolExecuted": _obj("name success", {"name": "string", "success": "boolean"}),
    "ChatCompletionChoice": _obj(
        "index message", {"index": COUNT, "message": "#Message", "finish_reason": FINISH}
    ),
    "Usage": _obj(
        "prompt_tokens completion_tokens total_tokens input_tokens_details output_tokens_details",
        {
            "prompt_tokens": COUNT,
            "completion_tokens": COUNT,
            "total_tokens": COUNT,
            "input_tokens_details": "#InputTokenDetails",
            "output_tokens_details": "#OutputTokenDetails",
        },
    ),
    "InputTokenDetails": _obj(props={"cached_tokens": COUNT, "cache_creation_tokens": COUNT}),
    "OutputTokenDetails": _obj(props={"reasoning_tokens": COUNT}),
    "ModelsResponse": _obj("object data", {"object": _enum("list"), "data": _arr("#Model")}),
    "Model": _obj(
        "id object created owned_by",
        {"id": "string", "object": _enum("model"), "created": "integer", "owned_by": "string"},
    ),
    "ChatCompletionChunk": _obj(
        "id object created model choices",
        {
            "id": "string",
            "object": _enum("chat.completion.chunk"),
            "created": "integer",
            "model": "string",
            "choices": _arr("#ChatCompletionChunkChoice"),
            "usage": "#Usage",
        },
    ),
    "ChatCompletionChunkChoice": _obj(
        "index delta",
        {
            "index": COUNT,
            "delta": "#Delta",
            # nullable is our one addition: the spec's own stream examples send null here
            "finish_reason": dict(FINISH, nullable=True),
        },
    ),
    "Delta": _obj(props={"role": "string", "content": "string"}),
    "ErrorResponse": _obj(
        "error",
        {
            "error": _obj(
                "message",
                {
                    "message": "string",
                    "type": _enum(
                        "invalid_request_error",
                        "authentication_error",
                        "permission_error",
                        "not_found_error",
                        "rate_limit_error",
                        "server_error",
                        "provider_error",
                    ),
                    "code": NULLABLE,
                    "param": NULLABLE,
                },
            )
        },
    ),
    "CreateMessageRequest": _obj(
        "model max_tokens messages",
        {
            "model": "string",
            "max_tokens": POSITIVE,
            "messages": _arr("#MessageParam", minItems=1),
            "system": _one("string", _arr("#ContentBlock")),
            "stream": "boolean",
            "tools": _arr("#AnthropicTool"),
            "tool_choice": "#ToolChoice",
        },
    ),
    "MessageParam": _obj(
        "role content",
        {"role": _enum("user", "assistant"), "content": _one("string", _arr("#ContentBlock"))},
    ),
    "ContentBlock": _obj(
        "type",
        oneOf=[
            _text_part("text"),
            _obj(
                "type id name input",
                {"type": _enum("tool_use"), "id": "string", "name": "string", "input": "object"},
            ),
            _obj(
                "type tool_use_id content",
                {
                    "type": _enum("tool_result"),
                    "tool_use_id": "string",
                    "content": "string",
                    "is_error": "boolean",
                },
            ),
        ],
    ),
    "AnthropicTool": _obj(
        "name input_schema", {"name": "string", "description": "string", "input_schema": "object"}
    ),
    "ToolChoice": _obj(
        "type",
        oneOf=[
            _obj("type", {"type": _enum("auto")}),
            _obj("type", {"type": _enum("any")}),
            _obj("type name", {"type": _enum("tool"), "name": "string"}),
        ],
    ),
    "CreateMessageResponse": _obj(
        "id model content usage",
        {
            "id": "string",
            "model": "string",
            "content": _arr("#ContentBlock"),
            "usage": "#AnthropicUsage",
            "stop_reason": _enum("end_turn", "max_tokens", "tool_use"),
        },
    ),
    "CompressionInfo": _obj(
        "saved_tokens cost_savings reduction time_ms",
        {
            "saved_tokens": COUNT,
            "cost_savings": COUNT,
            "reduction": _num(0, 100),
            "time_ms": COUNT,
        },
    ),
    "AnthropicUsage": _obj(
        "input_tokens output_tokens",
        {
            "input_tokens": COUNT,
            "output_tokens": COUNT,
            "cache_read_input_tokens": COUNT,
            "cache_creation_input_tokens": COUNT,
        },
    ),
    "ResponsesRequest": _obj(
        "model input",
        {
            "model": "string",
            "input": _one("string", _arr("#ResponsesInputItem")),
            "instructions": "string",
            "stream": "boolean",
            "max_output_tokens": POSITIVE,
            "tools": _arr("#ResponsesTool"),
            "tool_choice": _one(
                _enum("auto", "none"), TOOL_CHOICE_MODE, "#ResponsesToolChoiceFunction"
            ),
            "temperature": _num(0, 2),
            "top_p": "number",
            "tags": _arr("string"),
            "enable_debug": "boolean",
            "edgee_tool_ids": _arr("string"),
            "edgee_pending_id": "string",
            "compression_model": "#CompressionModel",
        },
    ),
    "ResponsesInputItem": _one(
        _obj(
            "role content",
            {
                "role": _enum("user", "assistant", "system", "developer"),
                "content": _one("string", _arr("#ResponsesContentPart")),
            },
        ),
        _obj(
            "type call_id name arguments",
            {
                "type": _enum("function_call"),
                "call_id": "string",
                "name": "string",
                "arguments": "string",
            },
        ),
        _obj(
            "type call_id output",
            {"type": _enum("function_call_output"), "call_id": "string", "output": "string"},
        ),
    ),
    "ResponsesContentPart": _one(
        _text_part("input_text"), _text_part("output_text"), _text_part("text")
    ),
    "ResponsesTool": _obj(
        "type name",
        {"type": _enum("function"), "name": "string", "description": "string", "parameters": FREE},
    ),
    "ResponsesToolChoiceFunction": _obj("type name", {"type": _enum("function"), "name": "string"}),
    "ResponsesResponse": _obj(
        "id object status created_at model output usage",
        {
            "id": "string",
            "object": _enum("response"),
            "status": _enum("completed", "in_progress"),
            "created_at": "number",
            "model": "string",
            "output": _arr("#ResponsesOutputItem"),
            "usage": "#ResponsesUsage",
        },
    ),
    "ResponsesOutputItem": _obj(
        "id type status role content",
        {
            "id": "string",
            "type": _enum("message", "function_call"),
            "status": _enum("completed"),
            "role": _enum("assistant"),
            "content": _arr("#ResponsesOutputContent"),
        },
    ),
    "ResponsesOutputContent": _one(
        _text_part("output_text"),
        _obj(
            "type id name arguments",
            {
                "type": _enum("function_call"),
                "id": "string",
                "name": "string",
                "arguments": "string",
            },
        ),
    ),
    "ResponsesUsage": _obj(
        "input_tokens output_tokens total_tokens",
        {"input_tokens": COUNT, "output_tokens": COUNT, "total_tokens": COUNT},
    ),
    "CompressRequest": {
        "anyOf": [
            _s("#ChatCompletionRequest"),
            _s("#CreateMessageRequest"),
            _s("#ResponsesRequest"),
        ]
    },
    "CompressMetadata": _obj(
        "technique applied_strategies compression_rate uncompressed_input_tokens"
        " compressed_input_tokens compression_time_ms",
        {
            "technique": _enum("auto", "tool"),
            "applied_strategies": _arr("string"),
            "compression_rate": _num(0, 1),
            "uncompressed_input_tokens": COUNT,
            "compressed_input_tokens": COUNT,
            "compression_time_ms": COUNT,
            "error": "string",
            "tool_stats": FREE,
        },
    ),
    "CompressResponse": _obj(
        "compression", {"compression": "#CompressMetadata"}, additionalProperties=True
    ),
}
JSON_TYPES = {
    "boolean": bool,
    "integer": int,
    "number": (int, float),
    "string": str,
    "array": list,
    "object": dict,
}


def _is(value: Any, kind: str) -> bool:
    """Whether `value` is of JSON type `kind` (a bool is no number)."""
    return isinstance(value, JSON_TYPES[kind]) and (kind == "boolean") == isinstance(value, bool)


def _json_type(value: Any) -> str:
    return next((kind for kind in JSON_TYPES if _is(value, kind)), "null")


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def schema_problem(value: Any, schema: dict, path: str = "") -> Optional[tuple]:
    """The first way `value` breaks an OpenAPI 3.0 schema, as (path, reason); None if it fits.

    Knows type, properties, required, additionalProperties, items, minItems, enum,
    minimum, maximum, nullable, $ref (into SCHEMAS), oneOf and anyOf.
    """
    if "$ref" in schema:
        return schema_problem(value, SCHEMAS[schema["$ref"].rsplit("/", 1)[1]], path)
    if value is None and schema.get("nullable"):
        return None
    kind = schema.get("type")
    if kind and not _is(value, kind):
        return path, f"expected {kind}, got {_json_type(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return path, "must be one of " + ", ".join(map(json.dumps, schema["enum"]))
    if _is(value, "number"):
        if value < schema.get("minimum", value):
            return path, f"must be at least {schema['minimum']}"
        if value > schema.get("maximum", value):
            return path, f"must be at most {schema['maximum']}"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return path, f"needs at least {schema['minItems']} item(s)"
        for i, item in enumerate(value):
            problem = schema_problem(item, schema.get("items", {}), f"{path}[{i}]")
            if problem:
                return problem
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return _at(path, name), "is required"
        known, other = schema.get("properties", {}), schema.get("additionalProperties", True)
        for name, item in value.items():
            sub = known.get(name, other)
            if sub is False:
                return _at(path, name), "is not allowed"
            problem = schema_problem(item, sub, _at(path, name)) if sub is not True else None
            if problem:
                return problem
    for key in ("oneOf", "anyOf"):
        if key in schema:
            fits = sum(schema_problem(value, alt, path) is None for alt in schema[key])
            if not fits:
                return path, "matches none of the allowed forms"
            if fits > 1 and key == "oneOf":
                return path, "matches more than one of the allowed forms"
    return None


def fits(value: Any, name: str) -> Optional[tuple]:
    """schema_problem against components.schemas[name]."""
    return schema_problem(value, _s("#" + name))


# ---- the fake LLM ----
# Triggers (model names and fields) are listed in FAKE_LLM_GUIDE, printed by --serve.

REFUSAL = "I can't help with that."
EDGE_RESULTS = {
    "edgee_current_time": "2023-03-01T06:31:28Z",
    "edgee_generate_uuid": "123e4567-e89b-42d3-a456-426614174000",
}
COMPRESS_WORDS = 8  # /v1/compress keeps this many words of each longer text
COMPRESSED_KEYS = ("messages", "input", "system")  # what /v1/compress rewrites, per the spec
PROMPT_KEYS = (*COMPRESSED_KEYS, "instructions")  # what counts as input tokens
TEXT_KEYS = ("content", "text", "output")  # where messages, blocks and items keep their text
API_KEY_PATHS = ("/v1/messages", "/v1/messages/count_tokens", "/v1/compress")  # x-api-key too


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _texts(value: Any) -> Iterator[str]:
    """Every text of a prompt value (strings, and TEXT_KEYS of messages, blocks, items)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key in TEXT_KEYS:
            yield from _texts(value.get(key))


def _prompt_words(body: dict) -> int:
    """Input tokens of any request format: one per word of its prompt texts."""
    return sum(_words(t) for key in PROMPT_KEYS for t in _texts(body.get(key)))


def _squeeze(value: Any) -> Any:
    """`value` with every text over COMPRESS_WORDS words cut to its first ones."""
    if isinstance(value, str):
        words = value.split()
        return " ".join(words[:COMPRESS_WORDS]) if len(words) > COMPRESS_WORDS else value
    if isinstance(value, list):
        return [_squeeze(item) for item in value]
    if isinstance(value, dict):
        return {k: _squeeze(v) if k in TEXT_KEYS else v for k, v in value.items()}
    return value


def _last_user_text(items: list) -> str:
    texts = [_text(m.get("content")) for m in items if m.get("role") == "user"]
    return next((t for t in reversed(texts) if t), "")


def _answer(prompt: str, result: Optional[str], tool: Optional[tuple]):
    """What the model says: (text, None), or (None, (tool name, arguments)) to call a tool.

    `result` is a tool result just sent back; `tool` the first (name, JSON schema) offered.
    """
    if result is not None:
        return "Tool said: " + result, None
    if tool:
        name, params = tool
        required = params.get("required") if isinstance(params, dict) else None
        ok = isinstance(required, list) and required and isinstance(required[0], str)
        return None, (name, {required[0] if ok else "input": prompt})
    return "Echo: " + prompt, None


def _routing(model: str, provider: Optional[str] = None) -> list:
    """X-Edgee-Provider, plus X-Edgee-Fallback-Used for a model named *fallback*.

    The spec's enum for X-Edgee-Fallback-Used is only "1"; without a fallback it is absent.
    """
    primary = provider or (model.split("/")[0] if "/" in model else "openai")
    if "fallback" not in model:
        return [("X-Edgee-Provider", primary)]
    used = provider or ("anthropic" if primary == "openai" else "openai")
    return [("X-Edgee-Provider", used), ("X-Edgee-Fallback-Used", "1")]


def _rejection(req: Recorded, path: str, schema: Optional[str]) -> Optional[ErrorReply]:
    """The error the gateway answers instead (auth, JSON, schema, magic model), or None."""
    auth = req.headers.get("authorization", "")
    bearer = re.match(r"Bearer +(\S+)$", auth.strip(), re.I)
    key = bearer.group(1) if bearer else None
    if key is None and path in API_KEY_PATHS:
        key = req.headers.get("x-api-key")
    if not key:
        msg = "Invalid Authorization header" if auth else "Missing Authorization header"
        return ErrorReply(401, "unauthorized", msg)
    if key == "forbidden-key":
        return ErrorReply(403, "forbidden", "API key is inactive")
    if schema is None:
        return None
    try:
        body = json.loads(req.body.decode("utf-8"))
    except ValueError:
        return ErrorReply(400, "invalid_json", ERROR_CODES["invalid_json"][2])
    problem = fits(body, schema)
    if problem:
        where, reason = problem
        code = "invalid_tokenizer" if where == "tokenizer" else "invalid_request"
        return ErrorReply(400, code, f"{where or 'body'}: {reason}", param=where or None)
    model = body["model"]  # every request schema requires it
    if model == "invalid-model":
        return ErrorReply(400, "bad_model_id", "Invalid model ID: 'invalid-model'", param="model")
    wanted = re.match(r"error-(\d{3})$", model)
    if wanted:
        status = int(wanted.group(1))
        code = STATUS_CODES.get(status)
        return ErrorReply(status, code, ERROR_CODES[code][2] if code else _reason(status))
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
        return ErrorReply(400, "invalid_request", "'n' must be an integer from 1 to 128", param="n")
    return None


def _pieces(text: str) -> List[str]:
    return [text[i : i + PIECE] for i in range(0, len(text), PIECE)]


def _edge_tools(gw: Gateway, body: dict, calling: bool):
    """(executed, pending id, results the model reads) for the request's Edge Tools.

    With a client tool call the results wait for the resume (edgee_pending_id), else
    the model reads them at once; a resume reads the stored ones. Errors: ErrorReply.
    """
    pending = body.get("edgee_pending_id")
    if pending is not None:
        with gw._cond:
            stored = gw.pending.get(pending)
        if stored is None:
            msg = f"Unknown edgee_pending_id: '{pending}'"
            return ErrorReply(400, "invalid_request", msg, param="edgee_pending_id")
        return [], None, stored
    ids = body.get("edgee_tool_ids") or []
    bad = [i for i in ids if not i.startswith("edgee_")]
    if bad:
        msg = "Invalid or non-activated Edge Tool IDs: " + ", ".join(bad)
        return ErrorReply(400, "invalid_edgee_tool_ids", msg, param="edgee_tool_ids")
    executed = [{"name": i, "success": "fail" not in i} for i in ids]
    if calling and executed:
        return executed, gw.defer(executed), []
    return executed, None, executed


def _edge_said(results: list) -> str:
    said = [
        f"{r['name']}: {EDGE_RESULTS.get(r['name'], 'done') if r['success'] else 'failed'}"
        for r in results
    ]
    return "; Edge Tools said: " + ", ".join(said) if said else ""


def _chat_view(body: dict) -> tuple:
    """(prompt, tool result or None, first tool) of a chat request, for _answer."""
    messages, tools = body["messages"], body.get("tools")
    last = messages[-1]
    result = _text(last.get("content")) if last["role"] == "tool" else None
    tool = (tools[0]["function"]["name"], tools[0]["function"].get("parameters")) if tools else None
    return _last_user_text(messages), result, tool


def _chat_message(text: str, call: Optional[dict], refusal, reasoning) -> dict:
    """The assistant message of one choice (no content beside a tool call or a refusal)."""
    message = {"role": "assistant"}  # type: dict
    if call:
        message["tool_calls"] = [call]
    elif refusal:
        message["refusal"] = refusal
    else:
        message["content"] = text
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


def _chat_deltas(message: dict) -> List[dict]:
    """The deltas that stream `message` after its role chunk: reasoning first, in pieces."""
    deltas = [{"reasoning_content": p} for p in _pieces(message.get("reasoning_content", ""))]
    for call in message.get("tool_calls", []):
        function = {"name": call["function"]["name"], "arguments": ""}
        deltas.append({"tool_calls": [{"index": 0, **call, "function": function}]})
        deltas += [
            {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}
            for p in _pieces(call["function"]["arguments"])
        ]
    for key in ("refusal", "content"):
        deltas += [{key: p} for p in _pieces(message.get(key, ""))]
    return deltas


def _chat_chunks(model: str, messages: list, finish: str, usage, compress: bool) -> List[dict]:
    """The chunks that stream one message per choice, round-robin across choices."""
    n = len(messages)
    chunks = [completion_chunk(role="assistant", index=i, model=model) for i in range(n)]
    deltas = [_chat_deltas(m) for m in messages]
    for step in range(max(map(len, deltas))):
        chunks += [
            completion_chunk(index=i, model=model, **d[step])
            for i, d in enumerate(deltas)
            if step < len(d)
        ]
    for i in range(n):
        last = compress and i == n - 1
        compression = COMPRESSION if last else None
        chunks.append(
            completion_chunk(finish_reason=finish, index=i, model=model, compression=compression)
        )
    if usage:
        chunks.append(completion_chunk(usage=usage, model=model))
    return chunks


def _chat(gw: Gateway, req: Recorded, body: dict) -> Any:
    """OpenAI chat: echo, tool calls, Edge Tools, reasoning, refusals; JSON or stream."""
    prompt, result, tool = _chat_view(body)
    text, wants = _answer(prompt, result, tool)
    edge = _edge_tools(gw, body, wants is not None)
    if isinstance(edge, ErrorReply):
        return edge
    executed, pending, results = edge
    model, n = body["model"], body.get("n", 1)
    call = None
    if wants:
        arguments = compact_json(wants[1]).decode("utf-8")
        call = {"id": "call_1", "type": "function"}
        call["function"] = {"name": wants[0], "arguments": arguments}
    thinks = "reasoning" in model or "reasoning_effort" in body
    reasoning = "Thinking about: " + prompt if thinks else None
    refusal = REFUSAL if text and result is None and "refuse" in prompt.lower() else None
    said = (text or "") + _edge_said(results)
    texts = [said + (f" #{i}" if n > 1 else "") for i in range(n)]
    messages = [_chat_message(t, call, refusal, reasoning) for t in texts]
    shown = [call["function"]["arguments"] if call else refusal or t for t in texts]
    thought = _words(reasoning or "") * n
    usage = make_usage(_prompt_words(body), sum(map(_words, shown)) + thought, thought)
    finish = "tool_calls" if call else "stop"
    compress = bool(body.get("compression_model") or req.headers.get("x-edgee-compression-model"))
    edgee = {"edgee_pending_id": pending} if pending else {}
    if executed:
        edgee["edgee_tools_executed"] = executed
    if body.get("stream"):
        include = (body.get("stream_options") or {}).get("include_usage") is True
        chunks = _chat_chunks(model, messages, finish, usage if include else None, compress)
        # ChatCompletionChunk has no edgee_* fields: they ride on the final chunk's top level
        chunks[-1].update(edgee)
        return SSE(chunks, headers=_routing(model))
    answer = {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {"index": i, "message": m, "finish_reason": finish} for i, m in enumerate(messages)
        ],
        "usage": usage,
    }
    if compress:
        answer["compression"] = COMPRESSION
    answer.update(edgee)
    return Reply(body=answer, headers=_routing(model))


def _messages_view(body: dict) -> tuple:
    """(prompt, tool result or None, first tool) of an Anthropic request, for _answer."""
    messages, tools = body["messages"], body.get("tools")
    last = messages[-1]["content"]
    blocks = [b for b in last if b.get("type") == "tool_result"] if isinstance(last, list) else []
    result = _text(blocks[-1].get("content")) if blocks else None
    tool = (tools[0]["name"], tools[0]["input_schema"]) if tools else None
    return _last_user_text(messages), result, tool


def sse_event(data: dict) -> bytes:
    """An `event: <type>` line plus its `data:` line, as Anthropic streams them."""
    return b"event: " + data["type"].encode("utf-8") + b"\n" + sse_bytes(data)


def _anthropic_events(answer: dict) -> List[bytes]:
    """Anthropic's event stream for a finished CreateMessageResponse."""
    block = answer["content"][0]
    if block["type"] == "text":
        start = dict(block, text="")
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
    else:
        start = dict(block, input={})
        arguments = compact_json(block["input"]).decode("utf-8")
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(arguments)]
    usage = answer["usage"]
    head = dict(answer, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    events = [
        {"type": "message_start", "message": head},
        {"type": "content_block_start", "index": 0, "content_block": start},
        {"type": "ping"},
    ]
    events += [{"type": "content_block_delta", "index": 0, "delta": d} for d in deltas]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
        {"type": "message_stop"},
    ]
    return [sse_event(e) for e in events]


def _messages(gw: Gateway, req: Recorded, body: dict) -> Any:
    """Anthropic Messages: text or tool_use; stream: true streams Anthropic's events."""
    model = body["model"]
    if body.get("stream") and "/" in model and not model.startswith("anthropic/"):
        code = "streaming_not_supported"
        return ErrorReply(400, code, ERROR_CODES[code][2], param="stream")
    text, call = _answer(*_messages_view(body))
    if call:
        block = {"type": "tool_use", "id": "toolu_1", "name": call[0], "input": call[1]}
        said = compact_json(call[1]).decode("utf-8")
    else:
        block, said = {"type": "text", "text": text}, text
    answer = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": "tool_use" if call else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": _prompt_words(body), "output_tokens": _words(said)},
    }
    headers = _routing(model, "anthropic")
    if body.get("stream"):
        return SSE(_anthropic_events(answer), done=False, headers=headers)
    return Reply(body=answer, headers=headers)


def _responses_view(body: dict) -> tuple:
    """(prompt, tool result or None, first tool) of a Responses request, for _answer."""
    items, tools = body["input"], body.get("tools")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    last = items[-1] if items else {}
    result = last["output"] if last.get("type") == "function_call_output" else None
    tool = (tools[0]["name"], tools[0].get("parameters")) if tools else None
    return _last_user_text(items), result, tool


def _responses_events(answer: dict) -> List[dict]:
    """The Responses event stream (data lines only, as the spec's examples) for an answer."""
    item = answer["output"][0]
    at = {"item_id": item["id"], "output_index": 0}
    created = {k: v for k, v in answer.items() if k != "usage"}
    created.update(status="in_progress", output=[])
    events = [
        {"type": "response.created", "response": created},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": dict(item, status="in_progress", content=[]),
        },
    ]
    if item["type"] == "message":
        part, text = dict(at, content_index=0), item["content"][0]["text"]
        empty = {"type": "output_text", "text": ""}
        events.append({"type": "response.content_part.added", **part, "part": empty})
        events += [
            {"type": "response.output_text.delta", **part, "delta": p} for p in _pieces(text)
        ]
        events.append({"type": "response.output_text.done", **part, "text": text})
        events.append({"type": "response.content_part.done", **part, "part": item["content"][0]})
    else:
        arguments = item["arguments"]
        events += [
            {"type": "response.function_call_arguments.delta", **at, "delta": p}
            for p in _pieces(arguments)
        ]
        events.append(
            {"type": "response.function_call_arguments.done", **at, "arguments": arguments}
        )
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    events.append({"type": "response.completed", "response": answer})
    return events


def _responses(gw: Gateway, req: Recorded, body: dict) -> Any:
    """OpenAI Responses: a message or a function_call item; stream: true streams its events."""
    model = body["model"]
    text, call = _answer(*_responses_view(body))
    if call:
        said = compact_json(call[1]).decode("utf-8")
        content = {"type": "function_call", "id": "call_1", "name": call[0], "arguments": said}
        item = {"id": "fc_1", "type": "function_call", "status": "completed", "role": "assistant"}
        # the spec's item carries the call in content; OpenAI's at the top: both are here
        item.update(content=[content], call_id="call_1", name=call[0], arguments=said)
    else:
        said = text
        item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant"}
        item["content"] = [{"type": "output_text", "text": text}]
    prompt, out = _prompt_words(body), _words(said)
    answer = {
        "id": "resp_test",
        "object": "response",
        "status": "completed",
        "created_at": float(CREATED),
        "model": model,
        "output": [item],
        "usage": {"input_tokens": prompt, "output_tokens": out, "total_tokens": prompt + out},
    }
    if body.get("stream"):
        return SSE(_responses_events(answer), done=False, headers=_routing(model))
    return Reply(body=answer, headers=_routing(model))


def _count_tokens(gw: Gateway, req: Recorded, body: dict) -> Any:
    """Token count of any format's prompt: one token per word."""
    return Reply(body={"input_tokens": _prompt_words(body)})


def _compress(gw: Gateway, req: Recorded, body: dict) -> Any:
    """The request echoed with each text over 8 words cut to 8, plus `compression`."""
    out = {k: _squeeze(v) if k in COMPRESSED_KEYS else v for k, v in body.items()}
    before, after = _prompt_words(body), _prompt_words(out)
    chosen = body.get("compression_model") or req.headers.get("x-edgee-compression-model")
    out["compression"] = {
        "technique": "tool" if chosen else "auto",
        "applied_strategies": ["text_truncation"] if after < before else [],
        "compression_rate": round(1 - after / before, 2) if before else 0.0,
        "uncompressed_input_tokens": before,
        "compressed_input_tokens": after,
        "compression_time_ms": COMPRESSION["time_ms"],
    }
    return Reply(body=out)


def _models(gw: Gateway, req: Recorded, body: None) -> Any:
    """The model list; ?provider=X keeps that provider's models."""
    wanted = urllib.parse.parse_qs(req.path.partition("?")[2]).get("provider")
    data = [m for m in MODELS["data"] if not wanted or m["owned_by"] == wanted[0]]
    return Reply(body={"object": "list", "data": data})


# (method, path) -> (handler, request schema); a handler returns the reply to send
ROUTES = {
    ("GET", "/v1/models"): (_models, None),
    ("POST", "/v1/chat/completions"): (_chat, "ChatCompletionRequest"),
    ("POST", "/v1/messages"): (_messages, "CreateMessageRequest"),
    ("POST", "/v1/responses"): (_responses, "ResponsesRequest"),
    ("POST", "/v1/count_tokens"): (_count_tokens, "CountTokensRequest"),
    ("POST", "/v1/messages/count_tokens"): (_count_tokens, "CreateMessageRequest"),
    ("POST", "/v1/compress"): (_compress, "CompressRequest"),
}
FAKE_LLM_GUIDE = """\
Every endpoint wants `Authorization: Bearer <any key>` (the messages and compress paths
also take `x-api-key`); the key "forbidden-key" gets 403. Bodies are checked against the
OpenAPI request schemas (400 invalid_request, param = where).
Models: "invalid-model" -> 400 bad_model_id; "error-NNN" -> that status; a name with
"fallback" -> X-Edgee-Fallback-Used: 1 and the fallback's X-Edgee-Provider; a name with
"reasoning" (or a `reasoning_effort` field) -> reasoning_content before the answer.
Prompts: echoed ("Echo: <last user text>"); with "refuse" -> a refusal; with `tools` -> a
call of the first tool; after a tool result -> "Tool said: <result>". `n` gives n choices.
Edge Tools: `edgee_tool_ids` (edgee_*; a name with "fail" fails) run inline, or beside a
client tool call answer `edgee_pending_id` + `edgee_tools_executed` (in streams: on the
final chunk); sending the pending id back with the tool result resumes.
Streaming /v1/messages needs an Anthropic model ("claude-..." or "anthropic/..."), else 400
streaming_not_supported. `compression_model` or X-Edgee-Compression-Model adds chat's
`compression` object and makes /v1/compress report technique "tool"."""


def fake_llm(conn: _Conn, req: Recorded) -> bool:
    """Default behaviour when no scripted reply is queued; returns keep-alive."""
    path = req.path.split("?", 1)[0]
    route = ROUTES.get((req.method, path))
    if route is None:
        reply = ErrorReply(404, None, f"Not found: {req.method} {path}")
    else:
        handler, schema = route
        reply = _rejection(req, path, schema) or handler(conn.gw, req, req.json)
    return reply.send(conn)


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
        self.pending = {}  # type: dict  # edgee_pending_id -> the Edge Tools it ran
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
        self.url = "{}://{}:{}".format(
            "https" if tls else "http",
            "localhost" if tls else "127.0.0.1",
            self.port,
        )
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="gateway-accept", daemon=True
        )
        self._acceptor.start()

    def push(self, *replies) -> None:
        """Queue scripted replies, consumed FIFO, one per request."""
        with self._cond:
            self._replies.extend(replies)

    def defer(self, executed: list) -> str:
        """Store Edge Tool results until a request resumes with the returned pending id."""
        with self._cond:
            pending = f"edgee_pending_{len(self.pending) + 1}"
            self.pending[pending] = executed
        return pending

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

    def __enter__(self) -> Gateway:
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
            t = threading.Thread(
                target=self._handle, args=(sock,), daemon=True, name="gateway-conn"
            )
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
                        sock, server_side=True, do_handshake_on_connect=False
                    )
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


def parse_sse(data: bytes) -> list:
    """[(event name or None, data)] of an event stream; JSON is parsed, [DONE] kept as is."""
    events = []
    for block in data.decode("utf-8").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            payload = fields["data"]
            parsed = payload if payload == "[DONE]" else json.loads(payload)
            events.append((fields.get("event"), parsed))
    return events


AUTH = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
CHAT = "/v1/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SAMPLES = {  # a valid request body per path (None: a GET)
    "/v1/models": None,
    CHAT: {"model": DEFAULT_MODEL, "messages": QUESTION},
    "/v1/messages": {"model": "claude-sonnet-4.5", "max_tokens": 64, "messages": QUESTION},
    "/v1/responses": {"model": "openai/gpt-4o", "input": "What is the capital of France?"},
    "/v1/count_tokens": {"model": DEFAULT_MODEL, "messages": QUESTION},
    "/v1/messages/count_tokens": {
        "model": "claude-sonnet-4.5",
        "max_tokens": 9,
        "messages": QUESTION,
    },
    "/v1/compress": {"model": DEFAULT_MODEL, "messages": QUESTION},
}
CITY = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
}
EDGE_ASK = {
    "model": DEFAULT_MODEL,
    "messages": [{"role": "user", "content": "Lyon"}],
    "tools": [TOOL],
    "edgee_tool_ids": ["edgee_current_time", "edgee_fail_demo"],
}
EDGE_RAN = [
    {"name": "edgee_current_time", "success": True},
    {"name": "edgee_fail_demo", "success": False},
]
EDGE_DONE = (
    "Tool said: Sunny; Edge Tools said: edgee_current_time: 2023-03-01T06:31:28Z,"
    " edgee_fail_demo: failed"
)
LONG = "one two three four five six seven eight nine ten"


def _resume(pending: str) -> dict:
    """EDGE_ASK continued: the client tool's result sent back with the pending id."""
    tool_result = {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}
    turn = {"role": "assistant", "tool_calls": [CALL]}
    return dict(
        EDGE_ASK, edgee_pending_id=pending, messages=[*EDGE_ASK["messages"], turn, tool_result]
    )


class GatewaySelfTest(unittest.TestCase):
    """The loopback gateway, exercised with http.client only."""

    def setUp(self) -> None:
        self.gw = Gateway()
        self.addCleanup(self.gw.close)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=5)
        self.addCleanup(self.conn.close)

    def call(self, path: str, body: Any = None, headers=None):
        """(response, data) of a POST of `body` (bytes, or JSON), or of a GET without one."""
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode("utf-8")
        method = "GET" if body is None else "POST"
        self.conn.request(method, path, body, AUTH if headers is None else headers)
        resp = self.conn.getresponse()
        return resp, resp.read()

    def post(self, body: bytes, headers=None):
        return self.call(CHAT, body, headers)

    def answer(self, path: str, body: Any, schema: str, headers=None):
        """(response, JSON) of a 200 answer, checked against components.schemas[schema]."""
        resp, data = self.call(path, body, headers)
        self.assertEqual(resp.status, 200, data)
        out = json.loads(data.decode("utf-8"))
        self.assertIsNone(fits(out, schema))
        return resp, out

    def stream(self, path: str, body: dict):
        """(response, [(event, data)]) of a 200 event stream for `body` with stream: true."""
        resp, data = self.call(path, dict(body, stream=True))
        self.assertEqual((resp.status, resp.getheader("Content-Type")), (200, "text/event-stream"))
        return resp, parse_sse(data)

    def chunks(self, body: dict) -> list:
        """The chat chunks streamed for `body`, each checked against ChatCompletionChunk.

        The HTTP response stays in self.resp.
        """
        self.resp, events = self.stream(CHAT, body)
        self.assertEqual(events[-1], (None, "[DONE]"))
        chunks = [data for _, data in events[:-1]]
        for chunk in chunks:
            self.assertIsNone(fits(chunk, "ChatCompletionChunk"))
        return chunks

    def rejected(self, path: str, body: Any, status: int, code: str, param=None, headers=None):
        """The message of an ErrorResponse with this status, code and param."""
        resp, data = self.call(path, body, headers)
        out = json.loads(data.decode("utf-8"))
        self.assertIsNone(fits(out, "ErrorResponse"))
        self.assertEqual(
            (resp.status, out["error"]["code"], out["error"]["param"]), (status, code, param)
        )
        return out["error"]["message"]

    def test_completion(self) -> None:
        headers = dict(AUTH, **{"X-Edgee-Compression-Model": "claude"})
        _resp, out = self.answer(CHAT, _chat_body("héllo", n=2), "ChatCompletionResponse", headers)
        self.assertEqual((out["id"], out["object"]), ("chatcmpl-test", "chat.completion"))
        self.assertEqual(
            [c["message"]["content"] for c in out["choices"]], ["Echo: héllo #0", "Echo: héllo #1"]
        )
        self.assertEqual(out["usage"]["output_tokens_details"], {"reasoning_tokens": 0})
        self.assertEqual(out["compression"]["saved_tokens"], 450)
        rec = self.gw.requests[0]
        self.assertEqual((rec.method, rec.path, rec.json["n"]), ("POST", CHAT, 2))
        self.assertEqual(rec.headers["authorization"], "Bearer test-key")
        self.assertTrue(rec.raw_head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n"))

    def test_stream(self) -> None:
        chunks = self.chunks(
            json.loads(_chat_body("wörld €", stream_options={"include_usage": True}))
        )
        self.assertEqual(self.resp.getheader("Transfer-Encoding"), "chunked")
        self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant"})
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1])
        self.assertEqual(text, "Echo: wörld €")
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "stop")
        self.assertEqual((chunks[-1]["choices"], chunks[-1]["usage"]["total_tokens"]), ([], 5))

    def test_stream_tool_call(self) -> None:
        events = self.chunks(json.loads(_chat_body("Paris", tools=[TOOL])))
        calls = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in events
            if "tool_calls" in c["choices"][0]["delta"]
        ]
        self.assertEqual((calls[0]["id"], calls[0]["function"]["name"]), ("call_1", "get_weather"))
        self.assertEqual("".join(c["function"]["arguments"] for c in calls), '{"city":"Paris"}')
        self.assertEqual(events[-1]["choices"][0]["finish_reason"], "tool_calls")
        _resp, out = self.answer(CHAT, _chat_body("Lyon", tools=[TOOL]), "ChatCompletionResponse")
        self.assertEqual(out["choices"][0]["message"], {"role": "assistant", "tool_calls": [CALL]})

    def test_keep_alive_and_expect(self) -> None:
        self.post(_chat_body())
        headers = dict(AUTH, **{"Expect": "100-continue", "Transfer-Encoding": "chunked"})
        self.conn.putrequest("POST", CHAT, skip_accept_encoding=True)
        for k, v in headers.items():
            self.conn.putheader(k, v)
        self.conn.endheaders()
        body = _chat_body("two")
        self.conn.send(chunk_frame(body[:10]) + chunk_frame(body[10:]) + CHUNK_END)
        resp = self.conn.getresponse()
        self.assertIn(b"Echo: two", resp.read())
        self.assertEqual((self.gw.connections, len(self.gw.requests)), (1, 2))

    def test_raw_pause(self) -> None:
        self.gw.push(
            Raw(
                [
                    http_head(200, {"Content-Type": "text/plain"}, content_length=4),
                    b"ab",
                    0.2,
                    b"cd",
                ]
            )
        )
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
        self.gw.push(
            ErrorReply(429, "usage_limit_exceeded", "slow down", headers={"Retry-After": "1"})
        )
        resp, data = self.post(_chat_body())
        self.assertEqual((resp.status, resp.getheader("Retry-After")), (429, "1"))
        self.assertEqual(
            json.loads(data.decode("utf-8")),
            {
                "error": {
                    "message": "slow down",
                    "type": "rate_limit_error",
                    "code": "usage_limit_exceeded",
                    "param": None,
                }
            },
        )
        for body, headers, status, code in [
            (_chat_body(), {}, 401, "unauthorized"),
            (b"{nope", AUTH, 400, "invalid_json"),
            (_chat_body(model="error-502"), AUTH, 502, "provider_error"),
        ]:
            self.rejected(CHAT, body, status, code, headers=headers)
        self.rejected(CHAT, _chat_body(model="invalid-model"), 400, "bad_model_id", "model")
        self.rejected(CHAT, _chat_body(n=0), 400, "invalid_request", "n")
        self.conn.request("GET", "/v1/nothing")
        resp = self.conn.getresponse()
        self.assertEqual(
            json.loads(resp.read().decode("utf-8"))["error"]["type"], "not_found_error"
        )

    def test_tls(self) -> None:
        with Gateway(tls=True) as gw:
            ctx = client_ssl_context()
            ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # the 3.13 default, on every version
            conn = http.client.HTTPSConnection("localhost", gw.port, timeout=5, context=ctx)
            try:
                conn.request("GET", "/v1/models", headers=AUTH)
                resp = conn.getresponse()
                self.assertEqual(len(json.loads(resp.read().decode("utf-8"))["data"]), 2)
            finally:
                conn.close()
            self.assertTrue(gw.url.startswith("https://localhost:"))
            other = http.client.HTTPSConnection(
                "localhost", gw.port, timeout=5, context=ssl.create_default_context()
            )
            with self.assertRaises(ssl.SSLError):  # the test CA is not a system CA
                other.request("GET", "/v1/models")
            other.close()

    def test_schemas_are_the_specs(self) -> None:
        path = os.path.join(SHARED_REFERENCE, "edgee-openapi.json")
        if not os.path.exists(path):
            self.skipTest("the OpenAPI spec is not beside this checkout")
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        words = {"type", "properties", "required", "items", "enum", "$ref", "oneOf", "anyOf"}
        words |= {"additionalProperties", "nullable", "minItems", "minimum", "maximum"}

        def bare(node: Any) -> Any:  # the validating words only, down the tree
            if isinstance(node, list):
                return [bare(n) for n in node]
            if not isinstance(node, dict):
                return node
            out = {k: bare(v) for k, v in node.items() if k in words and k != "properties"}
            if "properties" in node:
                out["properties"] = {k: bare(v) for k, v in node["properties"].items()}
            return out

        expected = {name: bare(s) for name, s in spec["components"]["schemas"].items()}
        expected["ChatCompletionChunkChoice"]["properties"]["finish_reason"]["nullable"] = True
        self.assertEqual(SCHEMAS, expected)
        routes, keyed = {}, set()
        for where, operations in spec["paths"].items():
            for method, op in operations.items():
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
                ref = body.get("schema", {}).get("$ref", "")
                routes[(method.upper(), where)] = ref.rsplit("/", 1)[1] if ref else None
                if {"apiKeyAuth": []} in op.get("security", []):
                    keyed.add(where)
        self.assertEqual({k: schema for k, (_, schema) in ROUTES.items()}, routes)
        self.assertEqual(keyed, set(API_KEY_PATHS))
        self.assertEqual(set(SAMPLES), {where for _, where in ROUTES})

    def test_validator(self) -> None:
        point = _obj(
            "x",
            {"x": "integer", "tag": NULLABLE, "kind": _enum("a", "b")},
            additionalProperties=False,
        )
        cases = [
            (point, {"x": 1, "tag": None, "kind": "a"}, None),
            (point, {"x": True}, ("x", "expected integer, got boolean")),
            (point, {"x": 1.5}, ("x", "expected integer, got number")),
            (point, {}, ("x", "is required")),
            (point, {"x": 1, "kind": "c"}, ("kind", 'must be one of "a", "b"')),
            (point, {"x": 1, "y": 2}, ("y", "is not allowed")),
            (point, [], ("", "expected object, got array")),
            (
                _obj(additionalProperties=_s("string")),
                {"a": "s", "b": 1},
                ("b", "expected string, got integer"),
            ),
            (_arr("#Model", minItems=1), [], ("", "needs at least 1 item(s)")),
            (_arr("#Model"), [MODELS["data"][0], {"id": "x"}], ("[1].object", "is required")),
            (_num(0, 2), 3, ("", "must be at most 2")),
            (_num(0, 2), -1, ("", "must be at least 0")),
            (
                _one("string", "number", "integer"),
                1,
                ("", "matches more than one of the allowed forms"),
            ),
            (_one("string", "integer"), None, ("", "matches none of the allowed forms")),
            ({"anyOf": [_s("number"), _s("integer")]}, 1, None),
            (
                _s("#Message"),
                {"role": "user", "content": None},
                ("content", "expected string, got null"),
            ),
            (_s("#ErrorResponse"), {"error": {"message": "m", "code": None, "param": None}}, None),
        ]
        for schema, value, expected in cases:
            with self.subTest(value=value):
                self.assertEqual(schema_problem(value, schema), expected)

    def test_every_post_checks_its_schema(self) -> None:
        user = [{"role": "user", "content": "hi"}]
        cases = [
            (
                CHAT,
                {"model": "m", "messages": [{"role": "assistant", "content": None}]},
                "messages[0].content",
            ),
            (CHAT, {"model": "m", "messages": []}, "messages"),
            (
                CHAT,
                {"model": "m", "messages": user, "tools": [{"function": {"name": "f"}}]},
                "tools[0].type",
            ),
            (CHAT, {"model": "m", "messages": user, "tool_choice": "required"}, "tool_choice"),
            (CHAT, [1], None),
            ("/v1/messages", {"model": "m", "messages": user}, "max_tokens"),
            (
                "/v1/messages/count_tokens",
                {"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]},
                "messages[0].role",
            ),
            ("/v1/responses", {"model": "m"}, "input"),
            ("/v1/responses", {"model": "m", "input": "x", "temperature": 3}, "temperature"),
            ("/v1/count_tokens", {"messages": user}, "model"),
            ("/v1/compress", {"model": "m"}, None),  # fits none of the three formats
        ]
        for path, body, param in cases:
            with self.subTest(path=path, param=param):
                message = self.rejected(path, body, 400, "invalid_request", param)
                self.assertTrue(message.startswith((param or "body") + ": "), message)
        body = {"model": "m", "tokenizer": "gpt2"}
        self.rejected("/v1/count_tokens", body, 400, "invalid_tokenizer", "tokenizer")
        self.rejected("/v1/messages", b"{", 400, "invalid_json")
        client_like = {  # extra fields and every message form the client sends still pass
            "model": DEFAULT_MODEL,
            "messages": [
                {"role": "system", "content": "Be brief."},
                *QUESTION,
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "max_tokens": 5,
            "temperature": 0.5,
            "stream_options": {"include_usage": True},
            "n": 2,
            "tags": ["a"],
            "metadata": {"any": ["thing"]},
        }
        _resp, out = self.answer(CHAT, client_like, "ChatCompletionResponse")
        self.assertEqual(out["choices"][1]["message"]["content"], "Tool said: Sunny #1")

    def test_auth_on_every_endpoint(self) -> None:
        for _, path in ROUTES:
            body = SAMPLES[path]
            with self.subTest(path=path):
                message = self.rejected(path, body, 401, "unauthorized", headers={})
                self.assertEqual(message, "Missing Authorization header")
                self.rejected(path, body, 401, "unauthorized", headers={"Authorization": "Basic a"})
                forbidden = {"Authorization": "Bearer forbidden-key"}
                self.rejected(path, body, 403, "forbidden", headers=forbidden)
                resp, _data = self.call(path, body, {"x-api-key": "k"})
                self.assertEqual(resp.status, 200 if path in API_KEY_PATHS else 401)
                self.assertEqual(self.call(path, body)[0].status, 200)

    def test_provider_and_fallback_headers(self) -> None:
        chat, messages, responses = SAMPLES[CHAT], SAMPLES["/v1/messages"], SAMPLES["/v1/responses"]
        cases = [
            (CHAT, chat, "openai", None),
            (CHAT, dict(chat, model="anthropic/claude-opus-4-6"), "anthropic", None),
            (CHAT, dict(chat, model="openai/gpt-fallback"), "anthropic", "1"),
            (CHAT, dict(chat, model="anthropic/claude-fallback", stream=True), "openai", "1"),
            ("/v1/messages", messages, "anthropic", None),
            (
                "/v1/messages",
                dict(messages, model="claude-fallback", stream=True),
                "anthropic",
                "1",
            ),
            ("/v1/responses", responses, "openai", None),
            (
                "/v1/responses",
                dict(responses, model="google/gemini-fallback", stream=True),
                "openai",
                "1",
            ),
            ("/v1/models", None, None, None),
            ("/v1/count_tokens", SAMPLES["/v1/count_tokens"], None, None),
            ("/v1/compress", SAMPLES["/v1/compress"], None, None),
        ]
        for path, body, provider, fallback in cases:
            with self.subTest(path=path, body=body):
                resp, _data = self.call(path, body)
                got = (resp.getheader("X-Edgee-Provider"), resp.getheader("X-Edgee-Fallback-Used"))
                self.assertEqual((resp.status, *got), (200, provider, fallback))

    def test_edge_tools_round_trip(self) -> None:
        _resp, out = self.answer(CHAT, EDGE_ASK, "ChatCompletionResponse")
        self.assertEqual(out["choices"][0]["message"], {"role": "assistant", "tool_calls": [CALL]})
        self.assertEqual(
            (out["edgee_pending_id"], out["edgee_tools_executed"]), ("edgee_pending_1", EDGE_RAN)
        )
        _resp, out = self.answer(CHAT, _resume("edgee_pending_1"), "ChatCompletionResponse")
        self.assertEqual(out["choices"][0]["message"]["content"], EDGE_DONE)
        self.assertFalse({"edgee_pending_id", "edgee_tools_executed"} & set(out))
        inline = dict(SAMPLES[CHAT], edgee_tool_ids=["edgee_generate_uuid"])
        _resp, out = self.answer(CHAT, inline, "ChatCompletionResponse")
        self.assertEqual(
            out["choices"][0]["message"]["content"],
            "Echo: What is the capital of France?; Edge Tools said: edgee_generate_uuid: "
            + EDGE_RESULTS["edgee_generate_uuid"],
        )
        self.assertEqual(
            out["edgee_tools_executed"], [{"name": "edgee_generate_uuid", "success": True}]
        )
        self.assertNotIn("edgee_pending_id", out)
        message = self.rejected(
            CHAT, _resume("edgee_pending_9"), 400, "invalid_request", "edgee_pending_id"
        )
        self.assertEqual(message, "Unknown edgee_pending_id: 'edgee_pending_9'")
        bad = dict(EDGE_ASK, edgee_tool_ids=["current_time"])
        self.rejected(CHAT, bad, 400, "invalid_edgee_tool_ids", "edgee_tool_ids")

    def test_edge_tools_stream(self) -> None:
        chunks = self.chunks(dict(EDGE_ASK, stream_options={"include_usage": True}))
        final = chunks[-1]
        self.assertEqual((final["choices"], final["usage"]["prompt_tokens"]), ([], 1))
        self.assertEqual(
            (final["edgee_pending_id"], final["edgee_tools_executed"]),
            ("edgee_pending_1", EDGE_RAN),
        )
        self.assertFalse(
            any("edgee_pending_id" in c or "edgee_tools_executed" in c for c in chunks[:-1])
        )
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "tool_calls")
        chunks = self.chunks(_resume("edgee_pending_1"))
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        self.assertEqual(text, EDGE_DONE)
        self.assertEqual(set(chunks[-1]) & {"edgee_pending_id", "edgee_tools_executed"}, set())

    def test_reasoning_and_refusal(self) -> None:
        thinking = "Thinking about: What is the capital of France?"
        echo = "Echo: What is the capital of France?"
        reasoner = dict(SAMPLES[CHAT], model="openai/o3-reasoning")
        _resp, out = self.answer(CHAT, reasoner, "ChatCompletionResponse")
        self.assertEqual(
            out["choices"][0]["message"],
            {"role": "assistant", "content": echo, "reasoning_content": thinking},
        )
        self.assertEqual(out["usage"]["completion_tokens"], 7 + 8)
        self.assertEqual(out["usage"]["output_tokens_details"], {"reasoning_tokens": 8})
        chunks = self.chunks(dict(SAMPLES[CHAT], reasoning_effort="low"))
        deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
        kinds = [next(iter(d)) for d in deltas]
        self.assertEqual(
            kinds, sorted(kinds, key=lambda k: k != "reasoning_content")
        )  # reasoning first
        self.assertEqual("".join(d.get("reasoning_content", "") for d in deltas), thinking)
        self.assertEqual("".join(d.get("content", "") for d in deltas), echo)
        refuse = dict(SAMPLES[CHAT], messages=[{"role": "user", "content": "Refuse this"}])
        _resp, out = self.answer(CHAT, refuse, "ChatCompletionResponse")
        self.assertEqual(out["choices"][0]["message"], {"role": "assistant", "refusal": REFUSAL})
        deltas = [c["choices"][0]["delta"] for c in self.chunks(refuse)[1:-1]]
        self.assertEqual("".join(d["refusal"] for d in deltas), REFUSAL)

    def test_count_tokens(self) -> None:
        _resp, out = self.answer(CHAT, SAMPLES[CHAT], "ChatCompletionResponse")
        _resp, count = self.answer(
            "/v1/count_tokens", SAMPLES["/v1/count_tokens"], "CountTokensResponse"
        )
        self.assertEqual(count, {"input_tokens": out["usage"]["prompt_tokens"]})
        self.assertEqual(count["input_tokens"], 6)
        anthropic_style = {
            "model": "anthropic/claude-opus-4-6",
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
            "tokenizer": "o200k_base",
        }
        _resp, count = self.answer("/v1/count_tokens", anthropic_style, "CountTokensResponse")
        self.assertEqual(count, {"input_tokens": 4})
        body = dict(SAMPLES["/v1/messages/count_tokens"], system="Be brief.")
        _resp, count = self.answer("/v1/messages/count_tokens", body, "CountTokensResponse")
        self.assertEqual(count, {"input_tokens": 8})

    def test_compress(self) -> None:
        first8 = " ".join(LONG.split()[:8])
        tool = {"role": "tool", "tool_call_id": "c", "content": LONG}
        chat = {"model": DEFAULT_MODEL, "messages": [*QUESTION, tool], "temperature": 0.2}
        anthropic = dict(SAMPLES["/v1/messages"], system=LONG)
        items = [{"type": "function_call_output", "call_id": "c", "output": LONG}]
        responses = {"model": "openai/gpt-4o", "instructions": LONG, "input": [*QUESTION, *items]}
        cases = [
            (chat, dict(chat, messages=[*QUESTION, dict(tool, content=first8)]), "auto"),
            (anthropic, dict(anthropic, system=first8), "tool"),
            (responses, dict(responses, input=[*QUESTION, dict(items[0], output=first8)]), "auto"),
            (SAMPLES["/v1/compress"], SAMPLES["/v1/compress"], "auto"),
        ]
        headers = dict(AUTH, **{"X-Edgee-Compression-Model": "claude"})
        for body, squeezed, technique in cases:
            with self.subTest(body=body):
                chosen = headers if technique == "tool" else None
                _resp, out = self.answer("/v1/compress", body, "CompressResponse", chosen)
                compression = out.pop("compression")
                self.assertEqual(out, squeezed)
                self.assertIsNone(fits(out, "CompressRequest"))
                before, after = _prompt_words(body), _prompt_words(squeezed)
                self.assertEqual(
                    compression,
                    {
                        "technique": technique,
                        "applied_strategies": ["text_truncation"] if after < before else [],
                        "compression_rate": round(1 - after / before, 2),
                        "uncompressed_input_tokens": before,
                        "compressed_input_tokens": after,
                        "compression_time_ms": 12,
                    },
                )
        self.assertEqual((_prompt_words(chat), _prompt_words(cases[0][1])), (16, 14))

    def test_models_by_provider(self) -> None:
        ids = [m["id"] for m in MODELS["data"]]
        for query, expected in [
            ("", ids),
            ("?provider=", ids),
            ("?provider=anthropic", ["anthropic/claude-opus-4-6"]),
            ("?provider=openai", ["openai/gpt-5.2"]),
            ("?provider=mistral", []),
        ]:
            with self.subTest(query=query):
                _resp, out = self.answer("/v1/models" + query, None, "ModelsResponse")
                self.assertEqual([m["id"] for m in out["data"]], expected)

    def test_messages(self) -> None:
        _resp, out = self.answer("/v1/messages", SAMPLES["/v1/messages"], "CreateMessageResponse")
        self.assertEqual(
            out,
            {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4.5",
                "content": [{"type": "text", "text": "Echo: What is the capital of France?"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 6, "output_tokens": 7},
            },
        )
        tools = [{"name": "get_weather", "input_schema": CITY}]
        ask = dict(
            SAMPLES["/v1/messages"], messages=[{"role": "user", "content": "Lyon"}], tools=tools
        )
        _resp, out = self.answer("/v1/messages", ask, "CreateMessageResponse")
        use = {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "get_weather",
            "input": {"city": "Lyon"},
        }
        self.assertEqual((out["content"], out["stop_reason"]), ([use], "tool_use"))
        result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}
        turns = [
            *ask["messages"],
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]},
        ]
        _resp, out = self.answer("/v1/messages", dict(ask, messages=turns), "CreateMessageResponse")
        self.assertEqual(out["content"], [{"type": "text", "text": "Tool said: Sunny"}])
        model = {"model": "openai/gpt-5.2", "stream": True}
        body = dict(SAMPLES["/v1/messages"], **model)
        self.rejected("/v1/messages", body, 400, "streaming_not_supported", "stream")

    def test_messages_stream(self) -> None:
        _resp, out = self.answer("/v1/messages", SAMPLES["/v1/messages"], "CreateMessageResponse")
        _resp, events = self.stream("/v1/messages", SAMPLES["/v1/messages"])
        names = [name for name, _ in events]
        self.assertEqual(names, [data["type"] for _, data in events])  # no [DONE]
        middle = ["content_block_delta"] * (len(names) - 6)
        self.assertEqual(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                *middle,
                "content_block_stop",
                "message_delta",
                "message_stop",
            ],
        )
        start = events[0][1]["message"]
        self.assertEqual(
            start,
            dict(out, content=[], stop_reason=None, usage={"input_tokens": 6, "output_tokens": 1}),
        )
        deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
        self.assertEqual({d["type"] for d in deltas}, {"text_delta"})
        self.assertEqual("".join(d["text"] for d in deltas), out["content"][0]["text"])
        self.assertEqual(
            events[-2][1],
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        )
        tools = [{"name": "get_weather", "input_schema": CITY}]
        ask = dict(
            SAMPLES["/v1/messages"], messages=[{"role": "user", "content": "Lyon"}], tools=tools
        )
        _resp, events = self.stream("/v1/messages", ask)
        self.assertEqual(
            events[1][1]["content_block"],
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        )
        parts = [
            data["delta"]["partial_json"] for name, data in events if name == "content_block_delta"
        ]
        self.assertEqual("".join(parts), '{"city":"Lyon"}')

    def test_responses(self) -> None:
        _resp, out = self.answer("/v1/responses", SAMPLES["/v1/responses"], "ResponsesResponse")
        message = {
            "id": "msg_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Echo: What is the capital of France?"}],
        }
        self.assertEqual(
            out,
            {
                "id": "resp_test",
                "object": "response",
                "status": "completed",
                "created_at": float(CREATED),
                "model": "openai/gpt-4o",
                "output": [message],
                "usage": {"input_tokens": 6, "output_tokens": 7, "total_tokens": 13},
            },
        )
        tools = [{"type": "function", "name": "get_weather", "parameters": CITY}]
        ask = {"model": "openai/gpt-4o", "input": "Lyon", "tools": tools}
        _resp, out = self.answer("/v1/responses", ask, "ResponsesResponse")
        item = out["output"][0]
        self.assertEqual(
            (item["type"], item["call_id"], item["name"], item["arguments"]),
            ("function_call", "call_1", "get_weather", '{"city":"Lyon"}'),
        )
        self.assertEqual(
            item["content"],
            [
                {
                    "type": "function_call",
                    "id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city":"Lyon"}',
                }
            ],
        )
        turns = [
            {"role": "user", "content": [{"type": "input_text", "text": "Lyon"}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Lyon"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        ]
        _resp, out = self.answer("/v1/responses", dict(ask, input=turns), "ResponsesResponse")
        self.assertEqual(out["output"][0]["content"][0]["text"], "Tool said: Sunny")

    def test_responses_stream(self) -> None:
        _resp, out = self.answer("/v1/responses", SAMPLES["/v1/responses"], "ResponsesResponse")
        _resp, events = self.stream("/v1/responses", SAMPLES["/v1/responses"])
        self.assertEqual({name for name, _ in events}, {None})  # data lines only, no [DONE]
        types = [data["type"] for _, data in events]
        deltas = [
            data["delta"] for _, data in events if data["type"] == "response.output_text.delta"
        ]
        self.assertEqual(
            types,
            [
                "response.created",
                "response.output_item.added",
                "response.content_part.added",
                *["response.output_text.delta"] * len(deltas),
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ],
        )
        created, completed = events[0][1]["response"], events[-1][1]["response"]
        self.assertEqual((created["status"], created["output"]), ("in_progress", []))
        self.assertEqual(completed, out)
        text = out["output"][0]["content"][0]["text"]
        self.assertEqual(("".join(deltas), events[-4][1]["text"]), (text, text))
        self.assertEqual(
            events[3][1],
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": deltas[0],
            },
        )
        tools = [{"type": "function", "name": "get_weather", "parameters": CITY}]
        _resp, events = self.stream(
            "/v1/responses", {"model": "openai/gpt-4o", "input": "Lyon", "tools": tools}
        )
        types = [data["type"] for _, data in events]
        self.assertIn("response.function_call_arguments.done", types)
        self.assertNotIn("response.output_text.delta", types)
        parts = [
            data["delta"]
            for _, data in events
            if data["type"] == "response.function_call_arguments.delta"
        ]
        self.assertEqual("".join(parts), '{"city":"Lyon"}')

    def test_serve(self) -> None:
        command = [sys.executable, os.path.abspath(__file__), "--serve", "0"]
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True
        )
        timer = threading.Timer(15.0, proc.kill)  # bounds the reads below
        timer.start()
        self.addCleanup(proc.stdout.close)
        self.addCleanup(timer.cancel)
        self.addCleanup(proc.wait, 5)
        self.addCleanup(proc.kill)
        url = proc.stdout.readline().split()[-1]
        self.assertTrue(url.startswith("http://127.0.0.1:"), url)
        listed = [proc.stdout.readline().split()[:2] for _ in ROUTES]
        self.assertEqual(listed, [[method, path] for method, path in ROUTES])
        conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=5)
        self.addCleanup(conn.close)
        conn.request("GET", "/v1/models?provider=openai", headers=AUTH)
        self.assertEqual(json.loads(conn.getresponse().read())["data"], MODELS["data"][:1])


# ---- tests ----
# Client tests for edgee.py. The reference files (contract, OpenAPI spec) are read
# from ../shared/reference when present; tests that need them skip otherwise.

# ---- client test base: one test body drives the sync and the async API ----

ASYNC_LIMIT = 20.0  # seconds; every async call a test makes is bounded by this


def isolate_env(test: unittest.TestCase) -> None:
    """Remove EDGEE_* and *_proxy variables for the test; restore them afterwards."""

    def ours(name: str) -> bool:
        return name.startswith("EDGEE_") or name.lower().endswith("_proxy")

    saved = {k: v for k, v in os.environ.items() if ours(k)}
    for k in saved:
        del os.environ[k]

    def restore() -> None:
        for k in [k for k in os.environ if ours(k)]:
            del os.environ[k]
        os.environ.update(saved)

    test.addCleanup(restore)


class Api:
    """One client driven through the sync or the async API, with the same calls.

    `kind` is "sync" or "async". Async calls run on one event loop per Api
    (so its connection pool lives across calls), each bounded by ASYNC_LIMIT.
    Streams are consumed here: `stream()` returns the list of chunks, or
    raises what the iteration raised; `first()` leaves the loop after n chunks.
    """

    def __init__(self, kind: str, client: edgee.Edgee, gw: Optional[Gateway]) -> None:
        self.kind = kind
        self.client = client
        self.gw = gw
        self._loop = asyncio.new_event_loop() if kind == "async" else None

    @property
    def is_async(self) -> bool:
        return self._loop is not None

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self.client.aclose())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on this Api's loop, bounded by ASYNC_LIMIT."""
        assert self._loop is not None
        return self._loop.run_until_complete(asyncio.wait_for(coro, ASYNC_LIMIT))

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """`client.<name>(...)`, or for async `await client.a<name>(...)`."""
        if self._loop is None:
            return getattr(self.client, name)(*args, **kwargs)
        return self.run(getattr(self.client, "a" + name)(*args, **kwargs))

    def send(self, model: str, input: Any, **kwargs: Any) -> Any:
        return self.call("send", model, input, **kwargs)

    def models(self, **kwargs: Any) -> Any:
        return self.call("models", **kwargs)

    def stream(self, model: str, input: Any, **kwargs: Any) -> List[Any]:
        return self.first(None, model, input, **kwargs)

    def first(self, n: Optional[int], model: str, input: Any, **kwargs: Any) -> List[Any]:
        """The first n chunks (all when n is None), then the loop is left."""
        if self._loop is None:
            chunks = []
            for chunk in self.client.stream(model, input, **kwargs):
                chunks.append(chunk)
                if n is not None and len(chunks) >= n:
                    break
            return chunks

        async def consume() -> List[Any]:
            chunks = []
            stream = self.client.astream(model, input, **kwargs)
            try:
                async for chunk in stream:
                    chunks.append(chunk)
                    if n is not None and len(chunks) >= n:
                        break
            finally:
                await stream.aclose()
            return chunks

        return self.run(consume())

    def each(self, fn: Any, model: str, input: Any, **kwargs: Any) -> None:
        """Call `fn(chunk)` as each chunk arrives; raises what the iteration raised."""
        if self._loop is None:
            for chunk in self.client.stream(model, input, **kwargs):
                fn(chunk)
            return

        async def consume() -> None:
            stream = self.client.astream(model, input, **kwargs)
            try:
                async for chunk in stream:
                    fn(chunk)
            finally:
                await stream.aclose()

        self.run(consume())

    def last(self) -> Recorded:
        """The last request the gateway received."""
        assert self.gw is not None and self.gw.requests, "the gateway received no request"
        return self.gw.requests[-1]

    def collect(self, model: str, input: Any, **kwargs: Any) -> Any:
        if self._loop is None:
            return edgee.collect(self.client.stream(model, input, **kwargs))
        return self.run(edgee.acollect(self.client.astream(model, input, **kwargs)))

    def fake_sleep(self) -> List[float]:
        """Record retry pauses instead of sleeping; returns the list of delays."""
        slept: List[float] = []
        transport = self.client._transport
        transport.sleep = slept.append

        async def asleep(seconds: float) -> None:
            slept.append(seconds)

        transport.asleep = asleep
        return slept

    def count_tokens(self, model: str, input: Any, **kwargs: Any) -> Any:
        return self.call("count_tokens", model, input, **kwargs)

    def compress(self, model: str, input: Any, **kwargs: Any) -> Any:
        return self.call("compress", model, input, **kwargs)

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """The decoded JSON answer of `client.request(...)` or `await client.arequest(...)`."""
        return self.call("request", method, path, body, **kwargs)

    def open_stream(self, model: str, input: Any, **kwargs: Any) -> Any:
        """The stream object itself: `client.stream(...)` or `client.astream(...)`."""
        return getattr(self.client, "astream" if self.is_async else "stream")(
            model, input, **kwargs
        )

    def open_events(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """The event stream object of `client.request(..., stream=True)` (or `arequest`)."""
        name = "arequest" if self.is_async else "request"
        return getattr(self.client, name)(method, path, body, stream=True, **kwargs)

    def watch(self, stream: Any, n: Optional[int] = None, into: Optional[list] = None) -> list:
        """(item, stream.provider, stream.fallback_used) for each item the stream object
        yields (the first n), read right after it; then the stream is closed. `into` is
        the list filled, so that a test sees what arrived before an error."""
        seen = [] if into is None else into

        def note(item: Any) -> bool:
            seen.append((item, stream.provider, stream.fallback_used))
            return n is not None and len(seen) >= n

        if self._loop is None:
            try:
                for item in stream:
                    if note(item):
                        break
            finally:
                stream.close()
            return seen

        async def consume() -> list:
            try:
                async for item in stream:
                    if note(item):
                        break
            finally:
                await stream.aclose()
            return seen

        return self.run(consume())

    def stream_request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> list:
        """The events of `request(..., stream=True)`, or what their iteration raised."""
        return [item for item, _, _ in self.watch(self.open_events(method, path, body, **kwargs))]


class ClientTestCase(unittest.TestCase):
    """Isolated environment; gateways, clients and Apis closed at cleanup.

    `both(body)` runs `body(api)` once through the sync API and once through
    the async API, each with a fresh gateway (unless one is given) and client.
    """

    key = "sk-test-SECRET-0123456789abcdef"  # >= 8 characters: echoes of it are redacted

    def setUp(self) -> None:
        isolate_env(self)

    def gateway(self, tls: bool = False) -> Gateway:
        gw = Gateway(tls=tls)
        self.addCleanup(gw.close)
        return gw

    def client(self, where: Any = None, **options: Any) -> edgee.Edgee:
        """A client of a Gateway or a URL (timeout 5 s, no retries unless given)."""
        if isinstance(where, Gateway):
            options.setdefault("base_url", where.url)
            if where.tls:
                options.setdefault("ssl_context", client_ssl_context())
        elif isinstance(where, str):
            options.setdefault("base_url", where)
        options.setdefault("api_key", self.key)
        options.setdefault("timeout", 5.0)
        options.setdefault("max_retries", 0)
        client = edgee.Edgee(**options)
        self.addCleanup(client.close)
        return client

    def api(self, kind: str, where: Any = None, **options: Any) -> Api:
        gw = where if isinstance(where, Gateway) or where is not None else self.gateway()
        return self.drive(kind, self.client(gw, **options), gw if isinstance(gw, Gateway) else None)

    def track(self, client: edgee.Edgee) -> edgee.Edgee:
        """`client`, closed at cleanup."""
        self.addCleanup(client.close)
        return client

    def drive(self, kind: str, client: edgee.Edgee, gw: Optional[Gateway] = None) -> Api:
        """An Api of `kind` around a client the test built itself; both closed at cleanup."""
        api = Api(kind, self.track(client), gw)
        self.addCleanup(api.close)
        return api

    def raised(self, kind: Any, call: Any, *args: Any, **kwargs: Any) -> Any:
        """What `call(*args, **kwargs)` raised; fails unless it raised a `kind`."""
        try:
            call(*args, **kwargs)
        except Exception as exc:
            self.assertIsInstance(exc, kind, f"{type(exc).__name__}: {str(exc)[:300]}")
            return exc
        self.fail(f"{kind.__name__} not raised")

    def both(self, body: Any, where: Any = None, tls: bool = False, **options: Any) -> None:
        """Run `body(api)` through the sync API, then through the async API."""
        for kind in ("sync", "async"):
            with self.subTest(api=kind):
                target = where if where is not None else self.gateway(tls=tls)
                body(self.api(kind, target, **options))


HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_REFERENCE = os.path.join(HERE, os.pardir, "shared", "reference")

# ---- schema: request bodies checked against the gateway's OpenAPI document ----

# The document beside this checkout, or beside the folder of worktrees it sits in.
OPENAPI_CANDIDATES = (
    os.path.join(SHARED_REFERENCE, "edgee-openapi.json"),
    os.path.join(HERE, os.pardir, os.pardir, "shared", "reference", "edgee-openapi.json"),
)
_OPENAPI: List[dict] = []
_JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
    "null": type(None),
}


def openapi() -> dict:
    """The OpenAPI document (read once); raises SkipTest when it is not found."""
    if not _OPENAPI:
        path = next((p for p in OPENAPI_CANDIDATES if os.path.exists(p)), None)
        if path is None:
            raise unittest.SkipTest("edgee-openapi.json is not beside this checkout")
        with open(path, encoding="utf-8") as f:
            _OPENAPI.append(json.load(f))
    return _OPENAPI[0]


def schema_errors(value: Any, schema: dict, where: str = "$") -> List[str]:
    """Where `value` breaks `schema` ([] when it is valid).

    A JSON-Schema subset, enough for the OpenAPI document: $ref (to
    #/components/...), type, nullable, enum, oneOf (exactly one), anyOf,
    properties, required, additionalProperties, items, minItems, minimum, maximum.
    """
    if "$ref" in schema:
        target: Any = openapi()
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return schema_errors(value, target, where)
    if value is None and schema.get("nullable"):
        return []
    kind = schema.get("type")
    if kind is not None:
        numeric = kind in ("integer", "number")
        if not isinstance(value, _JSON_TYPES[kind]) or (numeric and isinstance(value, bool)):
            return [f"{where}: expected {kind}, got {type(value).__name__}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    for key in ("oneOf", "anyOf"):
        if key in schema:
            matches = sum(not schema_errors(value, option, where) for option in schema[key])
            if matches == 0 or (key == "oneOf" and matches > 1):
                errors.append(f"{where}: matches {matches} of its {key} schemas")
    if isinstance(value, dict):
        errors += [
            f"{where}: {name} is missing"
            for name in schema.get("required", ())
            if name not in value
        ]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(item, properties[name], f"{where}.{name}")
            elif extra is False:
                errors.append(f"{where}: {name} is not allowed")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{where}.{name}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value if "items" in schema else ()):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        errors.append(f"{where}: {value} is out of range")
    return errors


def request_schema(path: str, method: str = "post") -> dict:
    """The JSON request-body schema of one endpoint of the OpenAPI document."""
    operation = openapi()["paths"][path][method]
    return operation["requestBody"]["content"]["application/json"]["schema"]


def assert_valid_body(test: unittest.TestCase, path: str, body: Any) -> None:
    """Fail `test` unless `body` (bytes or decoded JSON) is a valid request body of `path`."""
    value = json.loads(body) if isinstance(body, bytes) else body
    errors = schema_errors(value, request_schema(path))
    test.assertEqual(errors, [], f"invalid {path} body: {value!r}")


# ==== core ====
# The protocol core fed bytes and values: no client, no socket.

_SSE_BOM = b"\xef\xbb\xbf"
_SSE_ENDINGS = {"LF": b"\n", "CRLF": b"\r\n", "CR": b"\r"}


def _sse_events(pieces, max_event_bytes=None):
    """Feed `pieces` to a fresh SSEDecoder; the events as (event, data, id, retry) tuples."""
    decoder = edgee.SSEDecoder() if max_event_bytes is None else edgee.SSEDecoder(max_event_bytes)
    out = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return [(e.event, e.data, e.id, e.retry) for e in out]


def _sse_datas(pieces):
    """Only the data of each dispatched event."""
    return [e[1] for e in _sse_events(pieces)]


def _sse_datas_limited(pieces, limit):
    return [e[1] for e in _sse_events(pieces, max_event_bytes=limit)]


def _sse_msg(data, event="message", id="", retry=None):
    return (event, data, id, retry)


def _sse_event_bytes(obj, le=b"\n", space=True):
    """One `data:` event for a JSON object (non-ASCII kept raw), with line ending `le`."""
    return (b"data: " if space else b"data:") + compact_json(obj) + le + le


def _sse_delta(content=None, role=None, finish=None):
    delta = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class SSEDecoderTest(unittest.TestCase):
    """edgee.SSEDecoder / edgee.parse_sse_events against WHATWG HTML 9.2.6 and the project rules."""

    # -- line endings --

    def test_lf_line_endings(self):
        self.assertEqual(_sse_events([b"data: a\n\ndata: b\n\n"]), [_sse_msg("a"), _sse_msg("b")])

    def test_crlf_line_endings(self):
        self.assertEqual(
            _sse_events([b"data: a\r\n\r\ndata: b\r\n\r\n"]), [_sse_msg("a"), _sse_msg("b")]
        )

    def test_cr_line_endings(self):
        self.assertEqual(
            _sse_events([b"data: a\r\rdata: b\rdata: c\r\r"]), [_sse_msg("a"), _sse_msg("b\nc")]
        )

    def test_mixed_line_endings_in_one_stream(self):
        # LF, CR, CRLF each end one line; "\n\r\n" is LF then CRLF: a blank line.
        self.assertEqual(
            _sse_datas([b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"]), ["a\nb\nc", "d"]
        )

    def test_cr_lf_split_across_feeds_is_one_line_end(self):
        decoder = edgee.SSEDecoder()
        self.assertEqual(decoder.feed(b"data: a\r"), [])
        self.assertEqual(decoder.feed(b"\n"), [])  # completes the CRLF: not a blank line
        events = decoder.feed(b"data: b\r")
        self.assertEqual(events, [])
        events = decoder.feed(b"\n\r")
        self.assertEqual([e.data for e in events], ["a\nb"])
        self.assertEqual(decoder.feed(b"\n"), [])  # the LF of that last CRLF

    def test_cr_lf_split_with_empty_feed_between(self):
        self.assertEqual(_sse_datas([b"data: a\r", b"", b"\ndata: b\r\n\r\n"]), ["a\nb"])

    def test_lf_after_cr_split_counts_once(self):
        # If the LF were counted as a line end of its own, "a" would be dispatched alone.
        self.assertEqual(_sse_datas([b"data: a\r", b"\ndata: b\r\n\r\n"]), ["a\nb"])
        self.assertEqual(
            _sse_datas([b"data: a\r", b"\n", b"data: b\r", b"\n", b"\r", b"\n"]), ["a\nb"]
        )

    def test_cr_at_end_of_feed_then_other_byte(self):
        self.assertEqual(_sse_datas([b"data: a\r", b"data: b\n", b"\n"]), ["a\nb"])
        # The CR memory is spent on the next non-empty feed: a later LF is a line end.
        self.assertEqual(_sse_datas([b"data: a\r", b"data: b", b"\n\n"]), ["a\nb"])
        self.assertEqual(_sse_datas([b"data: a\r", b"x", b"\n\n"]), ["a"])

    def test_cr_cr_lf(self):
        # CR, then CRLF: two line ends, the second one blank.
        self.assertEqual(_sse_datas([b"data: a\r\r\ndata: b\n\n"]), ["a", "b"])
        self.assertEqual(_sse_datas([b"data: a\r\r", b"\ndata: b\n\n"]), ["a", "b"])
        self.assertEqual(_sse_datas([b"data: a\r", b"\r", b"\n", b"data: b\n\n"]), ["a", "b"])

    def test_every_split_gives_the_same_events(self):
        stream = (
            _SSE_BOM + b": hi\r\nevent: e\r\nid: 7\rdata: x\xc3\xa9\r\ndata:\xe6\xbc\xa2\n\r\n"
            b"retry: 30\ndata: \xf0\x9f\x8e\x89\xe2\x80\xa8\r\r"
            b"data\r\n\r\ndata: last\r\n\r\n"
        )
        expected = [
            ("e", "x\u00e9\n\u6f22", "7", None),
            ("message", "\U0001f389\u2028", "7", 30),
            ("message", "", "7", 30),
            ("message", "last", "7", 30),
        ]
        self.assertEqual(_sse_events([stream]), expected)
        n = len(stream)
        for i in range(n + 1):
            self.assertEqual(_sse_events([stream[:i], stream[i:]]), expected, f"split at {i}")
        for i in range(0, n + 1, 2):
            for j in range(i, n + 1):
                self.assertEqual(
                    _sse_events([stream[:i], stream[i:j], stream[j:]]),
                    expected,
                    f"split at {i} and {j}",
                )
        self.assertEqual(_sse_events([stream[k : k + 1] for k in range(n)]), expected)

    # -- byte order mark --

    def test_bom_dropped(self):
        self.assertEqual(_sse_datas([_SSE_BOM + b"data: a\n\n"]), ["a"])

    def test_bom_split_across_feeds(self):
        for pieces in (
            [b"\xef", b"\xbb", b"\xbfdata: a\n\n"],
            [b"\xef\xbb", b"\xbfdata: a\n\n"],
            [b"\xef", b"\xbb\xbf", b"data: a\n\n"],
            [b"", b"\xef", b"", b"\xbb\xbf", b"", b"data: a\n\n"],
            [b"", _SSE_BOM + b"data: a\n\n"],
            [_SSE_BOM, b"data: a\n\n"],
        ):
            self.assertEqual(_sse_datas(pieces), ["a"], pieces)

    def test_only_one_bom_dropped(self):
        # A second BOM belongs to the field name, which then is not "data".
        self.assertEqual(_sse_datas([_SSE_BOM + _SSE_BOM + b"data: a\n\ndata: b\n\n"]), ["b"])
        self.assertEqual(_sse_datas([_SSE_BOM, _SSE_BOM + b"data: a\n\ndata: b\n\n"]), ["b"])

    def test_bom_only_at_the_very_start(self):
        self.assertEqual(_sse_datas([b"data: a\n\n" + _SSE_BOM + b"data: b\n\n"]), ["a"])
        self.assertEqual(_sse_datas([b"data: a\n\n", _SSE_BOM + b"data: b\n\n"]), ["a"])
        self.assertEqual(_sse_datas([b"d", _SSE_BOM + b"ata: b\n\ndata: c\n\n"]), ["c"])
        self.assertEqual(_sse_datas([b"data: " + _SSE_BOM + b"x\n\n"]), ["\ufeffx"])

    def test_bom_prefix_that_is_not_a_bom_is_kept(self):
        # The held-back first bytes must come back when they turn out not to be a BOM.
        self.assertEqual(_sse_datas([b"\xef", b"data: a\n\ndata: b\n\n"]), ["b"])
        self.assertEqual(_sse_datas([b"\xef\xbb", b"data: a\n\ndata: b\n\n"]), ["b"])
        self.assertEqual(_sse_datas([b"d", b"ata: a\n\n"]), ["a"])
        self.assertEqual(_sse_datas([b"da", b"ta: a\n\n"]), ["a"])
        self.assertEqual(_sse_datas([b"\n", _SSE_BOM + b"data: a\n\ndata: b\n\n"]), ["b"])

    # -- fields --

    def test_comments_ignored(self):
        self.assertEqual(_sse_events([b": hello\ndata: a\n: data: no\n:\n\n"]), [_sse_msg("a")])
        self.assertEqual(_sse_events([b": only a comment\n\n:\n\n"]), [])

    def test_space_after_colon(self):
        self.assertEqual(_sse_datas([b"data:a\n\n"]), ["a"])
        self.assertEqual(_sse_datas([b"data: a\n\n"]), ["a"])
        self.assertEqual(_sse_datas([b"data:  a\n\n"]), [" a"])
        self.assertEqual(_sse_datas([b"data:   a\n\n"]), ["  a"])
        self.assertEqual(_sse_datas([b"data:\ta\n\n"]), ["\ta"])
        self.assertEqual(_sse_datas([b"data: a \n\n"]), ["a "])
        self.assertEqual(_sse_datas([b"data: a:b: c\n\n"]), ["a:b: c"])

    def test_space_after_colon_other_fields(self):
        self.assertEqual(
            _sse_events([b"event:  x\nid:  7\ndata: a\n\n"]), [_sse_msg("a", event=" x", id=" 7")]
        )
        self.assertEqual(
            _sse_events([b"event:x\nid:7\ndata: a\n\n"]), [_sse_msg("a", event="x", id="7")]
        )

    def test_multiline_data_joined_with_lf(self):
        self.assertEqual(_sse_datas([b"data: a\ndata: b\ndata:c\n\n"]), ["a\nb\nc"])
        self.assertEqual(_sse_datas([b"data: a\n: comment\nid: 1\ndata: b\n\n"]), ["a\nb"])

    def test_empty_data_lines(self):
        self.assertEqual(_sse_events([b"data:\n\n"]), [_sse_msg("")])
        self.assertEqual(_sse_events([b"data: \n\n"]), [_sse_msg("")])
        self.assertEqual(_sse_datas([b"data: a\ndata:\n\n"]), ["a\n"])
        self.assertEqual(_sse_datas([b"data:\ndata:\n\n"]), ["\n"])
        self.assertEqual(_sse_datas([b"data:\ndata: a\n\n"]), ["\na"])

    def test_data_without_colon(self):
        self.assertEqual(_sse_events([b"data\n\n"]), [_sse_msg("")])
        self.assertEqual(_sse_datas([b"data\ndata\n\n"]), ["\n"])
        self.assertEqual(_sse_datas([b"data: a\ndata\n\n"]), ["a\n"])
        # Without a colon the whole line is the name: "data " is an unknown field.
        self.assertEqual(_sse_events([b"data \n\ndata x\n\n"]), [])

    def test_json_split_over_two_data_lines(self):
        events = _sse_datas(
            [b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"hi"}}]}\n\n']
        )
        self.assertEqual(events, ['{"choices":[{"index":0,\n"delta":{"content":"hi"}}]}'])
        chunk = edgee.chunk_from_json(json.loads(events[0]))
        self.assertEqual(chunk.text, "hi")

    def test_event_field(self):
        self.assertEqual(
            _sse_events([b"event: add\ndata: 1\n\ndata: 2\n\n"]),
            [_sse_msg("1", event="add"), _sse_msg("2")],
        )
        self.assertEqual(
            _sse_events([b"event: add\nevent: remove\ndata: 1\n\n"]),
            [_sse_msg("1", event="remove")],
        )
        self.assertEqual(_sse_events([b"event:\ndata: 1\n\n"]), [_sse_msg("1")])
        self.assertEqual(_sse_events([b"data: 1\nevent: late\n\n"]), [_sse_msg("1", event="late")])

    def test_event_type_reset_by_blank_line_without_data(self):
        self.assertEqual(_sse_events([b"event: error\n\ndata: a\n\n"]), [_sse_msg("a")])

    def test_id_field(self):
        self.assertEqual(
            _sse_events([b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"]),
            [_sse_msg("a", id="1"), _sse_msg("b", id="1"), _sse_msg("c", id="")],
        )

    def test_id_set_by_event_without_data(self):
        decoder = edgee.SSEDecoder()
        self.assertEqual(decoder.feed(b"id: 5\n\n"), [])
        self.assertEqual(decoder.last_event_id, "5")
        self.assertEqual([e.id for e in decoder.feed(b"data: a\n\n")], ["5"])

    def test_id_with_nul_ignored(self):
        self.assertEqual(
            _sse_events([b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\nid: 4\ndata: c\n\n"]),
            [_sse_msg("a", id="1"), _sse_msg("b", id="1"), _sse_msg("c", id="4")],
        )

    def test_retry_field(self):
        decoder = edgee.SSEDecoder()
        self.assertEqual([e.retry for e in decoder.feed(b"retry: 1500\ndata: a\n\n")], [1500])
        self.assertEqual(decoder.retry, 1500)
        for bad in (
            b"retry: 15x0",
            b"retry: -1",
            b"retry:",
            b"retry",
            b"retry: 1.5",
            b"retry:  20",
            b"retry: 20 ",
            b"retry: \xd9\xa3",
            b"retry: +3",
        ):
            events = decoder.feed(bad + b"\ndata: b\n\n")
            self.assertEqual([(e.data, e.retry) for e in events], [("b", 1500)], bad)
        self.assertEqual(decoder.retry, 1500)
        self.assertEqual([e.retry for e in decoder.feed(b"retry:0042\ndata: c\n\n")], [42])

    def test_unknown_fields_ignored(self):
        self.assertEqual(
            _sse_events([b"foo: bar\nfoo\nx-data: y\ndata: a\nzzz:\n\n"]), [_sse_msg("a")]
        )
        self.assertEqual(_sse_events([b"foo: bar\n\n"]), [])

    def test_field_names_case_sensitive(self):
        self.assertEqual(
            _sse_events([b"Data: x\n\nDATA: y\n\nEvent: error\nID: 9\nRetry: 5\ndata: z\n\n"]),
            [_sse_msg("z")],
        )

    # -- dispatch --

    def test_blank_lines_without_data_dispatch_nothing(self):
        self.assertEqual(_sse_events([b"\n\n\n\r\n\r\r"]), [])
        self.assertEqual(_sse_events([b"event: x\nid: 1\nretry: 5\n\n"]), [])

    def test_dispatched_at_blank_line_and_not_before(self):
        decoder = edgee.SSEDecoder()
        self.assertEqual(decoder.feed(b"data: a"), [])
        self.assertEqual(decoder.feed(b"\n"), [])
        self.assertEqual(decoder.feed(b"data: b\n"), [])
        self.assertEqual([e.data for e in decoder.feed(b"\n")], ["a\nb"])
        # Everything complete in one feed comes out of that feed, in order.
        self.assertEqual(
            [e.data for e in decoder.feed(b"data: c\n\ndata: d\n\ndata: e")], ["c", "d"]
        )
        self.assertEqual([e.data for e in decoder.feed(b"\r\r")], ["e"])  # no wait for an LF

    def test_parse_sse_events_yields_before_next_piece(self):
        pulled = []

        def pieces():
            for piece in (b"data: a\n", b"\n", b"data: b\n\n", b"data: c"):
                pulled.append(piece)
                yield piece

        events = edgee.parse_sse_events(pieces())
        self.assertEqual(next(events).data, "a")
        self.assertEqual(pulled, [b"data: a\n", b"\n"])
        self.assertEqual(next(events).data, "b")
        self.assertEqual(len(pulled), 3)
        self.assertEqual(list(events), [])  # "c" never ended: discarded at EOF

    def test_eof_discards_unfinished_event(self):
        self.assertEqual([e.data for e in edgee.parse_sse_events([b"data: a\n\ndata: b\n"])], ["a"])
        self.assertEqual([e.data for e in edgee.parse_sse_events([b"data: a\n\ndata: b"])], ["a"])
        self.assertEqual(
            [e.data for e in edgee.parse_sse_events([b"data: a\r\n\r\ndata: b\r\n"])], ["a"]
        )
        decoder = edgee.SSEDecoder()
        decoder.feed(b"data: a\n\ndata: b\n")
        self.assertTrue(decoder.pending)
        decoder.feed(b"\n")
        self.assertFalse(decoder.pending)

    # -- text --

    def test_unicode_line_separators_do_not_split_lines(self):
        # U+2028, U+2029, U+0085, VT, FF and the C0 separators are line breaks only to
        # str.splitlines: in an event stream only CR and LF end lines.
        text = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei"
        self.assertEqual(_sse_datas([b"data: " + text.encode("utf-8") + b"\n\n"]), [text])
        payload = compact_json({"choices": [{"delta": {"content": text}}]})
        self.assertIn(b"\xe2\x80\xa8", payload)
        data = _sse_datas([b"data: " + payload + b"\r\n\r\n"])
        self.assertEqual(edgee.chunk_from_json(json.loads(data[0])).text, text)

    def test_multibyte_utf8_split_at_every_byte(self):
        text = "\u00e9\u6f22\u5b57\U0001f389\u2028z"
        stream = b"event: \xc3\xa9v\ndata: " + text.encode("utf-8") + b"\nid: \xe5\xad\x97\n\n"
        expected = [("\u00e9v", text, "\u5b57", None)]
        for i in range(len(stream) + 1):
            self.assertEqual(_sse_events([stream[:i], stream[i:]]), expected, f"split at {i}")
        self.assertEqual(_sse_events([stream[k : k + 1] for k in range(len(stream))]), expected)

    def test_invalid_utf8_is_replaced_not_raised(self):
        self.assertEqual(_sse_datas([b"data: a\xff\xfeb\n\n"]), ["a\ufffd\ufffdb"])
        self.assertEqual(_sse_datas([b"data: \xe6\xbc\n\n"]), ["\ufffd"])  # cut character
        self.assertEqual(
            _sse_events([b"event: \xff\nid: \xc3\ndata: x\n\n"]),
            [_sse_msg("x", event="\ufffd", id="\ufffd")],
        )

    # -- limits --

    def test_within_limit_ok(self):
        self.assertEqual(_sse_datas_limited([b"data: " + b"x" * 40 + b"\n\n"], 64), ["x" * 40])
        self.assertEqual(_sse_datas_limited([b"data: " + b"x" * 900 + b"\n\n"], 1000), ["x" * 900])

    def test_oversized_data_line_raises(self):
        with self.assertRaises(edgee.EdgeeStreamError):
            _sse_events([b"data: " + b"x" * 200 + b"\n\n"], max_event_bytes=64)
        with self.assertRaises(edgee.EdgeeStreamError) as cm:
            edgee.SSEDecoder(max_event_bytes=1000).feed(b"data: " + b"x" * 2000 + b"\n\n")
        self.assertIn("1000", str(cm.exception))  # the message names the limit
        self.assertIsInstance(cm.exception, RuntimeError)

    def test_oversized_line_raises_before_it_ends(self):
        decoder = edgee.SSEDecoder(64)
        with self.assertRaises(edgee.EdgeeStreamError):
            for _ in range(100):  # 1,000 bytes and no line end: refused long before
                decoder.feed(b"data: xxxx")
        decoder = edgee.SSEDecoder(max_event_bytes=1000)
        self.assertEqual(decoder.feed(b"data: " + b"x" * 600), [])
        with self.assertRaises(edgee.EdgeeStreamError):
            for _ in range(10):  # pieces without a line end: bounded by the limit
                decoder.feed(b"x" * 600)

    def test_oversized_comment_line_fed_in_pieces_raises(self):
        decoder = edgee.SSEDecoder(64)
        with self.assertRaises(edgee.EdgeeStreamError):
            decoder.feed(b": ")
            for _ in range(100):
                decoder.feed(b"yyyyyyyyyy")
        comment = edgee.SSEDecoder(max_event_bytes=1000)
        with self.assertRaises(edgee.EdgeeStreamError):
            for _ in range(10):
                comment.feed(b": " + b"z" * 600)

    def test_oversized_event_of_many_lines_raises(self):
        with self.assertRaises(edgee.EdgeeStreamError):
            _sse_events([b"data: 0123456789\n" * 20 + b"\n"], max_event_bytes=64)
        decoder = edgee.SSEDecoder(64)
        with self.assertRaises(edgee.EdgeeStreamError):
            for _ in range(20):
                decoder.feed(b"data: 0123456789\n")
        with self.assertRaises(edgee.EdgeeStreamError):
            edgee.SSEDecoder(max_event_bytes=1000).feed((b"data: " + b"y" * 400 + b"\n") * 3)

    def test_oversized_non_data_line_in_one_feed_raises(self):
        # A line longer than the limit is refused whatever its field and however it arrives.
        for line in (b": " + b"c" * 200, b"event: " + b"e" * 200, b"id: " + b"i" * 200):
            with self.assertRaises(edgee.EdgeeStreamError, msg=line[:10]):
                _sse_events([line + b"\ndata: a\n\n"], max_event_bytes=64)

    def test_limit_counts_per_event(self):
        # Many small events: each is under the limit, their total is not.
        self.assertEqual(len(_sse_datas_limited([b"data: 0123456789\n\n" * 50], 64)), 50)


_SSE_ALPHABET = [
    "a",
    "b",
    "z",
    "Q",
    " ",
    "  ",
    ".",
    ",",
    ":",
    "data: ",
    "\u00e9",
    "\u00fc",
    "\u6f22",
    "\u5b57",
    "\U0001f389",
    "\U0001f600",
    "\u2028",
    "\u2029",
    "\x85",
    "\u00a0",
    "\ufeff",
    '"',
    "\\",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "{",
    "}",
    "[DONE]",
]
_SSE_FINISH = ("stop", "length", "tool_calls", "content_filter")
# Lines that must change nothing where they stand (inside an event or between events).
_SSE_NOISE = [
    b": keep-alive",
    b":",
    b': data: {"x": 1}',
    b": \xc3\xa9\xe6\xbc\xa2 \xe2\x80\xa8",
    b"event: delta",
    b"event: message",
    b"event:",
    b"event: completion.chunk",
    b"id: 17",
    b"id",
    b"id: a\x00b",
    b"id: \xe5\xad\x97",
    b"retry: 2500",
    b"retry: soon",
    b"foo: bar",
    b"foo",
    b"x:y",
    b'Data: {"choices":[{"delta":{"content":"BAD"}}]}',
    b"DATA: nope",
    b"Event: error",
    b"data : no",
]


def _sse_random_text(rng):
    n = rng.choice((0, 1, 2, 3, 5, 8, 13)) if rng.random() < 0.9 else rng.randint(20, 200)
    return "".join(rng.choice(_SSE_ALPHABET) for _ in range(n))


def _sse_json_cuts(text):
    """Positions in a JSON text where a line break is harmless (outside strings)."""
    points, in_string, escaped = [], False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in ",:{[":
            points.append(i + 1)
    return points


def _sse_random_event(rng, obj, le):
    """One event holding `obj`: maybe noise fields, its JSON over one or more data lines."""
    separators = (",", ":") if rng.random() < 0.7 else (", ", ": ")
    text = json.dumps(obj, separators=separators, ensure_ascii=rng.random() < 0.15)
    cuts = _sse_json_cuts(text)
    chosen = sorted(rng.sample(cuts, min(len(cuts), rng.choice((0, 0, 0, 1, 2))))) if cuts else []
    parts, last = [], 0
    for c in chosen:
        parts.append(text[last:c])
        last = c
    parts.append(text[last:])
    lines = []
    if rng.random() < 0.25:
        lines.append(rng.choice(_SSE_NOISE))
    if rng.random() < 0.03:
        lines.append(b"data")  # an empty first data line: the JSON starts after an LF
    for part in parts:
        lines.append((b"data: " if rng.random() < 0.7 else b"data:") + part.encode("utf-8"))
        if rng.random() < 0.1:
            lines.append(rng.choice(_SSE_NOISE))
    if rng.random() < 0.03:
        lines.append(b"data:")  # an empty last data line: the JSON ends with an LF
    return le.join(lines) + le + le


def _sse_random_noise(rng, le):
    """Between events: comments, ignored fields and blank lines, dispatching nothing."""
    out = []
    for _ in range(rng.choice((0, 0, 0, 1, 2, 3))):
        if rng.random() < 0.3:
            out.append(le)
        else:
            lines = [rng.choice(_SSE_NOISE) for _ in range(rng.randint(1, 3))]
            out.append(le.join(lines) + le + le)
    return b"".join(out)


def _sse_random_stream(rng):
    """(stream bytes, expected [(role, content)] of the chunks with choices, finish, ending)."""
    ending = rng.choice(sorted(_SSE_ENDINGS))
    le = _SSE_ENDINGS[ending]
    contents = [_sse_random_text(rng) for _ in range(rng.randint(0, 6))]
    finish = rng.choice(_SSE_FINISH)
    objs = [_sse_delta(role="assistant")] + [_sse_delta(c) for c in contents]
    objs.append(_sse_delta(finish=finish))
    expected = [("assistant", None)] + [(None, c) for c in contents] + [(None, None)]
    if rng.random() < 0.2:
        objs.append(
            {
                "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }
        )
    out = [_SSE_BOM] if rng.random() < 0.15 else []
    for obj in objs:
        out.append(_sse_random_noise(rng, le))
        out.append(_sse_random_event(rng, obj, le))
    out.append(_sse_random_noise(rng, le))
    out.append((b"data: [DONE]" if rng.random() < 0.7 else b"data:[DONE]") + le + le)
    if rng.random() < 0.2:  # anything after [DONE] is never read
        out.append(_sse_random_event(rng, _sse_delta("AFTER DONE"), le))
        out.append(_sse_random_event(rng, _sse_delta(finish="length"), le))
    return b"".join(out), expected, finish, ending


def _sse_random_cuts(rng, blob, max_pieces=None):
    """`blob` cut at random places (some at CRs, some empty pieces, sometimes byte by byte)."""
    n = len(blob)
    if max_pieces is None and rng.random() < 0.03:
        return [blob[i : i + 1] for i in range(n)]
    limit = max_pieces - 1 if max_pieces is not None else 40
    points = set(rng.sample(range(1, n), min(n - 1, rng.randint(0, limit)))) if n > 1 else set()
    crs = [i + 1 for i, b in enumerate(blob) if b == 13]
    if crs and rng.random() < 0.5:
        points.update(rng.sample(crs, min(len(crs), rng.randint(1, 3))))
    points = sorted(points)
    if max_pieces is not None:
        points = points[: max_pieces - 1]
    pieces, last = [], 0
    for p in [*points, n]:
        pieces.append(blob[last:p])
        last = p
    if max_pieces is None and rng.random() < 0.1:
        pieces.insert(rng.randint(0, len(pieces)), b"")
    return pieces


def _sse_consume(pieces):
    """What a client makes of the pieces: the decoder, then the chunk-building path."""
    decoder = edgee.SSEDecoder()
    deltas, finish = [], None
    for piece in pieces:
        for event in decoder.feed(piece):
            if event.data == "[DONE]":
                return deltas, finish, True
            if event.event == "error":
                raise AssertionError(f"error event {event.data!r}")
            if not event.data:
                continue
            chunk = edgee.chunk_from_json(json.loads(event.data))
            for choice in chunk.choices:
                deltas.append((choice.delta.role, choice.delta.content))
                if choice.finish_reason:
                    finish = choice.finish_reason
    return deltas, finish, False


def _sse_seed():
    value = os.environ.get("EDGEE_TEST_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**32)


class SSEFramingTest(unittest.TestCase):
    """Random streams cut at random places decode to exactly what was sent.

    The seed is fresh on each run and printed on failure; set EDGEE_TEST_SEED to replay.
    """

    STREAMS = 2000

    def test_random_streams_through_decoder(self):
        seed = _sse_seed()
        rng = random.Random(seed)
        endings = set()
        for i in range(self.STREAMS):
            blob, expected, finish, ending = _sse_random_stream(rng)
            endings.add(ending)
            pieces = _sse_random_cuts(rng, blob)
            try:
                got = _sse_consume(pieces)
            except Exception as exc:  # reported with the seed below
                got = f"raised {exc!r}"
            if got != (expected, finish, True):
                self.fail(
                    f"seed={seed} stream={i} ending={ending}\n"
                    f"expected {(expected, finish, True)!r}\n"
                    f"got      {got!r}\npieces {pieces[:60]!r}"
                )
        self.assertEqual(endings, set(_SSE_ENDINGS), f"seed={seed}")


# Events of a streamed answer as raw `data:` lines, and their texts (the chunked-body tests).
CUT_EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":" \xc3\xa9t\xc3\xa9"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]
CUT_TEXTS = ["", "Hi", " \u00e9t\u00e9", ""]


# ---- the protocol: HTTP/1.1 heads, bodies, requests, decisions and plans, fed bytes ----
# The sans-I/O core (ResponseParser, ChunkedDecoder, Route, Redactor, Call and the
# Transport plans) takes bytes and values and gives values back: no sockets here.

CORE_KEY = "sk-core-SECRET-0123456789abcdef"
CORE_URL = "http://gw.test"
CORE_PATH = "/v1/chat/completions"
CORE_BODY = b'{"model":"openai/gpt-5.2"}'
CORE_SSE = {"Content-Type": "text/event-stream"}


def core_answer(status: int = 200, body: bytes = b"{}", headers: Any = None) -> bytes:
    """A whole answer with a Content-Length body."""
    return http_head(status, headers, content_length=len(body)) + body


def core_error(status: int, message: str = "no") -> bytes:
    """The JSON body of an error answer."""
    return compact_json(error_body(status, STATUS_CODES.get(status), message))


def core_splits(data: bytes) -> Iterator[List[bytes]]:
    """`data` cut in two at every offset, then byte by byte."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]


def core_parse(pieces: List[bytes], method: str = "GET", eof: bool = False) -> tuple:
    """(parser, head, body) after feeding `pieces` as a driver does."""
    parser = edgee.ResponseParser(method)
    head = None
    body = []
    for piece in pieces:
        if head is None:
            head = parser.feed_head(piece)
            if head is not None:
                body.append(parser.feed_body(b""))
        else:
            body.append(parser.feed_body(piece))
    if eof:
        body.append(parser.feed_eof())
    return parser, head, b"".join(body)


def core_decode(pieces: List[bytes]) -> tuple:
    """(payload, done, extra) of a ChunkedDecoder fed `pieces` until it is done."""
    decoder = edgee.ChunkedDecoder()
    payload = []
    for i, piece in enumerate(pieces):
        payload.append(decoder.feed(piece))
        if decoder.done:
            return b"".join(payload), True, decoder.extra + b"".join(pieces[i + 1 :])
    return b"".join(payload), False, decoder.extra


def core_call(method: str = "POST", path: str = CORE_PATH, body: Any = CORE_BODY, **kw: Any):
    """A Call as the client builds it: the key in Authorization, 30 s of silence allowed."""
    headers = {"Authorization": "Bearer " + CORE_KEY}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return edgee.Call(method, path, body, headers, kw.get("timeout", 30.0), kw.get("deadline"))


def core_events(*chunks: dict, done: bool = True) -> bytes:
    """An event-stream body of chat chunks, ended by [DONE] unless done=False."""
    return b"".join(sse_bytes(c) for c in chunks) + (sse_bytes("[DONE]") if done else b"")


class ResponseParserTest(unittest.TestCase):
    """ResponseParser: one answer's head and body framing, from bytes (RFC 9112)."""

    def parse(self, data: bytes, method: str = "GET", eof: bool = False) -> tuple:
        return core_parse([data], method, eof)

    def refused(self, data: bytes, method: str = "GET") -> str:
        with self.assertRaises(edgee.EdgeeConnectionError) as caught:
            core_parse([data], method)
        return str(caught.exception)

    # -- status line and headers

    def test_http_1_1_status_line_with_a_reason_of_several_words(self):
        _, head, _ = self.parse(b"HTTP/1.1 404 Not Found Here\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual((head.status, head.reason, head.keep_alive), (404, "Not Found Here", True))

    def test_http_1_0_status_line(self):
        _, head, _ = self.parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual((head.status, head.reason, head.keep_alive), (200, "OK", False))

    def test_status_line_without_a_reason(self):
        for line in (b"HTTP/1.1 204", b"HTTP/1.1 204 "):
            with self.subTest(line=line):
                _, head, _ = self.parse(line + b"\r\n\r\n")
                self.assertEqual((head.status, head.reason), (204, ""))

    def test_header_names_lower_case_values_trimmed(self):
        _, head, _ = self.parse(b"HTTP/1.1 204 No Content\r\nX-Edgee-Provider:  openai \r\n\r\n")
        self.assertEqual(head.headers, {"x-edgee-provider": "openai"})

    def test_folded_header_lines_join_the_value(self):
        data = b"HTTP/1.1 204 No Content\r\nX-Note: one\r\n two\r\n\tthree\r\nX-B: b\r\n\r\n"
        _, head, _ = self.parse(data)
        self.assertEqual(head.headers, {"x-note": "one two three", "x-b": "b"})

    def test_folded_line_before_any_header_refused(self):
        self.refused(b"HTTP/1.1 204 No Content\r\n folded\r\n\r\n")

    def test_duplicate_headers_joined_with_commas(self):
        data = b"HTTP/1.1 204 No Content\r\nVia: a\r\nX-A: 1\r\nvia: b\r\nVIA: c\r\n\r\n"
        _, head, _ = self.parse(data)
        self.assertEqual(head.headers, {"via": "a, b, c", "x-a": "1"})

    def test_bare_lf_line_ends_accepted(self):
        _, head, body = self.parse(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi")
        self.assertEqual((head.status, body), (200, b"hi"))

    def test_stray_line_ends_before_the_status_line_skipped(self):
        _, head, _ = self.parse(b"\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(head.status, 204)

    def test_garbage_refused(self):
        for data in (b"<html>hi</html>\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", b"<html>"):
            with self.subTest(data=data):
                self.assertIn("invalid HTTP answer", self.refused(data))

    def test_bad_status_lines_refused(self):
        for line in (
            b"HTTP/2 200 OK",
            b"http/1.1 200 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 20x OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1",
            b"HTTP/1.1 099 Low",
        ):
            with self.subTest(line=line):
                self.refused(line + b"\r\nContent-Length: 0\r\n\r\n")

    def test_bad_header_lines_refused(self):
        for line in (
            b"X Y: spaced name",
            b"X-A(: not a token",
            b"X-A : space before the colon",
            b"no colon at all",
            b": no name",
            b"X-\xe9: latin-1 name",
        ):
            with self.subTest(line=line):
                self.refused(b"HTTP/1.1 204 No Content\r\n" + line + b"\r\n\r\n")

    def test_head_of_max_bytes_accepted_one_byte_more_refused(self):
        start, end = b"HTTP/1.1 204 No Content\r\nX-Pad: ", b"\r\n\r\n"
        pad = b"p" * (edgee.MAX_HEAD_BYTES - len(start) - len(end))
        _, head, _ = self.parse(start + pad + end)
        self.assertEqual(len(head.headers["x-pad"]), len(pad))
        self.assertIn("larger than", self.refused(start + pad + b"p" + end))

    def test_endless_head_refused_before_it_ends(self):
        parser = edgee.ResponseParser("GET")
        parser.feed_head(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        with self.assertRaises(edgee.EdgeeConnectionError):
            parser.feed_head(b"p" * edgee.MAX_HEAD_BYTES)

    def test_max_headers_accepted_one_more_refused(self):
        def head(count: int) -> bytes:
            fields = b"".join(b"X-%d: v\r\n" % i for i in range(count))
            return b"HTTP/1.1 204 No Content\r\n" + fields + b"\r\n"

        _, accepted, _ = self.parse(head(edgee.MAX_HEADERS))
        self.assertEqual(len(accepted.headers), edgee.MAX_HEADERS)
        self.assertIn("header lines", self.refused(head(edgee.MAX_HEADERS + 1)))

    # -- interim answers

    def test_interim_answers_skipped(self):
        for interim in (b"100 Continue", b"102 Processing", b"103 Early Hints\r\nLink: </a>"):
            with self.subTest(interim=interim):
                data = b"HTTP/1.1 " + interim + b"\r\n\r\n" + core_answer(200, b"hello")
                parser, head, body = self.parse(data)
                self.assertEqual((head.status, body, parser.reusable), (200, b"hello", True))

    def test_interim_answers_at_every_split(self):
        data = (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            + core_answer(200, b"hello")
        )
        for pieces in core_splits(data):
            parser, head, body = core_parse(pieces)
            self.assertEqual((head.status, body, parser.reusable), (200, b"hello", True), pieces)

    def test_max_interim_answers_accepted_one_more_refused(self):
        interim = b"HTTP/1.1 102 Processing\r\n\r\n"
        _, head, _ = self.parse(interim * edgee.MAX_INTERIM + core_answer())
        self.assertEqual(head.status, 200)
        data = interim * (edgee.MAX_INTERIM + 1) + core_answer()
        self.assertIn("interim", self.refused(data))

    def test_101_refused(self):
        data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        self.assertIn("101", self.refused(data + core_answer()))

    # -- framing (RFC 9112, 6.3)

    def test_content_length_body(self):
        parser, _, body = self.parse(core_answer(200, b"hello"))
        self.assertEqual((body, parser.done, parser.reusable), (b"hello", True, True))

    def test_duplicate_equal_content_lengths_accepted(self):
        for fields in (b"Content-Length: 5\r\nContent-Length: 5", b"Content-Length: 5, 5"):
            with self.subTest(fields=fields):
                parser, _, body = self.parse(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n\r\nhello")
                self.assertEqual((body, parser.reusable), (b"hello", True))

    def test_conflicting_or_bad_content_lengths_refused(self):
        for value in (b"5, 6", b"5\r\nContent-Length: 6", b"-1", b"+5", b"0x5", b"", b"9" * 19):
            with self.subTest(value=value):
                self.refused(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nhello")

    def test_chunked_body(self):
        data = http_head(200, chunked=True) + chunk_frame(b"hel") + chunk_frame(b"lo") + CHUNK_END
        parser, _, body = self.parse(data)
        self.assertEqual((body, parser.done, parser.reusable), (b"hello", True, True))

    def test_chunked_with_content_length_read_as_chunked_never_reused(self):
        data = http_head(200, chunked=True, content_length=3) + chunk_frame(b"hello") + CHUNK_END
        parser, _, body = self.parse(data)
        self.assertEqual((body, parser.done, parser.reusable), (b"hello", True, False))

    def test_transfer_codings_other_than_chunked_refused(self):
        for coding in (
            b"gzip",
            b"gzip, chunked",
            b"chunked, gzip",
            b"identity",
            b"chunked, chunked",
        ):
            with self.subTest(coding=coding):
                data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n" + CHUNK_END
                self.assertIn("transfer coding", self.refused(data))

    def test_transfer_coding_names_case_insensitive(self):
        data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n" + chunk_frame(b"x")
        _, _, body = self.parse(data + CHUNK_END)
        self.assertEqual(body, b"x")

    def test_head_answer_has_no_body(self):
        parser, _, body = self.parse(http_head(200, content_length=100), method="HEAD")
        self.assertEqual((body, parser.done, parser.reusable), (b"", True, True))

    def test_204_and_304_have_no_body(self):
        for status in (204, 304):
            with self.subTest(status=status):
                parser, _, body = self.parse(http_head(status, content_length=100))
                self.assertEqual((body, parser.done, parser.reusable), (b"", True, True))

    def test_connect_2xx_ends_at_the_head(self):
        for version in (b"HTTP/1.1", b"HTTP/1.0"):
            with self.subTest(version=version):
                data = version + b" 200 Connection established\r\n\r\n"
                parser, head, _ = self.parse(data, method="CONNECT")
                self.assertEqual((head.status, parser.done, parser.reusable), (200, True, True))

    def test_connect_refusal_has_a_body(self):
        parser, head, body = self.parse(core_answer(407, b"auth!"), method="CONNECT")
        self.assertEqual((head.status, body, parser.done), (407, b"auth!", True))

    def test_close_delimited_body_ends_at_eof(self):
        parser, _, body = self.parse(http_head(200) + b"all of it")
        self.assertFalse(parser.done)
        self.assertEqual((body, parser.feed_eof(), parser.done), (b"all of it", b"", True))
        self.assertFalse(parser.reusable)

    def test_body_same_at_every_split(self):
        framings = {
            "length": core_answer(200, b"hello world"),
            "chunked": http_head(200, chunked=True)
            + chunk_frame(b"hello")
            + chunk_frame(b" world")
            + b"0\r\nX-Trailer: t\r\n\r\n",
            "close": http_head(200) + b"hello world",
        }
        for name, data in framings.items():
            for pieces in core_splits(data):
                parser, _, body = core_parse(pieces, eof=name == "close")
                self.assertEqual((body, parser.done), (b"hello world", True), (name, pieces))

    # -- the end of the connection

    def test_eof_inside_a_content_length_body_is_a_cut(self):
        parser, _, _ = self.parse(core_answer(200, b"hello")[:-3])
        with self.assertRaisesRegex(edgee.EdgeeStreamError, "stream was cut.* 3 bytes"):
            parser.feed_eof()

    def test_eof_inside_a_chunked_body_is_a_cut(self):
        head = http_head(200, chunked=True)
        chunks = chunk_frame(b"hello") + CHUNK_END
        for cut in range(len(chunks)):
            parser, _, _ = self.parse(head + chunks[:cut])
            with self.assertRaisesRegex(edgee.EdgeeStreamError, "stream was cut", msg=cut):
                parser.feed_eof()

    def test_eof_after_a_whole_body_ends_nothing(self):
        parser, _, _ = self.parse(core_answer(200, b"hello"))
        self.assertEqual(parser.feed_eof(), b"")

    # -- reuse of the connection

    def test_reusable_only_once_the_body_is_read_exactly(self):
        parser, _, _ = self.parse(core_answer(200, b"hello")[:-1])
        self.assertFalse(parser.reusable)
        parser.feed_body(b"o")
        self.assertTrue(parser.reusable)

    def test_extra_bytes_after_the_answer_forbid_reuse(self):
        extra = b"HTTP/1.1 200 OK\r\n"
        answers = {
            "length": core_answer(200, b"hello"),
            "chunked": http_head(200, chunked=True) + chunk_frame(b"hello") + CHUNK_END,
            "204": http_head(204),
        }
        for name, data in answers.items():
            for pieces in ([data + extra], [data, extra]):
                with self.subTest(framing=name, pieces=len(pieces)):
                    parser, _, _ = core_parse(pieces)
                    self.assertTrue(parser.done)
                    self.assertFalse(parser.reusable)

    def test_connection_close_forbids_reuse(self):
        parser, _, _ = self.parse(core_answer(200, b"hi", {"Connection": "close"}))
        self.assertEqual((parser.done, parser.reusable), (True, False))

    def test_http_1_0_reusable_only_with_keep_alive(self):
        for fields, reusable in ((b"", False), (b"Connection: keep-alive\r\n", True)):
            with self.subTest(fields=fields):
                data = b"HTTP/1.0 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nhi"
                parser, _, _ = self.parse(data)
                self.assertEqual((parser.done, parser.reusable), (True, reusable))

    def test_forbid_reuse_before_the_head_holds(self):
        parser = edgee.ResponseParser("POST")
        parser.forbid_reuse()  # what a failed send does before reading an early answer
        parser.feed_head(core_answer(413, b"too big"))
        parser.feed_body(b"")
        self.assertEqual((parser.done, parser.reusable), (True, False))


class ChunkedDecoderTest(unittest.TestCase):
    """ChunkedDecoder: a chunked body (RFC 9112, 7.1) in pieces of any size."""

    def refused(self, data: bytes) -> str:
        with self.assertRaises(edgee.EdgeeStreamError) as caught:
            core_decode([data])
        return str(caught.exception)

    def test_cut_body_is_not_done(self):
        body = b"".join(chunk_frame(e) for e in CUT_EVENTS) + CHUNK_END
        payload = b"".join(CUT_EVENTS)
        for cut in range(len(body)):
            decoder = edgee.ChunkedDecoder()
            out = decoder.feed(body[:cut])
            self.assertFalse(decoder.done, cut)
            self.assertTrue(payload.startswith(out), cut)  # nothing beyond what arrived

    def test_chunks_joined(self):
        data = chunk_frame(b"hello") + chunk_frame(b" ") + chunk_frame(b"world") + CHUNK_END
        self.assertEqual(core_decode([data]), (b"hello world", True, b""))

    def test_extensions_and_trailers_ignored(self):
        data = b"5;name=value\r\nhello\r\n0;last\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n"
        self.assertEqual(core_decode([data]), (b"hello", True, b""))

    def test_bare_lf_line_ends_accepted(self):
        self.assertEqual(core_decode([b"5\nhello\n0\n\n"]), (b"hello", True, b""))

    def test_upper_and_lower_case_sizes(self):
        data = b"a\r\n" + b"x" * 10 + b"\r\nA\r\n" + b"y" * 10 + b"\r\n0\r\n\r\n"
        self.assertEqual(core_decode([data]), (b"x" * 10 + b"y" * 10, True, b""))

    def test_bytes_after_the_end_kept_as_extra(self):
        data = chunk_frame(b"hi") + CHUNK_END + b"HTTP/1.1"
        self.assertEqual(core_decode([data]), (b"hi", True, b"HTTP/1.1"))

    def test_not_done_before_the_last_chunk(self):
        self.assertEqual(core_decode([chunk_frame(b"hi")]), (b"hi", False, b""))

    def test_same_payload_at_every_split(self):
        data = b"5;x=y\r\nhello\r\n1\r\n \r\n5\nworld\n0\r\nT: t\r\n\r\nnext"
        for pieces in core_splits(data):
            self.assertEqual(core_decode(pieces), (b"hello world", True, b"next"), pieces)

    def test_bad_chunk_sizes_refused(self):
        for size in (b"", b"x", b"-1", b"0x10", b"1 2", b"+1", b"1" * 17):
            with self.subTest(size=size):
                self.assertIn("bad chunk size", self.refused(size + b"\r\nhello\r\n"))

    def test_missing_line_end_after_the_data_refused(self):
        for tail in (b"X\r\n0\r\n\r\n", b"\rX0\r\n\r\n"):
            with self.subTest(tail=tail):
                self.assertIn("no line end", self.refused(b"3\r\nabc" + tail))

    def test_size_line_longer_than_max_refused_at_every_split(self):
        long_line = b"1;" + b"e" * (edgee.MAX_CHUNK_LINE - 1) + b"\r\nA\r\n0\r\n\r\n"
        for cut in range(0, len(long_line), 97):
            with self.assertRaises(edgee.EdgeeStreamError, msg=cut):
                core_decode([long_line[:cut], long_line[cut:]])

    def test_size_line_just_under_max_accepted_at_every_split(self):
        line = b"1;" + b"e" * (edgee.MAX_CHUNK_LINE - 4) + b"\r\nA\r\n0\r\n\r\n"
        for cut in range(0, len(line), 97):
            self.assertEqual(core_decode([line[:cut], line[cut:]]), (b"A", True, b""), cut)

    def test_endless_trailers_refused(self):
        trailer = b"X-T: " + b"t" * 1000 + b"\r\n"
        count = edgee.MAX_HEAD_BYTES // len(trailer) + 1
        self.assertIn("endless trailers", self.refused(b"0\r\n" + trailer * count))


class RouteTest(unittest.TestCase):
    """Route: the bytes of a request and of a CONNECT, direct or through a proxy."""

    HEADERS: ClassVar[dict] = {"Authorization": "Bearer k", "Accept": "application/json"}

    def setUp(self):
        isolate_env(self)

    def test_request_bytes_exact(self):
        data = edgee.Route("https://gw.test").request_bytes(
            "POST", "/v1/x", dict(self.HEADERS, **{"Content-Type": "application/json"}), b"{}"
        )
        self.assertEqual(
            data,
            b"POST /v1/x HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer k\r\n"
            b"Accept: application/json\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}",
        )

    def test_get_has_no_body_and_no_content_length(self):
        data = edgee.Route("https://gw.test").request_bytes("GET", "/v1/models", {}, None)
        self.assertEqual(data, b"GET /v1/models HTTP/1.1\r\nHost: gw.test\r\n\r\n")

    def test_empty_body_has_content_length_zero(self):
        data = edgee.Route("https://gw.test").request_bytes("POST", "/v1/x", {}, b"")
        self.assertEqual(data, b"POST /v1/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n\r\n")

    def test_host_header_is_the_netloc(self):
        for url, host, port in (
            ("https://gw.test", b"gw.test", 443),
            ("http://gw.test", b"gw.test", 80),
            ("https://gw.test:8443", b"gw.test:8443", 8443),
            ("http://[::1]:8080", b"[::1]:8080", 8080),
            ("https://[2001:db8::1]", b"[2001:db8::1]", 443),
        ):
            with self.subTest(url=url):
                route = edgee.Route(url)
                data = route.request_bytes("GET", "/v1/models", {}, None)
                self.assertIn(b"\r\nHost: " + host + b"\r\n", data)
                self.assertEqual(route.port, port)

    def test_same_origin(self):
        route = edgee.Route("https://gw.test")
        for url, same in (
            ("https://gw.test/v1/x", True),
            ("https://GW.test:443/other", True),
            ("http://gw.test/v1/x", False),
            ("https://gw.test:8443/v1/x", False),
            ("https://evil.test/v1/x", False),
        ):
            with self.subTest(url=url):
                self.assertEqual(route.same_origin(url), same)

    def test_no_proxy_configured(self):
        route = edgee.Route("https://gw.test")
        self.assertEqual((route.proxy, route.tunnel, route.target("/v1/x")), (None, False, "/v1/x"))

    def test_plain_http_proxy_gets_an_absolute_target_and_the_credentials(self):
        os.environ["http_proxy"] = "http://us%40er:p%3Ass@proxy.test:3128"
        route = edgee.Route("http://gw.test:8080")
        self.assertEqual((route.proxy, route.tunnel), (("proxy.test", 3128), False))
        target = route.target("/v1/models")
        self.assertEqual(target, "http://gw.test:8080/v1/models")
        auth = base64.b64encode(b"us@er:p:ss")
        self.assertEqual(
            route.request_bytes("GET", target, self.HEADERS, None),
            b"GET http://gw.test:8080/v1/models HTTP/1.1\r\nHost: gw.test:8080\r\n"
            b"Authorization: Bearer k\r\nAccept: application/json\r\n"
            b"Proxy-Authorization: Basic " + auth + b"\r\n\r\n",
        )

    def test_https_through_a_proxy_tunnels_with_credentials_on_connect_only(self):
        os.environ["https_proxy"] = "http://user:pw@proxy.test:3128"
        route = edgee.Route("https://gw.test")
        self.assertEqual((route.proxy, route.tunnel), (("proxy.test", 3128), True))
        auth = base64.b64encode(b"user:pw")
        self.assertEqual(
            route.connect_bytes(),
            b"CONNECT gw.test:443 HTTP/1.1\r\nHost: gw.test:443\r\n"
            b"Proxy-Authorization: Basic " + auth + b"\r\n\r\n",
        )
        self.assertEqual(route.target("/v1/models"), "/v1/models")
        data = route.request_bytes("GET", "/v1/models", self.HEADERS, None)
        self.assertNotIn(b"Proxy-Authorization", data)
        self.assertTrue(data.startswith(b"GET /v1/models HTTP/1.1\r\nHost: gw.test\r\n"))

    def test_connect_to_an_ipv6_origin_brackets_the_host(self):
        os.environ["https_proxy"] = "proxy.test:3128"  # no scheme: http:// is meant
        route = edgee.Route("https://[::1]:8443")
        self.assertEqual(route.proxy, ("proxy.test", 3128))
        self.assertEqual(
            route.connect_bytes(), b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"
        )

    def test_proxy_without_credentials_sends_no_proxy_authorization(self):
        os.environ["http_proxy"] = "http://proxy.test:3128"
        route = edgee.Route("http://gw.test")
        data = route.request_bytes("GET", route.target("/v1/models"), {}, None)
        self.assertEqual(data, b"GET http://gw.test/v1/models HTTP/1.1\r\nHost: gw.test\r\n\r\n")

    def test_no_proxy_bypasses_the_proxy(self):
        os.environ["https_proxy"] = "http://proxy.test:3128"
        os.environ["no_proxy"] = "gw.test"
        self.assertIsNone(edgee.Route("https://gw.test").proxy)
        self.assertIsNotNone(edgee.Route("https://other.test").proxy)


class RedactorTest(unittest.TestCase):
    """Redactor: the key leaves server text in every form JSON may spell it."""

    def redacts(self, key: str, text: str) -> None:
        redacted = edgee.Redactor(key).text("said " + text + "!")
        self.assertEqual(redacted, "said [redacted]!", text)

    def test_literal_key(self):
        self.redacts(CORE_KEY, CORE_KEY)

    def test_slash_escaped_as_json_may_write_it(self):
        for text in ("sk\\/abc\\/def-0123", "sk/abc\\/def-0123"):
            with self.subTest(text=text):
                self.redacts("sk/abc/def-0123", text)

    def test_any_char_as_a_unicode_escape_either_case(self):
        for i, char in enumerate(CORE_KEY):
            for form in ("\\u%04x", "\\u%04X"):
                with self.subTest(char=char, form=form):
                    self.redacts(CORE_KEY, CORE_KEY[:i] + form % ord(char) + CORE_KEY[i + 1 :])
        self.redacts(CORE_KEY, "".join(f"\\u{ord(c):04x}" for c in CORE_KEY))

    def test_quote_and_backslash_as_json_escapes(self):
        key = 'sk"quo\\te-0123'
        self.redacts(key, json.dumps(key)[1:-1])
        self.redacts(key, key)

    def test_regex_characters_in_the_key_taken_literally(self):
        key = "sk.+*?(x)[y]-0123"
        self.redacts(key, key)
        self.assertEqual(edgee.Redactor(key).text("skA+*?(x)[y]-0123"), "skA+*?(x)[y]-0123")

    def test_keys_shorter_than_8_left_alone(self):
        self.assertEqual(edgee.Redactor("sk-1234").text("sk-1234"), "sk-1234")
        self.redacts("sk-12345", "sk-12345")

    def test_headers(self):
        headers = {"x-echo": "Bearer " + CORE_KEY, "x-other": "plain"}
        self.assertEqual(
            edgee.Redactor(CORE_KEY).headers(headers),
            {"x-echo": "Bearer [redacted]", "x-other": "plain"},
        )


class CallTest(unittest.TestCase):
    """Call: the retry budget and the clock of one call."""

    ERROR = edgee.EdgeeConnectionError("the gateway went away", True)

    def test_retry_gives_backoff_delays_then_raises_the_error(self):
        call = core_call()
        first = call.retry(self.ERROR, True, 2, None)
        second = call.retry(self.ERROR, True, 2, None)
        self.assertTrue(0.375 <= first <= 0.5, first)
        self.assertTrue(0.75 <= second <= 1.0, second)
        with self.assertRaises(edgee.EdgeeConnectionError) as caught:
            call.retry(self.ERROR, True, 2, None)
        self.assertIs(caught.exception, self.ERROR)
        self.assertEqual(call.retries, 2)

    def test_non_retryable_raises_at_once(self):
        call = core_call()
        with self.assertRaises(edgee.EdgeeConnectionError):
            call.retry(self.ERROR, False, 2, None)
        self.assertEqual(call.retries, 0)

    def test_no_retries_allowed_raises_at_once(self):
        with self.assertRaises(edgee.EdgeeConnectionError):
            core_call().retry(self.ERROR, True, 0, None)

    def test_retry_after_respected(self):
        for headers, delay in (
            ({"retry-after": "3"}, 3.0),
            ({"retry-after": "0"}, 0.0),
            ({"retry-after-ms": "1500"}, 1.5),
            ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ):
            with self.subTest(headers=headers):
                self.assertEqual(core_call().retry(self.ERROR, True, 1, headers), delay)

    def test_retry_after_as_an_http_date(self):
        date = email.utils.formatdate(time.time() + 30, usegmt=True)
        delay = core_call().retry(self.ERROR, True, 1, {"retry-after": date})
        self.assertTrue(25 <= delay <= 30, delay)

    def test_nan_inf_negative_and_junk_retry_after_ignored(self):
        for value in ("nan", "inf", "-inf", "-5", "junk", ""):
            for name in ("retry-after", "retry-after-ms"):
                with self.subTest(name=name, value=value):
                    delay = core_call().retry(self.ERROR, True, 1, {name: value})
                    self.assertTrue(0.375 <= delay <= 0.5, delay)

    def test_retry_after_longer_than_max_raises(self):
        headers = {"retry-after": str(edgee.MAX_RETRY_AFTER + 1)}
        with self.assertRaises(edgee.EdgeeConnectionError):
            core_call().retry(self.ERROR, True, 1, headers)

    def test_delay_beyond_the_deadline_raises(self):
        call = core_call(deadline=5.0)
        self.assertEqual(call.retry(self.ERROR, True, 2, {"retry-after": "1"}), 1.0)
        with self.assertRaises(edgee.EdgeeConnectionError):
            call.retry(self.ERROR, True, 2, {"retry-after": "10"})

    def test_wait_is_the_timeout_without_a_deadline(self):
        self.assertEqual(core_call(timeout=7.0).wait(), 7.0)

    def test_wait_capped_by_the_deadline(self):
        wait = core_call(timeout=30.0, deadline=2.0).wait()
        self.assertTrue(1.0 < wait <= 2.0, wait)
        self.assertEqual(core_call(timeout=1.0, deadline=60.0).wait(), 1.0)

    def test_wait_raises_once_the_deadline_passed(self):
        call = core_call(deadline=2.0)
        call.expires = time.monotonic() - 0.01
        with self.assertRaisesRegex(edgee.EdgeeTimeoutError, "deadline of 2 s"):
            call.wait()

    def test_timed_out_tells_silence_from_the_deadline(self):
        call = core_call(timeout=30.0, deadline=60.0)
        silence = call.timed_out("http://gw.test", "waiting for an answer")
        self.assertEqual(str(silence), "no data from http://gw.test for 30 s waiting for an answer")
        call.expires = time.monotonic() - 0.01
        late = call.timed_out("http://gw.test", "waiting for an answer")
        self.assertEqual(str(late), "the call took longer than its deadline of 60 s")
        self.assertIsInstance(late, edgee.EdgeeTimeoutError)


class CoreConn:
    """A connection as a plan sees it. RECV takes the next of `replies` (bytes, or an
    OSError to raise; b"" once they run out); SEND records the bytes, then raises
    `send_error` if given. close() and is_clean() are what the pool rule asks."""

    def __init__(self, *replies: Any, send_error: Any = None, clean: bool = True) -> None:
        self.replies = list(replies)
        self.send_error = send_error
        self.clean = clean
        self.reused = False
        self.sent: List[bytes] = []
        self.closed = False

    def is_clean(self) -> bool:
        return self.clean and not self.closed

    def close(self) -> None:
        self.closed = True


class CoreDriver:
    """The test plays the driver: it carries out a plan's operations on CoreConns,
    handing out `conns` in order on CONNECT, and records every operation."""

    def __init__(self, *conns: CoreConn) -> None:
        self.fresh = list(conns)
        self.ops: List[tuple] = []

    def step(self, plan: Any) -> Any:
        """Run `plan` until it delivers; the item (StopIteration at the plan's end)."""
        value = error = None
        while True:
            op = plan.throw(error) if error is not None else plan.send(value)
            self.ops.append(op)
            if op[0] == edgee.DELIVER:
                return op[1]
            value = error = None
            try:
                value = self._carry_out(op)
            except OSError as exc:
                error = exc

    def run(self, plan: Any) -> List[Any]:
        """Every item the plan delivers, to its end."""
        items = []
        while True:
            try:
                items.append(self.step(plan))
            except StopIteration:
                return items

    def _carry_out(self, op: tuple) -> Any:
        kind = op[0]
        if kind == edgee.CONNECT:
            return self.fresh.pop(0)
        if kind == edgee.SEND:
            op[1].sent.append(op[2])
            if op[1].send_error is not None:
                raise op[1].send_error
        elif kind == edgee.RECV:
            reply = op[1].replies.pop(0) if op[1].replies else b""
            if isinstance(reply, BaseException):
                raise reply
            return reply
        return None

    def ops_of(self, kind: str) -> List[tuple]:
        return [op for op in self.ops if op[0] == kind]


class PlanTest(unittest.TestCase):
    """Transport plans, driven by hand: scripted bytes in, operations and decisions out."""

    REQUEST = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    ) % (CORE_KEY.encode(), len(CORE_BODY), CORE_BODY)

    def setUp(self):
        isolate_env(self)
        self.pool = edgee.Pool()

    def transport(self, max_retries: int = 0, url: str = CORE_URL) -> edgee.Transport:
        return edgee.Transport(url, None, max_retries, CORE_KEY)

    def json(self, driver: CoreDriver, call: Any = None, max_retries: int = 0) -> Any:
        """What json_plan delivers: (head, data)."""
        plan = self.transport(max_retries).json_plan(call or core_call(), self.pool)
        (item,) = driver.run(plan)
        return item

    def stream_plan(self, call: Any = None) -> Any:
        return self.transport().stream_plan(call or core_call(), self.pool, edgee.ChunkReader)

    def sent(self, driver: CoreDriver) -> List[bytes]:
        return [op[2] for op in driver.ops_of(edgee.SEND)]

    # -- one exchange

    def test_connects_sends_the_request_and_delivers_the_answer(self):
        driver = CoreDriver(CoreConn(core_answer(200, b'{"ok":true}')))
        head, data = self.json(driver)
        self.assertEqual((head.status, data), (200, {"ok": True}))
        self.assertEqual(driver.ops[0], (edgee.CONNECT, "gw.test", 80, None, edgee.CONNECT_TIMEOUT))
        self.assertEqual(self.sent(driver), [self.REQUEST])

    def test_https_asks_for_tls_with_the_host_name(self):
        driver = CoreDriver(CoreConn(core_answer()))
        plan = self.transport(url="https://gw.test").json_plan(core_call(), self.pool)
        driver.run(plan)
        connect = (edgee.CONNECT, "gw.test", 443, "gw.test", edgee.CONNECT_TIMEOUT)
        self.assertEqual(driver.ops[0], connect)

    def test_interim_answers_skipped(self):
        conn = CoreConn(
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            core_answer(200, b'{"n":1}'),
        )
        driver = CoreDriver(conn)
        head, data = self.json(driver)
        self.assertEqual((head.status, data), (200, {"n": 1}))
        self.assertEqual(len(self.sent(driver)), 1)

    # -- retries

    def test_retry_after_then_success_sleeps_that_long_and_sends_twice(self):
        busy = core_answer(503, core_error(503), {"Retry-After": "2"})
        driver = CoreDriver(CoreConn(busy, core_answer(200, b'{"ok":true}')))
        _, data = self.json(driver, max_retries=2)
        self.assertEqual(data, {"ok": True})
        self.assertEqual(driver.ops_of(edgee.SLEEP), [(edgee.SLEEP, 2.0)])
        self.assertEqual(self.sent(driver), [self.REQUEST, self.REQUEST])

    def test_no_answer_without_retries_sends_once_then_raises(self):
        conn = CoreConn()
        driver = CoreDriver(conn)
        with self.assertRaisesRegex(edgee.EdgeeConnectionError, "without answering"):
            self.json(driver, max_retries=0)
        self.assertEqual(self.sent(driver), [self.REQUEST])
        self.assertEqual(driver.ops_of(edgee.SLEEP), [])
        self.assertTrue(conn.closed)

    def test_no_answer_sent_at_most_one_plus_max_retries_times(self):
        driver = CoreDriver(CoreConn(), CoreConn(), CoreConn())
        with self.assertRaises(edgee.EdgeeConnectionError):
            self.json(driver, max_retries=2)
        self.assertEqual(self.sent(driver), [self.REQUEST] * 3)
        self.assertEqual(len(driver.ops_of(edgee.SLEEP)), 2)

    def test_broken_reused_connection_resent_on_a_new_one_for_free(self):
        stale = CoreConn(send_error=BrokenPipeError())
        self.pool.checkin(stale)
        fresh = CoreConn(core_answer(200, b'{"ok":true}'))
        call = core_call()
        _, data = self.json(CoreDriver(fresh), call, max_retries=0)
        self.assertEqual(data, {"ok": True})
        self.assertTrue(stale.closed)
        self.assertEqual((stale.sent, fresh.sent), ([self.REQUEST], [self.REQUEST]))
        self.assertEqual(call.retries, 0)

    def test_early_answer_read_when_sending_fails(self):
        conn = CoreConn(
            core_answer(413, core_error(413, "too large")),
            send_error=ConnectionResetError(),
        )
        with self.assertRaises(edgee.EdgeeAPIError) as caught:
            self.json(CoreDriver(conn))
        self.assertEqual(caught.exception.status, 413)
        self.assertTrue(conn.closed)
        self.assertIsNone(self.pool.checkout())

    # -- redirects

    def test_same_origin_307_keeps_the_method_and_the_body(self):
        moved = core_answer(307, b"", {"Location": "/v2/chat?x=1"})
        driver = CoreDriver(CoreConn(moved, core_answer()))
        self.json(driver)
        second = self.sent(driver)[1]
        self.assertEqual(second, self.REQUEST.replace(b"/v1/chat/completions", b"/v2/chat?x=1"))

    def test_303_becomes_a_get_without_body(self):
        moved = core_answer(303, b"", {"Location": "http://gw.test/v1/result"})
        driver = CoreDriver(CoreConn(moved, core_answer()))
        self.json(driver)
        self.assertEqual(
            self.sent(driver)[1],
            b"GET /v1/result HTTP/1.1\r\nHost: gw.test\r\n"
            b"Authorization: Bearer " + CORE_KEY.encode() + b"\r\n\r\n",
        )

    def test_cross_origin_redirect_refused_without_showing_the_key(self):
        location = f"https://{CORE_KEY}.evil.test/steal?key={CORE_KEY}"
        moved = core_answer(307, b"", {"Location": location, "X-Echo": CORE_KEY})
        driver = CoreDriver(CoreConn(moved))
        with self.assertRaisesRegex(edgee.EdgeeAPIError, "refused") as caught:
            self.json(driver)
        error = caught.exception
        shown = str(error) + repr(error) + repr(error.headers) + repr(error.body)
        self.assertNotIn(CORE_KEY, shown)
        self.assertIn("evil.test", str(error))
        self.assertEqual(len(driver.ops_of(edgee.CONNECT)), 1)
        self.assertEqual(len(self.sent(driver)), 1)

    # -- the pool rule

    def test_complete_keep_alive_answer_checks_the_connection_in(self):
        conn = CoreConn(core_answer())
        self.json(CoreDriver(conn))
        self.assertFalse(conn.closed)
        self.assertIs(self.pool.checkout(), conn)

    def test_not_reused_after_extra_bytes_connection_close_or_a_dirty_socket(self):
        for name, conn in (
            ("extra bytes", CoreConn(core_answer() + b"HTTP/1.1 200 OK\r\n")),
            ("Connection: close", CoreConn(core_answer(200, b"{}", {"Connection": "close"}))),
            ("HTTP/1.0", CoreConn(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")),
            ("close-delimited", CoreConn(http_head(200) + b"{}")),
            ("not clean", CoreConn(core_answer(), clean=False)),
        ):
            with self.subTest(name):
                self.pool = edgee.Pool()
                self.json(CoreDriver(conn))
                self.assertTrue(conn.closed)
                self.assertIsNone(self.pool.checkout())

    # -- event streams

    def test_stream_delivers_the_head_then_the_chunks(self):
        body = core_events(completion_chunk("Hel"), completion_chunk("lo", finish_reason="stop"))
        conn = CoreConn(http_head(200, CORE_SSE, chunked=True) + chunk_frame(body) + CHUNK_END)
        head, *chunks = CoreDriver(conn).run(self.stream_plan())
        self.assertIsInstance(head, edgee.ResponseHead)
        self.assertEqual(head.content_type, "text/event-stream")
        self.assertEqual([c.text for c in chunks], ["Hel", "lo"])
        self.assertIs(self.pool.checkout(), conn)

    def test_stream_drains_the_body_end_after_done(self):
        self.addCleanup(setattr, edgee, "DRAIN_WAIT", edgee.DRAIN_WAIT)
        edgee.DRAIN_WAIT = 5.0  # long enough that a slow machine cannot miss it
        body = core_events(completion_chunk("hi", finish_reason="stop"))
        head = http_head(200, CORE_SSE, chunked=True)
        conn = CoreConn(head + chunk_frame(body), CHUNK_END)
        driver = CoreDriver(conn)
        driver.run(self.stream_plan())
        drain = driver.ops_of(edgee.RECV)[-1]
        self.assertTrue(4.0 < drain[2] <= 5.0, drain)
        self.assertIs(self.pool.checkout(), conn)

    def test_stream_drain_gives_up_on_a_body_that_does_not_end(self):
        body = core_events(completion_chunk("hi", finish_reason="stop"))
        head = http_head(200, CORE_SSE, chunked=True)
        conn = CoreConn(head + chunk_frame(body), TimeoutError("timed out"))
        chunks = CoreDriver(conn).run(self.stream_plan())[1:]
        self.assertEqual([c.text for c in chunks], ["hi"])
        self.assertTrue(conn.closed)

    def test_stream_cut_at_eof_without_finish_reason(self):
        conn = CoreConn(http_head(200, CORE_SSE) + core_events(completion_chunk("hi"), done=False))
        driver = CoreDriver(conn)
        with self.assertRaisesRegex(edgee.EdgeeStreamError, "stream was cut"):
            driver.run(self.stream_plan())
        self.assertTrue(conn.closed)

    def test_stream_whole_at_eof_after_a_finish_reason(self):
        body = core_events(completion_chunk("hi", finish_reason="stop"), done=False)
        conn = CoreConn(http_head(200, CORE_SSE) + body)
        chunks = CoreDriver(conn).run(self.stream_plan())[1:]
        self.assertEqual([c.finish_reason for c in chunks], ["stop"])

    def test_closing_the_plan_mid_stream_closes_the_connection(self):
        body = core_events(completion_chunk("Hel"), completion_chunk("lo"), done=False)
        conn = CoreConn(http_head(200, CORE_SSE, chunked=True) + chunk_frame(body))
        driver = CoreDriver(conn)
        plan = self.stream_plan()
        driver.step(plan)  # the head
        self.assertEqual(driver.step(plan).text, "Hel")
        plan.close()
        self.assertTrue(conn.closed)
        self.assertIsNone(self.pool.checkout())

    # -- proxies

    def tunnel(self, *replies: bytes) -> tuple:
        os.environ["https_proxy"] = "http://user:pw@proxy.test:3128"
        self.pool = edgee.Pool()
        conn = CoreConn(*replies)
        driver = CoreDriver(conn)
        plan = self.transport(url="https://gw.test").json_plan(core_call(), self.pool)
        return conn, driver, plan

    def test_tunnel_connect_then_tls_then_the_request_without_proxy_credentials(self):
        for version in (b"HTTP/1.1", b"HTTP/1.0"):
            with self.subTest(version=version):
                established = version + b" 200 Connection established\r\n\r\n"
                _, driver, plan = self.tunnel(established, core_answer())
                driver.run(plan)
                self.assertEqual(
                    [op[0] for op in driver.ops[:5]],
                    [edgee.CONNECT, edgee.SEND, edgee.RECV, edgee.TLS, edgee.SEND],
                )
                self.assertEqual(driver.ops[0][1:3], ("proxy.test", 3128))
                self.assertEqual(driver.ops[3][2], "gw.test")
                connect, request = self.sent(driver)
                self.assertTrue(connect.startswith(b"CONNECT gw.test:443 HTTP/1.1\r\n"))
                self.assertIn(b"Proxy-Authorization: Basic ", connect)
                self.assertNotIn(b"Proxy-Authorization", request)
                self.assertTrue(request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n"))

    def test_tunnel_refused_by_the_proxy(self):
        conn, driver, plan = self.tunnel(core_answer(407, b"", {"Proxy-Authenticate": "Basic"}))
        with self.assertRaisesRegex(edgee.EdgeeConnectionError, "check the proxy credentials"):
            driver.run(plan)
        self.assertTrue(conn.closed)
        self.assertEqual(driver.ops_of(edgee.TLS), [])

    def test_tunnel_with_bytes_after_the_proxy_answer_refused(self):
        established = b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03"
        conn, driver, plan = self.tunnel(established)
        with self.assertRaisesRegex(edgee.EdgeeConnectionError, "after the proxy's answer"):
            driver.run(plan)
        self.assertTrue(conn.closed)


# ---- data model and request bodies ----
# Core-level: JSON objects and bytes go through edgee's pure functions; no sockets.

DM_MODEL = "openai/gpt-5.2"
DM_CHAT = "/v1/chat/completions"
DM_COUNT = "/v1/count_tokens"
DM_COMPRESS = "/v1/compress"
DM_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
DM_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
}
DM_EDGE_FIELDS = {
    "edgee_tool_ids": ["edgee_current_time", "edgee_generate_uuid"],
    "edgee_pending_id": "pending_42",
    "enable_debug": True,
}


def dm_answer(message=None, finish_reason="stop", **extra):
    """A chat.completion object whose first choice holds `message`."""
    body = {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": DM_MODEL,
        "choices": [
            {
                "index": 0,
                "message": message or {"role": "assistant", "content": "Hi"},
                "finish_reason": finish_reason,
            }
        ],
        "usage": make_usage(),
    }
    body.update(extra)
    return body


def dm_chunk(delta, finish_reason=None, **extra):
    """A chat.completion.chunk object with one choice carrying `delta`."""
    chunk = {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": DM_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    chunk.update(extra)
    return chunk


def dm_chunks(*objects):
    """StreamChunks parsed from chunk objects."""
    return [edgee.chunk_from_json(o) for o in objects]


def dm_body(builder, *args):
    """(decoded JSON body, extra headers) from a body builder."""
    body, headers = builder(*args)
    return json.loads(body), headers


class HeadedChunks(list):
    """A list of chunks with answer headers, as the client's stream objects have."""

    def __init__(self, chunks, headers):
        super().__init__(chunks)
        self.headers = headers


class AsyncHeadedChunks:
    """An async iterator of chunks with answer headers."""

    def __init__(self, chunks, headers):
        self._chunks = iter(chunks)
        self.headers = headers

    def __aiter__(self):
        return self

    async def __anext__(self):
        for chunk in self._chunks:
            return chunk
        raise StopAsyncIteration


class DataModelSchemaCheckerTest(unittest.TestCase):
    """The schema checker itself refuses what the OpenAPI document refuses."""

    def test_accepts_the_documents_own_examples(self):
        spec = openapi()
        for path in (DM_CHAT, DM_COUNT, DM_COMPRESS):
            content = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            examples = [content["example"]] if "example" in content else []
            examples += [e["value"] for e in content.get("examples", {}).values()]
            for example in examples:
                with self.subTest(path=path):
                    self.assertEqual(schema_errors(example, request_schema(path)), [])

    def test_refuses_invalid_bodies(self):
        user = {"role": "user", "content": "hi"}
        invalid = [
            (DM_CHAT, {"messages": [user]}),  # no model
            (DM_CHAT, {"model": DM_MODEL, "messages": []}),  # minItems 1
            (DM_CHAT, {"model": DM_MODEL, "messages": [{"role": "assistant", "content": None}]}),
            (DM_CHAT, {"model": DM_MODEL, "messages": [{"role": "robot", "content": "x"}]}),
            (DM_CHAT, {"model": DM_MODEL, "messages": [user], "tool_choice": "required"}),
            (DM_CHAT, {"model": DM_MODEL, "messages": [user], "edgee_tool_ids": [1]}),
            (DM_CHAT, {"model": DM_MODEL, "messages": [user], "enable_debug": "yes"}),
            (DM_CHAT, {"model": DM_MODEL, "messages": [user], "max_tokens": 0}),
            (DM_CHAT, {"model": DM_MODEL, "messages": [user], "compression_model": "gpt"}),
            (DM_COUNT, {"model": DM_MODEL, "messages": [{"role": "assistant"}]}),
            (DM_COUNT, {"model": DM_MODEL, "messages": [user], "tokenizer": "p50k"}),
            (DM_COMPRESS, {"messages": [user]}),
        ]
        for path, body in invalid:
            with self.subTest(path=path, body=body):
                self.assertNotEqual(schema_errors(body, request_schema(path)), [])


class DataModelBodyTest(unittest.TestCase):
    """build_request, build_count_tokens_request and build_compress_request: exact bodies."""

    def test_string_input(self):
        body, headers = edgee.build_request(DM_MODEL, "hi", False)
        self.assertEqual(
            body, b'{"model":"openai/gpt-5.2","messages":[{"role":"user","content":"hi"}]}'
        )
        self.assertEqual(headers, {})
        assert_valid_body(self, DM_CHAT, body)

    def test_edge_tools_fields_are_sent_from_dict_and_input_object(self):
        expected = (
            b'{"model":"openai/gpt-5.2","messages":[{"role":"user","content":"hi"}],'
            b'"edgee_tool_ids":["edgee_current_time","edgee_generate_uuid"],'
            b'"edgee_pending_id":"pending_42","enable_debug":true}'
        )
        messages = [{"role": "user", "content": "hi"}]
        from_dict = edgee.build_request(DM_MODEL, dict(DM_EDGE_FIELDS, messages=messages), False)
        obj = edgee.InputObject(messages, **DM_EDGE_FIELDS)
        from_object = edgee.build_request(DM_MODEL, obj, False)
        self.assertEqual(from_dict, (expected, {}))
        self.assertEqual(from_object, (expected, {}))
        assert_valid_body(self, DM_CHAT, expected)

    def test_extra_body_edge_fields_are_kept_unless_the_field_is_set(self):
        messages = [{"role": "user", "content": "hi"}]
        obj = edgee.InputObject(messages, extra_body=dict(DM_EDGE_FIELDS, max_tokens=5))
        sent, _ = dm_body(edgee.build_request, DM_MODEL, obj, False)
        self.assertEqual(
            sent, dict(DM_EDGE_FIELDS, max_tokens=5, model=DM_MODEL, messages=messages)
        )
        obj = edgee.InputObject(
            messages, extra_body={"edgee_pending_id": "old"}, edgee_pending_id="new"
        )
        sent, _ = dm_body(edgee.build_request, DM_MODEL, obj, False)
        self.assertEqual(sent["edgee_pending_id"], "new")

    def test_edge_tools_fields_are_checked(self):
        messages = [{"role": "user", "content": "hi"}]
        bad = [
            ("edgee_tool_ids", "edgee_current_time", edgee.EdgeeInputTypeError),
            ("edgee_tool_ids", ["edgee_current_time", 1], edgee.EdgeeInputTypeError),
            ("edgee_pending_id", 42, edgee.EdgeeInputTypeError),
            ("edgee_pending_id", "", edgee.EdgeeInputError),
            ("enable_debug", "yes", edgee.EdgeeInputTypeError),
            ("enable_debug", 1, edgee.EdgeeInputTypeError),
        ]
        for name, value, error in bad:
            for form in ("dict", "InputObject"):
                with self.subTest(name=name, value=value, form=form):
                    if form == "dict":
                        input = {"messages": messages, name: value}
                    else:
                        input = edgee.InputObject(messages, **{name: value})
                    with self.assertRaises(error) as caught:
                        edgee.build_request(DM_MODEL, input, False)
                    self.assertIn(name, str(caught.exception))

    def test_none_message_fields_are_not_sent(self):
        assistant = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "name": None,
            "tool_calls": [DM_CALL],
        }
        tool = {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}
        sent, _ = dm_body(
            edgee.build_request,
            DM_MODEL,
            {"messages": [{"role": "user", "content": "Lyon?"}, assistant, tool]},
            False,
        )
        self.assertEqual(sent["messages"][1], {"role": "assistant", "tool_calls": [DM_CALL]})
        self.assertEqual(assistant["content"], None, "the caller's message is left as it was")
        assert_valid_body(self, DM_CHAT, sent)
        message = edgee.Message("assistant", None, tool_calls=[edgee.ToolCall(**DM_CALL)])
        sent, _ = dm_body(edgee.build_request, DM_MODEL, {"messages": [message]}, False)
        self.assertEqual(sent["messages"], [{"role": "assistant", "tool_calls": [DM_CALL]}])

    def test_none_request_fields_are_not_sent(self):
        sent, _ = dm_body(
            edgee.build_request,
            DM_MODEL,
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": None, "top_p": 1},
            True,
        )
        self.assertEqual(
            sent,
            {
                "model": DM_MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "top_p": 1,
                "stream": True,
            },
        )

    def rich_input(self):
        return {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Lyon?"},
                {"role": "assistant", "content": None, "tool_calls": [DM_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            ],
            "tools": [DM_TOOL],
            "tool_choice": "auto",
            "tags": ["demo"],
            "compression_model": "claude",
            "tool_result_trimming": True,
            "max_tokens": 100,
            "stream": True,
            **DM_EDGE_FIELDS,
        }

    def test_count_tokens_body(self):
        body, headers = edgee.build_count_tokens_request(DM_MODEL, self.rich_input())
        self.assertEqual(
            body,
            b'{"model":"openai/gpt-5.2","messages":['
            b'{"role":"system","content":"Be brief."},'
            b'{"role":"user","content":"Weather in Lyon?"},'
            b'{"role":"assistant","tool_calls":[{"id":"call_1","type":"function",'
            b'"function":{"name":"get_weather","arguments":"{\\"city\\":\\"Lyon\\"}"}}],'
            b'"content":""},'
            b'{"role":"tool","tool_call_id":"call_1","content":"Sunny"}]}',
        )
        self.assertEqual(headers, {})
        assert_valid_body(self, DM_COUNT, body)
        self.assertEqual(
            dm_body(edgee.build_count_tokens_request, DM_MODEL, "hi"),
            ({"model": DM_MODEL, "messages": [{"role": "user", "content": "hi"}]}, {}),
        )

    def test_count_tokens_system_and_tokenizer(self):
        messages = [{"role": "user", "content": "hi"}]
        for system in ("Be brief.", [{"type": "text", "text": "Be brief."}]):
            with self.subTest(system=system):
                input = {"messages": messages, "system": system, "tokenizer": "o200k_base"}
                sent, _ = dm_body(edgee.build_count_tokens_request, DM_MODEL, input)
                self.assertEqual(
                    sent,
                    {
                        "model": DM_MODEL,
                        "messages": messages,
                        "system": system,
                        "tokenizer": "o200k_base",
                    },
                )
                assert_valid_body(self, DM_COUNT, sent)
        for name, value in (("system", 3), ("tokenizer", ["o200k_base"])):
            with self.subTest(name=name):
                with self.assertRaises(edgee.EdgeeInputTypeError) as caught:
                    edgee.build_count_tokens_request(DM_MODEL, {"messages": messages, name: value})
                self.assertIn(name, str(caught.exception))

    def test_count_tokens_and_compress_check_input_as_send_does(self):
        bad_inputs = [
            {"messages": []},
            {"messages": [{"role": "robot", "content": "x"}]},
            {"messages": [{"role": "user", "content": "x"}], "edgee_pending_id": 1},
            42,
        ]
        for input in bad_inputs:
            with self.assertRaises(edgee.EdgeeInputError) as sent:
                edgee.build_request(DM_MODEL, input, False)
            for builder in (edgee.build_count_tokens_request, edgee.build_compress_request):
                with self.subTest(input=input, builder=builder.__name__):
                    with self.assertRaises(edgee.EdgeeInputError) as caught:
                        builder(DM_MODEL, input)
                    self.assertEqual(str(caught.exception), str(sent.exception))
                    self.assertIs(type(caught.exception), type(sent.exception))
        with self.assertRaises(edgee.EdgeeInputError):
            edgee.build_compress_request("", "hi")

    def test_compress_body_is_the_chat_request_without_stream(self):
        body, headers = edgee.build_compress_request(DM_MODEL, self.rich_input())
        chat, chat_headers = edgee.build_request(DM_MODEL, self.rich_input(), False)
        self.assertEqual(body, chat)
        self.assertEqual(headers, {"X-Edgee-Compression-Tool-Result-Trimming": "true"})
        self.assertEqual(headers, chat_headers)
        sent = json.loads(body)
        self.assertNotIn("stream", sent)
        self.assertEqual(sent["edgee_pending_id"], "pending_42")
        self.assertNotIn("content", sent["messages"][2])
        assert_valid_body(self, DM_COMPRESS, body)

    def test_every_body_is_valid_for_its_path(self):
        inputs = [
            "hi",
            self.rich_input(),
            edgee.InputObject(
                [edgee.Message("user", "hi", name="ann")],
                tools=[edgee.Tool("function", edgee.FunctionDefinition("f"))],
                tool_choice={"type": "function", "function": {"name": "f"}},
                edgee_tool_ids=[],
                enable_debug=False,
            ),
            {"messages": [{"role": "developer", "content": "x"}], "tool_choice": {"type": "none"}},
        ]
        builders = [
            (DM_CHAT, lambda input: edgee.build_request(DM_MODEL, input, False)),
            (DM_CHAT, lambda input: edgee.build_request(DM_MODEL, input, True)),
            (DM_COUNT, lambda input: edgee.build_count_tokens_request(DM_MODEL, input)),
            (DM_COMPRESS, lambda input: edgee.build_compress_request(DM_MODEL, input)),
        ]
        for i, input in enumerate(inputs):
            for path, build in builders:
                with self.subTest(input=i, path=path):
                    assert_valid_body(self, path, build(input)[0])


class DataModelHeadersTest(unittest.TestCase):
    """normalize_headers: per-call headers, checked before any request."""

    def test_none_and_empty(self):
        self.assertEqual(edgee.normalize_headers(None), {})
        self.assertEqual(edgee.normalize_headers({}), {})

    def test_good_headers_pass_unchanged(self):
        headers = {
            "x-edgee-session-id": "sess-1",
            "X-Edgee-Debug": "true",
            "X-Edgee-Tags": "a,b",
            "User-Agent": "my-app/1.0",
            "X-Note": "tab\there, caf\xe9",
            "X-Empty": "",
        }
        self.assertEqual(edgee.normalize_headers(headers), headers)
        self.assertIsNot(edgee.normalize_headers(headers), headers)

    def test_reserved_names_are_refused_in_any_case(self):
        names = [
            "Authorization",
            "Proxy-Authorization",
            "X-Api-Key",
            "X-Edgee-Api-Key",
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "Content-Encoding",
            "Accept-Encoding",
            "Connection",
            "Proxy-Connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "Upgrade",
            "Expect",
        ]
        for name in names:
            for spelling in (name, name.lower(), name.upper()):
                with self.subTest(spelling=spelling):
                    with self.assertRaises(edgee.EdgeeInputError) as caught:
                        edgee.normalize_headers({"X-Ok": "1", spelling: "secret-VALUE"})
                    self.assertIn(spelling, str(caught.exception))
                    self.assertNotIn("secret-VALUE", str(caught.exception))

    def test_bad_values_are_refused_without_quoting_them(self):
        for value in (
            "secret-VALUE\r\nX-Injected: 1",
            "secret-VALUE\n",
            "secret-VALUE\r",
            "secret-VALUE\x00",
            "secret-VALUE\x1b[0m",
            "secret-VALUE\x7f",
            "secret-VALUE \u20ac",
        ):
            with self.subTest(value=value):
                with self.assertRaises(edgee.EdgeeInputError) as caught:
                    edgee.normalize_headers({"X-Edgee-Session-Id": value})
                self.assertIn("X-Edgee-Session-Id", str(caught.exception))
                self.assertNotIn("secret-VALUE", str(caught.exception))
                self.assertNotIsInstance(caught.exception, TypeError)

    def test_bad_names_are_refused(self):
        for name in ("", "X Edgee", "X:Edgee", "X-Caf\xe9", "X\r\nY", "(x)"):
            with self.subTest(name=name):
                with self.assertRaises(edgee.EdgeeInputError) as caught:
                    edgee.normalize_headers({name: "v"})
                self.assertIn(repr(name), str(caught.exception))

    def test_wrong_types(self):
        for headers in ([("X-A", "1")], "X-A: 1", {1: "x"}, {"X-A": 1}, {"X-A": None}, {"X": b"1"}):
            with self.subTest(headers=headers), self.assertRaises(edgee.EdgeeInputTypeError):
                edgee.normalize_headers(headers)

    def test_a_name_given_twice_in_different_cases_is_refused(self):
        with self.assertRaises(edgee.EdgeeInputError) as caught:
            edgee.normalize_headers({"X-Edgee-Tags": "a", "x-edgee-tags": "b"})
        self.assertIn("x-edgee-tags", str(caught.exception))


class DataModelParseTest(unittest.TestCase):
    """Answers into the data model: nothing lost, malformed answers refused."""

    def test_send_response_keeps_edge_tools_headers_and_raw(self):
        data = dm_answer(
            {"role": "assistant", "content": None, "tool_calls": [DM_CALL]},
            "tool_calls",
            edgee_pending_id="pending_42",
            edgee_tools_executed=[
                {"name": "edgee_current_time", "success": True},
                {"name": "edgee_generate_uuid", "success": False},
            ],
            system_fingerprint="fp_1",
        )
        headers = {"X-Edgee-Provider": "openai", "X-Edgee-Fallback-Used": "1", "Date": "now"}
        response = edgee.response_from_json(data, headers)
        self.assertEqual(response.edgee_pending_id, "pending_42")
        self.assertEqual(
            response.edgee_tools_executed,
            [
                edgee.EdgeeToolExecuted("edgee_current_time", True),
                edgee.EdgeeToolExecuted("edgee_generate_uuid", False),
            ],
        )
        self.assertEqual(
            response.headers,
            {"x-edgee-provider": "openai", "x-edgee-fallback-used": "1", "date": "now"},
        )
        self.assertEqual((response.provider, response.fallback_used), ("openai", True))
        self.assertIs(response.raw, data)
        self.assertEqual(response.raw["system_fingerprint"], "fp_1")
        self.assertIs(response.choices[0].raw, data["choices"][0])
        self.assertIs(response.message, data["choices"][0]["message"])
        self.assertIs(response.usage.raw, data["usage"])
        self.assertEqual(response.tool_calls, [DM_CALL])

    def test_defaults_without_edge_fields_or_headers(self):
        response = edgee.response_from_json(dm_answer())
        self.assertEqual(
            (response.edgee_pending_id, response.edgee_tools_executed, response.headers),
            (None, [], {}),
        )
        self.assertEqual((response.provider, response.fallback_used), (None, None))
        response = edgee.SendResponse([])  # as code for the official package builds it
        self.assertEqual((response.headers, response.raw, response.provider), ({}, None, None))
        self.assertIsNot(response.edgee_tools_executed, edgee.SendResponse([]).edgee_tools_executed)

    def test_fallback_used_values(self):
        cases = {
            "1": True,
            "true": True,
            " TRUE ": True,
            "yes": True,
            "0": False,
            "false": False,
            "No": False,
            "": None,
            "maybe": None,
            "2": None,
        }
        for value, expected in cases.items():
            with self.subTest(value=value):
                response = edgee.response_from_json(dm_answer(), {"X-Edgee-Fallback-Used": value})
                self.assertIs(response.fallback_used, expected)

    def test_malformed_edge_fields_are_dropped(self):
        for tools, expected in (
            ("edgee_current_time", []),
            ({"name": "x"}, []),
            ([1, {"success": True}, {"name": 2}, {"name": "ok"}], [("ok", False)]),
            ([{"name": "ok", "success": "yes"}], [("ok", False)]),
        ):
            with self.subTest(tools=tools):
                data = dm_answer(edgee_tools_executed=tools, edgee_pending_id=7)
                response = edgee.response_from_json(data)
                self.assertEqual(
                    [(t.name, t.success) for t in response.edgee_tools_executed], expected
                )
                self.assertIsNone(response.edgee_pending_id)

    def test_raw_and_headers_are_out_of_repr_and_equality(self):
        one = edgee.response_from_json(dm_answer(marker_one="MARK-1"), {"X-Mark": "MARK-H1"})
        two = edgee.response_from_json(dm_answer(marker_two="MARK-2"), {"X-Mark": "MARK-H2"})
        self.assertEqual(one, two)
        self.assertNotIn("MARK", repr(one))
        self.assertNotIn("raw", repr(one))
        self.assertNotEqual(one, edgee.response_from_json(dm_answer(edgee_pending_id="p")))
        first = edgee.chunk_from_json(dm_chunk({"content": "a"}, marker="MARK-1"))
        second = edgee.chunk_from_json(dm_chunk({"content": "a"}, marker="MARK-2"))
        self.assertEqual(first, second)
        self.assertNotIn("MARK", repr(first))
        self.assertEqual(edgee.Model("m", raw={"x": 1}), edgee.Model("m"))
        self.assertEqual(repr(edgee.Model("m", raw={"x": 1})), repr(edgee.Model("m")))
        for cls in (
            edgee.SendResponse,
            edgee.StreamChunk,
            edgee.Model,
            edgee.Choice,
            edgee.Usage,
            edgee.StreamChoice,
            edgee.StreamDelta,
            edgee.CompressResult,
        ):
            with self.subTest(cls=cls.__name__):
                raw = {f.name: f for f in dataclasses.fields(cls)}["raw"]
                self.assertEqual((raw.default, raw.repr, raw.compare), (None, False, False))

    def test_positional_construction_order_is_kept(self):
        response = edgee.SendResponse([], None, None, "id-1", DM_MODEL, CREATED, "p")
        self.assertEqual(
            (response.id, response.created, response.edgee_pending_id), ("id-1", CREATED, "p")
        )
        delta = edgee.StreamDelta("assistant", "hi", None, "thinking", "no")
        self.assertEqual((delta.reasoning, delta.refusal, delta.raw), ("thinking", "no", None))
        chunk = edgee.StreamChunk([], None, None, "id-1", DM_MODEL, CREATED)
        self.assertIsNone(chunk.raw)
        self.assertEqual(edgee.Model("m", "model", 1, "me").owned_by, "me")

    def test_reasoning_and_refusal_of_an_answer(self):
        cases = [
            ({"role": "assistant", "content": "4", "reasoning_content": "2+2"}, "2+2", None),
            ({"role": "assistant", "content": "4", "reasoning": "2+2"}, "2+2", None),
            ({"role": "assistant", "content": None, "refusal": "I can't."}, None, "I can't."),
            ({"role": "assistant", "content": "4", "reasoning": {"effort": "low"}}, None, None),
            ({"role": "assistant", "content": "4"}, None, None),
        ]
        for message, reasoning, refusal in cases:
            with self.subTest(message=message):
                response = edgee.response_from_json(dm_answer(message))
                self.assertEqual((response.reasoning, response.refusal), (reasoning, refusal))
        self.assertIsNone(edgee.SendResponse([]).reasoning)

    def test_chunk_reasoning_refusal_and_raw(self):
        data = dm_chunk({"reasoning_content": "Let me"}, logprobs_marker=1)
        chunk = edgee.chunk_from_json(data)
        self.assertEqual((chunk.reasoning, chunk.text, chunk.refusal), ("Let me", None, None))
        self.assertIs(chunk.raw, data)
        self.assertIs(chunk.choices[0].raw, data["choices"][0])
        self.assertIs(chunk.choices[0].delta.raw, data["choices"][0]["delta"])
        chunk = edgee.chunk_from_json(dm_chunk({"reasoning": "think"}))
        self.assertEqual(chunk.choices[0].delta.reasoning, "think")
        chunk = edgee.chunk_from_json(dm_chunk({"refusal": "No."}))
        self.assertEqual((chunk.refusal, chunk.reasoning), ("No.", None))
        chunk = edgee.chunk_from_json(dm_chunk({"content": "x", "reasoning": None}))
        self.assertEqual(chunk.choices[0].delta, edgee.StreamDelta(content="x"))

    def test_malformed_answers_raise_stream_error(self):
        answers = [
            [],
            "text",
            {"choices": "abc"},
            {"choices": [1]},
            {"choices": [{"message": "hi"}]},
            {"choices": [], "compression": {"reduction": "much"}},
        ]
        for data in answers:
            with self.subTest(data=data), self.assertRaises(edgee.EdgeeStreamError):
                edgee.response_from_json(data)
        chunks = [[], {"choices": [1]}, {"choices": [{"delta": "x"}]}, {"choices": {"a": 1}}]
        for data in chunks:
            with self.subTest(data=data), self.assertRaises(edgee.EdgeeStreamError):
                edgee.chunk_from_json(data)

    def test_models_from_json(self):
        example = openapi()["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]
        data = example["application/json"]["example"]
        models = edgee.models_from_json(data)
        self.assertEqual(
            models,
            [edgee.Model(m["id"], "model", m["created"], m["owned_by"]) for m in data["data"]],
        )
        self.assertIs(models[1].raw, data["data"][1])
        self.assertEqual(
            edgee.models_from_json({"data": [1, {"id": "a/b", "extra": 1}]}), [edgee.Model("a/b")]
        )
        for bad in ({}, {"data": {}}, [], None):
            with self.subTest(bad=bad), self.assertRaises(edgee.EdgeeStreamError):
                edgee.models_from_json(bad)

    def test_count_from_json(self):
        self.assertEqual(edgee.count_from_json({"input_tokens": 42}), 42)
        self.assertEqual(edgee.count_from_json({"input_tokens": 0, "extra": 1}), 0)
        for bad in (
            {},
            {"input_tokens": "42"},
            {"input_tokens": True},
            {"input_tokens": -1},
            {"input_tokens": 4.5},
            {"input_tokens": None},
            [42],
            None,
        ):
            with self.subTest(bad=bad), self.assertRaises(edgee.EdgeeStreamError):
                edgee.count_from_json(bad)

    def compress_example(self):
        answer = openapi()["paths"][DM_COMPRESS]["post"]["responses"]["200"]
        return copy.deepcopy(answer["content"]["application/json"]["example"])

    def test_compress_result_from_json(self):
        data = self.compress_example()
        result = edgee.compress_result_from_json(data)
        expected_request = {k: v for k, v in data.items() if k != "compression"}
        self.assertEqual(result.request, expected_request)
        self.assertNotIn("compression", result.request)
        self.assertEqual(
            result.compression,
            edgee.CompressMetadata("auto", ["tool_result_trimming"], 0.19, 1000, 810, 12),
        )
        self.assertIs(result.raw, data)
        self.assertIn("compression", data, "the answer itself is left as it was")
        self.assertNotIn("raw", repr(result))
        assert_valid_body(self, DM_CHAT, result.request)
        data["compression"].update(error="partial", tool_stats={"get_weather": {"saved": 3}})
        data["compression"]["compression_rate"] = 0
        compression = edgee.compress_result_from_json(data).compression
        self.assertEqual(
            (compression.error, compression.tool_stats, compression.compression_rate),
            ("partial", {"get_weather": {"saved": 3}}, 0.0),
        )
        self.assertIsInstance(compression.compression_rate, float)

    def test_malformed_compress_answers_raise_stream_error(self):
        bad = [None, [], {}, {"compression": None}, {"compression": "auto"}]
        fields = {
            "technique": (None, 1),
            "applied_strategies": ("tool_result_trimming", [1], None),
            "compression_rate": ("0.19", True, None),
            "uncompressed_input_tokens": (1000.5, "1000", False),
            "compressed_input_tokens": (None,),
            "compression_time_ms": ("12",),
        }
        for name, values in fields.items():
            data = self.compress_example()
            del data["compression"][name]
            bad.append(data)
            for value in values:
                data = self.compress_example()
                data["compression"][name] = value
                bad.append(data)
        for data in bad:
            with self.subTest(data=data), self.assertRaises(edgee.EdgeeStreamError):
                edgee.compress_result_from_json(data)

    def test_server_sent_event_json(self):
        self.assertEqual(edgee.ServerSentEvent(data='{"a": [1, 2]}').json(), {"a": [1, 2]})
        self.assertEqual(edgee.ServerSentEvent(data="[1]").json(), [1])
        for data in ("[DONE]", "", "{", "x" * 100000):
            with self.subTest(data=data[:10]):
                with self.assertRaises(edgee.EdgeeStreamError) as caught:
                    edgee.ServerSentEvent(data=data).json()
                self.assertLess(len(str(caught.exception)), 300)
                self.assertIn("not valid JSON", str(caught.exception))


class DataModelAccumulateTest(unittest.TestCase):
    """StreamAccumulator and collect: reasoning, refusal, Edge Tools fields, headers."""

    def test_reasoning_is_joined_under_the_key_it_arrived_with(self):
        for key in ("reasoning_content", "reasoning"):
            with self.subTest(key=key):
                chunks = dm_chunks(
                    dm_chunk({"role": "assistant", key: "Two plus"}),
                    dm_chunk({key: " two."}),
                    dm_chunk({"content": "4"}),
                    dm_chunk({}, "stop"),
                )
                accumulator = edgee.StreamAccumulator()
                for chunk in chunks:
                    accumulator.add(chunk)
                self.assertEqual(accumulator.reasoning, "Two plus two.")
                response = accumulator.response()
                self.assertEqual(
                    response.message, {"role": "assistant", "content": "4", key: "Two plus two."}
                )
                self.assertEqual(response.reasoning, "Two plus two.")
                self.assertEqual(edgee.collect(chunks), response)

    def test_both_reasoning_keys_are_kept(self):
        response = edgee.collect(
            dm_chunks(dm_chunk({"reasoning_content": "a", "reasoning": "b"}), dm_chunk({}, "stop"))
        )
        self.assertEqual(
            response.message,
            {"role": "assistant", "content": None, "reasoning_content": "a", "reasoning": "b"},
        )
        self.assertEqual(response.reasoning, "a")

    def test_reasoning_of_a_delta_built_in_code(self):
        chunk = edgee.StreamChunk([edgee.StreamChoice(0, edgee.StreamDelta(reasoning="hm"))])
        self.assertEqual(edgee.collect([chunk]).message["reasoning_content"], "hm")

    def test_refusal_pieces_are_joined(self):
        response = edgee.collect(
            dm_chunks(
                dm_chunk({"role": "assistant", "refusal": "I can't"}),
                dm_chunk({"refusal": " help."}),
                dm_chunk({}, "stop"),
            )
        )
        self.assertEqual(
            response.message, {"role": "assistant", "content": None, "refusal": "I can't help."}
        )
        self.assertEqual((response.refusal, response.text), ("I can't help.", None))

    def test_edge_fields_the_stream_sent_are_kept(self):
        tools = [{"name": "edgee_current_time", "success": True}]
        chunks = dm_chunks(
            dm_chunk({"role": "assistant", "tool_calls": [dict(DM_CALL, index=0)]}),
            dm_chunk({}, "tool_calls", edgee_pending_id="p1", edgee_tools_executed=tools),
        )
        response = edgee.collect(chunks)
        self.assertEqual(response.edgee_pending_id, "p1")
        self.assertEqual(
            response.edgee_tools_executed, [edgee.EdgeeToolExecuted("edgee_current_time", True)]
        )
        later = dm_chunks(
            {"id": "x", "choices": [], "edgee_pending_id": "p2"},
            {"id": "x", "choices": [], "edgee_tools_executed": []},
        )
        response = edgee.collect(chunks + later)
        self.assertEqual(response.edgee_pending_id, "p2")
        self.assertEqual(len(response.edgee_tools_executed), 1, "an empty list removes nothing")
        self.assertIsNone(response.raw)
        plain = edgee.collect(dm_chunks(dm_chunk({"content": "a"}, "stop")))
        self.assertEqual((plain.edgee_pending_id, plain.edgee_tools_executed), (None, []))

    def test_headers_reach_the_assembled_response(self):
        chunks = dm_chunks(dm_chunk({"content": "a"}, "stop"))
        headers = {"X-Edgee-Provider": "anthropic", "X-Edgee-Fallback-Used": "1"}
        response = edgee.collect(HeadedChunks(chunks, headers))
        self.assertEqual(
            response.headers, {"x-edgee-provider": "anthropic", "x-edgee-fallback-used": "1"}
        )
        self.assertEqual((response.provider, response.fallback_used), ("anthropic", True))
        response = asyncio.run(
            asyncio.wait_for(edgee.acollect(AsyncHeadedChunks(chunks, headers)), 5.0)
        )
        self.assertEqual((response.provider, response.fallback_used), ("anthropic", True))
        self.assertEqual(edgee.collect(iter(chunks)).headers, {})
        accumulator = edgee.StreamAccumulator()
        accumulator.add_headers({"X-Edgee-Provider": "openai"})
        accumulator.add_headers(None)
        accumulator.add_headers({"X-Edgee-Fallback-Used": "0"})
        self.assertEqual((accumulator.provider, accumulator.fallback_used), ("openai", False))
        response = accumulator.response()
        self.assertEqual((response.provider, response.fallback_used), ("openai", False))
        accumulator.add_headers({"X-Other": "1"})
        self.assertNotIn("x-other", response.headers, "the response has its own headers dict")

    def test_tool_call_only_answer_is_valid_to_send_back(self):
        chunks = dm_chunks(
            dm_chunk({"role": "assistant", "tool_calls": [dict(DM_CALL, index=0)]}),
            dm_chunk({}, "tool_calls"),
        )
        message = edgee.collect(chunks).message
        self.assertEqual(message, {"role": "assistant", "content": None, "tool_calls": [DM_CALL]})
        messages = [
            {"role": "user", "content": "Weather in Lyon?"},
            message,
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        ]
        input = {"messages": messages, "tools": [DM_TOOL], "edgee_pending_id": "p1"}
        for stream in (False, True):
            body, _ = edgee.build_request(DM_MODEL, input, stream)
            self.assertEqual(
                json.loads(body)["messages"][1], {"role": "assistant", "tool_calls": [DM_CALL]}
            )
            assert_valid_body(self, DM_CHAT, body)
        assert_valid_body(self, DM_COUNT, edgee.build_count_tokens_request(DM_MODEL, input)[0])
        assert_valid_body(self, DM_COMPRESS, edgee.build_compress_request(DM_MODEL, input)[0])

    def test_an_answer_as_one_chunk_assembles_to_the_same_answer(self):
        message = {
            "role": "assistant",
            "content": "4",
            "reasoning": "2+2",
            "refusal": "partly",
        }
        data = dm_answer(message, edgee_pending_id="p1", edgee_tools_executed=[])
        sent = edgee.response_from_json(data)
        chunk = edgee.chunk_from_response(sent)
        self.assertIs(chunk.raw, data)
        self.assertEqual(chunk.reasoning, "2+2")
        self.assertEqual(edgee.collect([chunk]), sent)


class BackoffTest(unittest.TestCase):
    def test_backoff_delay_is_exponential_capped_and_jittered(self):
        for attempt in range(10):
            nominal = min(0.5 * 2**attempt, 8.0)
            samples = [edgee.backoff_delay(attempt) for _ in range(200)]
            for delay in samples:
                self.assertGreaterEqual(delay, 0.75 * nominal - 1e-9)
                self.assertLessEqual(delay, nominal + 1e-9)
            self.assertGreater(len(set(samples)), 100)  # jittered, not a fixed value
            self.assertGreater(max(samples) - min(samples), 0.1 * nominal)
        self.assertLessEqual(max(edgee.backoff_delay(50) for _ in range(50)), 8.0)


# ---- requests: what each input form becomes, and what is refused ----

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": WEATHER_PARAMS,
    },
}
NON_ASCII = "héllo wörld € 你好 🎉"
# The header of each compression toggle (field name -> header), as the official package sends it.
TOGGLE_HEADERS = {
    "tool_result_trimming": "X-Edgee-Compression-Tool-Result-Trimming",
    "tool_surface_reduction": "X-Edgee-Compression-Tool-Surface-Reduction",
    "output_brevity": "X-Edgee-Compression-Brevity",
}


def _case(name, input, messages, fields=None, model=DEFAULT_MODEL, headers=None):
    """One request case: (name, model, input, JSON body sent without `stream`, extra headers)."""
    return (name, model, input, dict(fields or {}, model=model, messages=messages), headers or {})


def _toggle_cases():
    """Compression toggles in an InputObject and in a dict: headers, never body fields."""
    user = [{"role": "user", "content": "t"}]
    cases = []
    for values in [
        (True, False, None),
        (False, None, True),
        (None, True, False),
        (None, None, None),
        (True, True, True),
    ]:
        toggles = dict(zip(TOGGLE_HEADERS, values))
        headers = {
            TOGGLE_HEADERS[name]: "true" if value else "false"
            for name, value in toggles.items()
            if value is not None
        }
        for form, value in (
            ("InputObject", edgee.InputObject(messages=user, **toggles)),
            ("dict", dict(toggles, messages=user)),
        ):
            cases.append(_case(f"toggles {values} in a {form}", value, user, headers=headers))
    return cases


def request_cases():
    """Every input form and what it becomes, built afresh for each test."""
    x = [{"role": "user", "content": "x"}]
    s = [{"role": "user", "content": "s"}]
    lyon = [{"role": "user", "content": "Lyon"}]
    paris = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Paris", "name": "bob", "cache_control": {"type": "ephemeral"}},
    ]
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": WEATHER_PARAMS,
        },
    }
    bare = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMS}}
    described = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": WEATHER_PARAMS,
        },
    }
    pinned = {"type": "function", "function": {"name": "get_weather"}}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    extra = {
        "max_tokens": 50,
        "temperature": 0.25,
        "top_p": 1,
        "stream_options": {"include_usage": True},
        "edgee_tool_ids": ["edgee_current_time", "edgee_generate_uuid"],
    }
    cases = [
        _case("string", "Hello, world!", [{"role": "user", "content": "Hello, world!"}]),
        _case("non-ASCII string", NON_ASCII, [{"role": "user", "content": NON_ASCII}]),
        _case(
            "dict with every field",
            {"messages": paris, "tools": [tool], "tool_choice": "auto", "tags": ["prod", "chat"]},
            paris,
            {"tools": [tool], "tool_choice": "auto", "tags": ["prod", "chat"]},
        ),
        _case(
            "InputObject with a Tool dataclass",
            edgee.InputObject(
                messages=lyon,
                tools=[
                    edgee.Tool(
                        type="function",
                        function=edgee.FunctionDefinition(
                            name="get_weather", parameters=WEATHER_PARAMS
                        ),
                    )
                ],
                tool_choice=pinned,
                tags=["t1"],
            ),
            lyon,
            {"tools": [bare], "tool_choice": pinned, "tags": ["t1"]},
        ),
        _case("InputObject with only messages", edgee.InputObject(messages=x), x),
        _case(
            "Message dataclasses",
            {
                "messages": [
                    edgee.Message(role="system", content="You are terse."),
                    edgee.Message(role="user", content="hi there", name="ann"),
                ]
            },
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hi there", "name": "ann"},
            ],
        ),
        _case(
            "positional Message",
            edgee.InputObject(messages=[edgee.Message("user", "pos")]),
            [{"role": "user", "content": "pos"}],
        ),
        _case(
            "tool round trip with dataclasses",
            edgee.InputObject(
                messages=[
                    edgee.Message(role="user", content="Weather in Paris?"),
                    edgee.Message(
                        role="assistant",
                        tool_calls=[
                            edgee.ToolCall(id="call_1", type="function", function=call["function"])
                        ],
                    ),
                    edgee.Message(role="tool", content="sunny, 21C", tool_call_id="call_1"),
                ],
                tools=[
                    edgee.Tool(
                        type="function",
                        function=edgee.FunctionDefinition(
                            name="get_weather",
                            description="Current weather",
                            parameters=WEATHER_PARAMS,
                        ),
                    )
                ],
            ),
            [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "content": "sunny, 21C", "tool_call_id": "call_1"},
            ],
            {"tools": [described]},
        ),
    ]
    for choice in ("auto", "none", {"type": "auto"}, pinned):
        cases.append(
            _case(
                f"tool_choice {choice}",
                {"messages": x, "tool_choice": choice},
                x,
                {"tool_choice": choice},
            )
        )
    tags = ["production", "chatbot"]
    cases += [
        _case("None fields", {"messages": x, "tool_choice": None, "tags": None, "tools": None}, x),
        _case("tags", {"messages": x, "tags": tags}, x, {"tags": tags}),
        _case(
            "InputObject tags",
            edgee.InputObject(messages=x, tags=["stream-tag"]),
            x,
            {"tags": ["stream-tag"]},
        ),
    ]
    for value in ("claude", "codex", "opencode", "cursor"):
        fields = {"compression_model": value}
        cases.append(
            _case(f"{value} in an InputObject", edgee.InputObject(messages=x, **fields), x, fields)
        )
        cases.append(_case(f"{value} in a dict", dict(fields, messages=x), x, fields))
    q = [{"role": "user", "content": "q"}]
    m = [{"role": "user", "content": "m"}]
    cases += [
        _case("extra fields", dict(extra, messages=x), x, extra),
        _case(
            "extra_body",
            edgee.InputObject(messages=x, tags=["a"], extra_body=extra),
            x,
            dict(extra, tags=["a"]),
        ),
        _case("n", {"messages": q, "n": 3}, q, {"n": 3}),
        _case(
            "model from the argument",
            {"model": "other/model", "messages": m},
            m,
            model="anthropic/claude-haiku-4-5",
        ),
        _case("stream in the input", {"messages": s, "stream": True}, s),
        _case(
            "stream False in extra_body",
            edgee.InputObject(messages=s, extra_body={"stream": False}),
            s,
        ),
    ]
    return cases + _toggle_cases()


def bad_inputs():
    """(name, model, input, a word the error names) of arguments refused before sending."""
    m = DEFAULT_MODEL
    ok = [{"role": "user", "content": "hi"}]

    def with_tools(*tools):
        return {"messages": ok, "tools": list(tools)}

    cases = [
        ("model None", None, "hi", "model"),
        ("model int", 42, "hi", "model"),
        ("model empty", "", "hi", "model"),
        ("model blank", "   ", "hi", "model"),
        ("input int", m, 42, "input"),
        ("input None", m, None, "input"),
        ("input list", m, ok, "input"),
        ("no messages", m, {}, "messages"),
        ("messages None", m, {"messages": None}, "messages"),
        ("messages a string", m, {"messages": "hi"}, "messages"),
        ("empty messages", m, {"messages": []}, "empty"),
        ("empty InputObject", m, edgee.InputObject(messages=[]), "empty"),
        ("message not a dict", m, {"messages": ["hi"]}, "messages[0]"),
        ("message without role", m, {"messages": [{"content": "hi"}]}, "role"),
        ("unknown role", m, {"messages": [{"role": "wizard", "content": "hi"}]}, "wizard"),
        (
            "second message bad",
            m,
            {"messages": [*ok, {"role": "robot", "content": "x"}]},
            "messages[1]",
        ),
        ("content an object", m, {"messages": [{"role": "user", "content": object()}]}, "content"),
        ("content a number", m, {"messages": [{"role": "user", "content": 5}]}, "content"),
        (
            "tool without function name",
            m,
            with_tools({"type": "function", "function": {"parameters": {}}}),
            "name",
        ),
        (
            "tool with a bad name",
            m,
            with_tools({"type": "function", "function": {"name": "get weather!"}}),
            "name",
        ),
        (
            "tool with a bad type",
            m,
            with_tools({"type": "retrieval", "function": {"name": "f"}}),
            "type",
        ),
        ("tool without function", m, with_tools({"type": "function"}), "function"),
        ("tool not a dict", m, with_tools("get_weather"), "tools[0]"),
        ("tools not a list", m, {"messages": ok, "tools": "f"}, "tools"),
        ("extra field an object", m, {"messages": ok, "metadata": object()}, "JSON"),
        ("NaN", m, {"messages": ok, "temperature": float("nan")}, "JSON"),
        ("infinity", m, {"messages": ok, "temperature": math.inf}, "JSON"),
        (
            "toggle not a bool",
            m,
            {"messages": ok, "tool_result_trimming": "yes"},
            "tool_result_trimming",
        ),
    ]
    for value in ("gzip", "Claude", "", 7):
        cases.append(
            (
                f"compression_model {value!r} in a dict",
                m,
                {"messages": ok, "compression_model": value},
                "compression_model",
            )
        )
        cases.append(
            (
                f"compression_model {value!r} in an InputObject",
                m,
                edgee.InputObject(messages=ok, compression_model=value),
                "compression_model",
            )
        )
    return cases


class RequestBuildingTest(unittest.TestCase):
    """edgee.build_request: the JSON body and extra headers of each input form."""

    def build(self, model, input, stream=False):
        body, headers = edgee.build_request(model, input, stream)
        return json.loads(body.decode("utf-8")), {k.lower(): v for k, v in headers.items()}

    def test_every_input_form(self):
        for name, model, value, expected, headers in request_cases():
            headers = {k.lower(): v for k, v in headers.items()}
            with self.subTest(case=name):
                self.assertEqual(self.build(model, value), (expected, headers))
                stream = dict(expected, stream=True)  # only the method asks for a stream
                self.assertEqual(self.build(model, value, True), (stream, headers))

    def test_caller_input_is_not_modified(self):
        for name, model, value, _, _ in request_cases():
            original = copy.deepcopy(value)
            self.build(model, value, True)
            self.assertEqual(value, original, name)

    def test_bad_input_is_named(self):
        for name, model, value, word in bad_inputs():
            for stream in (False, True):
                with self.subTest(case=name, stream=stream):
                    with self.assertRaises((ValueError, TypeError)) as cm:
                        edgee.build_request(model, value, stream)
                    self.assertIsInstance(cm.exception, edgee.EdgeeInputError)
                    self.assertIsInstance(cm.exception, RuntimeError)
                    self.assertIn(word.lower(), str(cm.exception).lower())


# ==== client ====
# Client tests: one loopback gateway per run, each behaviour through the sync and the async API.

# The official package unpacked (pip download edgee==1.1.0, then unzip), if you have it.
OFFICIAL_DIR = os.environ.get("EDGEE_OFFICIAL_SDK", "")
OFFICIAL_INIT = os.path.join(OFFICIAL_DIR, "edgee", "__init__.py")
OFFICIAL_README = os.path.join(OFFICIAL_DIR, "edgee-1.1.0.dist-info", "METADATA")
SPEC = os.path.join(SHARED_REFERENCE, "edgee-openapi.json")
FAST_RETRY = {"retry-after-ms": "1"}  # keeps retried answers fast
STALL = 5.0  # a stall far beyond every timeout used here (the gateway's close() ends it)
SSE_HEAD = http_head(200, [("Content-Type", "text/event-stream")], chunked=True)
QUICK = 0.2  # seconds: the timeout of the tests that wait for one


def assert_quick_timeout(test, call, gw, limit=2.0):
    """`call()` raises EdgeeTimeoutError after about QUICK s (it did wait), within `limit`,
    and `gw` got one request for it: a timeout is never retried."""
    before = len(gw.requests)
    start = time.monotonic()
    with test.assertRaises(edgee.EdgeeTimeoutError) as cm:
        call()
    elapsed = time.monotonic() - start
    test.assertEqual(len(gw.requests) - before, 1, "the timeout was retried")
    test.assertGreaterEqual(elapsed, QUICK - 0.05, "it raised before the timeout ran out")
    test.assertLess(elapsed, limit, "the timeout took far too long")
    test.assertIsInstance(cm.exception, RuntimeError)
    test.assertIsInstance(cm.exception, edgee.EdgeeConnectionError)
    return cm.exception


def free_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
    finally:
        probe.close()


def completion_body(content="Hello! How can I assist you today?", finish_reason="stop", **extra):
    """A whole chat.completion answer like the OpenAPI example; `extra` sets top-level fields."""
    body = {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": DEFAULT_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": make_usage(),
    }
    body.update(extra)
    return body


def stream_events(*pieces, finish="stop"):
    """Chunks of a streamed answer: the role, one chunk per piece, then the finish."""
    events = [completion_chunk(role="assistant")]
    events += [completion_chunk(content=p) for p in pieces]
    if finish:
        events.append(completion_chunk(finish_reason=finish))
    return events


def frames(events):
    """The chunked-body frames of SSE events (dicts as `data:` JSON, bytes verbatim)."""
    return b"".join(chunk_frame(e if isinstance(e, bytes) else sse_bytes(e)) for e in events)


def text_of(chunks):
    return "".join(c.text or "" for c in chunks)


def everything(exc):
    """str, repr, body and the formatted traceback (with its chain) of an exception."""
    return "\n".join(
        [
            str(exc),
            repr(exc),
            repr(getattr(exc, "body", None)),
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        ]
    )


class ConfigurationTest(ClientTestCase):
    """Keys, URLs, timeouts and retries from arguments, dicts, EdgeeConfig and the environment."""

    def test_every_config_form(self):
        def body(api):
            url = api.gw.url
            forms = [
                ("string", lambda: edgee.Edgee("string-key"), "string-key"),
                ("dict", lambda: edgee.Edgee({"api_key": "dict-key", "base_url": url}), "dict-key"),
                (
                    "config keyword",
                    lambda: edgee.Edgee(config={"api_key": "kw-config", "base_url": url}),
                    "kw-config",
                ),
                (
                    "EdgeeConfig",
                    lambda: edgee.Edgee(edgee.EdgeeConfig(api_key="cfg-key", base_url=url)),
                    "cfg-key",
                ),
                # positional, as with the official package: EdgeeConfig(api_key, base_url)
                (
                    "EdgeeConfig positional",
                    lambda: edgee.Edgee(edgee.EdgeeConfig("pos", url)),
                    "pos",
                ),
                (
                    "keywords",
                    lambda: edgee.Edgee(api_key="kw-key", base_url=url, timeout=5, max_retries=0),
                    "kw-key",
                ),
                ("key from the environment", lambda: edgee.Edgee(base_url=url), "from-env"),
            ]
            for name, make, key in forms:
                with self.subTest(form=name):
                    os.environ["EDGEE_BASE_URL"] = url
                    os.environ["EDGEE_API_KEY"] = "from-env"
                    client = self.drive(api.kind, make(), api.gw)
                    self.assertEqual(client.client.api_key, key)
                    self.assertEqual(client.send(DEFAULT_MODEL, name).text, "Echo: " + name)
                    self.assertEqual(api.last().headers["authorization"], "Bearer " + key)

        self.both(body)

    def test_precedence_kwargs_over_config_over_env(self):
        def body(api):
            env_gw, cfg_gw, kw_gw = api.gw, self.gateway(), self.gateway()
            os.environ["EDGEE_API_KEY"] = "env-key"
            os.environ["EDGEE_BASE_URL"] = env_gw.url
            cfg = edgee.EdgeeConfig(api_key="cfg-key", base_url=cfg_gw.url)
            cases = [
                ((), {}, env_gw, "env-key"),
                (("str-key",), {}, env_gw, "str-key"),
                (({"api_key": "cfg-key"},), {}, env_gw, "cfg-key"),
                (({"base_url": cfg_gw.url},), {}, cfg_gw, "env-key"),
                (({"api_key": "cfg-key", "base_url": cfg_gw.url},), {}, cfg_gw, "cfg-key"),
                ((cfg,), {}, cfg_gw, "cfg-key"),
                (
                    ({"api_key": "cfg-key", "base_url": cfg_gw.url},),
                    {"api_key": "kw-key", "base_url": kw_gw.url},
                    kw_gw,
                    "kw-key",
                ),
                ((cfg,), {"api_key": "kw-key"}, cfg_gw, "kw-key"),
                ((), {"base_url": kw_gw.url}, kw_gw, "env-key"),
            ]
            for args, kwargs, gw, key in cases:
                with self.subTest(args=args, kwargs=kwargs):
                    before = {id(g): len(g.requests) for g in (env_gw, cfg_gw, kw_gw)}
                    client = self.drive(api.kind, edgee.Edgee(*args, **kwargs), gw)
                    self.assertEqual(client.send(DEFAULT_MODEL, "which").text, "Echo: which")
                    for g in (env_gw, cfg_gw, kw_gw):
                        self.assertEqual(len(g.requests) - before[id(g)], 1 if g is gw else 0)
                    self.assertEqual(gw.requests[-1].headers["authorization"], "Bearer " + key)

        self.both(body)

    def test_defaults(self):
        self.assertEqual(edgee.DEFAULT_BASE_URL, "https://edgee.io")
        self.assertEqual(edgee.DEFAULT_TIMEOUT, 600)
        self.assertEqual(edgee.DEFAULT_MAX_RETRIES, 2)
        url = f"http://127.0.0.1:{free_port()}"  # no request is made
        for client in (
            edgee.Edgee("k"),
            edgee.Edgee({"api_key": "k"}),
            edgee.Edgee(edgee.EdgeeConfig(api_key="k")),
        ):
            self.track(client)
            self.assertEqual(
                (client.base_url, client.timeout, client.max_retries), ("https://edgee.io", 600, 2)
            )
        for client in (
            edgee.Edgee(api_key=self.key, base_url=url),
            edgee.Edgee(edgee.EdgeeConfig(api_key=self.key, base_url=url)),
            edgee.Edgee({"api_key": self.key, "base_url": url}),
        ):
            self.assertEqual((self.track(client).timeout, client.max_retries), (600, 2))

    def test_env_base_url_used(self):
        os.environ["EDGEE_BASE_URL"] = "https://gateway.example.com"
        self.assertEqual(self.track(edgee.Edgee("k")).base_url, "https://gateway.example.com")

    def test_missing_key(self):
        attempts = [
            lambda: edgee.Edgee(),
            lambda: edgee.Edgee(None),
            lambda: edgee.Edgee(""),
            lambda: edgee.Edgee({}),
            lambda: edgee.Edgee({"base_url": "http://127.0.0.1:9"}),
            lambda: edgee.Edgee(edgee.EdgeeConfig()),
            lambda: edgee.Edgee(api_key=""),
        ]
        for attempt in attempts:
            with self.subTest(attempt=attempts.index(attempt)):
                with self.assertRaises(ValueError) as caught:
                    attempt()
                self.assertEqual(str(caught.exception), "EDGEE_API_KEY is not set")
        os.environ["EDGEE_API_KEY"] = ""
        with self.assertRaises(ValueError) as caught:
            edgee.Edgee()
        self.assertEqual(str(caught.exception), "EDGEE_API_KEY is not set")

    def test_bad_settings(self):
        gw = self.gateway()
        key, url, port = self.key, gw.url, gw.port
        bad_urls = [
            "ftp://example.com",
            f"ftp://127.0.0.1:{port}",
            f"ws://127.0.0.1:{port}",
            "file:///etc/passwd",
            "example.com",
            f"127.0.0.1:{port}",
            "not a url",
            "http://",
            "https:///v1",
            "http://user:secret@example.com",
            "http://example.com/?x=1",
            "http://example.com/#frag",
            "http://example.com:99999",
            "http://example.com:port",
            123,
            42,
            ["http://example.com"],
        ]
        cases = []
        for value in bad_urls:
            cases += [
                (f"base_url {value!r}", lambda v=value: edgee.Edgee(api_key=key, base_url=v)),
                (
                    f"base_url {value!r} in a dict",
                    lambda v=value: edgee.Edgee({"api_key": key, "base_url": v}),
                ),
            ]
        for value in (0, -1, -0.5, -5, float("inf"), float("nan"), "10", "fast", True, [5]):
            cases += [
                (
                    f"timeout {value!r}",
                    lambda v=value: edgee.Edgee(api_key=key, base_url=url, timeout=v),
                ),
                (
                    f"timeout {value!r} in a config",
                    lambda v=value: edgee.Edgee(
                        edgee.EdgeeConfig(api_key=key, base_url=url, timeout=v)
                    ),
                ),
            ]
        cases.append(
            (
                "timeout in a dict",
                lambda: edgee.Edgee({"api_key": key, "base_url": url, "timeout": "1s"}),
            )
        )
        for value in (-1, 1.5, "2", True, [1]):
            cases.append(
                (f"max_retries {value!r}", lambda v=value: edgee.Edgee(api_key=key, max_retries=v))
            )
        cases += [
            ("unknown option retries", lambda: edgee.Edgee(api_key=key, retries=3)),
            ("unknown option basse_url", lambda: edgee.Edgee(api_key=key, basse_url=url)),
        ]
        for name, make in cases:
            word = name.split()[2] if name.startswith("unknown") else name.split()[0]
            with self.subTest(case=name):
                with self.assertRaises((ValueError, TypeError)) as caught:
                    make()
                exc = caught.exception
                self.assertIsInstance(exc, edgee.EdgeeInputError)
                self.assertIsInstance(exc, RuntimeError)
                self.assertIn(word, str(exc))
                self.assertNotIn(key, str(exc))
        os.environ["EDGEE_BASE_URL"] = "ftp://example.com"
        with self.assertRaises(ValueError) as caught:
            edgee.Edgee("k")
        self.assertIn("base_url", str(caught.exception))
        time.sleep(0.05)  # let the gateway's acceptor see any stray connection
        self.assertEqual((gw.requests, gw.connections), ([], 0))

    def test_trailing_slash(self):
        def body(api):
            gw = api.gw
            for suffix in ("/", "//"):
                with self.subTest(suffix=suffix):
                    slashed = self.api(api.kind, gw, base_url=gw.url + suffix)
                    self.assertEqual(slashed.send(DEFAULT_MODEL, "slash").text, "Echo: slash")
                    self.assertEqual(api.last().path, "/v1/chat/completions")
                    self.assertEqual(slashed.stream(DEFAULT_MODEL, "s")[-1].finish_reason, "stop")
                    self.assertEqual(api.last().path, "/v1/chat/completions")
            os.environ["EDGEE_BASE_URL"] = gw.url + "/"
            self.drive(api.kind, edgee.Edgee("k")).send(DEFAULT_MODEL, "env slash")
            self.assertEqual(api.last().path, "/v1/chat/completions")

        self.both(body)

    def test_base_url_with_path_prefix(self):
        def body(api):
            gw = api.gw
            for prefix in ("/proxy/edgee", "/proxy/edgee/"):
                with self.subTest(prefix=prefix):
                    prefixed = self.api(api.kind, gw, base_url=gw.url + prefix)
                    gw.push(Reply(body=completion_body("via prefix")))
                    self.assertEqual(prefixed.send(DEFAULT_MODEL, "p").text, "via prefix")
                    self.assertEqual(api.last().path, "/proxy/edgee/v1/chat/completions")
                    gw.push(SSE(stream_events("streamed")))
                    texts = [c.text for c in prefixed.stream(DEFAULT_MODEL, "p") if c.text]
                    self.assertEqual(texts, ["streamed"])
                    self.assertEqual(api.last().path, "/proxy/edgee/v1/chat/completions")
                    gw.push(Reply(body=MODELS))
                    self.assertEqual(
                        [m.id for m in prefixed.models()], [m["id"] for m in MODELS["data"]]
                    )
                    self.assertEqual(api.last().path, "/proxy/edgee/v1/models")

        self.both(body)

    def test_max_retries_honoured(self):
        def body(api):
            gw = api.gw
            fast = {"Retry-After": "0"}
            # max_retries=0 (as a dict option): one request, the 500 raised at once
            gw.push(ErrorReply(500, "internal_error", "boom", headers=fast))
            config = {"api_key": "k", "base_url": gw.url, "max_retries": 0}
            once = self.drive(api.kind, edgee.Edgee(config), gw)
            with self.assertRaises(edgee.EdgeeAPIError):
                once.send(DEFAULT_MODEL, "x")
            self.assertEqual(len(gw.requests), 1)
            # max_retries=1 (keyword): one retry, then the second answer counts
            gw.push(
                ErrorReply(500, "internal_error", "boom", headers=fast),
                ErrorReply(500, "internal_error", "boom again", headers=fast),
            )
            twice = self.api(api.kind, gw, max_retries=1)
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                twice.send(DEFAULT_MODEL, "x")
            self.assertEqual(str(caught.exception), "API error 500: boom again")
            self.assertEqual(len(gw.requests), 3)
            gw.push(ErrorReply(500, "internal_error", "boom", headers=fast))
            self.assertEqual(twice.send(DEFAULT_MODEL, "after").text, "Echo: after")
            self.assertEqual(len(gw.requests), 5)

        self.both(body)

    def test_timeout_honoured(self):
        def body(api):
            head = http_head(200, {"Content-Type": "application/json"}, content_length=200)
            api.gw.push(Raw([head, b'{"id":'], then="hold"))
            config = edgee.EdgeeConfig(
                api_key="k", base_url=api.gw.url, timeout=QUICK, max_retries=0
            )
            client = self.drive(api.kind, edgee.Edgee(config), api.gw)
            start = time.monotonic()
            with self.assertRaises(RuntimeError) as caught:
                client.send(DEFAULT_MODEL, "slow")
            elapsed = time.monotonic() - start
            self.assertIsInstance(caught.exception, edgee.EdgeeTimeoutError)
            self.assertGreaterEqual(elapsed, QUICK - 0.05)
            self.assertLess(elapsed, 5.0)

        self.both(body)

    def test_key_in_no_repr_or_str(self):
        gw = self.gateway()
        config = edgee.EdgeeConfig(api_key=self.key, base_url=gw.url, timeout=5)
        things = [
            edgee.EdgeeConfig(api_key=self.key),
            config,
            self.client(gw),
            self.track(edgee.Edgee(config)),
            self.track(edgee.Edgee({"api_key": self.key, "base_url": gw.url})),
        ]
        for thing in things:
            for text in (repr(thing), str(thing), "%r" % [thing], f"{thing}"):
                self.assertNotIn(self.key, text)
                self.assertNotIn(self.key[8:], text)


def refused_calls():
    """(name, model, input, call options, a word the error names): refused before sending."""
    cases = [(name, model, value, {}, word) for name, model, value, word in bad_inputs()]
    for name, value in (
        ("a string", "fast"),
        ("negative", -1),
        ("zero", 0),
        ("NaN", float("nan")),
        ("a bool", True),
    ):
        cases.append((f"timeout {name}", DEFAULT_MODEL, "hi", {"timeout": value}, "timeout"))
    return cases


def assert_refused(test, gw, call, word):
    """`call()` raises EdgeeInputError naming `word`, and `gw` saw no new byte."""
    before = (len(gw.requests), gw.connections)
    with test.assertRaises((ValueError, TypeError)) as caught:
        call()
    exc = caught.exception
    test.assertIsInstance(exc, edgee.EdgeeInputError)
    test.assertIsInstance(exc, RuntimeError)
    test.assertIn(word.lower(), str(exc).lower())
    after = (len(gw.requests), gw.connections)
    test.assertEqual(after, before, "bytes were sent before the input was refused")


def assert_nothing_sent(test, gw):
    time.sleep(0.05)  # let the gateway's acceptor see any stray connection
    test.assertEqual((gw.requests, gw.connections), ([], 0))


def toggles_sent(request):
    """The compression toggle headers of a recorded request (lower-case names)."""
    names = {h.lower() for h in TOGGLE_HEADERS.values()}
    return {k: v for k, v in request.headers.items() if k in names}


class RequestTest(ClientTestCase):
    """What goes on the wire: the JSON body and the headers of each call."""

    def test_every_input_form(self):
        def body(api):
            sent, streamed = {}, {}
            for name, model, value, expected, headers in request_cases():
                headers = {k.lower(): v for k, v in headers.items()}
                original = copy.deepcopy(value)
                with self.subTest(case=name):
                    sent[name] = api.send(model, value)
                    self.assertEqual(api.last().json, expected)
                    self.assertEqual(toggles_sent(api.last()), headers)
                    streamed[name] = api.stream(model, value)
                    self.assertEqual(api.last().json, dict(expected, stream=True))
                    self.assertEqual(toggles_sent(api.last()), headers)
                    self.assertEqual(value, original, "the caller's input was modified")
            self.assertEqual(sent["string"].text, "Echo: Hello, world!")
            self.assertEqual(sent["non-ASCII string"].text, "Echo: " + NON_ASCII)
            self.assertEqual(text_of(streamed["non-ASCII string"]), "Echo: " + NON_ASCII)
            r = sent["dict with every field"]
            self.assertEqual((r.finish_reason, r.text), ("tool_calls", None))
            self.assertEqual(
                r.tool_calls,
                [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            )
            r = sent["InputObject with a Tool dataclass"]
            self.assertEqual(r.tool_calls[0]["function"]["arguments"], '{"city":"Lyon"}')
            self.assertEqual(sent["Message dataclasses"].text, "Echo: hi there")
            self.assertEqual(sent["positional Message"].text, "Echo: pos")
            r = sent["tool round trip with dataclasses"]
            self.assertEqual((r.text, r.finish_reason), ("Tool said: sunny, 21C", "stop"))
            for value in ("claude", "codex", "opencode", "cursor"):
                self.assertIsNotNone(sent[f"{value} in an InputObject"].compression)
                self.assertIsNotNone(sent[f"{value} in a dict"].compression)
            self.assertEqual(len(sent["n"].choices), 3)
            last = streamed["extra_body"][-1]
            self.assertIsNotNone(last.usage, "stream_options.include_usage reached the gateway")

        self.both(body)

    def test_assistant_message_from_response_appends(self):
        def body(api):
            tools = [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "parameters": WEATHER_PARAMS},
                }
            ]
            first = api.send(
                DEFAULT_MODEL, {"messages": [{"role": "user", "content": "Nice"}], "tools": tools}
            )
            call = first.tool_calls[0]
            messages = [
                {"role": "user", "content": "Nice"},
                first.message,
                {"role": "tool", "tool_call_id": call["id"], "content": "rain"},
            ]
            second = api.send(DEFAULT_MODEL, {"messages": messages})
            self.assertEqual(second.text, "Tool said: rain")
            self.assertEqual(api.last().json["messages"][1]["tool_calls"], first.tool_calls)

        self.both(body)

    def test_send_headers(self):
        def body(api):
            api.send(DEFAULT_MODEL, "h")
            rec = api.last()
            self.assertEqual((rec.method, rec.path), ("POST", "/v1/chat/completions"))
            self.assertEqual(rec.headers["authorization"], "Bearer sk-header-key")
            self.assertEqual(rec.headers["content-type"].split(";")[0].strip(), "application/json")
            self.assertNotIn("text/event-stream", rec.headers.get("accept", ""))
            ua = rec.headers.get("user-agent", "")
            self.assertIn("edgee.py", ua)
            self.assertIn(edgee.__version__, ua)
            self.assertEqual(int(rec.headers["content-length"]), len(rec.body))

        self.both(body, api_key="sk-header-key")

    def test_stream_headers(self):
        def body(api):
            api.stream(DEFAULT_MODEL, "h")
            self.assertEqual(len(api.gw.requests), 1)
            assert_stream_headers(self, api.last(), "sk-header-key")

        self.both(body, api_key="sk-header-key")

    def test_models_request(self):
        def body(api):
            models = api.models()
            rec = api.last()
            self.assertEqual((rec.method, rec.path), ("GET", "/v1/models"))
            self.assertEqual(rec.headers["authorization"], "Bearer " + self.key)
            self.assertEqual(rec.body, b"")
            self.assertEqual(
                [(m.id, m.owned_by, m.created) for m in models],
                [(m["id"], m["owned_by"], m["created"]) for m in MODELS["data"]],
            )
            self.assertTrue(all(isinstance(m, edgee.Model) for m in models))

        self.both(body)


def assert_stream_headers(test, rec, key):
    """`rec` is a stream request made with `key`."""
    test.assertEqual((rec.method, rec.path), ("POST", "/v1/chat/completions"))
    test.assertEqual(rec.headers["authorization"], "Bearer " + key)
    test.assertEqual(rec.headers["content-type"].split(";")[0].strip(), "application/json")
    test.assertEqual(rec.headers.get("accept"), "text/event-stream")
    test.assertIn("edgee.py/" + edgee.__version__, rec.headers.get("user-agent", ""))


class InputCheckingTest(ClientTestCase):
    """Bad arguments raise EdgeeInputError (a ValueError or TypeError) before any byte is sent."""

    def test_bad_input_sends_nothing(self):
        def body(api):
            for name, model, value, options, word in refused_calls():
                for mode in ("send", "stream"):
                    with self.subTest(case=name, mode=mode):

                        def call(model=model, value=value, options=options, mode=mode):
                            if mode == "send":
                                return api.send(model, value, **options)
                            return api.first(1, model, value, **options)

                        assert_refused(self, api.gw, call, word)
            assert_nothing_sent(self, api.gw)

        self.both(body)


class ResultsTest(ClientTestCase):
    """SendResponse, StreamChunk and the objects inside them, from real answers."""

    def test_send_response_fields(self):
        def body(api):
            body = completion_body(
                "Bonjour",
                "stop",
                usage={
                    "prompt_tokens": 11,
                    "completion_tokens": 7,
                    "total_tokens": 18,
                    "input_tokens_details": {"cached_tokens": 3, "cache_creation_tokens": 5},
                    "output_tokens_details": {"reasoning_tokens": 2},
                },
                compression={
                    "saved_tokens": 450,
                    "cost_savings": 27000,
                    "reduction": 48.99884991374353,
                    "time_ms": 12,
                },
            )
            body["id"], body["model"], body["created"] = "chatcmpl-xyz", "mistral/large", 1700000001
            api.gw.push(Reply(body=body))
            r = api.send(DEFAULT_MODEL, "x")
            self.assertIsInstance(r, edgee.SendResponse)
            self.assertEqual(
                (r.id, r.model, r.created), ("chatcmpl-xyz", "mistral/large", 1700000001)
            )
            self.assertEqual(len(r.choices), 1)
            choice = r.choices[0]
            self.assertIsInstance(choice, edgee.Choice)
            self.assertEqual((choice.index, choice.finish_reason), (0, "stop"))
            self.assertEqual(choice.message, {"role": "assistant", "content": "Bonjour"})
            self.assertEqual(r.text, "Bonjour")
            self.assertEqual(r.message, {"role": "assistant", "content": "Bonjour"})
            self.assertEqual(r.finish_reason, "stop")
            self.assertIsNone(r.tool_calls)
            u = r.usage
            self.assertIsInstance(u, edgee.Usage)
            self.assertEqual((u.prompt_tokens, u.completion_tokens, u.total_tokens), (11, 7, 18))
            self.assertIsInstance(u.input_tokens_details, edgee.InputTokenDetails)
            self.assertEqual(u.input_tokens_details.cached_tokens, 3)
            self.assertEqual(u.input_tokens_details.cache_creation_tokens, 5)
            self.assertIsInstance(u.output_tokens_details, edgee.OutputTokenDetails)
            self.assertEqual(u.output_tokens_details.reasoning_tokens, 2)
            comp = r.compression
            self.assertIsInstance(comp, edgee.Compression)
            self.assertEqual((comp.saved_tokens, comp.cost_savings, comp.time_ms), (450, 27000, 12))
            self.assertIsInstance(comp.reduction, float)
            self.assertEqual(comp.reduction, 48.99884991374353)
            d = dataclasses.asdict(r)
            self.assertEqual(d["usage"]["input_tokens_details"]["cache_creation_tokens"], 5)
            self.assertEqual(d["choices"][0]["message"]["content"], "Bonjour")

        self.both(body)

    def test_send_against_fake_llm(self):
        def body(api):
            r = api.send(
                DEFAULT_MODEL,
                {
                    "messages": [{"role": "user", "content": "two words"}],
                    "compression_model": "claude",
                },
            )
            self.assertEqual(r.text, "Echo: two words")
            self.assertEqual(r.message["role"], "assistant")
            self.assertEqual(r.finish_reason, "stop")
            self.assertEqual((r.id, r.model, r.created), (COMPLETION_ID, DEFAULT_MODEL, CREATED))
            self.assertEqual(
                r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens
            )
            self.assertGreater(r.usage.total_tokens, 0)
            self.assertEqual(r.usage.input_tokens_details.cached_tokens, 0)
            self.assertEqual(r.usage.output_tokens_details.reasoning_tokens, 0)
            self.assertIsInstance(r.compression.reduction, float)
            self.assertEqual(r.compression.reduction, COMPRESSION["reduction"])
            self.assertEqual(r.compression.saved_tokens, COMPRESSION["saved_tokens"])
            self.assertEqual(r.compression.cost_savings, COMPRESSION["cost_savings"])
            self.assertEqual(r.compression.time_ms, COMPRESSION["time_ms"])
            self.assertIsNone(api.send(DEFAULT_MODEL, "no compression").compression)

        self.both(body)

    def test_integer_reduction_is_float(self):
        def body(api):
            api.gw.push(
                Reply(
                    body=completion_body(
                        compression={
                            "saved_tokens": 1,
                            "cost_savings": 2,
                            "reduction": 48,
                            "time_ms": 3,
                        }
                    )
                )
            )
            comp = api.send(DEFAULT_MODEL, "x").compression
            self.assertIsInstance(comp.reduction, float)
            self.assertEqual(comp.reduction, 48.0)

        self.both(body)

    def test_usage_without_details(self):
        def body(api):
            api.gw.push(
                Reply(
                    body=completion_body(
                        usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
                    )
                )
            )
            u = api.send(DEFAULT_MODEL, "x").usage
            self.assertEqual((u.prompt_tokens, u.completion_tokens, u.total_tokens), (1, 2, 3))
            self.assertIsNone(u.input_tokens_details)
            self.assertIsNone(u.output_tokens_details)

        self.both(body)

    def test_empty_choices_properties(self):
        def body(api):
            api.gw.push(Reply(body=completion_body(choices=[])))
            r = api.send(DEFAULT_MODEL, "x")
            self.assertEqual(r.choices, [])
            self.assertIsNone(r.text)
            self.assertIsNone(r.message)
            self.assertIsNone(r.finish_reason)
            self.assertIsNone(r.tool_calls)

        self.both(body)

    def test_empty_content_text_is_none(self):
        def body(api):
            api.gw.push(Reply(body=completion_body(content="")))
            self.assertIsNone(api.send(DEFAULT_MODEL, "x").text)

        self.both(body)

    def test_stream_chunk_properties_per_contract(self):
        def body(api):
            chunks = api.stream(DEFAULT_MODEL, "Tell me a story")
            self.assertGreaterEqual(len(chunks), 3)
            first, last = chunks[0], chunks[-1]
            self.assertEqual(first.role, "assistant")
            self.assertIsNone(first.text)
            self.assertIsNone(first.finish_reason)
            for c in chunks[1:]:
                self.assertIsNone(c.role, "role only on the first chunk")
            for c in chunks[:-1]:
                self.assertIsNone(c.finish_reason, "finish_reason only on the final chunk")
            self.assertEqual(last.finish_reason, "stop")
            self.assertIsNone(last.text)
            self.assertEqual("".join(c.text for c in chunks if c.text), "Echo: Tell me a story")
            for c in chunks:
                self.assertIsInstance(c.choices[0], edgee.StreamChoice)
                self.assertIsInstance(c.choices[0].delta, edgee.StreamDelta)
                self.assertEqual(c.text, c.choices[0].delta.content or None)
                self.assertEqual(c.role, c.choices[0].delta.role or None)
                self.assertEqual(c.finish_reason, c.choices[0].finish_reason or None)
                self.assertEqual(c.choices[0].index, 0)
                self.assertIsNone(c.compression)

        self.both(body)

    def test_include_usage_final_chunk(self):
        def body(api):
            chunks = api.stream(
                DEFAULT_MODEL,
                {
                    "messages": [{"role": "user", "content": "count these words"}],
                    "stream_options": {"include_usage": True},
                },
            )
            final = chunks[-1]
            self.assertEqual(final.choices, [])
            self.assertIsNone(final.text)
            self.assertIsNone(final.role)
            self.assertIsNone(final.finish_reason)
            self.assertIsInstance(final.usage, edgee.Usage)
            self.assertEqual(
                final.usage.total_tokens, final.usage.prompt_tokens + final.usage.completion_tokens
            )
            self.assertGreater(final.usage.total_tokens, 0)
            self.assertEqual(chunks[-2].finish_reason, "stop")
            self.assertTrue(all(c.usage is None for c in chunks[:-1]))

        self.both(body)

    def test_scripted_usage_chunk(self):
        def body(api):
            usage = make_usage(12, 34)
            usage["input_tokens_details"]["cache_creation_tokens"] = 4
            usage["output_tokens_details"]["reasoning_tokens"] = 9
            api.gw.push(
                SSE(
                    [
                        completion_chunk(role="assistant"),
                        completion_chunk("hi"),
                        completion_chunk(finish_reason="stop"),
                        completion_chunk(usage=usage),
                    ]
                )
            )
            final = api.stream(DEFAULT_MODEL, "x")[-1]
            self.assertEqual((final.text, final.role, final.finish_reason), (None, None, None))
            self.assertEqual(
                (
                    final.usage.prompt_tokens,
                    final.usage.completion_tokens,
                    final.usage.total_tokens,
                ),
                (12, 34, 46),
            )
            self.assertEqual(final.usage.input_tokens_details.cache_creation_tokens, 4)
            self.assertEqual(final.usage.output_tokens_details.reasoning_tokens, 9)

        self.both(body)

    def test_compression_on_chunk(self):
        def body(api):
            chunks = api.stream(
                DEFAULT_MODEL,
                edgee.InputObject(
                    messages=[{"role": "user", "content": "squeeze"}], compression_model="claude"
                ),
            )
            with_compression = [c for c in chunks if c.compression is not None]
            self.assertEqual(len(with_compression), 1)
            comp = with_compression[0].compression
            self.assertIsInstance(comp, edgee.Compression)
            self.assertIsInstance(comp.reduction, float)
            self.assertEqual(
                (comp.saved_tokens, comp.cost_savings, comp.reduction, comp.time_ms),
                (
                    COMPRESSION["saved_tokens"],
                    COMPRESSION["cost_savings"],
                    COMPRESSION["reduction"],
                    COMPRESSION["time_ms"],
                ),
            )

        self.both(body)

    def test_every_finish_reason_streamed(self):
        def body(api):
            for reason in ("stop", "length", "tool_calls", "content_filter"):
                with self.subTest(finish_reason=reason):
                    middle = completion_chunk("partial")
                    if reason == "tool_calls":
                        middle = completion_chunk(tool_calls=[tool_head(0, "call_9", "f", "{}")])
                    api.gw.push(
                        SSE(
                            [
                                completion_chunk(role="assistant"),
                                middle,
                                completion_chunk(finish_reason=reason),
                            ]
                        )
                    )
                    chunks = api.stream(DEFAULT_MODEL, "x")
                    self.assertEqual([c.finish_reason for c in chunks], [None, None, reason])
                    if reason == "tool_calls":
                        self.assertEqual(chunks[1].choices[0].delta.tool_calls[0]["id"], "call_9")
                        self.assertIsNone(chunks[1].text)
                    else:
                        self.assertEqual(chunks[1].text, "partial")

        self.both(body)

    def test_every_finish_reason_sent(self):
        def body(api):
            for reason in ("stop", "length", "tool_calls", "content_filter"):
                with self.subTest(finish_reason=reason):
                    api.gw.push(
                        Reply(
                            body=completion_body("cut" if reason != "tool_calls" else None, reason)
                        )
                    )
                    r = api.send(DEFAULT_MODEL, "x")
                    self.assertEqual(r.finish_reason, reason)
                    self.assertEqual(r.choices[0].finish_reason, reason)

        self.both(body)

    def test_multiple_choices_send(self):
        def body(api):
            r = api.send(
                DEFAULT_MODEL, {"messages": [{"role": "user", "content": "ideas"}], "n": 3}
            )
            self.assertEqual([c.index for c in r.choices], [0, 1, 2])
            self.assertEqual(
                [c.message["content"] for c in r.choices], [f"Echo: ideas #{i}" for i in range(3)]
            )
            self.assertEqual([c.finish_reason for c in r.choices], ["stop"] * 3)
            self.assertEqual(r.text, "Echo: ideas #0")

        self.both(body)

    def test_multiple_choices_stream(self):
        def body(api):
            texts, finish = {}, {}
            for chunk in api.stream(
                DEFAULT_MODEL, {"messages": [{"role": "user", "content": "ideas"}], "n": 3}
            ):
                for choice in chunk.choices:
                    if choice.delta.content:
                        texts[choice.index] = texts.get(choice.index, "") + choice.delta.content
                    if choice.finish_reason:
                        finish[choice.index] = choice.finish_reason
            self.assertEqual(texts, {i: f"Echo: ideas #{i}" for i in range(3)})
            self.assertEqual(finish, {0: "stop", 1: "stop", 2: "stop"})

        self.both(body)

    def test_stream_tool_call_fragments(self):
        def body(api):
            tools = [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "parameters": WEATHER_PARAMS},
                }
            ]
            chunks = api.stream(
                DEFAULT_MODEL,
                {"messages": [{"role": "user", "content": "Oslo"}], "tools": tools},
            )
            fragments = [
                f for c in chunks for f in (c.choices[0].delta.tool_calls or []) if c.choices
            ]
            self.assertEqual(fragments[0]["function"]["name"], "get_weather")
            self.assertEqual(
                "".join(f["function"].get("arguments", "") for f in fragments), '{"city":"Oslo"}'
            )
            self.assertEqual(chunks[-1].finish_reason, "tool_calls")

        self.both(body)

    def test_sync_and_async_give_equal_results(self):
        results = {}

        def body(api):
            sent = api.send(DEFAULT_MODEL, "async hello")
            chunks = api.stream(DEFAULT_MODEL, "async hello")
            models = api.models()
            collected = api.collect(
                DEFAULT_MODEL,
                {
                    "messages": [{"role": "user", "content": "async hello"}],
                    "stream_options": {"include_usage": True},
                },
            )
            self.assertEqual(sent.text, "Echo: async hello")
            self.assertTrue(all(isinstance(c, edgee.StreamChunk) for c in chunks))
            self.assertEqual(text_of(chunks), "Echo: async hello")
            self.assertEqual(
                [m.id for m in models], ["openai/gpt-5.2", "anthropic/claude-opus-4-6"]
            )
            self.assertEqual(collected, sent)
            results[api.kind] = (sent, chunks, models, collected)

        self.both(body)
        self.assertEqual(results["async"], results["sync"])


class AccumulateTest(ClientTestCase):
    """A streamed answer collected (collect, acollect, StreamAccumulator) equals send()."""

    def stream_and_send(self, api, input):
        return api.collect(DEFAULT_MODEL, input), api.send(DEFAULT_MODEL, input)

    def test_accumulator_while_printing_equals_send(self):
        def body(api):
            accumulator = edgee.StreamAccumulator()
            out = io.StringIO()
            partial = []

            def show(chunk):
                self.assertIs(accumulator.add(chunk), chunk)
                print(chunk.text or "", end="", file=out)
                partial.append(accumulator.text)

            api.each(show, DEFAULT_MODEL, "Hello there, gateway")
            streamed = accumulator.response()
            sent = api.send(DEFAULT_MODEL, "Hello there, gateway")
            self.assertIsInstance(streamed, edgee.SendResponse)
            self.assertEqual(out.getvalue(), "Echo: Hello there, gateway")
            self.assertEqual(streamed.text, "Echo: Hello there, gateway")
            self.assertEqual(partial[-1], "Echo: Hello there, gateway")
            self.assertTrue(any(0 < len(p) < len(partial[-1]) for p in partial))  # grew bit by bit
            # Without stream_options.include_usage a stream carries no usage; all else is equal.
            self.assertIsNone(streamed.usage)
            self.assertIsNotNone(sent.usage)
            self.assertEqual(streamed, dataclasses.replace(sent, usage=None))
            self.assertEqual(
                streamed.message, {"role": "assistant", "content": "Echo: Hello there, gateway"}
            )
            self.assertEqual(
                (streamed.id, streamed.model, streamed.created),
                (COMPLETION_ID, DEFAULT_MODEL, CREATED),
            )
            self.assertEqual(streamed.finish_reason, "stop")

        self.both(body)

    def test_plain_text_with_usage(self):
        def body(api):
            input = {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Plain text, héllo €"},
                ],
                "stream_options": {"include_usage": True},
            }
            streamed, sent = self.stream_and_send(api, input)
            self.assertEqual(streamed, sent)
            self.assertEqual(streamed.text, "Echo: Plain text, héllo €")
            self.assertIsNotNone(streamed.usage)
            self.assertEqual(streamed.usage, sent.usage)
            self.assertEqual(streamed.usage.total_tokens, 11)
            self.assertIsInstance(streamed.usage, edgee.Usage)
            self.assertEqual(streamed.usage.input_tokens_details, edgee.InputTokenDetails(0))
            self.assertEqual(streamed.usage.output_tokens_details, edgee.OutputTokenDetails(0))

        self.both(body)

    def test_tool_call(self):
        def body(api):
            input = {
                "messages": [{"role": "user", "content": "Paris"}],
                "tools": [WEATHER_TOOL],
                "stream_options": {"include_usage": True},
            }
            streamed, sent = self.stream_and_send(api, input)
            # The gateway leaves `content` out of a tool-call answer; the assembled message
            # says None there (read safely, never sent as null): otherwise they are equal.
            self.assertNotIn("content", sent.message)
            sent.message["content"] = None
            self.assertEqual(streamed, sent)
            self.assertEqual(streamed.finish_reason, "tool_calls")
            self.assertEqual(
                streamed.tool_calls, [tool_call("call_1", "get_weather", '{"city":"Paris"}')]
            )
            self.assertIsNone(streamed.text)
            self.assertEqual(streamed.message["role"], "assistant")
            self.assertIsNone(streamed.message["content"])

        self.both(body)

    def test_n_choices(self):
        def body(api):
            input = {
                "messages": [{"role": "user", "content": "three ways"}],
                "n": 3,
                "stream_options": {"include_usage": True},
            }
            streamed, sent = self.stream_and_send(api, input)
            self.assertEqual(streamed, sent)
            self.assertEqual([c.index for c in streamed.choices], [0, 1, 2])
            self.assertEqual(
                [c.message["content"] for c in streamed.choices],
                ["Echo: three ways #0", "Echo: three ways #1", "Echo: three ways #2"],
            )
            self.assertEqual([c.finish_reason for c in streamed.choices], ["stop"] * 3)
            self.assertTrue(all(isinstance(c, edgee.Choice) for c in streamed.choices))

        self.both(body)

    def test_include_usage_only_in_the_stream(self):
        def body(api):
            streamed = api.collect(
                DEFAULT_MODEL,
                {
                    "messages": [{"role": "user", "content": "count these words"}],
                    "stream_options": {"include_usage": True},
                },
            )
            sent = api.send(DEFAULT_MODEL, "count these words")
            self.assertEqual(streamed, sent)
            self.assertEqual(streamed.usage, sent.usage)
            usage = streamed.usage
            self.assertEqual((usage.prompt_tokens, usage.completion_tokens), (3, 4))
            self.assertTrue(api.gw.requests[0].json["stream"])
            self.assertEqual(api.gw.requests[0].json["stream_options"], {"include_usage": True})

        self.both(body)

    def test_compression(self):
        def body(api):
            input = edgee.InputObject(
                messages=[{"role": "user", "content": "squeeze me"}],
                compression_model="claude",
                extra_body={"stream_options": {"include_usage": True}},
            )
            streamed, sent = self.stream_and_send(api, input)
            self.assertEqual(streamed, sent)
            self.assertEqual(streamed.compression, edgee.Compression(450, 27000, 48.99, 12))
            self.assertEqual(sent.compression, streamed.compression)

        self.both(body)

    def test_tool_round_trip(self):
        def body(api):
            messages = [{"role": "user", "content": "Lyon"}]
            first = api.collect(DEFAULT_MODEL, {"messages": messages, "tools": [WEATHER_TOOL]})
            self.assertEqual(first.finish_reason, "tool_calls")
            calls = first.tool_calls
            self.assertEqual(len(calls), 1)
            call = calls[0]
            self.assertEqual(call["function"]["name"], "get_weather")

            def get_weather(city):  # the tool, run locally
                return "Sunny in " + city

            result = get_weather(**json.loads(call["function"]["arguments"]))
            messages.append(first.message)
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
            final = api.send(DEFAULT_MODEL, {"messages": messages, "tools": [WEATHER_TOOL]})
            self.assertEqual(final.text, "Tool said: Sunny in Lyon")
            self.assertEqual(final.finish_reason, "stop")
            sent_messages = api.last().json["messages"]
            self.assertEqual(  # no "content": null, which the OpenAPI Message schema refuses
                sent_messages[1],
                {
                    "role": "assistant",
                    "tool_calls": [tool_call("call_1", "get_weather", '{"city":"Lyon"}')],
                },
            )
            self.assertEqual(
                sent_messages[2],
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny in Lyon"},
            )
            # The streamed final answer is the same.
            again = api.collect(DEFAULT_MODEL, {"messages": messages, "tools": [WEATHER_TOOL]})
            self.assertEqual(again.text, "Tool said: Sunny in Lyon")

        self.both(body)


def tool_head(index, call_id, name, arguments):
    """The first fragment of a streamed tool call."""
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def tool_call(id, name, arguments):
    """A whole tool call, as a message holds it."""
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


class ToolAssemblyTest(ClientTestCase):
    """Tool calls put together from streamed fragments, however a provider splits them."""

    def assemble(self, api, fragment_groups, finish_reason="tool_calls"):
        """Stream one chunk per group of fragments; returns the collected SendResponse."""
        events = [completion_chunk(role="assistant")]
        events += [completion_chunk(tool_calls=group) for group in fragment_groups]
        events.append(completion_chunk(finish_reason=finish_reason))
        api.gw.push(SSE(events))
        response = api.collect(DEFAULT_MODEL, "call tools")
        self.assertEqual(response.finish_reason, finish_reason)
        self.assertEqual(response.message["role"], "assistant")
        self.assertIsNone(response.message["content"])
        return response

    def assert_shape(self, calls):
        for call in calls:
            self.assertEqual(set(call), {"id", "type", "function"})
            self.assertEqual(set(call["function"]), {"name", "arguments"})
            self.assertIsInstance(call["function"]["arguments"], str)
            self.assertEqual(call["type"], "function")

    def test_arguments_in_many_fragments(self):
        def body(api):
            arguments = '{"city":"Saint-Étienne","days":[1,2,3],"unit":"celsius"}'
            pieces = [arguments[i : i + 2] for i in range(0, len(arguments), 2)]
            groups = [[tool_head(0, "call_x", "get_weather", "")]]
            groups += [[{"index": 0, "function": {"arguments": p}}] for p in pieces]
            response = self.assemble(api, groups)
            self.assertEqual(response.tool_calls, [tool_call("call_x", "get_weather", arguments)])
            self.assert_shape(response.tool_calls)
            self.assertEqual(
                json.loads(response.tool_calls[0]["function"]["arguments"]),
                {"city": "Saint-Étienne", "days": [1, 2, 3], "unit": "celsius"},
            )

        self.both(body)

    def test_id_name_type_from_any_fragment(self):
        def body(api):
            groups = [
                [{"index": 0, "function": {"arguments": '{"ci'}}],
                [{"index": 0, "id": "call_late"}],
                [{"index": 0, "function": {"arguments": 'ty":'}}],
                [{"index": 0, "type": "function", "function": {"name": "get_weather"}}],
                [{"index": 0, "function": {"arguments": '"Oslo"}'}}],
            ]
            response = self.assemble(api, groups)
            self.assertEqual(
                response.tool_calls, [tool_call("call_late", "get_weather", '{"city":"Oslo"}')]
            )
            self.assert_shape(response.tool_calls)

        self.both(body)

    def test_fragments_without_index(self):
        def body(api):
            groups = [
                [{"id": "call_a", "type": "function", "function": {"name": "fa", "arguments": ""}}],
                [{"function": {"arguments": '{"x":'}}],  # no index, no id: the last open call
                [
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "fb", "arguments": '{"y":'},
                    }
                ],
                [{"function": {"arguments": "2}"}}],  # the last open call is now call_b
                [{"id": "call_a", "function": {"arguments": "1}"}}],  # routed by id
            ]
            response = self.assemble(api, groups)
            self.assertEqual(
                response.tool_calls,
                [tool_call("call_a", "fa", '{"x":1}'), tool_call("call_b", "fb", '{"y":2}')],
            )
            self.assert_shape(response.tool_calls)

        self.both(body)

    def test_many_fragments_in_one_chunk(self):
        def body(api):
            groups = [
                [
                    tool_head(0, "call_1", "add", '{"a"'),
                    {"index": 0, "function": {"arguments": ":1,"}},
                    {"index": 0, "function": {"arguments": '"b":2}'}},
                ]
            ]
            response = self.assemble(api, groups)
            self.assertEqual(response.tool_calls, [tool_call("call_1", "add", '{"a":1,"b":2}')])

        self.both(body)

    def test_indexes_out_of_order(self):
        def body(api):
            groups = [
                [tool_head(1, "call_second", "second", '{"n":')],
                [tool_head(0, "call_first", "first", '{"n":')],
                [{"index": 1, "function": {"arguments": "2}"}}],
                [{"index": 0, "function": {"arguments": "1}"}}],
            ]
            response = self.assemble(api, groups)
            self.assertEqual(
                response.tool_calls,
                [
                    tool_call("call_first", "first", '{"n":1}'),
                    tool_call("call_second", "second", '{"n":2}'),
                ],
            )

        self.both(body)

    def test_two_parallel_calls_interleaved(self):
        def body(api):
            paris, tokyo = '{"city":"Paris"}', '{"city":"Tokyo"}'
            groups = [
                [tool_head(0, "call_p", "get_weather", "")],
                [tool_head(1, "call_t", "get_time", "")],
            ]
            for i in range(0, len(paris), 3):
                groups.append([{"index": 0, "function": {"arguments": paris[i : i + 3]}}])
                groups.append([{"index": 1, "function": {"arguments": tokyo[i : i + 3]}}])
            groups.append(
                [
                    {"index": 1, "function": {"arguments": ""}},
                    {"index": 0, "function": {"arguments": ""}},
                ]
            )
            response = self.assemble(api, groups)
            self.assertEqual(
                response.tool_calls,
                [
                    tool_call("call_p", "get_weather", paris),
                    tool_call("call_t", "get_time", tokyo),
                ],
            )
            self.assert_shape(response.tool_calls)

        self.both(body)

    def test_reused_index_with_new_id_is_a_new_call(self):
        def body(api):
            groups = [
                [tool_head(0, "call_1", "first", '{"a":1}')],
                [tool_head(0, "call_2", "second", '{"b":2}')],
            ]
            response = self.assemble(api, groups)
            self.assertEqual(
                response.tool_calls,
                [tool_call("call_1", "first", '{"a":1}'), tool_call("call_2", "second", '{"b":2}')],
            )

        self.both(body)

    def test_reused_index_continuations_go_to_the_newest_call(self):
        # Providers that number every call 0 send each call's head (with a new id)
        # and then its argument pieces, still under index 0 and without an id.
        def body(api):
            groups = [
                [tool_head(0, "call_1", "first", "")],
                [{"index": 0, "function": {"arguments": '{"a":'}}],
                [{"index": 0, "function": {"arguments": "1}"}}],
                [tool_head(0, "call_2", "second", "")],
                [{"index": 0, "function": {"arguments": '{"b":'}}],
                [{"index": 0, "function": {"arguments": "2}"}}],
            ]
            response = self.assemble(api, groups)
            self.assertEqual(
                response.tool_calls,
                [tool_call("call_1", "first", '{"a":1}'), tool_call("call_2", "second", '{"b":2}')],
            )

        self.both(body)

    def test_shape_matches_send(self):
        def body(api):
            arguments = '{"city":"Rome"}'
            answer = completion_body(None, "tool_calls")
            del answer["usage"]
            answer["choices"][0]["message"]["tool_calls"] = [
                tool_call("call_r", "get_weather", arguments)
            ]
            api.gw.push(Reply(200, answer))
            sent = api.send(DEFAULT_MODEL, "Rome")
            groups = [
                [tool_head(0, "call_r", "get_weather", arguments[:5])],
                [{"index": 0, "function": {"arguments": arguments[5:]}}],
            ]
            streamed = self.assemble(api, groups)
            self.assertEqual(streamed.tool_calls, sent.tool_calls)
            self.assertEqual(streamed.message, sent.message)
            self.assertEqual(streamed.choices, sent.choices)

        self.both(body)


class ModelsTest(ClientTestCase):
    """models() and amodels(): the gateway's list as Model dataclasses."""

    def spec_example(self):
        if not os.path.exists(SPEC):
            self.skipTest("the OpenAPI spec is not beside this checkout")
        with open(SPEC, encoding="utf-8") as f:
            spec = json.load(f)
        answer = spec["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]
        return answer["application/json"]["example"]

    def test_models_match_spec_example(self):
        example = self.spec_example()

        def body(api):
            api.gw.push(Reply(200, example))
            models = api.models()
            self.assertEqual(
                models,
                [
                    edgee.Model(m["id"], m["object"], m["created"], m["owned_by"])
                    for m in example["data"]
                ],
            )
            self.assertTrue(
                all(dataclasses.is_dataclass(m) and isinstance(m, edgee.Model) for m in models)
            )
            self.assertEqual(models[0].id, "openai/gpt-5.2")
            self.assertEqual(models[0].object, "model")
            self.assertEqual(models[0].created, 1677610602)
            self.assertEqual(models[0].owned_by, "openai")
            self.assertEqual(models[1].owned_by, "anthropic")
            request = api.gw.requests[0]
            self.assertEqual((request.method, request.path), ("GET", "/v1/models"))
            self.assertEqual(request.headers["authorization"], "Bearer " + self.key)
            self.assertEqual(request.body, b"")

        self.both(body)

    def test_models_default_gateway(self):
        def body(api):
            self.assertEqual(
                [(m.id, m.owned_by) for m in api.models()],
                [("openai/gpt-5.2", "openai"), ("anthropic/claude-opus-4-6", "anthropic")],
            )

        self.both(body)

    def test_models_error(self):
        def body(api):
            api.gw.push(
                ErrorReply(401, "unauthorized", "Invalid API key"),
                ErrorReply(500, "internal_error", "An internal error occurred."),
            )
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                api.models()
            error = caught.exception
            self.assertEqual((error.status, error.code), (401, "unauthorized"))
            self.assertEqual(error.message, "Invalid API key")
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                api.models()
            self.assertEqual(caught.exception.status, 500)

        self.both(body)


def _sse_summary(chunks):
    """(role, text, finish_reason) of each chunk: what the stream gave back, in order."""
    return [(c.role, c.text, c.finish_reason) for c in chunks]


def _sse_head(kind, length=None):
    """A response head for an event stream: kind is "length", "chunked" or "close"."""
    headers = [("Content-Type", "text/event-stream"), ("Connection", "close")]
    if kind == "length":
        return http_head(200, headers, content_length=length)
    return http_head(200, headers, chunked=(kind == "chunked"))


def _sse_frame_events(events):
    """Each event as its own HTTP chunk, then the last chunk."""
    return b"".join(chunk_frame(e) for e in events) + CHUNK_END


# The sample stream of the every-offset tests: role, content with multibyte text,
# U+2028 and U+2029 (which str.splitlines would split on), finish, [DONE].
_SSE_SAMPLE = [
    _sse_delta(role="assistant"),
    _sse_delta("H\u00e9"),
    _sse_delta("\u6f22\u5b57\u2028"),
    _sse_delta("\U0001f389\u2029!"),
    _sse_delta(finish="stop"),
]
_SSE_SAMPLE_EXPECTED = [
    ("assistant", None, None),
    (None, "H\u00e9", None),
    (None, "\u6f22\u5b57\u2028", None),
    (None, "\U0001f389\u2029!", None),
    (None, None, "stop"),
]
PAUSE = 0.5  # seconds the gateway waits before the rest of a stream, in the timing tests


def _sse_sample_events(le):
    return [_sse_event_bytes(obj, le) for obj in _SSE_SAMPLE] + [b"data: [DONE]" + le + le]


def push_raw_stream(gw, body, kind="close", then="close"):
    """Queue `body` (bytes, or a list of events for chunked) as one Raw event-stream reply."""
    if kind == "chunked":
        events = body if isinstance(body, list) else [body]
        gw.push(Raw([_sse_head("chunked") + _sse_frame_events(events)], then=then))
    else:
        data = b"".join(body) if isinstance(body, list) else body
        gw.push(Raw([_sse_head(kind, len(data)) + data], then=then))


def chunks_until(test, api, error_type):
    """Stream until it raises `error_type`: (the chunks received before, the error)."""
    got = []
    with test.assertRaises(error_type) as caught:
        api.each(got.append, DEFAULT_MODEL, "hi")
    return got, caught.exception


def _sse_run_raw_jobs(test, api, jobs, workers=4):
    """Run (label, raw_parts, expected_summary) jobs over real sockets.

    The jobs are spread over `workers` threads: the first drives `api`, each other one
    an Api of the same kind with its own Gateway, so the pauses between writes overlap.
    Fails `test` with the first mismatches.
    """
    failures = []
    done = [0]
    lock = threading.Lock()
    drivers = [api] + [test.api(api.kind, test.gateway()) for _ in range(workers - 1)]

    def work(driver, group):
        try:
            for label, parts, expected in group:
                driver.gw.push(Raw(parts))
                try:
                    got = _sse_summary(driver.stream(DEFAULT_MODEL, "hi"))
                except Exception as exc:  # reported below with the job's label
                    got = f"raised {exc!r}"
                with lock:
                    done[0] += 1
                    if got != expected:
                        failures.append((label, got))
            if driver.gw.errors:
                with lock:
                    failures.append(("gateway errors", driver.gw.errors[:3]))
        except BaseException as exc:  # a broken worker must fail the test, not vanish
            with lock:
                failures.append(("worker", repr(exc)))

    groups = [jobs[i::workers] for i in range(workers)]
    threads = [
        threading.Thread(target=work, args=(d, g), daemon=True) for d, g in zip(drivers, groups)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120.0
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    test.assertFalse(any(t.is_alive() for t in threads), "a worker hung")
    test.assertEqual(failures[:5], [], f"{len(failures)} of {len(jobs)} jobs failed")
    test.assertEqual(done[0], len(jobs))


class StreamingTest(ClientTestCase):
    """Event streams over real sockets: every framing and split, line syntax, ends, timing, size.

    The random tests' seed is fresh on each run and printed on failure; set
    EDGEE_TEST_SEED to replay.
    """

    SOCKET_STREAMS = 200

    def summary(self, api):
        return _sse_summary(api.stream(DEFAULT_MODEL, "hi"))

    # -- every split offset --

    def every_offset(self, ending):
        le = _SSE_ENDINGS[ending]
        events = _sse_sample_events(le)
        plain = b"".join(events)
        chunked = _sse_frame_events(events)
        jobs = []
        for kind, body in (("length", plain), ("chunked", chunked)):
            head = _sse_head(kind, len(body))
            for k in range(len(body) + 1):
                jobs.append(
                    ((ending, kind, k), [head + body[:k], 0.002, body[k:]], _SSE_SAMPLE_EXPECTED)
                )
        self.both(lambda api: _sse_run_raw_jobs(self, api, jobs))

    def test_every_split_offset_lf(self):
        self.every_offset("LF")

    def test_every_split_offset_crlf(self):
        self.every_offset("CRLF")

    def test_every_split_offset_cr(self):
        self.every_offset("CR")

    def test_random_streams_over_sockets(self):
        seed = _sse_seed()

        def body(api):
            rng = random.Random(seed)
            for i in range(self.SOCKET_STREAMS):
                blob, expected, finish, ending = _sse_random_stream(rng)
                kind = rng.choice(("length", "chunked", "close"))
                data = blob
                if kind == "chunked":  # random chunk sizes, cut apart from the writes below
                    sizes = _sse_random_cuts(rng, blob, max_pieces=rng.randint(1, 6))
                    data = b"".join(chunk_frame(s) for s in sizes if s) + CHUNK_END
                head = _sse_head(kind, len(data))
                writes = _sse_random_cuts(rng, data, max_pieces=rng.randint(1, 8))
                parts = [head + writes[0]]
                for piece in writes[1:]:
                    if rng.random() < 0.5:
                        parts.append(rng.uniform(0.0, 0.002))
                    parts.append(piece)
                api.gw.push(Raw(parts))
                try:
                    chunks = api.stream(DEFAULT_MODEL, "hi")
                    got = (
                        [
                            (c.choices[0].delta.role, c.choices[0].delta.content)
                            for c in chunks
                            if c.choices
                        ],
                        edgee.collect(chunks).finish_reason,
                    )
                except Exception as exc:  # reported with the seed below
                    got = f"raised {exc!r}"
                if got != (expected, finish):
                    self.fail(
                        f"seed={seed} stream={i} ending={ending} framing={kind}\n"
                        f"expected {(expected, finish)!r}\ngot      {got!r}\n"
                        f"parts {parts[:40]!r}"
                    )
            self.assertEqual(len(api.gw.requests), self.SOCKET_STREAMS, f"seed={seed}")
            self.assertEqual(api.gw.errors, [], f"seed={seed}")

        self.both(body)

    # -- framings through the gateway's own SSE reply --

    def test_sse_reply_chunked_and_plain(self):
        def body(api):
            for chunked in (True, False):
                api.gw.push(SSE(_SSE_SAMPLE, chunked=chunked))
                self.assertEqual(self.summary(api), _SSE_SAMPLE_EXPECTED, chunked)

        self.both(body)

    def test_close_delimited_body_split(self):
        def body(api):
            data = b"".join(_sse_sample_events(b"\r\n"))
            api.gw.push(
                Raw([_sse_head("close") + data[:101], 0.002, data[101:202], 0.002, data[202:]])
            )
            self.assertEqual(self.summary(api), _SSE_SAMPLE_EXPECTED)

        self.both(body)

    def test_bom_split_over_the_wire(self):
        def body(api):
            data = b"".join(_sse_sample_events(b"\n"))
            head = _sse_head("close")
            api.gw.push(Raw([head + b"\xef", 0.002, b"\xbb", 0.002, b"\xbf" + data]))
            self.assertEqual(self.summary(api), _SSE_SAMPLE_EXPECTED)

        self.both(body)

    def test_utf8_character_split_between_reads_is_kept_whole(self):
        def body(api):
            event = sse_bytes(completion_chunk(content="caf\u00e9 \u20ac"))
            split = event.index(b"\xc3") + 1
            euro = event.index(b"\xe2") + 2
            parts = [
                SSE_HEAD + frames(stream_events(finish=None)),
                chunk_frame(event[:split]),
                0.02,
                chunk_frame(event[split:euro]),
                0.02,
                chunk_frame(event[euro:]),
                frames([completion_chunk(finish_reason="stop"), b"data: [DONE]\n\n"]) + CHUNK_END,
            ]
            api.gw.push(Raw(parts))
            self.assertEqual(text_of(api.stream(DEFAULT_MODEL, "hi")), "caf\u00e9 \u20ac")

        self.both(body)

    # -- line syntax --

    def test_data_without_space(self):
        def body(api):
            events = [_sse_event_bytes(obj, space=False) for obj in _SSE_SAMPLE]
            push_raw_stream(api.gw, [*events, b"data:[DONE]\n\n"], "chunked")
            self.assertEqual(self.summary(api), _SSE_SAMPLE_EXPECTED)

        self.both(body)

    def test_json_split_over_two_data_lines(self):
        def body(api):
            push_raw_stream(
                api.gw,
                b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"h\xc3\xa9"}}]}\n\n'
                b'data: {"choices":[{"index":0,"delta":{},\r\n'
                b'data:"finish_reason":"length"}]}\r\n\r\n'
                b"data: [DONE]\n\n",
            )
            self.assertEqual(self.summary(api), [(None, "h\u00e9", None), (None, None, "length")])

        self.both(body)

    def test_comments_and_fields_between_events(self):
        def body(api):
            push_raw_stream(
                api.gw,
                b": keep-alive\n\n"
                b"retry: 3000\nid: 1\n"
                + _sse_event_bytes(_sse_delta(role="assistant"))
                + b": ping\n:\n\nevent: ping\n\n"
                b"event: foo\nid: 2\n"
                + _sse_event_bytes(_sse_delta("a"))
                + b"event: message\nfoo: bar\n: note\n"
                + _sse_event_bytes(_sse_delta("b"))
                + b'Data: {"choices":[{"delta":{"content":"BAD"}}]}\n\n'
                b'Event: error\ndata: {"choices":[{"delta":{"content":"c"}}]}\n\n'
                b"id\nretry: x\n"
                + _sse_event_bytes(_sse_delta(finish="stop"))
                + b": bye\n\ndata: [DONE]\n\n",
            )
            self.assertEqual(
                self.summary(api),
                [
                    ("assistant", None, None),
                    (None, "a", None),
                    (None, "b", None),
                    (None, "c", None),
                    (None, None, "stop"),
                ],
            )

        self.both(body)

    def test_error_event_without_data_dispatches_nothing(self):
        def body(api):
            push_raw_stream(
                api.gw,
                b"event: error\n\n"
                + _sse_event_bytes(_sse_delta("a"))
                + _sse_event_bytes(_sse_delta(finish="stop"))
                + b"data: [DONE]\n\n",
            )
            self.assertEqual(self.summary(api), [(None, "a", None), (None, None, "stop")])

        self.both(body)

    # -- end of stream --

    def test_chunks_after_done_not_yielded(self):
        def body(api):
            api.gw.push(
                SSE(
                    [
                        _sse_delta("a"),
                        _sse_delta(finish="stop"),
                        b"data: [DONE]\n\n",
                        _sse_delta("late"),
                        _sse_delta(finish="length"),
                    ],
                    done=True,
                )
            )
            self.assertEqual(self.summary(api), [(None, "a", None), (None, None, "stop")])

        self.both(body)

    def test_done_ends_stream_while_server_holds_connection(self):
        # [DONE] ends the stream by itself: no waiting for the server to close.
        def body(api):
            event = _sse_event_bytes(_sse_delta("a"))
            api.gw.push(Raw([_sse_head("close") + event + b"data: [DONE]\n\n"], then="hold"))
            start = time.monotonic()
            self.assertEqual(self.summary(api), [(None, "a", None)])
            self.assertLess(time.monotonic() - start, 2.0)

        self.both(body)

    def test_unfinished_event_at_eof_discarded(self):
        def body(api):
            tail = b'data: {"choices":[{"index":0,"delta":{"content":"LATE"}}]}\n'
            for kind in ("close", "length", "chunked"):
                events = [
                    _sse_event_bytes(_sse_delta("a")),
                    _sse_event_bytes(_sse_delta(finish="stop")),
                    tail,
                ]
                push_raw_stream(api.gw, events, kind)
                expected = [(None, "a", None), (None, None, "stop")]
                self.assertEqual(self.summary(api), expected, kind)

        self.both(body)

    def test_full_completion_to_a_stream_request(self):
        def body(api):
            api.gw.push(Reply(200, completion_body("The whole answer at once")))
            chunks = api.stream(DEFAULT_MODEL, "hi")
            self.assertEqual(text_of(chunks), "The whole answer at once")
            self.assertEqual(chunks[-1].finish_reason, "stop")
            self.assertEqual(chunks[0].role, "assistant")
            api.gw.push(Reply(200, completion_body("Again")))
            self.assertEqual(api.collect(DEFAULT_MODEL, "hi").text, "Again")

        self.both(body)

    # -- timing --

    def assert_first_chunk_early(self, parts, expected):
        def body(api):
            api.gw.push(Raw(parts))
            arrivals = []
            start = time.monotonic()
            api.each(lambda c: arrivals.append((time.monotonic() - start, c)), DEFAULT_MODEL, "hi")
            total = time.monotonic() - start
            self.assertEqual(_sse_summary([c for _, c in arrivals]), expected)
            self.assertLess(arrivals[0][0], PAUSE / 2, "the first chunk waited for the next bytes")
            self.assertGreaterEqual(total, PAUSE * 0.9)  # the pause did happen

        self.both(body)

    def test_chunk_yielded_before_more_bytes_length(self):
        events = _sse_sample_events(b"\n")
        body = b"".join(events)
        self.assert_first_chunk_early(
            [_sse_head("length", len(body)) + events[0], PAUSE, b"".join(events[1:])],
            _SSE_SAMPLE_EXPECTED,
        )

    def test_chunk_yielded_before_more_bytes_chunked(self):
        # The chunk's own CRLF and the next frames come after the pause.
        events = _sse_sample_events(b"\r\n")
        framed = _sse_frame_events(events)
        cut = len(chunk_frame(events[0])) - 2
        self.assert_first_chunk_early(
            [_sse_head("chunked") + framed[:cut], PAUSE, framed[cut:]], _SSE_SAMPLE_EXPECTED
        )

    def test_chunk_yielded_before_more_bytes_cr(self):
        # CR-only line ends: the final CR must not wait to see whether an LF follows.
        events = _sse_sample_events(b"\r")
        self.assert_first_chunk_early(
            [_sse_head("close") + events[0], PAUSE, b"".join(events[1:])], _SSE_SAMPLE_EXPECTED
        )

    # -- size --

    def test_large_events(self):
        def body(api):
            content = "\u00e9\u6f22\U0001f389\u2028" * 90000  # 1.08 MB of UTF-8 in one data line
            self.assertGreater(len(content.encode("utf-8")), 1000000)
            for chunked in (True, False):
                api.gw.push(
                    SSE(
                        [
                            _sse_delta(role="assistant"),
                            _sse_delta(content),
                            _sse_delta("end"),
                            _sse_delta(finish="stop"),
                        ],
                        chunked=chunked,
                    )
                )
                chunks = api.stream(DEFAULT_MODEL, "hi")
                self.assertEqual([c.text for c in chunks], [None, content, "end", None])
                self.assertEqual(chunks[-1].finish_reason, "stop")
            big = "y" * (2 * 1024 * 1024)
            api.gw.push(SSE(stream_events(big)))
            chunks = api.stream(DEFAULT_MODEL, "hi")
            self.assertEqual(len(chunks), 3)
            self.assertEqual(chunks[1].text, big)

        self.both(body)


# (status, code) of the gateway's ErrorResponse envelopes (edgee-error-codes.yml)
ERROR_CASES = [
    (400, "bad_model_id"),
    (400, "model_not_found"),
    (401, "unauthorized"),
    (403, "forbidden"),
    (429, "usage_limit_exceeded"),
    (500, "internal_error"),
    (502, "provider_error"),
]


class ErrorsTest(ClientTestCase):
    """Error answers and errors inside a stream raise EdgeeAPIError or EdgeeStreamError."""

    def check(self, exc, status, message):
        self.assertIsInstance(exc, RuntimeError)
        self.assertIsInstance(exc, edgee.EdgeeAPIError)
        self.assertEqual(str(exc), f"API error {status}: {message}")
        self.assertEqual(exc.status, status)
        self.assertEqual(exc.status_code, status)
        self.assertEqual(exc.message, message)

    # -- error answers --

    def test_error_envelopes(self):
        def body(api):
            for status, code in ERROR_CASES:
                _, kind, message = ERROR_CODES[code]
                reply = ErrorReply(status, code, message, param="model")
                for call in ("send", "stream"):
                    with self.subTest(status=status, code=code, call=call):
                        api.gw.push(reply)
                        before = len(api.gw.requests)
                        with self.assertRaises(RuntimeError) as caught:
                            if call == "send":
                                api.send(DEFAULT_MODEL, "x")
                            else:
                                api.stream(DEFAULT_MODEL, "x")
                        exc = caught.exception
                        self.check(exc, status, message)
                        self.assertEqual((exc.code, exc.type, exc.param), (code, kind, "model"))
                        self.assertEqual(exc.body, reply.body)
                        self.assertEqual(exc.headers.get("content-type"), "application/json")
                        self.assertEqual(len(api.gw.requests) - before, 1, "max_retries=0")

        self.both(body)

    def test_fake_llm_error_models(self):
        def body(api):
            for status in (400, 401, 403, 429, 500, 502):
                with self.subTest(status=status):
                    code = STATUS_CODES[status]
                    with self.assertRaises(edgee.EdgeeAPIError) as caught:
                        api.send(f"error-{status}", "x")
                    self.check(caught.exception, status, ERROR_CODES[code][2])
                    self.assertEqual(caught.exception.code, code)

        self.both(body)

    def test_forbidden_key_and_bad_model(self):
        def body(api):
            forbidden = self.api(api.kind, api.gw, api_key="forbidden-key")
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                forbidden.send(DEFAULT_MODEL, "x")
            self.check(caught.exception, 403, "API key is inactive")
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                api.send("invalid-model", "x")
            self.check(caught.exception, 400, "Invalid model ID: 'invalid-model'")
            error = caught.exception
            self.assertEqual((error.code, error.param), ("bad_model_id", "model"))

        self.both(body)

    def test_html_error_body(self):
        def body(api):
            html = (
                "<html><head><title>502 Bad Gateway</title></head>"
                "<body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
            )
            api.gw.push(Reply(502, html, content_type="text/html"))
            with self.assertRaises(RuntimeError) as caught:
                api.send(DEFAULT_MODEL, "x")
            exc = caught.exception
            self.assertIsInstance(exc, edgee.EdgeeAPIError)
            self.assertTrue(str(exc).startswith("API error 502: "), str(exc))
            self.assertIn("502 Bad Gateway", str(exc))
            self.assertEqual(exc.status, 502)
            self.assertIsNone(exc.code)
            self.assertIn("nginx", str(exc.body))
            api.gw.push(Reply(502, html, content_type="text/html"))
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                api.stream(DEFAULT_MODEL, "x")
            self.assertIn("502 Bad Gateway", str(caught.exception))

        self.both(body)

    def test_invalid_utf8_error_body(self):
        def body(api):
            api.gw.push(Reply(500, b"\xff\xfe oops \x80\xc3( broken", content_type="text/plain"))
            try:
                api.send(DEFAULT_MODEL, "x")
            except UnicodeDecodeError as exc:  # pragma: no cover - the failure being tested for
                self.fail(f"UnicodeDecodeError leaked: {exc!r}")
            except edgee.EdgeeAPIError as exc:
                self.assertTrue(str(exc).startswith("API error 500: "), str(exc))
                self.assertIn("oops", str(exc))
                self.assertIn("broken", str(exc))
                self.assertEqual(exc.status, 500)
            else:
                self.fail("no error raised")

        self.both(body)

    def test_long_error_body_is_bounded(self):
        def body(api):
            api.gw.push(Reply(400, "<p>" + "x" * 200000 + "</p>", content_type="text/html"))
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                api.send(DEFAULT_MODEL, "x")
            text = str(caught.exception)
            self.assertTrue(text.startswith("API error 400: <p>xxx"), text[:50])
            self.assertLess(len(text), 5000)
            huge = "m" * 20000  # an envelope well within the 64 KiB an error body may take
            api.gw.push(ErrorReply(400, "invalid_request", huge))
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                api.send(DEFAULT_MODEL, "x")
            self.assertTrue(str(caught.exception).startswith("API error 400: mmm"))
            self.assertLess(len(str(caught.exception)), 5000)

        self.both(body)

    def test_huge_error_body_gives_a_bounded_message(self):
        def body(api):
            sentence = b"The gateway is on fire. "
            huge = sentence * (10 * 1024 * 1024 // len(sentence))  # 10 MB
            api.gw.push(Reply(400, huge, content_type="text/plain"))
            tracemalloc.start()
            try:
                start = time.monotonic()
                with self.assertRaises(edgee.EdgeeAPIError) as cm:
                    api.send(DEFAULT_MODEL, "hi")
                elapsed = time.monotonic() - start
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            exc = cm.exception
            self.assertEqual(exc.status, 400)
            self.assertTrue(exc.message.startswith("The gateway is on fire."), exc.message[:80])
            self.assertTrue(exc.message.endswith("..."))
            self.assertLessEqual(len(exc.message), 1003)
            self.assertLessEqual(len(str(exc)), 1100)
            self.assertLessEqual(len(exc.body), 70000)  # only the first 64 KiB were read
            self.assertLess(peak, 5 * 1024 * 1024, "the client buffered the whole error body")
            self.assertLess(elapsed, 3.0)
            self.assertTrue(api.gw.wait_disconnects(1, 3.0), "the connection was not dropped")
            self.assertEqual(api.send(DEFAULT_MODEL, "next").text, "Echo: next")
            self.assertEqual(api.gw.connections, 2)  # the half-read connection was not reused

        self.both(body, max_retries=2)

    def test_empty_error_body(self):
        def body(api):
            api.gw.push(Reply(404, b"", content_type="text/plain"))
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                api.send(DEFAULT_MODEL, "x")
            text = str(caught.exception)
            self.assertTrue(text.startswith("API error 404: "), text)
            self.assertTrue(text[len("API error 404: ") :].strip(), "the message must not be empty")

        self.both(body)

    def test_console_api_envelope(self):
        # edgee-error-codes.yml: the console API's {"error": "<Status>", "message": "<detail>"}
        def body(api):
            envelope = {"error": "Unauthorized", "message": "Invalid or expired API token"}
            api.gw.push(Reply(401, envelope))
            with self.assertRaises(edgee.EdgeeAPIError) as caught:
                api.send(DEFAULT_MODEL, "x")
            self.check(caught.exception, 401, "Invalid or expired API token")

        self.both(body)

    def test_json_error_envelope_to_a_stream_request(self):
        def body(api):
            envelope = {
                "error": {
                    "message": "Usage limit exceeded",
                    "type": "rate_limit_error",
                    "code": "usage_limit_exceeded",
                }
            }
            api.gw.push(Reply(200, envelope))
            with self.assertRaises(edgee.EdgeeAPIError) as cm:
                api.stream(DEFAULT_MODEL, "hi")
            self.assertEqual(
                (cm.exception.message, cm.exception.code),
                ("Usage limit exceeded", "usage_limit_exceeded"),
            )

        self.both(body, max_retries=2)

    # -- errors inside a 200 stream, after the chunks before them --

    def test_error_object_in_a_stream(self):
        def body(api):
            api.gw.push(
                SSE(
                    [
                        completion_chunk(role="assistant"),
                        {
                            "error": {
                                "message": "upstream broke",
                                "type": "provider_error",
                                "code": "provider_error",
                            }
                        },
                    ],
                    done=False,
                )
            )
            got, exc = chunks_until(self, api, RuntimeError)
            self.assertEqual(len(got), 1)
            self.assertIsInstance(exc, edgee.EdgeeAPIError)
            self.assertTrue(str(exc).startswith("API error "))
            self.assertTrue(str(exc).endswith(": upstream broke"))
            self.assertEqual(exc.code, "provider_error")
            error = {
                "error": {
                    "message": "The upstream provider exploded",
                    "type": "provider_error",
                    "code": "provider_error",
                }
            }
            before = len(api.gw.requests)
            api.gw.push(SSE([*stream_events("Hel", "lo", finish=None), error], done=False))
            got, exc = chunks_until(self, api, edgee.EdgeeAPIError)
            self.assertEqual(text_of(got), "Hello")
            self.assertEqual(len(got), 3)
            self.assertEqual(exc.message, "The upstream provider exploded")
            self.assertEqual(exc.code, "provider_error")
            self.assertEqual(exc.status, 502)  # the status the gateway uses for the code
            self.assertIn("The upstream provider exploded", str(exc))
            self.assertEqual(len(api.gw.requests) - before, 1)  # not retried
            error = {
                "error": {
                    "message": "Usage limit exceeded",
                    "type": "rate_limit_error",
                    "code": "usage_limit_exceeded",
                }
            }
            api.gw.push(
                SSE(
                    [
                        _sse_delta(role="assistant"),
                        _sse_delta("x"),
                        error,
                        _sse_delta("y"),
                        _sse_delta(finish="stop"),
                    ],
                    chunked=False,
                )
            )
            got, exc = chunks_until(self, api, edgee.EdgeeAPIError)
            self.assertEqual([c.text for c in got], [None, "x"])
            self.assertIsInstance(exc, RuntimeError)
            self.assertEqual(
                (exc.message, exc.code), ("Usage limit exceeded", "usage_limit_exceeded")
            )

        self.both(body, max_retries=2)

    def test_error_event_in_a_stream(self):
        def body(api):
            error = {
                "error": {
                    "message": "The upstream provider failed \u00e9",
                    "type": "provider_error",
                    "code": "provider_error",
                }
            }
            api.gw.push(
                SSE(
                    [
                        _sse_delta("a"),
                        _sse_delta("b"),
                        b"event: error\ndata: " + compact_json(error) + b"\n\n",
                        _sse_delta("c"),
                        _sse_delta(finish="stop"),
                    ]
                )
            )
            got, exc = chunks_until(self, api, edgee.EdgeeAPIError)
            self.assertEqual([c.text for c in got], ["a", "b"])
            self.assertIsInstance(exc, RuntimeError)
            self.assertEqual(
                (exc.message, exc.code), ("The upstream provider failed \u00e9", "provider_error")
            )
            self.assertIn("The upstream provider failed", str(exc))
            payload = compact_json(
                {"error": {"message": "Overloaded, try later", "code": "internal_error"}}
            )
            api.gw.push(
                SSE(
                    [
                        *stream_events("Hi", " there", finish=None),
                        b"event: error\ndata: " + payload + b"\n\n",
                        completion_chunk(content="never"),
                    ]
                )
            )
            got, exc = chunks_until(self, api, edgee.EdgeeAPIError)
            self.assertEqual(text_of(got), "Hi there")
            self.assertEqual((exc.message, exc.code), ("Overloaded, try later", "internal_error"))
            self.assertIsInstance(exc, RuntimeError)

        self.both(body, max_retries=2)

    def test_error_event_with_text_data(self):
        def body(api):
            push_raw_stream(
                api.gw,
                _sse_event_bytes(_sse_delta("a"))
                + b"event: error\r\ndata: upstream overloaded\r\n\r\n"
                + _sse_event_bytes(_sse_delta(finish="stop"))
                + b"data: [DONE]\n\n",
            )
            got, exc = chunks_until(self, api, edgee.EdgeeAPIError)
            self.assertEqual([c.text for c in got], ["a"])
            self.assertEqual(exc.message, "upstream overloaded")
            api.gw.push(
                SSE([*stream_events("Hi", finish=None), b"event: error\ndata: boom happened\n\n"])
            )
            got, exc = chunks_until(self, api, edgee.EdgeeAPIError)
            self.assertEqual(text_of(got), "Hi")
            self.assertIn("boom happened", str(exc))

        self.both(body, max_retries=2)

    # -- malformed events --

    def bad_event_between_good_ones(self, api, bad_event):
        """Stream a good chunk, `bad_event`, then more: the error comes after the first chunk."""
        before = len(api.gw.requests)
        api.gw.push(
            SSE(
                [
                    completion_chunk(role="assistant"),
                    bad_event,
                    completion_chunk(content="never"),
                    completion_chunk(finish_reason="stop"),
                ]
            )
        )
        got, exc = chunks_until(self, api, edgee.EdgeeStreamError)
        self.assertEqual(len(got), 1)  # the bad event was not skipped over
        self.assertEqual(len(api.gw.requests) - before, 1)
        self.assertNotIsInstance(exc, edgee.EdgeeAPIError)
        return exc

    def test_malformed_json_raises(self):
        def body(api):
            error = self.bad_event_between_good_ones(api, b"data: {not json\n\n")
            self.assertIn("JSON", str(error))
            error = self.bad_event_between_good_ones(api, b"data: [1, 2]\n\n")
            self.assertIn("not a JSON object", str(error))
            for bad in (
                b'data: {"choices": [\n\n',
                b"data: not json\n\n",
                b'data: {"choices":[]}}\n\n',
            ):
                api.gw.push(SSE([_sse_delta("a"), bad, _sse_delta("b"), _sse_delta(finish="stop")]))
                got, exc = chunks_until(self, api, edgee.EdgeeStreamError)
                self.assertEqual([c.text for c in got], ["a"], bad)
                self.assertNotIsInstance(exc, edgee.EdgeeAPIError)

        self.both(body, max_retries=2)


class PlainHTTPServer:
    """A plain-HTTP/1.1 server on 127.0.0.1 that answers any bytes with 400 at once
    (as a real HTTP server answers a TLS ClientHello); at most a few connections."""

    def __init__(self):
        self._stop = threading.Event()
        self.connections = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name="plain-http", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set() and self.connections < 8:
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            try:
                conn.settimeout(5.0)
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 11\r\nConnection: close\r\n\r\nBad Request"
                )
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()


class ConnectionErrorsTest(ClientTestCase):
    """Network failures raise EdgeeConnectionError: a RuntimeError, a URLError, an OSError."""

    def assert_connection_error(self, exc, *words):
        for kind in (
            RuntimeError,
            edgee.EdgeeError,
            edgee.EdgeeConnectionError,
            urllib.error.URLError,  # what the official package raised
            OSError,
        ):
            self.assertIsInstance(exc, kind)
        message = str(exc)
        self.assertTrue(message.strip())
        self.assertFalse(message.startswith("API error"))
        self.assertIsInstance(exc.reason, str)
        for word in words:
            self.assertIn(word.lower(), message.lower())
        self.assertNotIn(self.key, everything(exc))

    def test_connection_refused(self):
        def body(api):
            port = free_port()
            refused = self.api(api.kind, f"http://127.0.0.1:{port}")
            with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                refused.send(DEFAULT_MODEL, "hi")
            self.assert_connection_error(cm.exception, "refused", f"127.0.0.1:{port}")
            with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                refused.stream(DEFAULT_MODEL, "hi")
            self.assert_connection_error(cm.exception, "refused", f"127.0.0.1:{port}")

        self.both(body)

    def test_unresolvable_host(self):
        host = "nonexistent.invalid"
        probe = []

        def resolve():
            try:
                socket.getaddrinfo(host, 80)
            except OSError as exc:
                probe.append(exc)
            else:
                probe.append(None)

        thread = threading.Thread(target=resolve, daemon=True)
        thread.start()
        thread.join(3.0)
        if not probe:
            self.skipTest(f"resolving {host} hangs on this machine (no answer in 3 s)")
        if probe[0] is None:
            self.skipTest(f"this machine's resolver answers for {host}")

        def body(api):
            unresolvable = self.api(api.kind, f"http://{host}")
            outcome = []

            def call():
                try:
                    unresolvable.send(DEFAULT_MODEL, "hi")
                except BaseException as exc:
                    outcome.append(exc)

            start = time.monotonic()
            worker = threading.Thread(target=call, daemon=True)
            worker.start()
            worker.join(10.0)
            self.assertFalse(worker.is_alive(), f"the client hung resolving {host}")
            self.assertLess(time.monotonic() - start, 5.0)
            self.assertEqual(len(outcome), 1)
            self.assertIsInstance(outcome[0], edgee.EdgeeConnectionError)
            self.assert_connection_error(outcome[0], "resolve", host)

        self.both(body)

    def test_tls_client_against_plain_http(self):
        def body(api):
            server = PlainHTTPServer()
            self.addCleanup(server.close)
            client = self.api(
                api.kind, f"https://127.0.0.1:{server.port}", timeout=3, max_retries=2
            )
            start = time.monotonic()
            with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                client.send(DEFAULT_MODEL, "hi")
            self.assertLess(time.monotonic() - start, 2.5)
            self.assertNotIsInstance(cm.exception, edgee.EdgeeTimeoutError)
            self.assert_connection_error(cm.exception, "TLS")

        self.both(body)

    def test_tls_untrusted_certificate(self):
        def body(api):
            gw = api.gw
            untrusting = self.drive(  # the default context does not trust the test CA
                api.kind, edgee.Edgee(api_key=self.key, base_url=gw.url, timeout=5), gw
            )
            with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                untrusting.send(DEFAULT_MODEL, "hi")
            self.assert_connection_error(cm.exception, "certificate")
            time.sleep(0.05)
            self.assertEqual(gw.requests, [])  # the key never went over the unverified channel
            self.assertEqual(api.send(DEFAULT_MODEL, "tls").text, "Echo: tls")

        self.both(body, tls=True)

    def test_timeout(self):
        def body(api):
            api.gw.push(Raw([STALL]))
            exc = assert_quick_timeout(self, lambda: api.send(DEFAULT_MODEL, "hi"), api.gw)
            self.assert_connection_error(exc, f"127.0.0.1:{api.gw.port}")

        self.both(body, timeout=QUICK, max_retries=2)

    def test_reset_before_the_answer(self):
        def body(api):
            api.gw.push(Raw([], then="reset"))
            with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                api.send(DEFAULT_MODEL, "hi")
            self.assert_connection_error(cm.exception, f"127.0.0.1:{api.gw.port}")

        self.both(body)

    def test_reset_inside_the_answer(self):
        def body(api):
            head = http_head(200, [("Content-Type", "application/json")], content_length=100)
            api.gw.push(Raw([head, b'{"id":"chatcmpl', 0.05], then="reset"))
            with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                api.send(DEFAULT_MODEL, "hi")
            self.assert_connection_error(cm.exception)

        self.both(body)

    def test_empty_reply(self):
        def body(api):
            api.gw.push(Raw([]))  # closes without a byte of answer
            with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                api.send(DEFAULT_MODEL, "hi")
            self.assert_connection_error(cm.exception, "closed", f"127.0.0.1:{api.gw.port}")

        self.both(body)

    def test_garbage_instead_of_http(self):
        def body(api):
            api.gw.push(
                Raw([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]),
                Raw([b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n"]),
            )
            for _ in range(2):
                with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                    api.send(DEFAULT_MODEL, "hi")
                self.assert_connection_error(cm.exception, f"127.0.0.1:{api.gw.port}")

        self.both(body)


class TimeoutTest(ClientTestCase):
    """A stalled gateway raises EdgeeTimeoutError about `timeout` seconds later."""

    def test_stall_before_status_line_every_way_to_set_the_timeout(self):
        def body(api):
            key, url = self.key, api.gw.url
            config = edgee.EdgeeConfig(api_key=key, base_url=url, timeout=QUICK)
            ways = [
                ("config dict", {"api_key": key, "base_url": url, "timeout": QUICK}, {}, "send"),
                ("config object", config, {}, "send"),
                ("keyword", None, {"timeout": QUICK}, "send"),
                ("keyword", None, {"timeout": QUICK}, "stream"),
                ("per call", None, {}, "send"),
                ("per call", None, {}, "stream"),
            ]
            for way, config, options, call in ways:
                with self.subTest(way=way, call=call):
                    if config is None:
                        options = dict(options, api_key=key, base_url=url)
                    client = self.drive(api.kind, edgee.Edgee(config, **options))
                    per_call = {"timeout": QUICK} if way == "per call" else {}
                    method = getattr(client, call)
                    api.gw.push(Raw([STALL]))  # reads the request, then says nothing
                    exc = assert_quick_timeout(
                        self, lambda m=method, o=per_call: m(DEFAULT_MODEL, "hi", **o), api.gw
                    )
                    self.assertIn(str(QUICK), str(exc))  # the message names the timeout

        self.both(body)

    def test_per_call_timeout_overrides_a_shorter_client_timeout(self):
        def body(api):
            data = compact_json(completion_body("late but fine"))
            # Raw closes after its answer: say so, or the next call may race the close.
            head = http_head(
                200,
                [("Content-Type", "application/json"), ("Connection", "close")],
                content_length=len(data),
            )
            api.gw.push(Raw([2 * QUICK, head + data]))
            self.assertEqual(api.send(DEFAULT_MODEL, "hi", timeout=5).text, "late but fine")
            events = stream_events("slow")
            api.gw.push(SSE([events[0], 2 * QUICK, *events[1:]]))
            self.assertEqual(text_of(api.stream(DEFAULT_MODEL, "hi", timeout=5)), "slow")

        self.both(body, timeout=QUICK)

    def test_stall_after_the_headers(self):
        def body(api):
            api.gw.push(Raw([SSE_HEAD, STALL]))
            exc = assert_quick_timeout(self, lambda: api.stream(DEFAULT_MODEL, "hi"), api.gw)
            self.assertIn(str(QUICK), str(exc))
            head = http_head(200, [("Content-Type", "application/json")], content_length=80)
            api.gw.push(Raw([head, b'{"id":"chatcmpl-test",', STALL]))
            assert_quick_timeout(self, lambda: api.send(DEFAULT_MODEL, "hi"), api.gw)

        self.both(body, timeout=QUICK, max_retries=2)

    def test_stall_in_the_middle_of_a_stream(self):
        def body(api):
            events = stream_events("Hel", "lo", " world")
            api.gw.push(SSE([*events[:3], STALL, *events[3:]]))
            got = []
            assert_quick_timeout(self, lambda: api.each(got.append, DEFAULT_MODEL, "hi"), api.gw)
            self.assertEqual(text_of(got), "Hello")  # everything before the stall was yielded
            self.assertEqual(len(got), 3)

        self.both(body, timeout=QUICK, max_retries=2)

    def test_slow_stream_that_keeps_sending_does_not_time_out(self):
        def body(api):
            pieces = [f"p{i} " for i in range(8)]
            pause = QUICK / 3
            events = [completion_chunk(role="assistant")]
            for piece in pieces:
                events += [pause, completion_chunk(content=piece)]
            events += [pause, completion_chunk(finish_reason="stop")]
            api.gw.push(SSE(events))
            start = time.monotonic()
            chunks = api.stream(DEFAULT_MODEL, "hi")
            elapsed = time.monotonic() - start
            self.assertGreater(elapsed, 2 * QUICK)  # the whole answer outlasted the timeout
            self.assertEqual(text_of(chunks), "".join(pieces))
            self.assertEqual(chunks[-1].finish_reason, "stop")

        self.both(body, timeout=QUICK, max_retries=2)


class RetryTest(ClientTestCase):
    """max_retries (default 2), which answers are retried, and how long the client waits."""

    def test_retryable_statuses_then_success(self):
        def body(api):
            for status in (429, 500, 502, 503, 504, 408, 409):
                with self.subTest(status=status):
                    retrying = self.api(api.kind, max_retries=None)  # the default: 2
                    gw = retrying.gw
                    gw.push(ErrorReply(status, None, f"busy {status}", headers=FAST_RETRY))
                    self.assertEqual(retrying.send(DEFAULT_MODEL, "hi").text, "Echo: hi")
                    self.assertEqual(len(gw.requests), 2)
                    self.assertEqual(gw.requests[0].body, gw.requests[1].body)
                    auth = gw.requests[1].headers.get("authorization")
                    self.assertEqual(auth, "Bearer " + self.key)
                    gw.push(
                        ErrorReply(status, None, "busy", headers=FAST_RETRY),
                        ErrorReply(status, None, "still busy", headers=FAST_RETRY),
                    )
                    self.assertEqual(
                        text_of(retrying.stream(DEFAULT_MODEL, "again")), "Echo: again"
                    )
                    self.assertEqual(len(gw.requests), 5)

        self.both(body)

    def test_exhausted_retries_raise_the_last_error(self):
        def body(api):
            for retries, stream in ((None, False), (None, True), (0, False), (4, True)):
                with self.subTest(max_retries=retries, stream=stream):
                    retrying = self.api(api.kind, max_retries=retries)  # None: the default
                    gw = retrying.gw
                    attempts = (2 if retries is None else retries) + 1
                    gw.push(
                        *[
                            ErrorReply(503, None, f"attempt {i + 1}", headers=FAST_RETRY)
                            for i in range(attempts)
                        ]
                    )
                    gw.push(Reply(200, completion_body("one too many")))  # a further retry's
                    with self.assertRaises(edgee.EdgeeAPIError) as cm:
                        if stream:
                            retrying.stream(DEFAULT_MODEL, "hi")
                        else:
                            retrying.send(DEFAULT_MODEL, "hi")
                    self.assertEqual(cm.exception.status, 503)
                    self.assertEqual(cm.exception.message, f"attempt {attempts}")
                    self.assertEqual(len(gw.requests), attempts)

        self.both(body)

    def test_client_errors_are_never_retried(self):
        def body(api):
            slept = api.fake_sleep()
            for status in (400, 401, 403):
                with self.subTest(status=status):
                    code = STATUS_CODES[status]
                    before = len(api.gw.requests)
                    headers = {"retry-after-ms": "1", "Retry-After": "0"}
                    api.gw.push(ErrorReply(status, code, f"no {status}", headers=headers))
                    with self.assertRaises(edgee.EdgeeAPIError) as cm:
                        api.send(DEFAULT_MODEL, "hi")  # the fake LLM would answer a retry
                    self.assertEqual((cm.exception.status, cm.exception.code), (status, code))
                    api.gw.push(ErrorReply(status, code, "no", headers=FAST_RETRY))
                    with self.assertRaises(edgee.EdgeeAPIError):
                        api.stream(DEFAULT_MODEL, "hi")
                    self.assertEqual(len(api.gw.requests) - before, 2)
                    self.assertEqual(slept, [])

        self.both(body, max_retries=5)

    def test_connection_refused_is_retried_with_growing_backoff(self):
        def body(api):
            refused = self.api(api.kind, f"http://127.0.0.1:{free_port()}", max_retries=4)
            slept = refused.fake_sleep()
            with self.assertRaises(edgee.EdgeeConnectionError) as cm:
                refused.send(DEFAULT_MODEL, "hi")
            self.assertIn("refused", str(cm.exception))
            self.assertEqual(len(slept), 4)  # 5 attempts: the first and 4 retries
            for attempt, delay in enumerate(slept):
                nominal = min(0.5 * 2**attempt, 8.0)
                self.assertGreaterEqual(delay, 0.75 * nominal - 1e-9)
                self.assertLessEqual(delay, nominal + 1e-9)
            self.assertEqual(slept, sorted(slept))
            self.assertLess(slept[0], slept[-1])

        self.both(body)

    def test_connection_refused_measured(self):
        def body(api):
            refused = self.api(api.kind, f"http://127.0.0.1:{free_port()}", max_retries=1)
            start = time.monotonic()
            with self.assertRaises(edgee.EdgeeConnectionError):
                refused.send(DEFAULT_MODEL, "hi")
            elapsed = time.monotonic() - start
            self.assertGreaterEqual(elapsed, 0.3)  # one real backoff of 0.375-0.5 s
            self.assertLess(elapsed, 2.0)

        self.both(body)

    def test_dropped_connections_are_retried(self):
        def body(api):
            for then in ("close", "reset"):
                with self.subTest(then=then):
                    retrying = self.api(api.kind, max_retries=2)
                    gw = retrying.gw
                    slept = retrying.fake_sleep()
                    gw.push(Raw([], then=then))  # reads the request, answers nothing
                    self.assertEqual(retrying.send(DEFAULT_MODEL, "hi").text, "Echo: hi")
                    self.assertEqual(len(gw.requests), 2)
                    self.assertEqual(len(slept), 1)
                    gw.push(Raw([], then=then), Raw([], then=then))
                    self.assertEqual(text_of(retrying.stream(DEFAULT_MODEL, "yo")), "Echo: yo")
                    self.assertEqual(len(gw.requests), 5)

        self.both(body)

    def retried_after(self, api, *replies):
        """The delays slept for `replies` (error answers), then success."""
        retrying = self.api(api.kind, max_retries=len(replies))
        slept = retrying.fake_sleep()
        retrying.gw.push(*replies)
        self.assertEqual(retrying.send(DEFAULT_MODEL, "hi").text, "Echo: hi")
        self.assertEqual(len(retrying.gw.requests), len(replies) + 1)
        return slept

    def slow_down(self, headers):
        return ErrorReply(429, "usage_limit_exceeded", "slow down", headers=headers)

    def test_retry_after_seconds(self):
        def body(api):
            for value, delay in (("0", 0.0), ("2", 2.0), ("60", 60.0)):
                slept = self.retried_after(api, self.slow_down({"Retry-After": value}))
                self.assertEqual(slept, [delay])

        self.both(body)

    def test_retry_after_http_date(self):
        def body(api):
            date = email.utils.formatdate(time.time() + 3, usegmt=True)
            slept = self.retried_after(api, self.slow_down({"Retry-After": date}))
            self.assertEqual(len(slept), 1)
            self.assertGreater(slept[0], 1.0)
            self.assertLessEqual(slept[0], 3.5)
            past = email.utils.formatdate(time.time() - 60, usegmt=True)
            self.assertEqual(self.retried_after(api, self.slow_down({"Retry-After": past})), [0.0])

        self.both(body)

    def test_retry_after_ms(self):
        def body(api):
            ms = {"retry-after-ms": "250"}
            self.assertEqual(self.retried_after(api, self.slow_down(ms)), [0.25])
            # the finer header wins over Retry-After
            both = {"retry-after-ms": "250", "Retry-After": "30"}
            self.assertEqual(self.retried_after(api, self.slow_down(both)), [0.25])
            # the server's pause counts whatever the attempt; without one, backoff
            busy = ErrorReply(503, None, "busy")
            slept = self.retried_after(api, busy, busy, self.slow_down({"retry-after-ms": "1500"}))
            self.assertEqual(slept[2], 1.5)
            for attempt, delay in enumerate(slept[:2]):
                nominal = 0.5 * 2**attempt
                self.assertTrue(0.75 * nominal - 1e-9 <= delay <= nominal + 1e-9, slept)

        self.both(body)

    def test_unreadable_retry_headers_mean_backoff(self):
        def body(api):
            for headers in ({"Retry-After": "soon"}, {"Content-Type": "application/json"}):
                slept = self.retried_after(api, ErrorReply(503, None, "busy", headers=headers))
                self.assertEqual(len(slept), 1)
                self.assertTrue(0.375 - 1e-9 <= slept[0] <= 0.5 + 1e-9, (headers, slept))

        self.both(body)

    def test_retry_after_beyond_the_cap_raises_at_once(self):
        def body(api):
            far_date = email.utils.formatdate(time.time() + 3600, usegmt=True)
            for headers in (
                {"Retry-After": "120"},
                {"Retry-After": "61"},
                {"retry-after-ms": "61000"},
                {"retry-after-ms": "60001"},
                {"Retry-After": far_date},
            ):
                with self.subTest(headers=headers):
                    retrying = self.api(api.kind, max_retries=2)
                    gw = retrying.gw
                    slept = retrying.fake_sleep()  # a regression must not hang the suite
                    gw.push(
                        ErrorReply(429, "usage_limit_exceeded", "come back later", headers=headers)
                    )
                    start = time.monotonic()
                    with self.assertRaises(edgee.EdgeeAPIError) as cm:
                        retrying.send(DEFAULT_MODEL, "hi")
                    self.assertLess(time.monotonic() - start, 1.0)
                    error = cm.exception
                    self.assertEqual((error.status, error.message), (429, "come back later"))
                    self.assertEqual((slept, len(gw.requests)), ([], 1))
                    gw.push(ErrorReply(503, None, "later", headers=headers))
                    with self.assertRaises(edgee.EdgeeAPIError):
                        retrying.stream(DEFAULT_MODEL, "hi")
                    self.assertEqual((slept, len(gw.requests)), ([], 2))

        self.both(body)

    def test_no_retry_once_a_chunk_reached_the_caller(self):
        def body(api):
            slept = api.fake_sleep()
            first = SSE_HEAD + frames(stream_events("Hel", finish=None))
            api.gw.push(Raw([first, 0.05], then="reset"), SSE(stream_events("Hel", "lo")))
            got, exc = chunks_until(self, api, edgee.EdgeeStreamError)
            self.assertIn("cut", str(exc))
            self.assertEqual(text_of(got), "Hel")  # no duplicated text from a second answer
            self.assertEqual(len(api.gw.requests), 1)
            self.assertEqual(slept, [])

        self.both(body, max_retries=3)


class TruncationTest(ClientTestCase):
    """A stream cut before [DONE] and before any finish_reason raises EdgeeStreamError."""

    def assert_cut(self, api, reply, text, count):
        api.gw.push(reply)
        got, exc = chunks_until(self, api, edgee.EdgeeStreamError)
        self.assertIn("cut", str(exc))
        self.assertIsInstance(exc, RuntimeError)
        self.assertEqual(text_of(got), text)  # everything received before the cut
        self.assertEqual(len(got), count)
        return exc

    def test_eof_without_done(self):
        def body(api):
            events = stream_events("Hel", "lo", finish=None)
            self.assert_cut(api, SSE(events, done=False, chunked=False), "Hello", 3)
            # a complete chunked body
            self.assert_cut(api, SSE(events, done=False), "Hello", 3)

        self.both(body)

    def test_reset(self):
        def body(api):
            events = stream_events("Hel", "lo", finish=None)
            self.assert_cut(api, Raw([SSE_HEAD + frames(events), 0.05], then="reset"), "Hello", 3)
            plain = _sse_head("close")
            data = b"".join(sse_bytes(e) for e in events)
            self.assert_cut(api, Raw([plain + data, 0.05], then="reset"), "Hello", 3)

        self.both(body)

    def test_chunked_body_cut_at_every_byte(self):
        def body(api):
            data = b"".join(chunk_frame(e) for e in CUT_EVENTS) + CHUNK_END
            ends, position = [], 0  # where the last byte of each event's data lies in `data`
            for event in CUT_EVENTS:
                frame = chunk_frame(event)
                ends.append(position + frame.index(b"\r\n") + 2 + len(event))
                position += len(frame)
            finished_at = ends[3]  # from here on the finish_reason chunk has arrived
            api.gw.push(*[Raw([SSE_HEAD + data[:cut]]) for cut in range(len(data) + 1)])
            problems = []
            deadline = time.monotonic() + 15.0
            for cut in range(len(data) + 1):
                self.assertLess(time.monotonic(), deadline, "the cuts are too slow")
                whole = sum(1 for end in ends[:4] if end <= cut)
                expected_text = "".join(CUT_TEXTS[:whole])
                got = []
                try:
                    api.each(got.append, DEFAULT_MODEL, "hi")
                except edgee.EdgeeStreamError as exc:
                    if cut >= finished_at:
                        problems.append(f"cut {cut}: raised {exc!r} after the finish_reason")
                    elif "cut" not in str(exc):
                        problems.append(f"cut {cut}: message {str(exc)!r}")
                except Exception as exc:
                    problems.append(f"cut {cut}: {exc!r}")
                else:
                    if cut < finished_at:
                        problems.append(f"cut {cut}: no error, {len(got)} chunks")
                if (len(got), text_of(got)) != (whole, expected_text):
                    problems.append(
                        f"cut {cut}: got {len(got)} chunks {text_of(got)!r}, "
                        f"expected {whole} {expected_text!r}"
                    )
            self.assertEqual(problems[:10], [])
            self.assertEqual(len(api.gw.requests), len(data) + 1)

        self.both(body)

    def test_body_shorter_than_its_content_length(self):
        def body(api):
            data = b"".join(sse_bytes(e) for e in stream_events("Hel", "lo"))
            cut = data.index(b"data:", len(sse_bytes(stream_events()[0])) + 1)  # after 2 events
            head = http_head(200, [("Content-Type", "text/event-stream")], content_length=len(data))
            exc = self.assert_cut(api, Raw([head + data[:cut]]), "Hel", 2)
            self.assertIn("missing", str(exc))
            answer = compact_json(completion_body("whole"))
            head = http_head(
                200, [("Content-Type", "application/json")], content_length=len(answer)
            )
            api.gw.push(Raw([head + answer[:-5]]))
            with self.assertRaises(edgee.EdgeeStreamError) as cm:
                api.send(DEFAULT_MODEL, "hi")
            self.assertIn("cut", str(cm.exception))

        self.both(body)

    def test_utf8_character_cut_in_half_at_the_end(self):
        def body(api):
            data = (
                sse_bytes(completion_chunk(role="assistant"))
                + sse_bytes(completion_chunk(content="caf\u00e9"))
                + b'data: {"choices":[{"index":0,"delta":{"content":"d\xc3'
            )
            self.assert_cut(api, Raw([_sse_head("close") + data]), "caf\u00e9", 2)
            framed = frames(stream_events("caf\u00e9", finish=None)) + chunk_frame(
                b'data: {"choices":[{"index":0,"delta":{"content":"\xe2\x82'
            )
            self.assert_cut(api, Raw([SSE_HEAD + framed]), "caf\u00e9", 2)

        self.both(body)

    def test_eof_after_finish_reason_ends_cleanly(self):
        def body(api):
            for chunked in (False, True):
                with self.subTest(chunked=chunked):
                    before = len(api.gw.requests)
                    api.gw.push(SSE(stream_events("Hel", "lo"), done=False, chunked=chunked))
                    chunks = api.stream(DEFAULT_MODEL, "hi")
                    self.assertEqual(text_of(chunks), "Hello")
                    self.assertEqual(chunks[-1].finish_reason, "stop")
                    self.assertEqual(len(api.gw.requests) - before, 1)

        self.both(body, max_retries=2)


class SecurityTest(ClientTestCase):
    """The key goes to the configured origin only, and shows up in no error or log."""

    def test_cross_origin_redirects_are_refused(self):
        def body(api):
            gw, other, secure = api.gw, self.gateway(), self.gateway(tls=True)
            path = "/v1/chat/completions"
            targets = [
                ("other port", other.url + path, f"127.0.0.1:{other.port}"),
                ("other host name", f"http://localhost:{gw.port}{path}", f"localhost:{gw.port}"),
                (
                    "other scheme",
                    f"https://127.0.0.1:{gw.port}{path}",
                    f"https://127.0.0.1:{gw.port}",
                ),
                ("https gateway", secure.url + path, f"localhost:{secure.port}"),
            ]
            for status in (301, 302, 303, 307, 308):
                for name, location, origin in targets:
                    for stream in (False, True):
                        with self.subTest(status=status, target=name, stream=stream):
                            before = len(gw.requests)
                            gw.push(Redirect(status, location))
                            with self.assertRaises(edgee.EdgeeError) as cm:
                                if stream:
                                    api.stream(DEFAULT_MODEL, "hi")
                                else:
                                    api.send(DEFAULT_MODEL, "hi")
                            message = str(cm.exception)
                            self.assertIsInstance(cm.exception, RuntimeError)
                            self.assertIn("redirect", message.lower())
                            self.assertIn(origin, message)
                            self.assertNotIn(self.key, everything(cm.exception))
                            self.assertEqual(len(gw.requests), before + 1)  # not followed
            time.sleep(0.05)
            self.assertEqual((other.requests, other.connections), ([], 0))
            self.assertEqual((secure.requests, secure.connections), ([], 0))

        self.both(body, max_retries=2)

    def test_same_origin_307_308_keep_method_and_body(self):
        def body(api):
            gw = api.gw
            for status, location in (
                (307, "/v1/moved/chat/completions"),
                (308, "/v2/chat/completions"),
                (307, None),
                (308, None),
            ):
                with self.subTest(status=status, location=location):
                    target = location or gw.url + "/v3/chat/completions"  # absolute, same origin
                    answer = Reply(200, completion_body(f"moved {status}"))
                    gw.push(Redirect(status, target), answer)
                    self.assertEqual(api.send(DEFAULT_MODEL, "keep me").text, f"moved {status}")
                    first, second = gw.requests[-2:]
                    path = target.replace(gw.url, "")
                    self.assertEqual((second.method, second.path), ("POST", path))
                    self.assertEqual(second.body, first.body)
                    self.assertEqual(second.json["messages"][0]["content"], "keep me")
                    self.assertEqual(second.headers.get("authorization"), "Bearer " + self.key)
            gw.push(Redirect(308, "/v2/chat/completions"), SSE(stream_events("str", "eam")))
            self.assertEqual(text_of(api.stream(DEFAULT_MODEL, "stream me")), "stream")
            first, second = gw.requests[-2:]
            self.assertEqual((second.method, second.body), ("POST", first.body))
            self.assertIs(second.json["stream"], True)

        self.both(body, max_retries=2)

    def assert_key_not_echoed(self, api, cases):
        for name, reply, call in cases:
            with self.subTest(case=name):
                api.gw.push(reply)
                with self.assertRaises(edgee.EdgeeAPIError) as cm:
                    if call == "send":
                        api.send(DEFAULT_MODEL, "hi")
                    else:
                        api.stream(DEFAULT_MODEL, "hi")
                self.assertIn("API key", str(cm.exception))
                self.assertNotIn(self.key, everything(cm.exception))

    def test_key_in_no_exception_message_of_an_error_answer(self):
        def body(api):
            echo = f"Invalid API key provided: {self.key}"
            self.assert_key_not_echoed(
                api,
                [
                    ("401 JSON", ErrorReply(401, "unauthorized", echo), "send"),
                    (
                        "403 text",
                        Reply(403, f"API key {self.key} is inactive", content_type="text/plain"),
                        "send",
                    ),
                    ("400 to a stream", ErrorReply(400, "invalid_request", echo), "stream"),
                ],
            )
            retrying = self.api(api.kind, api.gw, max_retries=2)
            echoed = ErrorReply(500, "internal_error", f"echo {self.key}", headers=FAST_RETRY)
            api.gw.push(echoed, echoed, echoed)
            with self.assertRaises(edgee.EdgeeAPIError) as cm:  # retried, then raised
                retrying.send(DEFAULT_MODEL, "hi")
            self.assertNotIn(self.key, everything(cm.exception))

        self.both(body)

    def test_key_in_no_exception_message_of_an_error_inside_a_200_answer(self):
        def body(api):
            envelope = {
                "error": {
                    "message": f"Invalid API key provided: {self.key}",
                    "type": "authentication_error",
                    "code": "unauthorized",
                }
            }
            event = b"event: error\ndata: " + compact_json(envelope) + b"\n\n"
            self.assert_key_not_echoed(
                api,
                [
                    ("JSON envelope to send", Reply(200, envelope), "send"),
                    ("JSON envelope to stream", Reply(200, envelope), "stream"),
                    (
                        "error object in a stream",
                        SSE([*stream_events("Hi", finish=None), envelope]),
                        "stream",
                    ),
                    (
                        "event: error in a stream",
                        SSE([*stream_events("Hi", finish=None), event]),
                        "stream",
                    ),
                ],
            )

        self.both(body)

    def test_key_in_no_log_record(self):
        records = []

        class Capture(logging.Handler):
            def emit(self, record):
                records.append(self.format(record) + " " + repr(record.__dict__))

        handler = Capture(logging.DEBUG)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        self.addCleanup(root.setLevel, old_level)
        self.addCleanup(root.removeHandler, handler)

        def body(api):
            gw = api.gw
            out, err = io.StringIO(), io.StringIO()
            refused = self.api(api.kind, f"http://127.0.0.1:{free_port()}")
            with redirect_stdout(out), redirect_stderr(err):
                api.send(DEFAULT_MODEL, "hello")
                api.stream(DEFAULT_MODEL, "hello")
                gw.push(ErrorReply(503, None, f"busy {self.key}", headers=FAST_RETRY))
                api.send(DEFAULT_MODEL, "retried")
                gw.push(ErrorReply(401, "unauthorized", f"bad key {self.key}"))
                for call in (api.send, refused.send):
                    try:
                        call(DEFAULT_MODEL, "hi")
                    except edgee.EdgeeError:
                        logging.getLogger("app").exception("call failed")
                gw.push(Redirect(307, f"http://localhost:{gw.port}/x"))
                try:
                    api.send(DEFAULT_MODEL, "hi")
                except edgee.EdgeeError as exc:
                    logging.getLogger("app").error("failed: %s %r", exc, exc)
            self.assertTrue(records)  # the capture works
            captured = "\n".join(records) + out.getvalue() + err.getvalue()
            self.assertNotIn(self.key, captured)

        self.both(body, max_retries=2)


def held_stream(gw, *pieces):
    """Queue a stream that sends a role chunk and `pieces`, then holds the connection open."""
    pieces = pieces or ("Hel", "lo")
    gw.push(Raw([SSE_HEAD + frames(stream_events(*pieces, finish=None))], then="hold"))


def closing_completion(text):
    """A whole answer that looks keep-alive (no Connection: close); the server closes after it."""
    data = compact_json(completion_body(text))
    head = http_head(200, {"Content-Type": "application/json"}, content_length=len(data))
    return Raw([head, data], then="close")


class PoolingTest(ClientTestCase):
    """Kept-alive connections are reused, and given up when an answer or a stream says so."""

    def many_calls(self, api):
        self.assertEqual(api.send(DEFAULT_MODEL, "one").text, "Echo: one")
        self.assertEqual(api.collect(DEFAULT_MODEL, "two").text, "Echo: two")
        self.assertEqual(api.send(DEFAULT_MODEL, "three").text, "Echo: three")
        self.assertEqual(len(api.models()), 2)
        self.assertEqual(text_of(api.stream(DEFAULT_MODEL, "four")), "Echo: four")
        self.assertEqual(api.send(DEFAULT_MODEL, "five").text, "Echo: five")
        self.assertEqual(len(api.gw.requests), 6)
        self.assertEqual(api.gw.connections, 1)

    def test_one_connection_plain_http(self):
        self.both(self.many_calls)

    def test_one_connection_tls(self):
        def body(api):
            self.assertTrue(api.gw.url.startswith("https://localhost:"))
            self.many_calls(api)

        self.both(body, tls=True)

    def test_finished_stream_reused_when_last_chunk_arrives_late(self):
        # Servers often write the terminating 0-size chunk separately after [DONE]:
        # the finished stream must still give its connection back to the pool.
        def body(api):
            api.gw.push(SSE([*stream_events("done"), b"data: [DONE]\n\n", 0.05], done=False))
            self.assertEqual(api.collect(DEFAULT_MODEL, "x").text, "done")
            self.assertEqual(api.send(DEFAULT_MODEL, "y").text, "Echo: y")
            self.assertEqual(len(api.gw.requests), 2)
            self.assertEqual(api.gw.connections, 1)

        self.both(body)

    def test_leaving_a_stream_early_closes_its_connection(self):
        def body(api):
            for n in (1, 2):  # break (and aclose) after the role chunk, or after some text
                with self.subTest(chunks=n):
                    held_stream(api.gw)
                    chunks = api.first(n, DEFAULT_MODEL, "hi")
                    left_at = time.monotonic()
                    got = [(c.role, c.text) for c in chunks]
                    self.assertEqual(got, [("assistant", None), (None, "Hel")][:n])
                    closed = api.gw.wait_disconnects(n, 2.0)
                    self.assertTrue(closed, "the gateway did not see the close")
                    self.assertLess(time.monotonic() - left_at, 1.5)
                    self.assertEqual(api.send(DEFAULT_MODEL, "after").text, "Echo: after")

        self.both(body, max_retries=2)

    def test_stream_left_early_is_not_pooled(self):
        def body(api):
            events = stream_events("first", " second")
            api.gw.push(SSE([*events[:2], 0.1, *events[2:]]))
            self.assertEqual(api.first(2, DEFAULT_MODEL, "leave early")[1].text, "first")
            self.assertEqual(api.send(DEFAULT_MODEL, "next").text, "Echo: next")
            self.assertEqual(api.gw.connections, 2)
            self.assertTrue(api.gw.wait_disconnects(1, 3.0))

        self.both(body)

    def test_connection_close_answer_not_reused(self):
        def body(api):
            answer = completion_body("closing")
            api.gw.push(Reply(200, answer, headers={"Connection": "close"}))
            self.assertEqual(api.send(DEFAULT_MODEL, "x").text, "closing")
            self.assertEqual(api.send(DEFAULT_MODEL, "y").text, "Echo: y")
            self.assertEqual(api.send(DEFAULT_MODEL, "z").text, "Echo: z")
            self.assertEqual(len(api.gw.requests), 3)
            self.assertEqual(api.gw.connections, 2)

        self.both(body)

    def test_pooled_connection_closed_by_server(self):
        # max_retries=0: no retry may hide a dead pooled socket
        def body(api):
            api.gw.push(closing_completion("bye"))
            self.assertEqual(api.send(DEFAULT_MODEL, "x").text, "bye")
            time.sleep(0.1)  # the server's FIN reaches the idle pooled socket
            self.assertEqual(api.send(DEFAULT_MODEL, "y").text, "Echo: y")
            self.assertEqual(api.gw.connections, 2)
            self.assertEqual(len(api.gw.requests), 2)
            api.gw.push(closing_completion("bye"))
            self.assertEqual(api.send(DEFAULT_MODEL, "x").text, "bye")
            time.sleep(0.1)
            self.assertEqual(api.collect(DEFAULT_MODEL, "y").text, "Echo: y")
            self.assertEqual(api.send(DEFAULT_MODEL, "z").text, "Echo: z")
            self.assertEqual(api.gw.connections, 3)

        self.both(body)


class ProxyTest(ClientTestCase):
    """Proxies from the environment (HTTP_PROXY, NO_PROXY), read when the client is made."""

    def test_http_proxy_gets_absolute_uri(self):
        def body(api):
            proxy = self.gateway()
            proxy.push(Reply(200, completion_body("via proxy")))
            os.environ["HTTP_PROXY"] = f"http://127.0.0.1:{proxy.port}"  # isolate_env restores
            client = self.api(api.kind, "http://example.invalid")
            self.assertEqual(client.send(DEFAULT_MODEL, "hi").text, "via proxy")
            self.assertEqual(len(proxy.requests), 1)
            request = proxy.requests[0]
            self.assertTrue(
                request.path.startswith("http://example.invalid/v1/chat/completions"), request.path
            )
            self.assertTrue(
                request.raw_head.startswith(
                    b"POST http://example.invalid/v1/chat/completions HTTP/1.1\r\n"
                ),
                request.raw_head,
            )
            self.assertEqual(request.headers["host"], "example.invalid")
            self.assertEqual(request.json["messages"], [{"role": "user", "content": "hi"}])
            self.assertEqual(api.gw.requests, [])

        self.both(body)

    def test_no_proxy_bypasses_proxy(self):
        def body(api):
            proxy = self.gateway()
            os.environ["HTTP_PROXY"] = f"http://127.0.0.1:{proxy.port}"
            os.environ["NO_PROXY"] = "127.0.0.1"
            client = self.api(api.kind, api.gw)
            self.assertEqual(client.send(DEFAULT_MODEL, "direct").text, "Echo: direct")
            self.assertEqual(len(api.gw.requests), 1)
            self.assertEqual(api.last().path, "/v1/chat/completions")
            self.assertEqual(proxy.requests, [])
            self.assertEqual(proxy.connections, 0)

        self.both(body)


# A child process run in dev mode with warnings as errors: streams left in every way,
# clients dropped with pooled connections, one left for interpreter exit.
CHILD_SCRIPT = r"""
import gc, sys, threading
sys.path.insert(0, sys.argv[1])
import edgee
url, key, model = sys.argv[2], sys.argv[3], "openai/gpt-5.2"

client = edgee.Edgee(api_key=key, base_url=url, max_retries=0)
for chunk in client.stream(model, "break early please, this is long"):
    break
stream = client.stream(model, "close early please, this is long")
next(stream)
stream.close()
stream = client.stream(model, "drop me early, this is long")
next(stream)
del stream
assert "".join(c.text or "" for c in client.stream(model, "whole")) == "Echo: whole"
assert client.send(model, "pooled").text == "Echo: pooled"

pooled = edgee.Edgee(api_key=key, base_url=url)
barrier = threading.Barrier(4, timeout=10)
def work(i):
    barrier.wait()
    assert pooled.send(model, "t%d" % i).text == "Echo: t%d" % i
threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join(20)
del client, pooled  # dropped with connections in their pools
gc.collect()

import asyncio
looped = edgee.Edgee(api_key=key, base_url=url, max_retries=0)
async def use(i):
    assert (await looped.asend(model, "a%d" % i)).text == "Echo: a%d" % i
    stream = looped.astream(model, "leave early please, this is long")
    async for chunk in stream:
        break
    await stream.aclose()
    assert (await looped.asend(model, "b%d" % i)).text == "Echo: b%d" % i  # stays pooled
for i in range(3):
    asyncio.run(use(i))  # each run closes its loop with a connection left in its pool
del looped
gc.collect()

kept = edgee.Edgee(api_key=key, base_url=url)  # left for interpreter exit
assert kept.send(model, "kept").text == "Echo: kept"
print("child ok")
"""


class OfficialSurfaceTest(ClientTestCase):
    """The names, dataclasses and call forms of the official package (sync only, as it is)."""

    DATACLASSES = (
        "Choice",
        "Compression",
        "EdgeeConfig",
        "FunctionDefinition",
        "InputObject",
        "InputTokenDetails",
        "Message",
        "Model",
        "OutputTokenDetails",
        "SendResponse",
        "ServerSentEvent",
        "StreamChoice",
        "StreamChunk",
        "StreamDelta",
        "Tool",
        "ToolCall",
        "Usage",
    )

    # The official package's dataclasses (edgee 1.1.0): fields in order, and whether each
    # has a default. Ours must start with the same fields, so positional and keyword
    # construction written for the official package keeps working.
    OFFICIAL_FIELDS: ClassVar[dict] = {
        "FunctionDefinition": [("name", False), ("description", True), ("parameters", True)],
        "Tool": [("type", False), ("function", False)],
        "ToolCall": [("id", False), ("type", False), ("function", False)],
        "Message": [
            ("role", False),
            ("content", True),
            ("name", True),
            ("tool_calls", True),
            ("tool_call_id", True),
        ],
        "InputObject": [
            ("messages", False),
            ("tools", True),
            ("tool_choice", True),
            ("tags", True),
            ("compression_model", True),
            ("tool_result_trimming", True),
            ("tool_surface_reduction", True),
            ("output_brevity", True),
        ],
        "Choice": [("index", False), ("message", False), ("finish_reason", False)],
        "Usage": [("prompt_tokens", False), ("completion_tokens", False), ("total_tokens", False)],
        "Compression": [
            ("saved_tokens", False),
            ("cost_savings", False),
            ("reduction", False),
            ("time_ms", False),
        ],
        "SendResponse": [("choices", False), ("usage", True), ("compression", True)],
        "StreamDelta": [("role", True), ("content", True), ("tool_calls", True)],
        "StreamChoice": [("index", False), ("delta", False), ("finish_reason", True)],
        "StreamChunk": [("choices", False)],
        "EdgeeConfig": [("api_key", True), ("base_url", True)],
    }
    OFFICIAL_NAMES = (
        "DEFAULT_BASE_URL",
        "API_ENDPOINT",
        "COMPRESSION_HEADERS",
        "Edgee",
        "EdgeeConfig",
        *tuple(OFFICIAL_FIELDS),
    )

    def test_all_names_exist(self):
        self.assertTrue(edgee.__all__)
        for name in edgee.__all__:
            with self.subTest(name=name):
                self.assertTrue(hasattr(edgee, name), name)
        self.assertEqual(len(set(edgee.__all__)), len(edgee.__all__))
        self.assertIsInstance(edgee.__version__, str)
        self.assertRegex(edgee.__version__, r"^\d+\.\d+")

    def test_star_import(self):
        namespace = {}
        exec("from edgee import *", namespace)
        for name in edgee.__all__:
            self.assertIn(name, namespace)

    def test_dataclasses(self):
        for name in self.DATACLASSES:
            with self.subTest(name=name):
                self.assertIn(name, edgee.__all__)
                self.assertTrue(dataclasses.is_dataclass(getattr(edgee, name)), name)

    def test_official_names_and_constants(self):
        for name in self.OFFICIAL_NAMES:
            self.assertTrue(hasattr(edgee, name), name)
        self.assertEqual(edgee.DEFAULT_BASE_URL, "https://edgee.io")
        self.assertEqual(edgee.API_ENDPOINT, "/v1/chat/completions")
        self.assertEqual(edgee.COMPRESSION_HEADERS, TOGGLE_HEADERS)

    def test_official_dataclass_fields_compatible(self):
        for name, official in self.OFFICIAL_FIELDS.items():
            with self.subTest(name=name):
                ours = dataclasses.fields(getattr(edgee, name))
                self.assertEqual([f.name for f in ours[: len(official)]], [n for n, _ in official])
                for field, (_, has_default) in zip(ours, official):
                    if has_default:
                        self.assertTrue(
                            field.default is not dataclasses.MISSING
                            or field.default_factory is not dataclasses.MISSING,
                            f"{name}.{field.name} needs a default",
                        )
                for field in ours[len(official) :]:
                    self.assertTrue(
                        field.default is not dataclasses.MISSING
                        or field.default_factory is not dataclasses.MISSING,
                        f"added field {name}.{field.name} needs a default",
                    )

    @unittest.skipUnless(os.path.exists(OFFICIAL_INIT), "official package not unpacked")
    def test_official_field_table_matches_package(self):
        """The table above is the official package's (read with ast: it needs 3.10 to import)."""
        with open(OFFICIAL_INIT, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        found = {}
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", None) == "dataclass" for d in node.decorator_list
            ):
                found[node.name] = [
                    (s.target.id, s.value is not None)
                    for s in node.body
                    if isinstance(s, ast.AnnAssign)
                ]
        self.assertEqual(found, self.OFFICIAL_FIELDS)

    def test_official_style_construction(self):
        # positional/keyword construction exactly as code for the official package does it
        edgee.Message("user", "hi")
        edgee.Choice(0, {"role": "assistant", "content": "x"}, "stop")
        edgee.Usage(1, 2, 3)
        edgee.Compression(1, 2, 3, 4)
        edgee.SendResponse(choices=[], usage=None, compression=None)
        chunk = edgee.StreamChunk(
            choices=[
                edgee.StreamChoice(
                    index=0, delta=edgee.StreamDelta(role="assistant", content="hey")
                )
            ]
        )
        self.assertEqual((chunk.text, chunk.role, chunk.finish_reason), ("hey", "assistant", None))
        response = edgee.SendResponse(
            [edgee.Choice(0, {"content": "a", "tool_calls": [1]}, "stop")]
        )
        self.assertEqual(
            (response.text, response.finish_reason, response.tool_calls), ("a", "stop", [1])
        )
        obj = edgee.InputObject(
            [{"role": "user", "content": "x"}], None, None, ["t"], "claude", True, False, None
        )
        self.assertEqual(
            (obj.tags, obj.compression_model, obj.tool_result_trimming), (["t"], "claude", True)
        )

    def test_error_hierarchy(self):
        self.assertTrue(issubclass(edgee.EdgeeAPIError, RuntimeError))
        self.assertTrue(issubclass(edgee.EdgeeError, RuntimeError))
        self.assertTrue(issubclass(edgee.EdgeeConnectionError, RuntimeError))
        self.assertTrue(issubclass(edgee.EdgeeConnectionError, urllib.error.URLError))
        self.assertTrue(issubclass(edgee.EdgeeTimeoutError, edgee.EdgeeConnectionError))
        self.assertTrue(issubclass(edgee.EdgeeStreamError, RuntimeError))
        self.assertTrue(issubclass(edgee.EdgeeInputError, ValueError))

    def test_send_stream_true_returns_what_stream_does(self):
        gw = self.gateway()
        client = self.client(gw)
        streamed = client.stream(DEFAULT_MODEL, "same thing")
        sent = client.send(DEFAULT_MODEL, "same thing", stream=True)
        positional = client.send(DEFAULT_MODEL, "same thing", True)
        for stream in (streamed, sent, positional):  # a generator, with headers too
            self.assertIsInstance(stream, collections.abc.Generator)
        summary = []
        for gen in (streamed, sent, positional):
            chunks = list(gen)
            self.assertTrue(all(isinstance(c, edgee.StreamChunk) for c in chunks))
            summary.append([(c.role, c.text, c.finish_reason) for c in chunks])
        self.assertEqual(summary[0], summary[1])
        self.assertEqual(summary[0], summary[2])
        self.assertEqual("".join(t or "" for _, t, _ in summary[0]), "Echo: same thing")
        self.assertEqual(len(gw.requests), 3)
        for rec in gw.requests:
            assert_stream_headers(self, rec, self.key)
            self.assertIs(rec.json["stream"], True)

    def test_send_stream_true_asks_for_a_stream(self):
        gw = self.gateway()
        client = self.client(gw)
        msgs = [{"role": "user", "content": "s"}]
        list(client.send(DEFAULT_MODEL, {"messages": msgs}, stream=True))
        self.assertEqual(
            gw.requests[-1].json, {"model": DEFAULT_MODEL, "messages": msgs, "stream": True}
        )
        list(client.send(DEFAULT_MODEL, {"messages": msgs, "stream": False}, True))
        self.assertIs(gw.requests[-1].json["stream"], True)

    def test_send_stream_true_per_call_timeout(self):
        gw = self.gateway()
        client = self.client(gw, max_retries=2)
        gw.push(Raw([STALL]))  # reads the request, then says nothing
        exc = assert_quick_timeout(
            self, lambda: list(client.send(DEFAULT_MODEL, "hi", stream=True, timeout=QUICK)), gw
        )
        self.assertIn(str(QUICK), str(exc))  # the message names the timeout

    def test_send_stream_true_checks_input(self):
        gw = self.gateway()
        client = self.client(gw)
        for name, model, value, options, word in refused_calls():
            with self.subTest(case=name):

                def call(model=model, value=value, options=options):
                    return next(iter(client.send(model, value, stream=True, **options)))

                assert_refused(self, gw, call, word)
        assert_nothing_sent(self, gw)


class SyncOnlyTest(ClientTestCase):
    """Behaviours of the sync API alone: generators closed or dropped, threads, dev mode."""

    def test_generator_close_closes_the_connection(self):
        gw = self.gateway()
        client = self.client(gw, max_retries=2)
        held_stream(gw)
        stream = client.stream(DEFAULT_MODEL, "hi")
        self.assertEqual(next(stream).role, "assistant")
        self.assertEqual(next(stream).text, "Hel")
        stream.close()
        self.assertTrue(gw.wait_disconnects(1, 2.0), "the gateway did not see the close")
        self.assertEqual(client.send(DEFAULT_MODEL, "after").text, "Echo: after")
        del stream

    def test_dropping_the_generator_closes_the_connection(self):
        gw = self.gateway()
        client = self.client(gw, max_retries=2)
        held_stream(gw)
        stream = client.stream(DEFAULT_MODEL, "hi")
        self.assertEqual(next(stream).role, "assistant")
        del stream
        self.assertTrue(gw.wait_disconnects(1, 2.0), "the gateway did not see the close")
        self.assertEqual(client.send(DEFAULT_MODEL, "after").text, "Echo: after")

    def test_no_resource_warning_in_dev_mode(self):
        gw = self.gateway()
        here = os.path.dirname(os.path.abspath(edgee.__file__))
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)
        proc = subprocess.run(
            [
                sys.executable,
                "-X",
                "dev",
                "-W",
                "error",
                "-c",
                CHILD_SCRIPT,
                here,
                gw.url,
                self.key,
            ],
            capture_output=True,
            timeout=60,
            env=env,
        )
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 0, stderr)
        self.assertIn("child ok", stdout)
        self.assertNotIn("ResourceWarning", stderr)
        self.assertNotIn("Exception ignored", stderr)
        self.assertTrue(gw.wait_disconnects(3, 5.0))  # break, close() and drop

    def test_64_threads_share_one_client(self):
        gw = self.gateway()
        client = self.client(gw, max_retries=2)
        count = 64
        barrier = threading.Barrier(count, timeout=15)
        results = [None] * count
        errors = []

        def work(i):
            try:
                prompt = f"thread {i:02d} says {chr(ord('a') + i % 26) * (5 + i % 11)}"
                barrier.wait()
                streamed = text_of(client.stream(DEFAULT_MODEL, prompt))
                sent = client.send(DEFAULT_MODEL, prompt + "!").text
                results[i] = (prompt, streamed, sent)
            except BaseException as exc:  # reported below
                errors.append((i, exc))

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.assertFalse(any(t.is_alive() for t in threads), "a thread hung")
        self.assertEqual(errors, [])
        for prompt, streamed, sent in results:
            self.assertEqual(streamed, "Echo: " + prompt)
            self.assertEqual(sent, "Echo: " + prompt + "!")
        self.assertEqual(len(gw.requests), 2 * count)

    def test_threads_get_their_own_connections(self):
        gw = self.gateway()
        client = self.client(gw)
        count = 4
        barrier = threading.Barrier(count, timeout=5.0)
        results = {}
        failures = []
        open_at_once = []

        def worker(i):
            try:
                stream = client.stream(DEFAULT_MODEL, f"thread {i}")
                accumulator = edgee.StreamAccumulator()
                accumulator.add(next(stream))
                barrier.wait()  # every thread has a stream open at once
                open_at_once.append(gw.connections)
                barrier.wait()  # nobody goes on before everyone has looked
                for chunk in stream:
                    accumulator.add(chunk)
                texts = [accumulator.response().text]
                for j in range(5):
                    texts.append(client.send(DEFAULT_MODEL, f"thread {i} call {j}").text)
                results[i] = texts
            except BaseException as exc:  # reported below
                failures.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10.0)
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(failures, [])
        for i in range(count):
            self.assertEqual(
                results[i],
                [f"Echo: thread {i}"] + [f"Echo: thread {i} call {j}" for j in range(5)],
            )
        # Four streams open at the same moment: four connections, none shared.
        self.assertEqual(open_at_once, [count] * count)
        self.assertEqual(len(gw.requests), count * 6)
        # The later calls reuse those four pooled connections.
        self.assertEqual(gw.connections, count)
        self.assertEqual(gw.errors, [])


def slow_stream(words, pause):
    """A chunked event stream: one event per word, `pause` seconds before each."""
    parts = [SSE_HEAD + frames([completion_chunk(role="assistant")])]
    for word in words:
        parts += [pause, frames([completion_chunk(content=word)])]
    parts.append(frames([completion_chunk(finish_reason="stop"), b"data: [DONE]\n\n"]))
    return Raw([*parts, CHUNK_END])


class AsyncOnlyTest(ClientTestCase):
    """Behaviours of the async API alone: one event loop, many calls, cancellation."""

    def test_concurrent_streams_slow_and_fast(self):
        api = self.api("async")
        client = api.client
        api.gw.push(slow_stream(["one ", "two ", "three ", "four"], 0.2))

        async def body():
            first_slow = asyncio.Event()
            ends = {}

            async def slow():
                text = []
                async for chunk in client.astream(DEFAULT_MODEL, "slow"):
                    first_slow.set()
                    text.append(chunk.text or "")
                ends["slow"] = time.monotonic()
                return "".join(text)

            async def fast():
                await first_slow.wait()  # the slow stream is under way
                response = await edgee.acollect(client.astream(DEFAULT_MODEL, "fast"))
                ends["fast"] = time.monotonic()
                return response.text

            start = time.monotonic()
            slow_text, fast_text = await asyncio.gather(slow(), fast())
            return start, ends, slow_text, fast_text

        start, ends, slow_text, fast_text = api.run(body())
        self.assertEqual(slow_text, "one two three four")
        self.assertEqual(fast_text, "Echo: fast")
        self.assertLess(ends["fast"], ends["slow"])
        self.assertGreater(ends["slow"] - ends["fast"], 0.4)
        self.assertLess(ends["fast"] - start, 0.5)
        self.assertGreater(ends["slow"] - start, 0.7)

    def test_event_loop_never_blocked(self):
        api = self.api("async")
        api.gw.push(slow_stream(["a", "b", "c", "d"], 0.2))

        async def body():
            ticks = []
            stop = asyncio.Event()

            async def ticker():
                while not stop.is_set() and len(ticks) < 2000:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.01)

            task = asyncio.ensure_future(ticker())
            await asyncio.sleep(0)
            start = time.monotonic()
            response = await edgee.acollect(api.client.astream(DEFAULT_MODEL, "slow"))
            end = time.monotonic()
            stop.set()
            await task
            return response, start, end, ticks

        response, start, end, ticks = api.run(body())
        self.assertEqual(response.text, "abcd")
        self.assertGreater(end - start, 0.7)
        during = [t for t in ticks if start <= t <= end]
        self.assertGreaterEqual(len(during), 20)  # about 80 expected
        gaps = [b - a for a, b in zip(during, during[1:])]
        self.assertLess(max(gaps), 0.15)  # a blocking read would stall the loop for 0.2 s

    def test_cancel_stream_task_closes_connection(self):
        api = self.api("async")
        held_stream(api.gw, "partial")

        async def body():
            got = asyncio.Event()
            chunks = []

            async def consume():
                async for chunk in api.client.astream(DEFAULT_MODEL, "hold me"):
                    chunks.append(chunk)
                    if len(chunks) == 2:
                        got.set()

            task = asyncio.ensure_future(consume())
            await got.wait()
            task.cancel()
            cancelled_at = time.monotonic()
            with self.assertRaises(asyncio.CancelledError):
                await task
            loop = asyncio.get_running_loop()
            closed = await loop.run_in_executor(None, api.gw.wait_disconnects, 1, 3.0)
            return closed, time.monotonic() - cancelled_at, chunks

        closed, elapsed, chunks = api.run(body())
        self.assertEqual([c.text for c in chunks], [None, "partial"])
        self.assertTrue(closed, "the connection stayed open after the task was cancelled")
        self.assertLess(elapsed, 1.5)

    def test_break_without_aclose_closes_connection(self):
        api = self.api("async")
        held_stream(api.gw)

        async def body():
            async for chunk in api.client.astream(DEFAULT_MODEL, "leave early"):
                if chunk.text:
                    break  # the generator is dropped; asyncio finalizes it
            left_at = time.monotonic()
            loop = asyncio.get_running_loop()
            closed = await loop.run_in_executor(None, api.gw.wait_disconnects, 1, 3.0)
            return closed, time.monotonic() - left_at

        closed, elapsed = api.run(body())
        self.assertTrue(closed, "the connection stayed open after leaving async for")
        self.assertLess(elapsed, 1.5)

    def test_cancel_asend_closes_connection(self):
        api = self.api("async")
        api.gw.push(Raw([], then="hold"))  # reads the request, then never answers

        async def body():
            task = asyncio.ensure_future(api.client.asend(DEFAULT_MODEL, "stall"))
            loop = asyncio.get_running_loop()
            arrived = await loop.run_in_executor(None, api.gw.wait_requests, 1, 3.0)
            self.assertTrue(arrived)
            task.cancel()
            cancelled_at = time.monotonic()
            with self.assertRaises(asyncio.CancelledError):
                await task
            closed = await loop.run_in_executor(None, api.gw.wait_disconnects, 1, 3.0)
            return closed, time.monotonic() - cancelled_at

        closed, elapsed = api.run(body())
        self.assertTrue(closed, "the connection stayed open after asend() was cancelled")
        self.assertLess(elapsed, 1.5)


# ---- the whole gateway: Edge Tools, metadata, every endpoint ----
# Issue 12 end to end, through the sync and the async API against the loopback gateway:
# Edge Tools round trips, answer headers, per-call headers, reasoning and refusals, `raw`,
# count_tokens, compress, models by provider and raw access to any endpoint. The gateway
# refuses bodies that break its copy of the OpenAPI schemas; every test also checks each
# body it sent against the OpenAPI document itself (when it is beside this checkout).

WHOLE_EDGE_RAN = [
    edgee.EdgeeToolExecuted("edgee_current_time", True),
    edgee.EdgeeToolExecuted("edgee_fail_demo", False),
]
WHOLE_QUESTION = "Is 1001 prime?"
WHOLE_THINKING = "Thinking about: " + WHOLE_QUESTION
WHOLE_ECHO = "Echo: " + WHOLE_QUESTION
WHOLE_HEADERS = {"x-edgee-session-id": "session-42", "X-Edgee-Debug": "true"}
WHOLE_MESSAGES = dict(SAMPLES["/v1/messages"], model="anthropic/claude-opus-4-6")
WHOLE_FRANCE = "Echo: What is the capital of France?"
WHOLE_SSE_HEAD = http_head(200, {"Content-Type": "text/event-stream"}, chunked=True)


def whole_tool_result(response: Any) -> dict:
    """The client tool's result for the first tool call of `response`."""
    return {"role": "tool", "tool_call_id": response.tool_calls[0]["id"], "content": "Sunny"}


class _WholeCase(ClientTestCase):
    """ClientTestCase whose gateways check, at cleanup, every request body they received
    against the OpenAPI request schema of its path."""

    def gateway(self, tls: bool = False) -> Gateway:
        gw = super().gateway(tls)
        if any(os.path.exists(p) for p in OPENAPI_CANDIDATES):
            self.addCleanup(self.assert_valid_bodies, gw)
        return gw

    def assert_valid_bodies(self, gw: Gateway) -> None:
        """Fail unless each body `gw` received is valid for its path (paths outside the
        document are not checked)."""
        for rec in gw.requests:
            path = rec.path.partition("?")[0]
            if rec.body and path in openapi()["paths"]:
                assert_valid_body(self, path, rec.body)

    def bodies(self, api: Api, path: str = CHAT) -> list:
        """The decoded JSON bodies of the requests to `path`, in order."""
        return [r.json for r in api.gw.requests if r.path == path]


class WholeEdgeToolsTest(_WholeCase):
    """A client tool and Edge Tools in one answer, finished with edgee_pending_id."""

    def test_round_trip_with_send(self):
        def body(api):
            first = api.send(DEFAULT_MODEL, EDGE_ASK)
            self.assertEqual((first.finish_reason, first.tool_calls), ("tool_calls", [CALL]))
            self.assertEqual(first.message, {"role": "assistant", "tool_calls": [CALL]})
            self.assertEqual(first.edgee_pending_id, "edgee_pending_1")
            self.assertEqual(first.edgee_tools_executed, WHOLE_EDGE_RAN)
            resume = dict(
                EDGE_ASK,
                messages=[*EDGE_ASK["messages"], first.message, whole_tool_result(first)],
                edgee_pending_id=first.edgee_pending_id,
            )
            last = api.send(DEFAULT_MODEL, resume)
            self.assertEqual((last.text, last.finish_reason), (EDGE_DONE, "stop"))
            self.assertEqual((last.edgee_pending_id, last.edgee_tools_executed), (None, []))
            self.assertEqual(self.bodies(api), [EDGE_ASK, _resume("edgee_pending_1")])

        self.both(body)

    def test_round_trip_with_stream_and_collect(self):
        usage = {"include_usage": True}  # the edgee_* fields then ride on the usage chunk

        def body(api):
            ask = edgee.InputObject(
                messages=EDGE_ASK["messages"],
                tools=[TOOL],
                edgee_tool_ids=EDGE_ASK["edgee_tool_ids"],
                extra_body={"stream_options": usage},
            )
            chunks = api.stream(DEFAULT_MODEL, ask)
            edge = [c.raw for c in chunks if "edgee_pending_id" in c.raw]
            self.assertEqual(edge, [chunks[-1].raw])
            self.assertEqual((chunks[-1].choices, chunks[-1].usage.prompt_tokens), ([], 1))
            first = api.collect(DEFAULT_MODEL, ask)
            self.assertEqual(first.finish_reason, "tool_calls")
            self.assertEqual(
                first.message, {"role": "assistant", "content": None, "tool_calls": [CALL]}
            )
            self.assertEqual(first.edgee_pending_id, "edgee_pending_2")
            self.assertEqual(first.edgee_tools_executed, WHOLE_EDGE_RAN)
            self.assertEqual(first.usage.prompt_tokens, 1)
            resume = edgee.InputObject(
                messages=[*EDGE_ASK["messages"], first.message, whole_tool_result(first)],
                tools=[TOOL],
                edgee_tool_ids=EDGE_ASK["edgee_tool_ids"],
                edgee_pending_id=first.edgee_pending_id,
            )
            last = api.collect(DEFAULT_MODEL, resume)
            self.assertEqual((last.text, last.finish_reason), (EDGE_DONE, "stop"))
            self.assertEqual((last.edgee_pending_id, last.edgee_tools_executed), (None, []))
            asked = dict(EDGE_ASK, stream_options=usage, stream=True)
            self.assertEqual(
                self.bodies(api), [asked, asked, dict(_resume("edgee_pending_2"), stream=True)]
            )
            # the collected message had "content": None; it went without content, not null
            self.assertNotIn(b"null", api.gw.requests[-1].body)

        self.both(body)

    def test_edge_tools_alone_run_inline(self):
        def body(api):
            ask = edgee.InputObject(
                messages=[edgee.Message("user", "What time is it?")],
                edgee_tool_ids=["edgee_current_time"],
                enable_debug=True,
            )
            said = "Echo: What time is it?; Edge Tools said: edgee_current_time: "
            said += EDGE_RESULTS["edgee_current_time"]
            ran = [edgee.EdgeeToolExecuted("edgee_current_time", True)]
            for response in (api.send(DEFAULT_MODEL, ask), api.collect(DEFAULT_MODEL, ask)):
                self.assertEqual(response.text, said)
                self.assertEqual(response.edgee_tools_executed, ran)
                self.assertIsNone(response.edgee_pending_id)
            sent = {
                "model": DEFAULT_MODEL,
                "messages": [{"role": "user", "content": "What time is it?"}],
                "edgee_tool_ids": ["edgee_current_time"],
                "enable_debug": True,
            }
            self.assertEqual(self.bodies(api), [sent, dict(sent, stream=True)])

        self.both(body)

    def test_unknown_pending_id_and_bad_tool_ids_raise_api_errors(self):
        def body(api):
            for call in (api.send, api.stream):
                error = self.raised(
                    edgee.EdgeeAPIError, call, DEFAULT_MODEL, _resume("edgee_pending_9")
                )
                self.assertEqual((error.status, error.param), (400, "edgee_pending_id"))
                self.assertEqual(error.message, "Unknown edgee_pending_id: 'edgee_pending_9'")
                bad = dict(EDGE_ASK, edgee_tool_ids=["current_time"])
                error = self.raised(edgee.EdgeeAPIError, call, DEFAULT_MODEL, bad)
                self.assertEqual((error.status, error.code), (400, "invalid_edgee_tool_ids"))

        self.both(body)


class WholeMetadataTest(_WholeCase):
    """Which provider answered, and whether a fallback did; extra request headers per call."""

    def test_send_response_headers(self):
        def body(api):
            response = api.send("openai/gpt-fallback", "hi")
            self.assertEqual((response.provider, response.fallback_used), ("anthropic", True))
            self.assertEqual(response.headers["x-edgee-fallback-used"], "1")
            self.assertEqual(response.headers["content-type"], "application/json")
            self.assertEqual([n for n in response.headers if n != n.lower()], [])
            response = api.send(DEFAULT_MODEL, "hi")
            self.assertEqual((response.provider, response.fallback_used), ("openai", None))
            self.assertNotIn("x-edgee-fallback-used", response.headers)

        self.both(body)

    def test_stream_objects_carry_headers_from_the_first_chunk(self):
        def body(api):
            streams = [api.open_stream("openai/gpt-fallback", "hi")]
            if not api.is_async:
                streams.append(api.client.send("openai/gpt-fallback", "hi", stream=True))
            for stream in streams:
                self.assertEqual(
                    (stream.headers, stream.provider, stream.fallback_used), ({}, None, None)
                )
                seen = api.watch(stream)
                self.assertEqual("".join(c.text or "" for c, _, _ in seen), "Echo: hi")
                self.assertEqual({(p, f) for _, p, f in seen}, {("anthropic", True)})
                self.assertEqual(stream.headers["content-type"], "text/event-stream")
                self.assertEqual(stream.headers["x-edgee-provider"], "anthropic")
            stream = api.open_stream(DEFAULT_MODEL, "hi")
            self.assertEqual(api.watch(stream, n=1)[0][1:], ("openai", None))

        self.both(body)

    def test_collect_carries_headers(self):
        def body(api):
            responses = [api.collect("anthropic/claude-fallback", "hi")]
            if not api.is_async:
                stream = api.client.send("anthropic/claude-fallback", "hi", stream=True)
                responses.append(edgee.collect(stream))
            for response in responses:
                self.assertEqual((response.text, response.provider), ("Echo: hi", "openai"))
                self.assertIs(response.fallback_used, True)
                self.assertEqual(response.headers["x-edgee-fallback-used"], "1")
                self.assertEqual([n for n in response.headers if n != n.lower()], [])

        self.both(body)

    def calls(self, api, headers):
        """Every kind of call, each with `headers=headers`."""
        calls = [
            lambda: api.send(DEFAULT_MODEL, "hi", headers=headers),
            lambda: api.stream(DEFAULT_MODEL, "hi", headers=headers),
            lambda: api.collect(DEFAULT_MODEL, "hi", headers=headers),
            lambda: api.models(headers=headers),
            lambda: api.models(provider="openai", headers=headers),
            lambda: api.count_tokens(DEFAULT_MODEL, "hi", headers=headers),
            lambda: api.compress(DEFAULT_MODEL, "hi", headers=headers),
            lambda: api.request("POST", "/v1/responses", SAMPLES["/v1/responses"], headers=headers),
            lambda: api.stream_request(
                "POST", "/v1/messages", dict(WHOLE_MESSAGES, stream=True), headers=headers
            ),
        ]
        if not api.is_async:
            calls.append(lambda: list(api.client.send(DEFAULT_MODEL, "hi", True, headers=headers)))
        return calls

    def test_headers_keyword_on_every_call(self):
        extra = dict(WHOLE_HEADERS, **{"User-Agent": "my-app/1.0", "X-Note": "caf\xe9"})

        def body(api):
            calls = []
            for headers in (extra, collections.ChainMap(extra)):  # a dict, or any mapping
                calls += self.calls(api, headers)
            for call in calls:
                call()
            self.assertEqual(len(api.gw.requests), len(calls))
            for rec in api.gw.requests:
                with self.subTest(path=rec.path):
                    self.assertEqual({name: rec.headers.get(name.lower()) for name in extra}, extra)
                    self.assertEqual(rec.headers["authorization"], "Bearer " + self.key)

        self.both(body)

    def test_refused_headers_send_nothing(self):
        refused = [
            {"Authorization": "Bearer VALUE-9"},
            {"authorization": "Bearer VALUE-9"},
            {"Host": "VALUE-9.example"},
            {"Content-Length": "9"},
            {"Transfer-Encoding": "VALUE-9"},
            {"X-Edgee-Tags": "VALUE-9\r\nX-Injected: 1"},
            {"X-Edgee-Tags": "VALUE-9\n"},
            {"X-Edgee-Tags": "VALUE-9\r"},
            {"X-Edgee-Tags": "VALUE-9\x00"},
        ]

        def body(api):
            for headers in refused:
                for call in self.calls(api, dict(WHOLE_HEADERS, **headers)):
                    with self.subTest(headers=headers):
                        error = self.raised(edgee.EdgeeInputError, call)
                        self.assertIn(next(iter(headers)), str(error))
                        self.assertNotIn("VALUE", str(error))
            self.assertEqual((api.gw.requests, api.gw.connections), ([], 0))

        self.both(body)


class WholeReasoningTest(_WholeCase):
    """Reasoning text and refusals, from send() and from streams."""

    def test_reasoning_from_send(self):
        def body(api):
            response = api.send("openai/o3-reasoning", WHOLE_QUESTION)
            self.assertEqual((response.reasoning, response.text), (WHOLE_THINKING, WHOLE_ECHO))
            self.assertEqual(
                response.message,
                {"role": "assistant", "content": WHOLE_ECHO, "reasoning_content": WHOLE_THINKING},
            )
            self.assertEqual(response.usage.output_tokens_details.reasoning_tokens, 5)

        self.both(body)

    def test_reasoning_from_a_stream(self):
        ask = {"messages": [{"role": "user", "content": WHOLE_QUESTION}], "reasoning_effort": "low"}

        def body(api):
            chunks = api.stream(DEFAULT_MODEL, ask)
            kinds = [
                "reasoning" if c.reasoning else "text" for c in chunks if c.reasoning or c.text
            ]
            self.assertEqual(kinds, sorted(kinds))  # all the reasoning before the text
            self.assertGreater(kinds.count("reasoning"), 1)
            self.assertEqual("".join(c.reasoning or "" for c in chunks), WHOLE_THINKING)
            self.assertEqual(
                [c.choices[0].delta.reasoning for c in chunks if c.reasoning],
                [c.raw["choices"][0]["delta"]["reasoning_content"] for c in chunks if c.reasoning],
            )
            response = api.collect(DEFAULT_MODEL, ask)
            self.assertEqual((response.reasoning, response.text), (WHOLE_THINKING, WHOLE_ECHO))
            self.assertEqual(
                response.message,
                {"role": "assistant", "content": WHOLE_ECHO, "reasoning_content": WHOLE_THINKING},
            )
            sent = dict(ask, model=DEFAULT_MODEL, stream=True)
            self.assertEqual(self.bodies(api), [sent, sent])

        self.both(body)

    def test_reasoning_sent_as_reasoning_keeps_its_key(self):
        thinking = [completion_chunk(reasoning=p) for p in ("Seven ", "times 143.")]
        events = [completion_chunk(role="assistant"), *thinking, completion_chunk(content="No.")]
        events.append(completion_chunk(finish_reason="stop"))
        message = {"role": "assistant", "content": "No.", "reasoning": "Seven times 143."}

        def body(api):
            api.gw.push(Reply(body=dm_answer(message)), SSE(events))
            response = api.send(DEFAULT_MODEL, WHOLE_QUESTION)
            self.assertEqual((response.reasoning, response.message), ("Seven times 143.", message))
            chunks = api.stream(DEFAULT_MODEL, WHOLE_QUESTION)
            self.assertEqual([c.reasoning for c in chunks[1:3]], ["Seven ", "times 143."])
            api.gw.push(SSE(events))
            response = api.collect(DEFAULT_MODEL, WHOLE_QUESTION)
            self.assertEqual((response.reasoning, response.message), ("Seven times 143.", message))

        self.both(body)

    def test_refusal_joined(self):
        refused = {"role": "assistant", "refusal": REFUSAL}

        def body(api):
            response = api.send(DEFAULT_MODEL, "Refuse this")
            self.assertEqual((response.refusal, response.text), (REFUSAL, None))
            self.assertEqual(response.message, refused)
            chunks = api.stream(DEFAULT_MODEL, "Refuse this")
            pieces = [c.refusal for c in chunks if c.refusal]
            self.assertGreater(len(pieces), 1)
            self.assertEqual("".join(pieces), REFUSAL)
            response = api.collect(DEFAULT_MODEL, "Refuse this")
            self.assertEqual((response.refusal, response.text), (REFUSAL, None))
            self.assertEqual(response.message, dict(refused, content=None))
            # the refusal goes back as it came, without a null content
            api.send(
                DEFAULT_MODEL,
                {
                    "messages": [
                        {"role": "user", "content": "Refuse this"},
                        response.message,
                        {"role": "user", "content": "Why?"},
                    ]
                },
            )
            self.assertEqual(self.bodies(api)[-1]["messages"][1], refused)

        self.both(body)


class WholeRawTest(_WholeCase):
    """`raw` holds the JSON object received, with the fields the data model has no name for."""

    def test_send_raw(self):
        message = {"role": "assistant", "content": "Hi", "annotations": []}
        answer = dm_answer(
            message,
            system_fingerprint="fp_44709d6fcb",
            service_tier="default",
            provider_extra={"region": "eu-west-1"},
        )
        answer["choices"][0]["logprobs"] = {"content": []}
        answer["usage"]["prompt_cache_hit_tokens"] = 3

        def body(api):
            api.gw.push(Reply(body=answer))
            response = api.send(DEFAULT_MODEL, "hi")
            self.assertEqual(response.raw, answer)
            self.assertEqual(response.choices[0].raw, answer["choices"][0])
            self.assertEqual(response.usage.raw, answer["usage"])
            self.assertEqual(response.message, message)
            self.assertEqual(api.send(DEFAULT_MODEL, "hi").raw["object"], "chat.completion")

        self.both(body)

    def test_stream_raw(self):
        events = [
            completion_chunk(role="assistant", system_fingerprint="fp_1"),
            completion_chunk(content="Hi", obfuscation="x9"),
            completion_chunk(finish_reason="stop", service_tier="default"),
        ]
        events[1]["choices"][0]["logprobs"] = {"content": []}

        def body(api):
            api.gw.push(SSE(events))
            chunks = api.stream(DEFAULT_MODEL, "hi")
            self.assertEqual([c.raw for c in chunks], events)
            self.assertEqual(chunks[1].choices[0].raw, events[1]["choices"][0])
            self.assertEqual(chunks[1].choices[0].delta.raw, {"content": "Hi", "obfuscation": "x9"})

        self.both(body)

    def test_models_raw(self):
        data = [
            dict(MODELS["data"][0], context_window=400000, pricing={"input": 1.75}),
            {"id": "mistral/mistral-large", "object": "model"},
        ]

        def body(api):
            api.gw.push(Reply(body={"object": "list", "data": data}))
            models = api.models()
            self.assertEqual([m.raw for m in models], data)
            self.assertEqual([m.id for m in models], ["openai/gpt-5.2", "mistral/mistral-large"])

        self.both(body)


class WholeEndpointsTest(_WholeCase):
    """count_tokens, compress, models by provider."""

    def test_count_tokens(self):
        system = {"role": "system", "content": "Be brief."}
        user = {"role": "user", "content": "How many tokens is this?"}
        ask = {"messages": [system, user], "tools": [TOOL], "tokenizer": "o200k_base"}

        def body(api):
            count = api.count_tokens(DEFAULT_MODEL, dict(ask, temperature=0.2))
            self.assertEqual((type(count), count), (int, 7))
            self.assertEqual(api.send(DEFAULT_MODEL, ask).usage.prompt_tokens, count)
            self.assertEqual(api.count_tokens(DEFAULT_MODEL, "one two three"), 3)
            turns = [user, {"role": "assistant", "tool_calls": [CALL]}]
            self.assertEqual(api.count_tokens(DEFAULT_MODEL, {"messages": turns}), 5)
            self.assertEqual(
                self.bodies(api, "/v1/count_tokens"),
                [
                    {"model": DEFAULT_MODEL, "messages": [system, user], "tokenizer": "o200k_base"},
                    {
                        "model": DEFAULT_MODEL,
                        "messages": [{"role": "user", "content": "one two three"}],
                    },
                    {"model": DEFAULT_MODEL, "messages": [user, dict(turns[1], content="")]},
                ],
            )
            error = self.raised(edgee.EdgeeAPIError, api.count_tokens, "error-429", "hi")
            self.assertEqual((error.status, error.code), (429, "usage_limit_exceeded"))
            requests = len(api.gw.requests)
            self.raised(edgee.EdgeeInputError, api.count_tokens, DEFAULT_MODEL, {"messages": []})
            self.assertEqual(len(api.gw.requests), requests)

        self.both(body)

    def test_compress(self):
        user = {"role": "user", "content": "What is the weather in Lyon?"}
        tool = {"role": "tool", "tool_call_id": "call_1", "content": LONG}
        turn = {"role": "assistant", "content": None, "tool_calls": [CALL]}
        ask = {"messages": [user, turn, tool], "tools": [TOOL], "temperature": 0.2}
        sent = dict(
            ask,
            model=DEFAULT_MODEL,
            messages=[user, {"role": "assistant", "tool_calls": [CALL]}, tool],
        )
        squeezed = dict(
            sent, messages=[*sent["messages"][:2], dict(tool, content=" ".join(LONG.split()[:8]))]
        )

        def body(api):
            result = api.compress(DEFAULT_MODEL, dict(ask, tool_result_trimming=True))
            self.assertEqual(result.request, squeezed)
            self.assertEqual(
                result.compression,
                edgee.CompressMetadata("auto", ["text_truncation"], 0.12, 16, 14, 12),
            )
            self.assertEqual(result.raw, dict(squeezed, compression=result.raw["compression"]))
            rec = api.gw.requests[-1]
            self.assertEqual(rec.headers["x-edgee-compression-tool-result-trimming"], "true")
            chosen = api.compress(DEFAULT_MODEL, dict(ask, compression_model="claude"))
            self.assertEqual(chosen.compression.technique, "tool")
            self.assertEqual(
                self.bodies(api, "/v1/compress"), [sent, dict(sent, compression_model="claude")]
            )
            # the compressed request is ready to send on as it is
            self.assertEqual(
                api.send(DEFAULT_MODEL, result.request).text,
                "Tool said: " + squeezed["messages"][2]["content"],
            )

        self.both(body)

    def test_models_by_provider(self):
        def body(api):
            ids = [m["id"] for m in MODELS["data"]]
            self.assertEqual([m.id for m in api.models(provider="anthropic")], ids[1:])
            self.assertEqual([m.id for m in api.models()], ids)
            self.assertEqual(api.models(provider="a b/c&d"), [])
            self.assertEqual(
                [(r.method, r.path) for r in api.gw.requests],
                [
                    ("GET", "/v1/models?provider=anthropic"),
                    ("GET", "/v1/models"),
                    ("GET", "/v1/models?provider=a%20b%2Fc%26d"),
                ],
            )
            for provider, kind in (
                ("", edgee.EdgeeInputError),
                (" ", edgee.EdgeeInputError),
                (3, TypeError),
            ):
                self.raised(kind, api.models, provider=provider)
            self.assertEqual(len(api.gw.requests), 3)

        self.both(body)


class WholeRequestTest(_WholeCase):
    """`request()`: any /v1/ endpoint, as JSON or as a stream of server-sent events."""

    def test_json_answers(self):
        def body(api):
            out = api.request("POST", "/v1/responses", SAMPLES["/v1/responses"])
            self.assertEqual(out["output"][0]["content"][0]["text"], WHOLE_FRANCE)
            self.assertEqual((out["object"], out["usage"]["input_tokens"]), ("response", 6))
            self.assertEqual(api.request("GET", "/v1/models"), MODELS)
            counted = api.request(
                "post", "/v1/messages/count_tokens", SAMPLES["/v1/messages/count_tokens"]
            )
            self.assertEqual(counted, {"input_tokens": 6})
            answer = api.request("POST", "/v1/messages", WHOLE_MESSAGES)
            self.assertEqual(answer["content"], [{"type": "text", "text": WHOLE_FRANCE}])
            posted, listed = api.gw.requests[:2]
            self.assertEqual(
                [(r.method, r.path, r.json) for r in api.gw.requests],
                [
                    ("POST", "/v1/responses", SAMPLES["/v1/responses"]),
                    ("GET", "/v1/models", None),
                    ("POST", "/v1/messages/count_tokens", SAMPLES["/v1/messages/count_tokens"]),
                    ("POST", "/v1/messages", WHOLE_MESSAGES),
                ],
            )
            self.assertEqual(posted.headers["content-type"], "application/json")
            self.assertEqual(posted.headers["accept"], "application/json")
            self.assertNotIn("content-type", listed.headers)

        self.both(body)

    def test_messages_streamed(self):
        def body(api):
            seen = api.watch(
                api.open_events("POST", "/v1/messages", dict(WHOLE_MESSAGES, stream=True))
            )
            events = [e for e, _, _ in seen]
            self.assertTrue(all(type(e) is edgee.ServerSentEvent for e in events))
            names = [e.event for e in events]
            self.assertEqual(names, [e.json()["type"] for e in events])
            self.assertEqual(names[:3], ["message_start", "content_block_start", "ping"])
            self.assertEqual(names[-3:], ["content_block_stop", "message_delta", "message_stop"])
            text = "".join(
                e.json()["delta"]["text"] for e in events if e.event == "content_block_delta"
            )
            self.assertEqual(text, WHOLE_FRANCE)
            self.assertEqual({e.id for e in events}, {""})
            self.assertEqual({(p, f) for _, p, f in seen}, {("anthropic", None)})
            rec = api.gw.requests[-1]
            self.assertEqual(rec.json, dict(WHOLE_MESSAGES, stream=True))
            self.assertEqual(rec.headers["accept"], "text/event-stream")

        self.both(body)

    def test_responses_streamed(self):
        ask = dict(SAMPLES["/v1/responses"], model="google/gemini-fallback", stream=True)

        def body(api):
            seen = api.watch(api.open_events("POST", "/v1/responses", ask))
            events = [e for e, _, _ in seen]
            self.assertEqual({e.event for e in events}, {"message"})  # data lines only
            kinds = [e.json()["type"] for e in events]
            self.assertEqual(kinds[:2], ["response.created", "response.output_item.added"])
            self.assertEqual(kinds[-1], "response.completed")
            deltas = [
                e.json()["delta"]
                for e in events
                if e.json()["type"] == "response.output_text.delta"
            ]
            self.assertGreater(len(deltas), 1)
            self.assertEqual("".join(deltas), WHOLE_FRANCE)
            done = events[-1].json()["response"]
            self.assertEqual(done["output"][0]["content"][0]["text"], WHOLE_FRANCE)
            self.assertEqual({(p, f) for _, p, f in seen}, {("openai", True)})
            self.assertEqual(api.gw.requests[-1].json, ask)

        self.both(body)

    def test_chat_stream_passes_done_through(self):
        def body(api):
            ask = dict(SAMPLES[CHAT], stream=True)
            events = api.stream_request("POST", CHAT, ask)
            self.assertEqual(events[-1].data, "[DONE]")
            self.raised(edgee.EdgeeStreamError, events[-1].json)
            text = "".join(
                e.json()["choices"][0]["delta"].get("content", "")
                for e in events[:-1]
                if e.json()["choices"]
            )
            self.assertEqual(text, WHOLE_FRANCE)

        self.both(body)

    def test_paths_outside_v1_and_bad_methods_are_refused(self):
        paths = [
            "/v2/models",
            "v1/models",
            "/v1",
            "/models",
            "https://edgee.io/v1/models",
            "//evil.example/v1/models",
            "/v1/mo dels",
            "/v1/models\r\nX-Injected: 1",
        ]

        def body(api):
            for path in paths:
                with self.subTest(path=path):
                    self.raised(edgee.EdgeeInputError, api.request, "GET", path)
                    self.raised(edgee.EdgeeInputError, api.stream_request, "POST", path, {})
            for method in ("", "GE T", "GET\r\n"):
                self.raised(edgee.EdgeeInputError, api.request, method, "/v1/models")
            self.raised(TypeError, api.request, None, "/v1/models")
            self.raised(TypeError, api.request, "POST", "/v1/responses", {"x": object()})
            self.raised(ValueError, api.request, "POST", "/v1/responses", {"x": float("nan")})
            self.assertEqual((api.gw.requests, api.gw.connections), ([], 0))

        self.both(body)

    def test_cut_streams_raise_stream_errors(self):
        start = sse_event({"type": "message_start", "message": {}})
        cuts = [
            [WHOLE_SSE_HEAD + chunk_frame(start)],  # the chunked body never ends
            [http_head(200, {"Content-Type": "text/event-stream"}, content_length=1000) + start],
        ]
        ask = dict(WHOLE_MESSAGES, stream=True)

        def body(api):
            for parts in cuts:
                api.gw.push(Raw(parts))
                seen = []
                with self.assertRaises(edgee.EdgeeStreamError):
                    api.watch(api.open_events("POST", "/v1/messages", ask), into=seen)
                self.assertEqual([e.event for e, _, _ in seen], ["message_start"])
            api.gw.push(
                Raw(
                    [
                        http_head(200, {"Content-Type": "application/json"}, content_length=99)
                        + b'{"id":'
                    ]
                )
            )
            self.raised(edgee.EdgeeStreamError, api.request, "POST", "/v1/messages", WHOLE_MESSAGES)

        self.both(body)

    def test_errors_are_api_errors(self):
        def body(api):
            streaming = dict(WHOLE_MESSAGES, model=DEFAULT_MODEL, stream=True)
            error = self.raised(
                edgee.EdgeeAPIError, api.stream_request, "POST", "/v1/messages", streaming
            )
            self.assertEqual(
                (error.status, error.code, error.param), (400, "streaming_not_supported", "stream")
            )
            self.assertEqual(str(error), "API error 400: Streaming is not supported")
            limited = dict(SAMPLES["/v1/responses"], model="error-429")
            error = self.raised(edgee.EdgeeAPIError, api.request, "POST", "/v1/responses", limited)
            self.assertEqual((error.status, error.code), (429, "usage_limit_exceeded"))
            error = self.raised(edgee.EdgeeAPIError, api.request, "GET", "/v1/nowhere")
            self.assertEqual(error.status, 404)

        self.both(body)

    def test_key_is_in_no_exception_text(self):
        echo = "bad key " + self.key
        events = [f"event: error\ndata: {echo}\n\n".encode(), b"data: " + b"[" * 100000 + b"\n\n"]
        ask = dict(WHOLE_MESSAGES, stream=True)

        def body(api):
            api.gw.push(ErrorReply(400, "invalid_request", echo))
            error = self.raised(
                edgee.EdgeeAPIError, api.stream_request, "POST", "/v1/messages", ask
            )
            self.assertEqual(str(error), "API error 400: bad key [redacted]")
            self.assertNotIn(self.key, everything(error))
            api.gw.push(ErrorReply(400, "invalid_request", echo))
            error = self.raised(edgee.EdgeeAPIError, api.request, "POST", "/v1/messages", ask)
            self.assertNotIn(self.key, everything(error))
            api.gw.push(SSE(events, done=False))
            echoed, deep = api.stream_request("POST", "/v1/messages", ask)
            self.assertEqual((echoed.event, echoed.data), ("error", echo))  # the data is yours
            for event in (echoed, deep):  # not JSON, or too deep to decode
                error = self.raised(edgee.EdgeeStreamError, event.json)
                self.assertNotIn(self.key, everything(error))
                self.assertIn("not valid JSON", str(error))

        self.both(body)

    def test_timeouts_and_deadlines_are_those_of_send(self):
        start = chunk_frame(sse_event({"type": "message_start", "message": {}}))
        ask = dict(WHOLE_MESSAGES, stream=True)

        def body(api):
            api.gw.push(Raw([2.0]), Raw([WHOLE_SSE_HEAD + start, 2.0]))
            error = self.raised(
                edgee.EdgeeTimeoutError, api.request, "POST", "/v1/messages", ask, timeout=0.3
            )
            self.assertIn("no data from", str(error))
            seen = []
            with self.assertRaises(edgee.EdgeeTimeoutError):
                api.watch(api.open_events("POST", "/v1/messages", ask, timeout=0.3), into=seen)
            self.assertEqual([e.event for e, _, _ in seen], ["message_start"])
            api.gw.push(Raw([WHOLE_SSE_HEAD, *[0.15, start] * 10]))
            with self.assertRaises(edgee.EdgeeTimeoutError) as caught:
                api.stream_request("POST", "/v1/messages", ask, deadline=0.5)
            self.assertIn("deadline of 0.5 s", str(caught.exception))

        self.both(body)

    def test_retries_and_redirects_are_those_of_send(self):
        ask = SAMPLES["/v1/responses"]

        def body(api):
            slept = api.fake_sleep()
            api.gw.push(ErrorReply(503, None, "busy"), Redirect(307, "/v1/responses"))
            out = api.request("POST", "/v1/old-responses", ask)
            self.assertEqual(out["output"][0]["content"][0]["text"], WHOLE_FRANCE)
            api.gw.push(
                ErrorReply(429, "usage_limit_exceeded", "slow down", headers={"Retry-After": "0"})
            )
            events = api.stream_request("POST", "/v1/responses", dict(ask, stream=True))
            self.assertEqual(events[-1].json()["type"], "response.completed")
            self.assertEqual(
                [(r.method, r.path, r.json) for r in api.gw.requests],
                [("POST", "/v1/old-responses", ask)] * 2
                + [("POST", "/v1/responses", ask)]
                + [("POST", "/v1/responses", dict(ask, stream=True))] * 2,
            )
            self.assertEqual(len(slept), 2)
            api.gw.push(Redirect(302, "http://127.0.0.1:1/v1/responses"))
            error = self.raised(edgee.EdgeeAPIError, api.request, "POST", "/v1/responses", ask)
            self.assertIn("redirect to http://127.0.0.1:1 refused", str(error))
            self.assertEqual(len(api.gw.requests), 6)

        self.both(body, max_retries=2)


# ---- faults: hostile and unusual servers ----
# Regression tests of issue 10 ("Trust under faults"), each through the sync and the async API
# (but for the checks made at construction, which both APIs share).
# Expected to fail against the edgee.py of today (before the issue-10 rewrite):
#   FaultPoolTest.test_bytes_after_a_tls_answer_never_answer_another_call   next call gets "POISON"
#   FaultPoolTest.test_interim_answers_are_skipped                          API error 103
#   FaultRetryBudgetTest.test_post_to_a_closing_server_is_sent_once         arrives 4 times
#   FaultRetryBudgetTest.test_post_to_a_closing_server_is_sent_1_plus_max_retries_times  6 times
#   FaultRetryBudgetTest.test_early_answer_is_raised_and_not_retried        broken pipe, 3 uploads
#   FaultProxyTest.test_plain_http_through_an_authenticated_proxy          API error 407
#   FaultDecodeTest.test_deep_json_raises_an_edgee_error                   RecursionError
#   FaultDecodeTest.test_unrequested_content_encoding_is_named             binary junk, no "gzip"
#   FaultKeyTest.test_key_echoed_by_the_server_is_in_no_exception_text     key in the message
#   FaultKeyTest.test_api_key_must_be_printable_ascii                      non-ASCII key accepted
#   FaultSettingsTest.test_ssl_context_must_check_hostnames               accepted
#   FaultSettingsTest.test_base_url_with_control_characters_or_spaces_is_refused  accepted
#   FaultTimeTest.test_client_deadline_bounds_the_wait_and_the_stream      no `deadline` option
#   FaultTimeTest.test_call_deadline_bounds_the_body_and_the_stream        no `deadline` argument
#   FaultTimeTest.test_retry_after_that_is_not_a_finite_non_negative_number_is_ignored  no backoff

FAULT_KEY = "sk-live/ABCDEF0123456789xyz"  # a "/" that servers may JSON-escape as \/ or \u002f
FAULT_BIG = 8 * 1024 * 1024  # a prompt larger than loopback socket buffers hold unread
FAULT_DRIBBLE = 0.2  # seconds between the bytes (or events) of a dribbling server
FAULT_DEADLINE = 0.6  # seconds; the whole-call deadline the dribbling tests use
FAULT_LIMIT = 10.0  # seconds any server thread or worker thread of these tests may take
FAULT_DEEP = b'{"a":' * 100000 + b"1" + b"}" * 100000  # JSON nested 100,000 levels deep
FAULT_INTERIM = [  # 1xx interim answers a server may send before the final one
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n",
    b"HTTP/1.1 102 Processing\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\nLink: </b.js>; rel=preload\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nX-Edgee-Hint: 1\r\n\r\n",
]


def _fault_answer(text: str, **extra: Any) -> bytes:
    """A whole keep-alive JSON completion answer (head and body)."""
    body = compact_json(dict(completion_body(text), **extra))
    return http_head(200, {"Content-Type": "application/json"}, content_length=len(body)) + body


FAULT_POISON = _fault_answer("POISON")  # a second whole answer nobody asked for


def _fault_early(status: int, message: str) -> bytes:
    """An error answer that closes the connection."""
    body = compact_json(error_body(status, None, message))
    head = {"Content-Type": "application/json", "Connection": "close"}
    return http_head(status, head, content_length=len(body)) + body


def _fault_dribble(data: bytes, count: int = 15) -> list:
    """Raw parts: the first `count` bytes of `data`, one every FAULT_DRIBBLE seconds."""
    parts = []  # type: list
    for i in range(min(count, len(data))):
        parts += [FAULT_DRIBBLE, data[i : i + 1]]
    return parts


def _fault_texts(exc: BaseException) -> str:
    """Every text an exception shows: str, repr, args, message, body and the traceback."""
    return "\n".join([everything(exc), repr(exc.args), str(getattr(exc, "message", ""))])


class _Echo:
    """`before` (e.g. 1xx interim answers), then the fake LLM's answer to the gateway's
    request number `index` followed by `after`, in one write; waits first (up to 2 s)
    until `together` requests have arrived, so that many calls hold a connection at once."""

    def __init__(self, index: int, before: bytes = b"", after: bytes = b"", together: int = 0):
        self.index, self.before, self.after, self.together = index, before, after, together

    def send(self, conn: _Conn) -> bool:
        conn.gw.wait_requests(self.together, 2.0)
        if self.before:
            conn.send(self.before)
        written = []  # type: List[bytes]
        conn.send = written.append  # one write, so `after` shares the answer's TLS record
        try:
            keep = fake_llm(conn, conn.gw.requests[self.index])
        finally:
            del conn.send
        conn.send(b"".join(written) + self.after)
        return keep


def push_echoes(
    gw: Gateway, count: int, befores: Any = (b"",), after: bytes = b"", together: int = 0
) -> None:
    """Queue _Echo replies for the gateway's next `count` requests (nothing else may be
    queued or in flight); reply i sends `befores[i % len(befores)]` first."""
    first = len(gw.requests)
    gw.push(
        *[
            _Echo(first + i, befores[i % len(befores)], after, first + together if together else 0)
            for i in range(count)
        ]
    )


def fault_prompts(workers: int, calls: int) -> dict:
    """{prompt: the fake LLM's answer} for the calls fault_echoes makes."""
    return {
        f"worker {w} call {c}": f"Echo: worker {w} call {c}"
        for w in range(workers)
        for c in range(calls)
    }


def fault_echoes(api: Api, workers: int, calls: int) -> dict:
    """`workers` threads (sync) or tasks on the Api's loop (async) sharing its client, each
    making `calls` calls in turn (send, stream, send, ...); {prompt: answer text or the
    repr of what the call raised}, without the calls that did not end in time."""
    results = {}  # type: dict
    client = api.client

    def call(prompt: str, stream: bool) -> Any:
        if stream:
            return edgee.collect(client.stream(DEFAULT_MODEL, prompt)).text
        return client.send(DEFAULT_MODEL, prompt).text

    def work(w: int) -> None:
        for c in range(calls):
            prompt = f"worker {w} call {c}"
            try:
                results[prompt] = call(prompt, c % 2 == 1)
            except Exception as exc:  # compared with the expected answer by the test
                results[prompt] = repr(exc)

    async def acall(prompt: str, stream: bool) -> Any:
        if stream:
            return (await edgee.acollect(client.astream(DEFAULT_MODEL, prompt))).text
        return (await client.asend(DEFAULT_MODEL, prompt)).text

    async def awork(w: int) -> None:
        for c in range(calls):
            prompt = f"worker {w} call {c}"
            try:
                results[prompt] = await acall(prompt, c % 2 == 1)
            except Exception as exc:  # compared with the expected answer by the test
                results[prompt] = repr(exc)

    if api.is_async:

        async def everyone() -> None:
            await asyncio.gather(*[awork(w) for w in range(workers)])

        try:
            api.run(asyncio.wait_for(everyone(), FAULT_LIMIT))
        except asyncio.TimeoutError:  # the calls still running are missing from the results
            pass
        return dict(results)
    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + FAULT_LIMIT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return dict(results)


def _fault_read_head(sock: socket.socket, buf: bytes = b"") -> Any:
    """(head, the bytes after it) of the next request on `sock`, or None at its end."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_LINE:
            return None
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _fault_header(head: bytes, name: str) -> Optional[str]:
    """The value of header `name` in a request head, or None."""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _fault_read_body(sock: socket.socket, head: bytes, rest: bytes) -> Any:
    """(body, the bytes after it) by Content-Length, or None if the peer left first."""
    length = int(_fault_header(head, "content-length") or 0)
    buf = bytearray(rest)
    while len(buf) < length:  # grows by >= 1 byte per pass
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    return bytes(buf[:length]), bytes(buf[length:])


def _fault_pipe(src: socket.socket, dst: socket.socket, first: bytes = b"") -> None:
    """Copy `first`, then src to dst until src ends (or fails); then end dst's writing."""
    try:
        if first:
            dst.sendall(first)
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class _FaultServer:
    """A threaded loopback server: `serve(sock)` handles one connection; close() stops it."""

    def __init__(self) -> None:
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._open = set()  # type: set
        self._threads = []  # type: List[threading.Thread]
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]  # type: int
        self.url = f"http://127.0.0.1:{self.port}"
        self._spawn(self._accept)

    def serve(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop accepting, wake every connection, join the threads (bounded)."""
        self._stop.set()
        self._listener.close()
        with self._lock:
            socks, threads = list(self._open), list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    @contextlib.contextmanager
    def connection(self, sock: socket.socket) -> Any:
        """`sock`, woken by close() while in use, closed afterwards."""
        with self._lock:
            self._open.add(sock)
        try:
            yield sock
        finally:
            with self._lock:
                self._open.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread still reading it
            except OSError:
                pass
            sock.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name="fault-server")
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():  # ends with close()
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(FAULT_LIMIT)
            with self._lock:
                self.connections += 1
            self._spawn(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        with self.connection(sock):
            try:
                self.serve(sock)
            except OSError:
                pass


class _HeadFirst(_FaultServer):
    """Acts on each request's head before reading its body. Queued actions, one per
    request: bytes are sent as the answer, then the connection is closed with the body
    unread (the client's upload breaks); "reset" closes at once without answering. With
    nothing queued it reads the body and answers "Echo: <prompt>" (its first 100
    characters), keeping the connection. `heads` counts the requests begun, `bodies`
    those that arrived whole.
    """

    def __init__(self) -> None:
        self.heads = self.bodies = 0
        self._actions = collections.deque()  # type: collections.deque
        super().__init__()

    def push(self, *actions: Any) -> None:
        with self._lock:
            self._actions.extend(actions)

    def serve(self, sock: socket.socket) -> None:
        rest = b""
        while not self._stop.is_set():  # one request per pass; ends when the client leaves
            got = _fault_read_head(sock, rest)
            if got is None:
                return
            head, rest = got
            with self._lock:
                self.heads += 1
                action = self._actions.popleft() if self._actions else None
            if action == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if action is not None:
                sock.sendall(action)
                sock.shutdown(socket.SHUT_WR)
                return
            got = _fault_read_body(sock, head, rest)
            if got is None:
                return
            body, rest = got
            with self._lock:
                self.bodies += 1
            prompt = json.loads(body.decode("utf-8"))["messages"][-1]["content"]
            sock.sendall(_fault_answer("Echo: " + prompt[:100]))


class _AuthProxy(_FaultServer):
    """A forward proxy that wants `Proxy-Authorization: <expected>` (else 407). It sends
    absolute-form requests on to a loopback origin without that header (one request per
    connection) and opens CONNECT tunnels to one. `seen` lists (method, target,
    Proxy-Authorization or None) for every request it got."""

    def __init__(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self.expected = "Basic " + token
        self.seen = []  # type: List[tuple]
        super().__init__()

    def serve(self, sock: socket.socket) -> None:
        got = _fault_read_head(sock)
        if got is None:
            return
        head, rest = got
        method, target = head.decode("latin-1").split(" ", 2)[:2]
        auth = _fault_header(head, "proxy-authorization")
        with self._lock:
            self.seen.append((method, target, auth))
        if method != "CONNECT":  # read the whole request, so that even a 407 is heard
            got = _fault_read_body(sock, head, rest)
            if got is None:
                return
            rest = got[0]  # the body
        if auth != self.expected:
            sock.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="faults"\r\n'
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
        else:
            parts = urllib.parse.urlsplit(target)
            host, port = parts.hostname or "", str(parts.port or 80)
        if host not in ("127.0.0.1", "localhost"):  # loopback only: nothing leaves this machine
            sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        origin = socket.create_connection(("127.0.0.1", int(port)), timeout=FAULT_LIMIT)
        with self.connection(origin):
            if method == "CONNECT":
                sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._spawn(_fault_pipe, origin, sock)
                _fault_pipe(sock, origin, rest)
            else:
                origin.sendall(_fault_origin_form(head) + rest)
                _fault_pipe(origin, sock)


def _fault_origin_form(head: bytes) -> bytes:
    """A proxied request's head for the origin: origin-form target, no proxy credentials,
    and `Connection: close` (so the answer ends when the origin closes)."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    parts = urllib.parse.urlsplit(target)
    path = parts.path + ("?" + parts.query if parts.query else "")
    kept = [
        line
        for line in lines[1:]
        if line.partition(":")[0].strip().lower()
        not in ("proxy-authorization", "connection", "proxy-connection")
    ]
    return "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode(
        "latin-1"
    )


class _FaultCase(ClientTestCase):
    """ClientTestCase with the checks and servers of the fault tests."""

    def server(self, make: Any, *args: Any) -> Any:
        """`make(*args)`, closed at cleanup."""
        server = make(*args)
        self.addCleanup(server.close)
        return server

    def both_with(self, make: Any, body: Any, **options: Any) -> None:
        """`body(api, server)` through the sync, then the async API, each with a fresh
        server `make()` as the client's base_url."""
        for kind in ("sync", "async"):
            with self.subTest(api=kind):
                server = self.server(make)
                body(self.api(kind, server.url, **options), server)


class FaultPoolTest(_FaultCase):
    """An answer never reaches another request: a connection is reused only after its
    answer was read exactly to its end, with nothing else waiting on it."""

    def test_bytes_after_a_tls_answer_never_answer_another_call(self):
        # Padding past the 8 KiB a buffered reader takes at once leaves the poison,
        # sent in the same TLS record, inside the TLS layer, where select() cannot see it.
        poisoned = _fault_answer("Echo: q0", padding="." * 9000) + FAULT_POISON
        self.assertLess(len(poisoned), 16384)  # one TLS record

        def body(api):
            api.gw.push(Raw([poisoned], then="hold"))
            self.assertEqual(api.send(DEFAULT_MODEL, "q0").text, "Echo: q0")
            self.assertEqual(api.send(DEFAULT_MODEL, "q1").text, "Echo: q1")
            self.assertEqual(api.collect(DEFAULT_MODEL, "q2").text, "Echo: q2")
            push_echoes(api.gw, 16, after=FAULT_POISON)
            self.assertEqual(fault_echoes(api, 4, 4), fault_prompts(4, 4))
            self.assertEqual(api.gw.errors, [])

        self.both(body, tls=True, timeout=1.0)

    def test_interim_answers_are_skipped(self):
        def body(api):
            push_echoes(api.gw, 3 + 16, FAULT_INTERIM)
            self.assertEqual(api.send(DEFAULT_MODEL, "q0").text, "Echo: q0")
            self.assertEqual(api.collect(DEFAULT_MODEL, "q1").text, "Echo: q1")
            self.assertEqual(api.send(DEFAULT_MODEL, "q2").text, "Echo: q2")
            self.assertEqual(api.gw.connections, 1)  # each answer read whole: one connection
            self.assertEqual(fault_echoes(api, 4, 4), fault_prompts(4, 4))
            self.assertEqual(api.gw.errors, [])

        self.both(body, timeout=1.0)

    def test_answer_not_read_whole_closes_its_connection(self):
        unread = dict(error_body(400, "invalid_request", "too long"), padding="." * 300000)

        def body(api):
            gw = api.gw
            gw.push(Reply(400, unread))
            error = self.raised(edgee.EdgeeAPIError, api.send, DEFAULT_MODEL, "error")
            self.assertEqual(error.status, 400)
            self.assertEqual(api.send(DEFAULT_MODEL, "after error").text, "Echo: after error")
            self.assertEqual(gw.connections, 2)
            self.assertEqual(len(api.first(1, DEFAULT_MODEL, "a long story " * 20)), 1)
            self.assertEqual(api.send(DEFAULT_MODEL, "after break").text, "Echo: after break")
            self.assertEqual(gw.connections, 3)

        self.both(body)


class FaultRetryBudgetTest(_FaultCase):
    """A request is put on the wire at most 1 + max_retries times, pooled connections included."""

    def warm_pool(self, api, count=3):
        """`count` idle kept-alive connections, from calls that held them at the same time."""
        push_echoes(api.gw, count, together=count)
        self.assertEqual(fault_echoes(api, count, 1), fault_prompts(count, 1))
        self.assertEqual(api.gw.connections, count)

    def arrivals(self, api, call, prompt):
        """How many times `call(model, prompt)` put its request on the wire (it must fail)."""
        before = len(api.gw.requests)
        self.raised(edgee.EdgeeConnectionError, call, DEFAULT_MODEL, prompt)
        return len(api.gw.requests) - before

    def test_post_to_a_closing_server_is_sent_once(self):
        def body(api):
            self.warm_pool(api)
            api.gw.push(*[Raw([], then="close")] * 20)  # reads each request whole, then closes
            self.assertEqual(self.arrivals(api, api.send, "once"), 1)
            self.assertEqual(self.arrivals(api, api.stream, "once"), 1)
            before = len(api.gw.requests)
            answers = fault_echoes(api, 3, 1)  # three at once: the last pooled connection, new ones
            self.assertEqual(len(answers), 3)
            self.assertTrue(all("Error" in text for text in answers.values()), answers)
            self.assertEqual(len(api.gw.requests) - before, 3)

        self.both(body, timeout=2.0)

    def test_post_to_a_closing_server_is_sent_1_plus_max_retries_times(self):
        def body(api):
            api.fake_sleep()
            self.warm_pool(api)
            api.gw.push(*[Raw([], then="close")] * 20)
            self.assertEqual(self.arrivals(api, api.send, "thrice"), 3)

        self.both(body, timeout=2.0, max_retries=2)

    def test_reused_connection_broken_while_sending_is_sent_again(self):
        # The one resend outside the budget: a reused keep-alive connection that broke
        # while the request was being sent (so it never arrived whole).
        prompt = "x" * FAULT_BIG

        def body(api, server):
            self.assertEqual(api.send(DEFAULT_MODEL, "warm").text, "Echo: warm")
            server.push("reset")  # the next request: head read, then the connection reset
            self.assertEqual(api.send(DEFAULT_MODEL, prompt).text, "Echo: " + prompt[:100])
            # Three heads, but the big request arrived whole once, on a second connection.
            self.assertEqual((server.heads, server.bodies, server.connections), (3, 2, 2))

        self.both_with(_HeadFirst, body)  # max_retries=0

    def early_answer(self, status, message, api, server):
        api.fake_sleep()
        server.push(*[_fault_early(status, message)] * 3)
        exc = self.raised(edgee.EdgeeAPIError, api.send, DEFAULT_MODEL, "x" * FAULT_BIG)
        self.assertEqual((exc.status, exc.message), (status, message))
        self.assertEqual(server.heads, 1)  # a 4xx is not retried

    def test_early_answer_is_raised_and_not_retried(self):
        for status, message in ((413, "Request body too large"), (401, "Invalid API key")):
            with self.subTest(status=status):
                check = functools.partial(self.early_answer, status, message)
                self.both_with(_HeadFirst, check, max_retries=2)


class FaultProxyTest(_FaultCase):
    """Through an authenticated HTTP_PROXY/HTTPS_PROXY, the credentials go to the proxy only."""

    def proxy(self, variable):
        proxy = self.server(_AuthProxy, "user", "pa55word")
        os.environ[variable] = f"http://user:pa55word@127.0.0.1:{proxy.port}"  # isolate_env
        return proxy

    def test_plain_http_through_an_authenticated_proxy(self):
        proxy = self.proxy("HTTP_PROXY")

        def body(api):
            start = len(proxy.seen)
            self.assertEqual(api.send(DEFAULT_MODEL, "via proxy").text, "Echo: via proxy")
            self.assertEqual(api.collect(DEFAULT_MODEL, "streamed").text, "Echo: streamed")
            self.assertEqual(len(api.models()), 2)
            chat = api.gw.url + "/v1/chat/completions"
            self.assertEqual(
                proxy.seen[start:],
                [
                    ("POST", chat, proxy.expected),
                    ("POST", chat, proxy.expected),
                    ("GET", api.gw.url + "/v1/models", proxy.expected),
                ],
            )
            self.assertEqual(len(api.gw.requests), 3)
            for request in api.gw.requests:
                self.assertNotIn("proxy-authorization", request.headers)
                self.assertEqual(request.headers["authorization"], "Bearer " + self.key)

        self.both(body)

    def test_https_through_an_authenticated_tunnel(self):
        proxy = self.proxy("HTTPS_PROXY")

        def body(api):
            start = len(proxy.seen)
            self.assertEqual(api.send(DEFAULT_MODEL, "tunnelled").text, "Echo: tunnelled")
            self.assertEqual(api.collect(DEFAULT_MODEL, "streamed").text, "Echo: streamed")
            seen = proxy.seen[start:]
            self.assertTrue(seen)
            self.assertEqual(set(seen), {("CONNECT", f"localhost:{api.gw.port}", proxy.expected)})
            self.assertEqual(len(api.gw.requests), 2)
            for request in api.gw.requests:  # the tunnel carries the client's bytes unchanged
                self.assertNotIn("proxy-authorization", request.headers)

        self.both(body, tls=True)


class FaultDecodeTest(_FaultCase):
    """Whatever the server sends, every failure is an EdgeeError."""

    def test_deep_json_raises_an_edgee_error(self):
        first = completion_chunk(role="assistant")
        error_event = b"event: error\ndata: " + FAULT_DEEP + b"\n\n"
        cases = [
            ("stream event", SSE([first, sse_bytes(FAULT_DEEP)]), "stream", None),
            ("stream error event", SSE([first, error_event]), "stream", None),
            ("200 body", Reply(200, FAULT_DEEP), "send", None),
            ("200 models body", Reply(200, FAULT_DEEP), "models", None),
            ("400 error body", Reply(400, FAULT_DEEP), "send", 400),
            ("500 error body", Reply(500, FAULT_DEEP), "send", 500),
        ]

        def body(api):
            for name, reply, call, status in cases:
                with self.subTest(case=name):
                    api.gw.push(reply)
                    args = () if call == "models" else (DEFAULT_MODEL, "deep")
                    exc = self.raised(edgee.EdgeeError, getattr(api, call), *args)
                    if status is not None:
                        self.assertIsInstance(exc, edgee.EdgeeAPIError)
                        self.assertEqual(exc.status, status)

        self.both(body)

    def test_unrequested_content_encoding_is_named(self):
        gzipped = {"Content-Encoding": "gzip"}
        stream = b"".join(sse_bytes(e) for e in stream_events("zipped")) + b"data: [DONE]\n\n"
        answers = [
            ("send", gzip.compress(compact_json(completion_body("zipped"))), "application/json"),
            ("stream", gzip.compress(stream), "text/event-stream"),
        ]

        def body(api):
            for call, data, content_type in answers:
                with self.subTest(call=call):
                    api.gw.push(Reply(200, data, headers=gzipped, content_type=content_type))
                    exc = self.raised(edgee.EdgeeError, getattr(api, call), DEFAULT_MODEL, "x")
                    message = str(exc)
                    self.assertIn("gzip", message)
                    self.assertTrue(message.isprintable(), repr(message))  # no binary junk
                    self.assertNotIn("\ufffd", message)
                    self.assertNotIn("\\x1f", message)

        self.both(body)


class FaultKeyTest(_FaultCase):
    """The API key is in no exception text, however the server echoes it."""

    key = FAULT_KEY

    def test_key_echoed_by_the_server_is_in_no_exception_text(self):
        key = FAULT_KEY.encode("ascii")
        slash, u002f = key.replace(b"/", b"\\/"), key.replace(b"/", b"\\u002f")

        def envelope(echo):
            return (
                b'{"error":{"message":"invalid key ' + echo + b'","type":"authentication_error"}}'
            )

        def malformed(echo):
            return SSE(
                [completion_chunk(role="assistant"), b'data: {"echo": "Bearer ' + echo + b'"\n\n']
            )

        html = b"<html>Authorization: Bearer " + key + b"</html>"
        challenge = f'Bearer error="invalid_token", error_description="invalid key {FAULT_KEY}"'
        cases = [
            ("malformed stream event", malformed(key), "stream"),
            ("malformed stream event, \\/", malformed(slash), "stream"),
            ("200 HTML body", Reply(200, html, content_type="text/html"), "send"),
            ("401 body, \\/", Reply(401, envelope(slash)), "send"),
            ("401 body, \\u002f", Reply(401, envelope(u002f)), "send"),
            (
                "403 text body, \\/",
                Reply(403, b"no key " + slash, content_type="text/plain"),
                "send",
            ),
            ("200 error envelope, \\/", Reply(200, envelope(slash)), "send"),
            (
                "error event, \\u002f",
                SSE([b"event: error\ndata: " + envelope(u002f) + b"\n\n"]),
                "stream",
            ),
            ("401 header", Reply(401, b"", headers={"WWW-Authenticate": challenge}), "send"),
            (
                "401 reason phrase, empty body",
                Raw([b"HTTP/1.1 401 Bad key " + key + b"\r\nContent-Length: 0\r\n\r\n"]),
                "send",
            ),
            (
                "status line that is not HTTP",
                Raw([b"HTTP/1.1 2x0 " + key + b"\r\n\r\n"]),
                "send",
            ),
            (
                "Content-Encoding quoting it",
                Raw(
                    [http_head(200, [("Content-Encoding", key.decode())], content_length=2) + b"{}"]
                ),
                "send",
            ),
            (
                "redirect to a userinfo holding it",
                Raw(
                    [
                        http_head(
                            302,
                            [("Location", "http://" + FAULT_KEY + "@evil.test/")],
                            content_length=0,
                        )
                    ]
                ),
                "send",
            ),
        ]

        def body(api):
            for name, reply, call in cases:
                with self.subTest(case=name):
                    api.gw.push(reply)
                    exc = self.raised(edgee.EdgeeError, getattr(api, call), DEFAULT_MODEL, "hi")
                    texts = _fault_texts(exc)
                    self.assertNotIn(FAULT_KEY, texts)
                    self.assertNotIn(FAULT_KEY[8:], texts)  # nor any escaped form of it

        self.both(body)

    def test_api_key_must_be_printable_ascii(self):
        # Refused at construction, which the sync and the async API share.
        keys = [
            "sk-ключ-0123456789",
            "sk-clé-0123456789",
            "sk-\U0001f511-0123456789",
            "sk-\x7f-012345",
        ]
        for key in keys:
            for where in ("api_key", "EDGEE_API_KEY"):
                with self.subTest(key=ascii(key), where=where):
                    options = {"base_url": "http://127.0.0.1:9"}
                    if where == "api_key":
                        options["api_key"] = key
                    else:
                        os.environ["EDGEE_API_KEY"] = key  # isolate_env restores it
                    texts = _fault_texts(self.raised(edgee.EdgeeInputError, edgee.Edgee, **options))
                    self.assertNotIn(key, texts)
                    self.assertNotIn(key[3:], texts)


class FaultSettingsTest(_FaultCase):
    """Settings that would weaken the client are refused at construction (shared by both APIs)."""

    def test_ssl_context_must_check_hostnames(self):
        gw = self.gateway(tls=True)
        context = client_ssl_context()
        context.check_hostname = False  # verify_mode stays CERT_REQUIRED
        self.assertEqual(context.verify_mode, ssl.CERT_REQUIRED)
        exc = self.raised(
            edgee.EdgeeInputError,
            edgee.Edgee,
            api_key=self.key,
            base_url=gw.url,
            ssl_context=context,
        )
        self.assertIn("hostname", str(exc))
        self.assertEqual(gw.connections, 0)

    def test_base_url_with_control_characters_or_spaces_is_refused(self):
        for bad in ("\r\nX-Injected: 1", "\r", "\n", "\x00", " ", "\t"):
            for url in (f"http://127.0.0.1:9/v1{bad}x", f"http://127.0.0.1:9/a{bad}b/v1"):
                # The environment cannot hold a NUL.
                for where in ("base_url",) if "\x00" in bad else ("base_url", "EDGEE_BASE_URL"):
                    with self.subTest(url=url, where=where):
                        options = {"api_key": self.key}
                        if where == "base_url":
                            options["base_url"] = url
                        else:
                            os.environ["EDGEE_BASE_URL"] = url  # isolate_env restores it
                        self.raised(edgee.EdgeeInputError, edgee.Edgee, **options)


class FaultTimeTest(_FaultCase):
    """`deadline` bounds a whole call while `timeout` stays the longest silence; pauses a
    server asks for that are not finite and non-negative are ignored."""

    def assert_deadline(self, call, *args, **kwargs):
        """`call(*args, **kwargs)` raises EdgeeTimeoutError at about FAULT_DEADLINE seconds."""
        start = time.monotonic()
        self.raised(edgee.EdgeeTimeoutError, call, *args, **kwargs)
        elapsed = time.monotonic() - start
        self.assertGreater(elapsed, FAULT_DEADLINE - 0.1, "raised before the deadline")
        self.assertLess(elapsed, FAULT_DEADLINE + 1.0, "raised long after the deadline")

    def slow_stream(self):
        """An event every FAULT_DRIBBLE seconds, for 3 s: never silent for long."""
        events = []  # type: list
        for event in stream_events(*["word "] * 15):
            events += [event, FAULT_DRIBBLE]
        return SSE(events)

    def test_client_deadline_bounds_the_wait_and_the_stream(self):
        answer = _fault_answer("slow")

        def body(api):
            api.gw.push(Raw(_fault_dribble(answer)))  # even the head dribbles
            self.assert_deadline(api.send, DEFAULT_MODEL, "slow")
            api.gw.push(self.slow_stream())
            self.assert_deadline(api.stream, DEFAULT_MODEL, "slow")
            self.assertEqual(api.send(DEFAULT_MODEL, "quick").text, "Echo: quick")

        self.both(body, deadline=FAULT_DEADLINE)

    def test_call_deadline_bounds_the_body_and_the_stream(self):
        answer = _fault_answer("slow")
        head = answer.index(b"\r\n\r\n") + 4

        def body(api):
            api.gw.push(Raw([answer[:head], *_fault_dribble(answer[head:])]))
            self.assert_deadline(api.send, DEFAULT_MODEL, "slow", deadline=FAULT_DEADLINE)
            api.gw.push(self.slow_stream())
            self.assert_deadline(api.stream, DEFAULT_MODEL, "slow", deadline=FAULT_DEADLINE)
            self.assertEqual(api.send(DEFAULT_MODEL, "quick", deadline=5.0).text, "Echo: quick")

        self.both(body)

    def test_retry_after_that_is_not_a_finite_non_negative_number_is_ignored(self):
        def body(api):
            slept = api.fake_sleep()
            for name in ("Retry-After", "retry-after-ms"):
                for value in ("nan", "inf", "-inf", "-5"):
                    with self.subTest(header=name, value=value):
                        del slept[:]
                        api.gw.push(ErrorReply(503, None, "busy", headers={name: value}))
                        self.assertEqual(api.send(DEFAULT_MODEL, "again").text, "Echo: again")
                        self.assertEqual(len(slept), 1)
                        self.assertTrue(0.375 <= slept[0] <= 0.5, slept)  # the first backoff

        self.both(body, max_retries=1)


# ==== command line and docs ====

EDGEE_PY = os.path.join(HERE, "edgee.py")
TEST_EDGEE_PY = os.path.join(HERE, "test_edgee.py")
STREAM_DOC = os.path.join(SHARED_REFERENCE, "python-sdk-stream-method.md")
CLI_TIMEOUT = 30  # seconds; a hung CLI fails the test instead of hanging the suite


def stripped_lines(text):
    """Text with trailing whitespace dropped from each line (for comparing doc snippets)."""
    return "\n".join(line.rstrip() for line in text.splitlines())


# python-sdk-stream-method.md, verbatim (checked against the file when present).
DOC_STRING_INPUT = """\
for chunk in edgee.stream("gpt-5.2", "Tell me a story"):
    if chunk.text:
        print(chunk.text, end="", flush=True)

    if chunk.finish_reason:
        print(f"\\nFinished: {chunk.finish_reason}")
# Equivalent to: input={"messages": [{"role": "user", "content": "Tell me a story"}]}
"""

DOC_MESSAGES = """\
for chunk in edgee.stream("gpt-5.2", {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a poem about coding"}
    ]
}):
    if chunk.text:
        print(chunk.text, end="", flush=True)
"""

DOC_MULTIPLE_CHOICES = """\
for chunk in edgee.stream("gpt-5.2", "Give me creative ideas"):
    for choice in chunk.choices:
        if choice.delta.content:
            print(f"Choice {choice.index}: {choice.delta.content}")
"""

DOC_CONVENIENCE = """\
for chunk in edgee.stream("gpt-5.2", "Explain quantum computing"):
    # Content chunks
    if chunk.text:
        print(chunk.text, end="", flush=True)

    # First chunk contains the role
    if chunk.role:
        print(f"\\nRole: {chunk.role}")

    # Last chunk contains finish reason
    if chunk.finish_reason:
        print(f"\\nFinish reason: {chunk.finish_reason}")
"""

DOC_COLLECT = """\
full_text = ""

for chunk in edgee.stream("gpt-5.2", "Tell me a story"):
    if chunk.text:
        full_text += chunk.text
        print(chunk.text, end="", flush=True)  # Also display as it streams

print(f"\\n\\nFull response ({len(full_text)} characters):")
print(full_text)
"""

DOC_EMPTY_CHUNKS = """\
for chunk in edgee.stream("gpt-5.2", "Hello"):
    if chunk.text:  # \u2705 Good: Check before using
        print(chunk.text)
    # \u274c Bad: print(chunk.text) - may print None
"""

DOC_SEND_STREAM = """\
for chunk in edgee.send("gpt-5.2", "Tell me a story", stream=True):
    if chunk.text:
        print(chunk.text, end="", flush=True)
"""

DOC_ERRORS = """\
try:
    for chunk in edgee.stream("gpt-5.2", "Hello!"):
        if chunk.text:
            print(chunk.text, end="", flush=True)
except RuntimeError as error:
    # API errors: "API error {status}: {message}"
    # Network errors: Standard HTTP errors
    print(f"Stream failed: {error}")
"""

# The official package's README (edgee 1.1.0), verbatim.
README_QUICK_START = """\
from edgee import Edgee

edgee = Edgee("your-api-key")

# Send a simple request
response = edgee.send(
    model="anthropic/claude-haiku-4-5",
    input="What is the capital of France?"
)

print(response.text)
# "The capital of France is Paris."
"""

README_SEND = """\
response = edgee.send(
    model="anthropic/claude-haiku-4-5",
    input="Hello, world!"
)

# Access response
print(response.text)           # Text content
print(response.finish_reason)  # Finish reason
print(response.tool_calls)     # Tool calls (if any)

# Access usage and compression info
if response.usage:
    print(f"Tokens used: {response.usage.total_tokens}")

if response.compression:
    print(f"Saved tokens: {response.compression.saved_tokens}")
    print(f"Reduction: {response.compression.reduction}%")
    print(f"Cost savings: ${response.compression.cost_savings / 1_000_000:.3f}")
    print(f"Time: {response.compression.time_ms} ms")
"""

README_STREAM = """\
for chunk in edgee.stream("anthropic/claude-haiku-4-5", "Tell me a story"):
    if chunk.text:
        print(chunk.text, end="", flush=True)

    if chunk.finish_reason:
        print(f"\\nFinished: {chunk.finish_reason}")
"""


def run_example(code, namespace):
    """Exec `code` in `namespace` and return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<example>", "exec"), namespace)
    return out.getvalue()


class DocsTest(ClientTestCase):
    """The documentation's code runs as written, against the loopback gateway (sync, as written)."""

    def setUp(self):
        super().setUp()
        self.gw = self.gateway()
        self.c = self.client(self.gw)

    def run_doc(self, code):
        return run_example(code, {"edgee": self.c})

    def assert_in_doc(self, path, *snippets):
        if not os.path.exists(path):
            return  # the snippets above are the verbatim copies
        with open(path, encoding="utf-8") as f:
            doc = stripped_lines(f.read())
        for snippet in snippets:
            self.assertIn(stripped_lines(snippet), doc)

    def test_snippets_are_verbatim(self):
        self.assert_in_doc(
            STREAM_DOC,
            DOC_STRING_INPUT,
            DOC_MESSAGES,
            DOC_MULTIPLE_CHOICES,
            DOC_CONVENIENCE,
            DOC_COLLECT,
            DOC_EMPTY_CHUNKS,
            DOC_SEND_STREAM,
            DOC_ERRORS,
        )
        self.assert_in_doc(OFFICIAL_README, README_QUICK_START, README_SEND, README_STREAM)

    def test_doc_string_input(self):
        out = self.run_doc(DOC_STRING_INPUT)
        self.assertEqual(out, "Echo: Tell me a story\nFinished: stop\n")
        rec = self.gw.requests[-1]
        self.assertEqual(rec.json["messages"], [{"role": "user", "content": "Tell me a story"}])
        self.assertEqual((rec.json["model"], rec.json["stream"]), ("gpt-5.2", True))

    def test_doc_messages(self):
        self.assertEqual(self.run_doc(DOC_MESSAGES), "Echo: Write a poem about coding")
        self.assertEqual(
            self.gw.requests[-1].json["messages"][0],
            {"role": "system", "content": "You are a helpful assistant."},
        )

    def test_doc_multiple_choices(self):
        out = self.run_doc(DOC_MULTIPLE_CHOICES)
        lines = out.split("\n")
        self.assertEqual(lines[-1], "")
        pieces = []
        for line in lines[:-1]:
            self.assertTrue(line.startswith("Choice 0: "), line)
            pieces.append(line[len("Choice 0: ") :])
        self.assertEqual("".join(pieces), "Echo: Give me creative ideas")

    def test_doc_multiple_choices_with_n(self):
        # the same loop over a 2-choice stream (n passed through a dict input)
        code = DOC_MULTIPLE_CHOICES.replace(
            '"Give me creative ideas"',
            '{"messages": [{"role": "user", "content": "Give me creative ideas"}], "n": 2}',
        )
        out = self.run_doc(code)
        texts = {}
        for line in out.split("\n")[:-1]:
            match = re.match(r"Choice (\d+): (.*)$", line)
            self.assertIsNotNone(match, line)
            texts[match.group(1)] = texts.get(match.group(1), "") + match.group(2)
        self.assertEqual(
            texts, {"0": "Echo: Give me creative ideas #0", "1": "Echo: Give me creative ideas #1"}
        )

    def test_doc_convenience_properties(self):
        out = self.run_doc(DOC_CONVENIENCE)
        self.assertEqual(
            out, "\nRole: assistant\nEcho: Explain quantum computing\nFinish reason: stop\n"
        )

    def test_doc_collect(self):
        out = self.run_doc(DOC_COLLECT)
        text = "Echo: Tell me a story"
        self.assertEqual(out, f"{text}\n\nFull response ({len(text)} characters):\n{text}\n")

    def test_doc_empty_chunks(self):
        out = self.run_doc(DOC_EMPTY_CHUNKS)
        self.assertNotIn("None", out)
        self.assertEqual("".join(out.splitlines()), "Echo: Hello")

    def test_doc_send_stream(self):
        self.assertEqual(self.run_doc(DOC_SEND_STREAM), "Echo: Tell me a story")
        self.assertIs(self.gw.requests[-1].json["stream"], True)

    def test_doc_error_handling(self):
        self.assertEqual(self.run_doc(DOC_ERRORS), "Echo: Hello!")
        self.gw.push(ErrorReply(401, "unauthorized", "Missing Authorization header"))
        self.assertEqual(
            self.run_doc(DOC_ERRORS),
            "Stream failed: API error 401: Missing Authorization header\n",
        )
        self.gw.push(ErrorReply(429, "usage_limit_exceeded", "slow down"))
        self.assertEqual(self.run_doc(DOC_ERRORS), "Stream failed: API error 429: slow down\n")
        port = free_port()
        offline = self.track(
            edgee.Edgee(api_key="k", base_url=f"http://127.0.0.1:{port}", max_retries=0)
        )
        out = run_example(DOC_ERRORS, {"edgee": offline})
        self.assertTrue(out.startswith("Stream failed: "), out)
        self.assertEqual(out.count("\n"), 1)

    def test_readme_quick_start_and_send(self):
        os.environ["EDGEE_BASE_URL"] = self.gw.url
        namespace = {}
        self.addCleanup(lambda: namespace["edgee"].close() if "edgee" in namespace else None)
        out = run_example(README_QUICK_START, namespace)
        self.assertEqual(out, "Echo: What is the capital of France?\n")
        rec = self.gw.requests[-1]
        self.assertEqual(rec.headers["authorization"], "Bearer your-api-key")
        self.assertEqual(rec.json["model"], "anthropic/claude-haiku-4-5")
        body = completion_body(
            compression={
                "saved_tokens": 450,
                "cost_savings": 27000,
                "reduction": 48.99884991374353,
                "time_ms": 12,
            }
        )
        self.gw.push(Reply(body=body))
        out = run_example(README_SEND, namespace)
        self.assertEqual(
            out.splitlines(),
            [
                body["choices"][0]["message"]["content"],
                "stop",
                "None",
                "Tokens used: 20",
                "Saved tokens: 450",
                "Reduction: 48.99884991374353%",
                "Cost savings: $0.027",
                "Time: 12 ms",
            ],
        )
        self.assertEqual(
            self.gw.requests[-1].json["messages"], [{"role": "user", "content": "Hello, world!"}]
        )
        out = run_example(README_SEND, namespace)  # the fake LLM: no compression
        lines = out.splitlines()
        self.assertEqual(lines[:3], ["Echo: Hello, world!", "stop", "None"])
        self.assertEqual(len(lines), 4)
        self.assertRegex(lines[3], r"^Tokens used: [1-9]\d*$")

    def test_readme_stream(self):
        out = run_example(README_STREAM, {"edgee": self.c})
        self.assertEqual(out, "Echo: Tell me a story\nFinished: stop\n")
        self.assertEqual(self.gw.requests[-1].json["model"], "anthropic/claude-haiku-4-5")

    def readme_block(self, marker):
        path = os.path.join(HERE, "README.md")
        if not os.path.exists(path):
            self.skipTest("README.md is not beside this file")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        found = re.search(marker + r"\n```python\n(.*?)```", text, re.S)
        self.assertIsNotNone(found, "README has no block after " + marker)
        return found.group(1)

    def run_block(self, marker):
        """(what it printed, the gateway) after running the README's block after `marker`
        with EDGEE_API_KEY and EDGEE_BASE_URL set for a loopback gateway."""
        code = self.readme_block(marker)
        gw = self.gateway()
        os.environ.update(EDGEE_API_KEY="readme-key", EDGEE_BASE_URL=gw.url)  # isolate_env restores
        out = io.StringIO()
        with redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
        return out.getvalue(), gw

    def test_tool_round_trip_loop(self):
        out, gw = self.run_block("<!-- tool-round-trip -->")
        self.assertEqual(out, 'Tool said: {"city": "Paris", "forecast": "sunny", "celsius": 21}\n')
        sent = [r.json["messages"] for r in gw.requests]
        self.assertEqual(len(sent), 2)  # the tool call, then the final answer
        call = sent[1][1]["tool_calls"][0]
        self.assertEqual(call["function"], {"name": "get_weather", "arguments": '{"city":"Paris"}'})
        self.assertEqual(sent[1][2]["tool_call_id"], call["id"])

    def test_edge_tools_round_trip(self):
        out, gw = self.run_block("<!-- edge-tools-round-trip -->")
        weather = '{"city": "Paris", "forecast": "sunny", "celsius": 21}'
        edge = "edgee_current_time: " + EDGE_RESULTS["edgee_current_time"]
        self.assertEqual(
            out, f"edgee_current_time ran\nTool said: {weather}; Edge Tools said: {edge}\n"
        )
        tool = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
        ask = {
            "model": DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "Paris"}],
            "tools": [tool],
            "edgee_tool_ids": ["edgee_current_time"],
        }
        call = dict(CALL, function={"name": "get_weather", "arguments": '{"city":"Paris"}'})
        turns = [
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": weather},
        ]
        resume = dict(ask, messages=[*ask["messages"], *turns], edgee_pending_id="edgee_pending_1")
        self.assertEqual([r.json for r in gw.requests], [ask, resume])

    def test_raw_request_streams(self):
        out, gw = self.run_block("<!-- raw-request-streams -->")
        self.assertEqual(out, "Echo: Hello\nanswered by anthropic\nEcho: Hello\ninput tokens: 1\n")
        hello = [{"role": "user", "content": "Hello"}]
        messages = {"model": "anthropic/claude-haiku-4-5", "max_tokens": 200, "messages": hello}
        responses = {"model": DEFAULT_MODEL, "input": "Hello", "stream": True}
        self.assertEqual(
            [(r.path, r.headers["accept"], r.json) for r in gw.requests],
            [
                ("/v1/messages", "text/event-stream", dict(messages, stream=True)),
                ("/v1/responses", "text/event-stream", responses),
                ("/v1/messages/count_tokens", "application/json", messages),
            ],
        )


class CliTest(ClientTestCase):
    """`python edgee.py`: the command line, run as a child process."""

    def setUp(self):
        super().setUp()
        self.gw = self.gateway()

    def env(self, **values):
        env = dict(os.environ)  # without EDGEE_* and *_proxy (see isolate_env)
        env.update(EDGEE_API_KEY="cli-key", EDGEE_BASE_URL=self.gw.url, PYTHONIOENCODING="utf-8")
        for name, value in values.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def cli(self, *args, **kwargs):
        stdin = kwargs.pop("stdin", None)
        env = self.env(**kwargs)
        return subprocess.run(
            [sys.executable, EDGEE_PY, *list(args)],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=CLI_TIMEOUT,
            encoding="utf-8",
            errors="replace",
        )

    def assert_one_line_error(self, result, *needles):
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        for needle in needles:
            self.assertIn(needle, lines[0])

    def test_prompt_argument_streams(self):
        result = self.cli("hello", "world")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "Echo: hello world\n")
        rec = self.gw.requests[-1]
        self.assertEqual(rec.json["messages"], [{"role": "user", "content": "hello world"}])
        self.assertIs(rec.json.get("stream"), True)
        self.assertEqual(rec.headers["accept"], "text/event-stream")
        self.assertEqual(rec.headers["authorization"], "Bearer cli-key")

    def test_non_ascii_prompt(self):
        result = self.cli("héllo €")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "Echo: héllo €\n")

    def test_prompt_on_stdin(self):
        result = self.cli(stdin="from stdin\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "Echo: from stdin")
        self.assertEqual(self.gw.requests[-1].json["messages"][-1]["content"].strip(), "from stdin")

    def test_system_prompt(self):
        result = self.cli("--system", "Be brief.", "question")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "Echo: question\n")
        self.assertEqual(
            self.gw.requests[-1].json["messages"],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "question"}],
        )

    def test_model_option(self):
        result = self.cli("--model", "anthropic/claude-opus-4-6", "hi")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "Echo: hi\n")
        self.assertEqual(self.gw.requests[-1].json["model"], "anthropic/claude-opus-4-6")

    def test_model_from_environment(self):
        result = self.cli("hi", EDGEE_MODEL="mistral/mistral-large")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.gw.requests[-1].json["model"], "mistral/mistral-large")

    def test_base_url_option_overrides_environment(self):
        closed = f"http://127.0.0.1:{free_port()}"
        result = self.cli("--base-url", self.gw.url, "routed", EDGEE_BASE_URL=closed)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "Echo: routed\n")

    def test_empty_stdin_prompt(self):
        result = self.cli(stdin="  \n")
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn("prompt", result.stderr)
        self.assertEqual(self.gw.requests, [])

    def test_no_stream(self):
        result = self.cli("--no-stream", "whole", "answer")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "Echo: whole answer\n")
        rec = self.gw.requests[-1]
        self.assertNotIn("stream", rec.json)
        self.assertNotEqual(rec.headers.get("accept"), "text/event-stream")

    def test_list_models(self):
        result = self.cli("--list-models")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), [m["id"] for m in MODELS["data"]])
        rec = self.gw.requests[-1]
        self.assertEqual((rec.method, rec.path), ("GET", "/v1/models"))
        self.assertEqual(rec.headers["authorization"], "Bearer cli-key")
        self.assertEqual(
            result.stdout.splitlines(), ["openai/gpt-5.2", "anthropic/claude-opus-4-6"]
        )

    def test_list_models_error(self):
        self.gw.push(ErrorReply(403, "forbidden", "API key is inactive"))
        result = self.cli("--list-models")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertIn("API error 403: API key is inactive", result.stderr)

    def test_missing_key(self):
        result = self.cli("hello", EDGEE_API_KEY=None)
        self.assert_one_line_error(result, "EDGEE_API_KEY")
        self.assertEqual(result.stdout, "")
        self.assertEqual(self.gw.requests, [])

    def test_api_error(self):
        result = self.cli("--model", "error-401", "hello")
        self.assert_one_line_error(result, "API error 401", ERROR_CODES["unauthorized"][2])

    def test_network_error(self):
        port = free_port()
        result = self.cli("hello", EDGEE_BASE_URL=f"http://127.0.0.1:{port}")
        self.assert_one_line_error(result, str(port))
        self.assertEqual(result.stdout.strip(), "")

    def test_help(self):
        result = self.cli("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("usage", result.stdout.lower())
        self.assertIn("--model", result.stdout)
        self.assertEqual(self.gw.requests, [])

    def test_version(self):
        result = self.cli("--version")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(edgee.__version__, result.stdout + result.stderr)

    def test_serve_gateway_subprocess(self):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, TEST_EDGEE_PY, "--serve", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
            encoding="utf-8",
            errors="replace",
        )

        def stop():
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)

        self.addCleanup(stop)
        deadline = time.monotonic() + 10.0
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                ready = True
                break
            except OSError:
                time.sleep(0.05)
        self.assertTrue(ready, "the --serve gateway did not start listening")
        result = self.cli("served", "prompt", EDGEE_BASE_URL=f"http://127.0.0.1:{port}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "Echo: served prompt\n")
        result = self.cli("--list-models", EDGEE_BASE_URL=f"http://127.0.0.1:{port}")
        self.assertEqual(result.stdout.splitlines(), [m["id"] for m in MODELS["data"]])
        self.assertEqual(self.gw.requests, [], "the CLI used the served gateway")
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        self.assertIn(f"http://127.0.0.1:{port}", out)

    def test_count_tokens_prints_the_count_and_sends_nothing_else(self):
        result = self.cli("--count-tokens", "-v", "-s", "Be brief.", "how many tokens here")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "6\n", ""))
        self.assertEqual(len(self.gw.requests), 1)
        rec = self.gw.requests[-1]
        self.assertEqual((rec.method, rec.path), ("POST", "/v1/count_tokens"))
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "how many tokens here"},
        ]
        self.assertEqual(rec.json, {"model": edgee.DEFAULT_CLI_MODEL, "messages": messages})
        result = self.cli("--count-tokens", "--model", "error-429", "hi")
        self.assert_one_line_error(result, "API error 429")

    def test_compress_prints_the_compressed_request(self):
        result = self.cli("--compress", LONG)
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        short = " ".join(LONG.split()[:8])
        sent = {"model": edgee.DEFAULT_CLI_MODEL, "messages": [{"role": "user", "content": LONG}]}
        self.assertEqual(
            json.loads(result.stdout), dict(sent, messages=[{"role": "user", "content": short}])
        )
        self.assertEqual([(r.path, r.json) for r in self.gw.requests], [("/v1/compress", sent)])
        result = self.cli("--compress", "-v", LONG)
        self.assertEqual(
            result.stderr,
            "compression: 10 -> 8 input tokens (20% removed; technique auto;"
            " strategies: text_truncation), 12 ms\n",
        )

    def test_verbose_stream_reports_provider_fallback_and_usage(self):
        result = self.cli("-v", "--model", "openai/gpt-fallback", "hello")
        self.assertEqual((result.returncode, result.stdout), (0, "Echo: hello\n"))
        self.assertEqual(
            result.stderr.splitlines(),
            [
                "provider: anthropic",
                "fallback: yes",
                "usage: 1 prompt + 2 completion = 3 tokens",
                "compression: none",
            ],
        )
        rec = self.gw.requests[-1]
        self.assertEqual(rec.json["stream_options"], {"include_usage": True})  # for the usage
        self.assertIs(rec.json["stream"], True)

    def test_verbose_reports_compression_and_what_is_missing(self):
        answer = dm_answer({"role": "assistant", "content": "Hi"}, compression=COMPRESSION)
        events = [completion_chunk(content="Hi"), completion_chunk(finish_reason="stop")]
        self.gw.push(Reply(body=answer, headers={"X-Edgee-Provider": "mistral"}), SSE(events))
        result = self.cli("-v", "--no-stream", "hello")
        self.assertEqual((result.returncode, result.stdout), (0, "Hi\n"))
        self.assertEqual(
            result.stderr.splitlines(),
            [
                "provider: mistral",
                "fallback: no",
                "usage: 10 prompt + 10 completion = 20 tokens",
                "compression: 450 tokens saved (48.99% smaller prompt), 12 ms",
            ],
        )
        result = self.cli("-v", "hello")
        self.assertEqual((result.returncode, result.stdout), (0, "Hi\n"))
        self.assertEqual(
            result.stderr.splitlines(),
            ["provider: unknown", "fallback: no", "usage: not reported", "compression: none"],
        )
        result = self.cli("hello")  # without -v, nothing on stderr
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr), (0, "Echo: hello\n", "")
        )
        self.assertNotIn("stream_options", self.gw.requests[-1].json)

    def test_list_count_and_compress_exclude_each_other(self):
        for pair in (("--count-tokens", "--compress"), ("--list-models", "--count-tokens")):
            with self.subTest(pair=pair):
                result = self.cli(*pair, "hi")
                self.assertEqual(result.returncode, 2)
                self.assertIn("not allowed with", result.stderr)
        self.assertEqual(self.gw.requests, [])


# ---- serve on its own ----


def serve(argv: List[str]) -> None:
    """python test_edgee.py --serve [PORT]: run the gateway until Ctrl-C."""
    port = int(argv[0]) if argv else 8787
    gw = Gateway(port=port)
    routes = [
        f"  {method:<4} {path:<26} {handler.__doc__.splitlines()[0]}"
        for (method, path), (handler, _) in ROUTES.items()
    ]
    print(f"Edgee loopback gateway on {gw.url}", *routes, "", FAKE_LLM_GUIDE, sep="\n", flush=True)
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
