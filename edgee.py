"""edgee.py: a one-file, zero-dependency client for the Edgee AI Gateway.

    import edgee
    client = edgee.Edgee("your-api-key")          # or set EDGEE_API_KEY
    print(client.send("openai/gpt-5.2", "Hello!").text)
    for chunk in client.stream("openai/gpt-5.2", "Tell me a story"):
        print(chunk.text or "", end="", flush=True)

    async for chunk in client.astream("openai/gpt-5.2", "Tell me a story"):
        ...                                          # native asyncio, no threads

Standard library only, CPython 3.7 and newer. Drop-in compatible with the
official `edgee` package (1.1.0); adds timeouts and deadlines, retries,
connection reuse, a strict server-sent-events parser, streamed-answer
assembly, asyncio, and every endpoint of the gateway.

Read top to bottom: errors, data model, input checks, then a protocol core
that does no I/O (HTTP/1.1 bytes, event streams, and every decision:
retry, redirect, reuse), then two drivers that only move bytes (blocking
sockets, asyncio), the client, stream helpers, and the command line
(`python edgee.py --help`).
"""

from __future__ import annotations

import _thread
import json
import os
import select
import socket
import ssl
import sys
import time
import types
import urllib.error
import urllib.parse

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` costs import time, so only the type checker loads it
    from collections.abc import (
        AsyncIterator,
        Awaitable,
        Callable,
        Generator,
        Iterable,
        Iterator,
        Mapping,
    )
    from dataclasses import dataclass
    from typing import Any, Union

    JSONDict = dict[str, Any]
    InputLike = Union[str, "InputObject", Mapping[str, Any]]
    Plan = Generator[Any, Any, Any]  # a call's protocol steps; see DELIVER
    from typing import TypedDict, Unpack  # Python 3.11 typing; only the type checker reads it

    class CallOptions(TypedDict, total=False):
        """The keywords every call takes."""

        timeout: float | None  # seconds of silence allowed
        deadline: float | None  # seconds for the whole call
        headers: Mapping[str, str] | None  # extra request headers

    from asyncio import Protocol as _AsyncProtocol

    _StreamBase = Generator[Any, Any, None]
    _Mapping = Mapping
else:
    from _collections_abc import Generator as _StreamBase  # loaded at startup: free
    from _collections_abc import Mapping as _Mapping

    _AsyncProtocol = object  # asyncio loads only when an async call is made

__all__ = [
    "AsyncStream",
    "Choice",
    "CompressMetadata",
    "CompressResult",
    "Compression",
    "Edgee",
    "EdgeeAPIError",
    "EdgeeConfig",
    "EdgeeConnectionError",
    "EdgeeError",
    "EdgeeInputError",
    "EdgeeStreamError",
    "EdgeeTimeoutError",
    "EdgeeToolExecuted",
    "FunctionDefinition",
    "InputObject",
    "InputTokenDetails",
    "Message",
    "Model",
    "OutputTokenDetails",
    "SSEDecoder",
    "SendResponse",
    "ServerSentEvent",
    "Stream",
    "StreamAccumulator",
    "StreamChoice",
    "StreamChunk",
    "StreamDelta",
    "Tool",
    "ToolCall",
    "Usage",
    "acollect",
    "collect",
    "main",
    "parse_sse_events",
]

__version__ = "1.1.0"

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

DEFAULT_BASE_URL = "https://edgee.io"
API_ENDPOINT = "/v1/chat/completions"
MODELS_ENDPOINT = "/v1/models"
COUNT_TOKENS_ENDPOINT = "/v1/count_tokens"
COMPRESS_ENDPOINT = "/v1/compress"
USER_AGENT = f"edgee.py/{__version__} (Python {sys.version_info[0]}.{sys.version_info[1]})"

DEFAULT_TIMEOUT = 600.0  # seconds of silence allowed; reasoning models think for minutes
CONNECT_TIMEOUT = 10.0  # connecting (TCP and TLS) never waits longer than this
DEFAULT_MAX_RETRIES = 2
CALL_OPTIONS = ("timeout", "deadline", "headers")  # the keywords every call takes
RETRY_STATUSES = frozenset((408, 409, 429, 500, 502, 503, 504))
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0  # a server asking for a longer wait gets its error raised instead
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))

READ_SIZE = 65536
MAX_ERROR_BODY = 65536  # bytes of an error body we read; the rest is dropped with the connection
MAX_ERROR_MESSAGE = 1000  # characters of server text quoted in an exception
MAX_BODY = 64 * 1024 * 1024  # a non-streamed answer larger than this is refused
MAX_EVENT_BYTES = 16 * 1024 * 1024  # one server-sent event (or line) larger than this is refused
MAX_CHUNK_LINE = 4096  # a chunk-size or trailer line of a chunked body
MAX_HEAD_BYTES = 65536  # an answer's status line and headers; trailers likewise
MAX_HEADERS = 256  # header lines in one head
MAX_INTERIM = 32  # 1xx answers before the final one (102 Processing, 103 Early Hints)
MAX_IDLE_CONNECTIONS = 16
DRAIN_WAIT = 0.1  # seconds a stream waits after [DONE] for its body's end, to reuse the connection
EARLY_ANSWER_WAIT = 2.0  # seconds to read an answer the server sent before taking the whole request
ASYNC_BUFFER = 262144  # bytes an async connection buffers before it stops reading the socket

ROLES = ("system", "user", "assistant", "tool", "developer")
COMPRESSION_MODELS = ("claude", "codex", "opencode", "cursor")
COMPRESSION_HEADERS = {
    "tool_result_trimming": "X-Edgee-Compression-Tool-Result-Trimming",
    "tool_surface_reduction": "X-Edgee-Compression-Tool-Surface-Reduction",
    "output_brevity": "X-Edgee-Compression-Brevity",
}
# The HTTP status the gateway uses for each error code (edgee-error-codes.yml),
# for errors that arrive inside a 200 stream.
ERROR_CODE_STATUS = {
    "bad_model_id": 400,
    "model_not_found": 400,
    "provider_not_supported": 400,
    "streaming_not_supported": 400,
    "invalid_json": 400,
    "invalid_tokenizer": 400,
    "invalid_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "usage_limit_exceeded": 429,
    "internal_error": 500,
    "provider_error": 502,
}

_BOM = b"\xef\xbb\xbf"
_HEX_DIGITS = b"0123456789abcdefABCDEF"

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class EdgeeError(RuntimeError):
    """Base class of every error raised by this module."""


class EdgeeInputError(EdgeeError, ValueError):
    """Bad input or configuration, found before anything was sent."""


class EdgeeInputTypeError(EdgeeInputError, TypeError):
    """An argument of the wrong type, found before anything was sent."""


class EdgeeAPIError(EdgeeError):
    """The gateway answered with an error: `str()` is "API error <status>: <message>".

    Attributes: status, message, code, type, param, body (parsed JSON or text)
    and headers (a dict with lower-case names).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"API error {status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.body = body
        self.headers = headers or {}

    @property
    def status_code(self) -> int:
        """The HTTP status, under the name openai-python uses."""
        return self.status


class EdgeeConnectionError(EdgeeError, urllib.error.URLError):
    """The network failed: no connection, a reset, a timeout, a broken TLS session.

    Also an `urllib.error.URLError` (so an `OSError`), as the official package raised.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        RuntimeError.__init__(self, message)
        self.reason = message
        self.retryable = retryable

    def __str__(self) -> str:
        return str(self.args[0])


class EdgeeTimeoutError(EdgeeConnectionError, TimeoutError):
    """Connecting, or waiting for the next bytes, took longer than the timeout."""


class EdgeeStreamError(EdgeeConnectionError):
    """The answer arrived broken: cut short, malformed, or larger than the limits."""


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------

# Importing `dataclasses` (it loads `inspect`) and building the classes would
# double our import time, so the classes below become dataclasses on first
# use: the first look at this module from outside, or the first Edgee().
_PENDING_DATACLASSES: list[type] = []
_DATACLASS_LOCK = _thread.allocate_lock()


class _Field:
    """A `field(...)` default waiting for make_dataclasses to become a dataclasses.Field."""

    __slots__ = ("options",)

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options


if TYPE_CHECKING:
    from dataclasses import field
else:  # the type checker sees plain `dataclasses.dataclass` and `dataclasses.field`

    def dataclass(cls):
        _PENDING_DATACLASSES.append(cls)
        return cls

    def field(**options):
        return _Field(options)


def make_dataclasses() -> None:
    """Turn the data-model classes into dataclasses (once; thread-safe)."""
    if not _PENDING_DATACLASSES:
        return
    import dataclasses

    with _DATACLASS_LOCK:
        for cls in _PENDING_DATACLASSES:
            for name, value in list(vars(cls).items()):
                if isinstance(value, _Field):
                    setattr(cls, name, dataclasses.field(**value.options))
            dataclasses.dataclass(cls)
        del _PENDING_DATACLASSES[:]
        module = sys.modules.get(__name__)
        if module is not None:  # back to a plain module: no more lookup cost
            module.__class__ = types.ModuleType


class _LazyModule(types.ModuleType):
    """This module until its dataclasses are made: any outside look makes them."""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("__"):
            make_dataclasses()
        return types.ModuleType.__getattribute__(self, name)


@dataclass
class FunctionDefinition:
    """A function the model may call: its name, description and JSON Schema parameters."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass
class Tool:
    """A tool offered to the model; `type` is always "function"."""

    type: str
    function: FunctionDefinition


@dataclass
class ToolCall:
    """A call the model made: `function` is {"name": str, "arguments": str of JSON}."""

    id: str
    type: str
    function: dict[str, Any]


@dataclass
class Message:
    """One message of a conversation; fields left as None are not sent."""

    role: str
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


@dataclass
class InputObject:
    """A full request: messages plus options.

    `extra_body` holds any other request field (max_tokens, temperature,
    stream_options, ...), sent as is. `edgee_tool_ids` names the Edge Tools
    to offer, `edgee_pending_id` resumes a conversation whose Edge Tool calls
    were deferred, `enable_debug` asks the gateway for debug information.
    """

    messages: list[Any]
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    tags: list[str] | None = None
    compression_model: str | None = None
    tool_result_trimming: bool | None = None
    tool_surface_reduction: bool | None = None
    output_brevity: bool | None = None
    extra_body: dict[str, Any] | None = None
    edgee_tool_ids: list[str] | None = None
    edgee_pending_id: str | None = None
    enable_debug: bool | None = None


@dataclass
class InputTokenDetails:
    """Prompt-token details: tokens read from and written to the prompt cache."""

    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None


@dataclass
class OutputTokenDetails:
    """Completion-token details: tokens spent reasoning."""

    reasoning_tokens: int | None = None


@dataclass
class Usage:
    """Token counts of one completion; `raw` is the usage object received."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    input_tokens_details: InputTokenDetails | None = None
    output_tokens_details: OutputTokenDetails | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class Compression:
    """What prompt compression saved: tokens, micro-dollars, percent (a float), milliseconds."""

    saved_tokens: int
    cost_savings: int
    reduction: float
    time_ms: int


@dataclass
class EdgeeToolExecuted:
    """An Edge Tool the gateway ran before answering, and whether it succeeded."""

    name: str
    success: bool


_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_REASONING_KEYS = ("reasoning_content", "reasoning")  # providers use one or the other


def _reasoning(message: dict[str, Any]) -> str | None:
    """A message's or delta's reasoning text (`reasoning_content` or `reasoning`), or None."""
    text = message.get("reasoning_content") or message.get("reasoning")
    return text if type(text) is str else None


class _AnswerHeaders:
    """The routing metadata of an answer, read from its `headers` (lower-case names)."""

    headers: dict[str, str]

    @property
    def provider(self) -> str | None:
        """The provider that answered (`X-Edgee-Provider`), or None."""
        return self.headers.get("x-edgee-provider") or None

    @property
    def fallback_used(self) -> bool | None:
        """`X-Edgee-Fallback-Used` as True or False; None when absent or unreadable."""
        value = self.headers.get("x-edgee-fallback-used")
        if value is None:
            return None
        return _FLAGS.get(value.strip().lower())


@dataclass
class Choice:
    """One answer of a completion; `message` is the assistant message as a dict."""

    index: int
    message: dict[str, Any]
    finish_reason: str | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class SendResponse(_AnswerHeaders):
    """A whole completion, from `send()` or assembled from a stream.

    `headers` are the answer's HTTP headers (lower-case names); `raw` is the
    JSON object received (None when assembled from a stream). Neither takes
    part in `==` or `repr()`.
    """

    choices: list[Choice]
    usage: Usage | None = None
    compression: Compression | None = None
    id: str | None = None
    model: str | None = None
    created: int | None = None
    edgee_pending_id: str | None = None
    edgee_tools_executed: list[EdgeeToolExecuted] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str | None:
        """The first choice's text, or None."""
        if self.choices:
            return self.choices[0].message.get("content") or None
        return None

    @property
    def message(self) -> dict[str, Any] | None:
        """The first choice's message (ready to append to the conversation), or None."""
        return self.choices[0].message if self.choices else None

    @property
    def finish_reason(self) -> str | None:
        """Why the first choice stopped: "stop", "length", "tool_calls", "content_filter"."""
        return self.choices[0].finish_reason if self.choices else None

    @property
    def tool_calls(self) -> list[dict[str, Any]] | None:
        """The first choice's tool calls, or None."""
        if self.choices:
            return self.choices[0].message.get("tool_calls") or None
        return None

    @property
    def reasoning(self) -> str | None:
        """The first choice's reasoning (`reasoning_content` or `reasoning`), or None."""
        return _reasoning(self.choices[0].message) if self.choices else None

    @property
    def refusal(self) -> str | None:
        """The first choice's refusal text, or None."""
        return (self.choices[0].message.get("refusal") or None) if self.choices else None


@dataclass
class StreamDelta:
    """What one chunk adds to a choice: its role, a piece of text, tool-call fragments.

    `reasoning` is a piece of the model's reasoning (sent as `reasoning_content`
    or `reasoning`), `refusal` a piece of a refusal; `raw` is the delta received.
    """

    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None
    refusal: str | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class StreamChoice:
    """One choice of a chunk; `finish_reason` is set on its last chunk only."""

    index: int
    delta: StreamDelta
    finish_reason: str | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class StreamChunk:
    """One server-sent chunk of a streamed completion.

    `usage` arrives on the final chunk when `stream_options.include_usage` is
    set (that chunk has no choices); `compression` when compression applied.
    `raw` is the JSON object received, with any field not modelled here
    (`edgee_pending_id`, `system_fingerprint`, ...); it is not in `==` or `repr()`.
    """

    choices: list[StreamChoice]
    compression: Compression | None = None
    usage: Usage | None = None
    id: str | None = None
    model: str | None = None
    created: int | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str | None:
        """`choices[0].delta.content`, or None."""
        return (self.choices[0].delta.content or None) if self.choices else None

    @property
    def role(self) -> str | None:
        """`choices[0].delta.role` (first chunk only), or None."""
        return (self.choices[0].delta.role or None) if self.choices else None

    @property
    def finish_reason(self) -> str | None:
        """`choices[0].finish_reason` (final chunk only), or None."""
        return (self.choices[0].finish_reason or None) if self.choices else None

    @property
    def tool_calls(self) -> list[dict[str, Any]] | None:
        """`choices[0].delta.tool_calls` fragments, or None."""
        return (self.choices[0].delta.tool_calls or None) if self.choices else None

    @property
    def reasoning(self) -> str | None:
        """`choices[0].delta.reasoning`, or None."""
        return (self.choices[0].delta.reasoning or None) if self.choices else None

    @property
    def refusal(self) -> str | None:
        """`choices[0].delta.refusal`, or None."""
        return (self.choices[0].delta.refusal or None) if self.choices else None


@dataclass
class Model:
    """A model the gateway offers (GET /v1/models); `raw` is the object received."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = ""
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class CompressMetadata:
    """What `/v1/compress` did: the strategies applied and the token counts before and after.

    `compression_rate` is the fraction of input tokens removed (0.0 to 1.0);
    `error` is set when compression partly failed; `tool_stats` holds
    per-tool figures when tool results were trimmed.
    """

    technique: str
    applied_strategies: list[str]
    compression_rate: float
    uncompressed_input_tokens: int
    compressed_input_tokens: int
    compression_time_ms: int
    error: str | None = None
    tool_stats: dict[str, Any] | None = None


@dataclass
class CompressResult:
    """The answer of `compress()`: `request` is the compressed request body, ready to send.

    `raw` is the JSON object received (the request plus its `compression`
    object); it is not in `==` or `repr()`.
    """

    request: dict[str, Any]
    compression: CompressMetadata
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class EdgeeConfig:
    """Client settings; None means "use the environment or the default"."""

    api_key: str | None = None
    base_url: str | None = None
    timeout: float | None = None
    max_retries: int | None = None
    ssl_context: ssl.SSLContext | None = None
    deadline: float | None = None  # seconds for a whole call; None: no bound

    def __repr__(self) -> str:  # never shows the key
        return (
            f"EdgeeConfig(api_key={'***' if self.api_key else None}, "
            f"base_url={self.base_url!r}, timeout={self.timeout!r}, "
            f"max_retries={self.max_retries!r}, deadline={self.deadline!r})"
        )


@dataclass
class ServerSentEvent:
    """One dispatched server-sent event (WHATWG HTML, section 9.2)."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """The event's data decoded as JSON; EdgeeStreamError if it is not JSON."""
        try:
            return json.loads(self.data)
        except (ValueError, RecursionError):
            # The data is not quoted: it is server text, which may echo the API key.
            raise EdgeeStreamError(
                f"server-sent event data is not valid JSON ({len(self.data)} characters; "
                "the text is in .data)"
            ) from None


# ---------------------------------------------------------------------------
# Input normalisation: everything is checked before a byte is sent
# ---------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return type(value).__name__


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise EdgeeInputError(message)


def _require_type(condition: bool, message: str) -> None:
    if not condition:
        raise EdgeeInputTypeError(message)


def _plain(value: Any) -> Any:
    """`value` with dataclasses turned into dicts (their None fields dropped), recursively."""
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        return {
            name: _plain(getattr(value, name))
            for name in value.__dataclass_fields__
            if getattr(value, name) is not None
        }
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def normalize_model(model: object) -> str:
    """The model name, or EdgeeInputError if it is not a non-empty string."""
    _require_type(isinstance(model, str), f"model must be a string, not {_type_name(model)}")
    assert isinstance(model, str)
    _require(bool(model.strip()), "model must be a non-empty string")
    return model


def normalize_message(message: object, where: str) -> dict[str, Any]:
    """One message as a dict, checked for a known role and the fields that role needs.

    Fields set to None are left out (the API has no null message field), so an
    assistant message with `"content": None` goes without `content`.
    """
    _require_type(
        isinstance(message, (dict, Message)),
        f"{where} must be a dict or a Message, not {_type_name(message)}",
    )
    plain: dict[str, Any] = {
        key: value for key, value in _plain(message).items() if value is not None
    }
    role = plain.get("role")
    _require(role is not None, f"{where} has no role")
    _require(
        role in ROLES,
        f"{where} has role {role!r}; expected one of {', '.join(ROLES)}",
    )
    content = plain.get("content")
    _require_type(
        content is None or isinstance(content, (str, list)),
        f"{where} content must be a string (or a list of content parts), not {_type_name(content)}",
    )
    if role == "tool":
        _require(bool(plain.get("tool_call_id")), f"{where} (role tool) needs a tool_call_id")
    if role in ("system", "user", "developer", "tool"):
        _require(content is not None, f"{where} (role {role}) needs content")
    return plain


def normalize_tool(tool: object, where: str) -> dict[str, Any]:
    """One tool as a dict: {"type": "function", "function": {"name": ..., ...}}."""
    _require_type(
        isinstance(tool, (dict, Tool)),
        f"{where} must be a dict or a Tool, not {_type_name(tool)}",
    )
    plain: dict[str, Any] = _plain(tool)
    _require(plain.get("type") == "function", f'{where} must have type "function"')
    function = plain.get("function")
    _require_type(isinstance(function, dict), f"{where} needs a function definition")
    name = function.get("name") if isinstance(function, dict) else None
    _require(
        isinstance(name, str)
        and 0 < len(name) <= 64
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in name),
        f"{where} function name {name!r} must be 1-64 characters of a-z, A-Z, 0-9, _ and -",
    )
    parameters = function.get("parameters") if isinstance(function, dict) else None
    _require_type(
        parameters is None or isinstance(parameters, dict),
        f"{where} function parameters must be a JSON Schema object (a dict)",
    )
    return plain


def _input_fields(input: object) -> dict[str, Any]:
    """The request fields an input (str, dict or InputObject) asks for, unchecked."""
    if isinstance(input, str):
        return {"messages": [{"role": "user", "content": input}]}
    if isinstance(input, InputObject):
        fields = dict(input.extra_body or {})
        for name in _INPUT_FIELDS:  # a field left as None keeps what extra_body says
            value = getattr(input, name)
            if value is not None:
                fields[name] = value
        return fields
    _require_type(
        isinstance(input, dict),
        f"input must be a string, a dict or an InputObject, not {_type_name(input)}",
    )
    assert isinstance(input, dict)
    return dict(input)


def _string_list(value: object, name: str) -> list[str]:
    _require_type(
        isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value),
        f"{name} must be a list of strings",
    )
    assert isinstance(value, (list, tuple))
    return list(value)


def _chat_fields(model: object, input: object) -> tuple[dict[str, Any], dict[str, str]]:
    """The checked fields of a chat completion request (no `stream`) and its extra headers."""
    body: dict[str, Any] = {"model": normalize_model(model)}
    request = _input_fields(input)
    messages = request.pop("messages", None)
    _require(messages is not None, "input has no messages")
    _require_type(
        isinstance(messages, (list, tuple)),
        f"messages must be a list, not {_type_name(messages)}",
    )
    assert isinstance(messages, (list, tuple))
    _require(len(messages) > 0, "messages must not be empty")
    body["messages"] = [normalize_message(m, f"messages[{i}]") for i, m in enumerate(messages)]

    tools = request.pop("tools", None)
    if tools:
        _require_type(
            isinstance(tools, (list, tuple)), f"tools must be a list, not {_type_name(tools)}"
        )
        body["tools"] = [normalize_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    tool_choice = request.pop("tool_choice", None)
    if tool_choice:
        _require_type(
            isinstance(tool_choice, (str, dict)),
            f"tool_choice must be a string or a dict, not {_type_name(tool_choice)}",
        )
        body["tool_choice"] = tool_choice
    tags = request.pop("tags", None)
    if tags:
        body["tags"] = _string_list(tags, "tags")
    compression_model = request.pop("compression_model", None)
    if compression_model is not None:
        _require(
            compression_model in COMPRESSION_MODELS,
            f"compression_model {compression_model!r} must be one of "
            + ", ".join(COMPRESSION_MODELS),
        )
        body["compression_model"] = compression_model
    tool_ids = request.pop("edgee_tool_ids", None)
    if tool_ids is not None:
        body["edgee_tool_ids"] = _string_list(tool_ids, "edgee_tool_ids")
    pending_id = request.pop("edgee_pending_id", None)
    if pending_id is not None:
        _require_type(
            isinstance(pending_id, str),
            f"edgee_pending_id must be a string, not {_type_name(pending_id)}",
        )
        _require(bool(pending_id), "edgee_pending_id must not be empty")
        body["edgee_pending_id"] = pending_id
    debug = request.pop("enable_debug", None)
    if debug is not None:
        _require_type(
            isinstance(debug, bool), f"enable_debug must be True or False, not {_type_name(debug)}"
        )
        body["enable_debug"] = debug

    headers = {}
    for name, header in COMPRESSION_HEADERS.items():
        toggle = request.pop(name, None)
        _require_type(
            toggle is None or isinstance(toggle, bool),
            f"{name} must be True, False or None, not {_type_name(toggle)}",
        )
        if toggle is not None:
            headers[header] = "true" if toggle else "false"

    for name in ("model", "stream"):  # the method's own arguments decide these
        request.pop(name, None)
    body.update((key, _plain(value)) for key, value in request.items() if value is not None)
    return body, headers


def _json_body(body: dict[str, Any]) -> bytes:
    try:
        payload = json.dumps(body, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EdgeeInputTypeError(f"input is not JSON-serialisable: {exc}") from None
    return payload.encode("utf-8")


def build_request(model: object, input: object, stream: bool) -> tuple[bytes, dict[str, str]]:
    """The JSON body and the extra headers of a chat completion request.

    Request and message fields set to None are not sent. Raises
    EdgeeInputError (a ValueError; EdgeeInputTypeError is also a TypeError)
    naming the first problem found.
    """
    body, headers = _chat_fields(model, input)
    if stream:
        body["stream"] = True
    return _json_body(body), headers


def build_count_tokens_request(model: object, input: object) -> tuple[bytes, dict[str, str]]:
    """The JSON body and extra headers (none) of a `/v1/count_tokens` request.

    `input` is checked as for `build_request`; the body holds what the
    endpoint counts: `model`, `messages` (each with a `content`, "" when it
    had none) and, when the input gives them, `system` and `tokenizer`.
    Tools and the other options are not sent. Raises EdgeeInputError.
    """
    fields, _ = _chat_fields(model, input)
    body = {
        "model": fields["model"],
        "messages": [m if "content" in m else dict(m, content="") for m in fields["messages"]],
    }
    system = fields.get("system")
    if system is not None:
        _require_type(
            isinstance(system, (str, list)),
            f"system must be a string or a list of content blocks, not {_type_name(system)}",
        )
        body["system"] = system
    tokenizer = fields.get("tokenizer")
    if tokenizer is not None:
        _require_type(
            isinstance(tokenizer, str), f"tokenizer must be a string, not {_type_name(tokenizer)}"
        )
        body["tokenizer"] = tokenizer
    return _json_body(body), {}


def build_compress_request(model: object, input: object) -> tuple[bytes, dict[str, str]]:
    """The JSON body and extra headers of a `/v1/compress` request.

    The body is the chat completion request `build_request` makes (without
    `stream`): the gateway answers with the same request, compressed. The
    compression toggles (`tool_result_trimming`, ...) become headers, as for
    a chat completion. Raises EdgeeInputError.
    """
    body, headers = _chat_fields(model, input)
    return _json_body(body), headers


# Headers a caller may not set: the client's own credentials, and the framing
# and connection handling the transport does itself.
_RESERVED_HEADERS = frozenset(
    (
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-edgee-api-key",
        "host",
        "content-length",
        "transfer-encoding",
        "content-encoding",
        "accept-encoding",
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
    )
)
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def normalize_headers(headers: object) -> dict[str, str]:
    """Per-call headers (a dict or any mapping), checked: a new dict of str names and
    values ({} for None).

    Names keep their case; a name given twice in different cases is refused.
    Raises EdgeeInputError naming the header (never quoting its value) when a
    name is not an HTTP token, when a value holds CR, LF, NUL or another
    control character but tab, or a character beyond Latin-1, and when the
    header is one the client sets itself: its credentials (Authorization,
    Proxy-Authorization, X-Api-Key, X-Edgee-Api-Key), Host, and the framing and
    connection headers (Content-Length, Transfer-Encoding, Content-Encoding,
    Accept-Encoding, Connection, Proxy-Connection, Keep-Alive, TE, Trailer,
    Upgrade, Expect). EdgeeInputTypeError when `headers` is not a mapping or a
    name or value is not a string.
    """
    if headers is None:
        return {}
    _require_type(
        isinstance(headers, _Mapping), f"headers must be a dict, not {_type_name(headers)}"
    )
    assert isinstance(headers, _Mapping)
    checked: dict[str, str] = {}
    seen = set()
    for name, value in headers.items():
        _require_type(
            isinstance(name, str), f"header names must be strings, not {_type_name(name)}"
        )
        _require(
            bool(name) and all(c in _TOKEN_CHARS for c in name),
            f"header name {name!r} is not a valid HTTP header name",
        )
        lower = name.lower()
        _require(
            lower not in _RESERVED_HEADERS,
            f"header {name} is set by the client itself and cannot be given per call",
        )
        _require(lower not in seen, f"header {name} is given twice (names ignore case)")
        seen.add(lower)
        _require_type(
            isinstance(value, str), f"header {name} value must be a string, not {_type_name(value)}"
        )
        _require(
            all(" " <= c <= "~" or c == "\t" or "\x80" <= c <= "\xff" for c in value),
            f"header {name} value must be Latin-1 text without control characters "
            "(CR, LF, NUL, ...)",
        )
        checked[name] = value
    return checked


def _number(value: object, name: str) -> float:
    _require_type(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"{name} must be a number of seconds, not {_type_name(value)}",
    )
    assert isinstance(value, (int, float))
    _require(0 < value < float("inf"), f"{name} must be a positive number of seconds")
    return float(value)


def _normalize_base_url(url: object) -> str:
    _require_type(isinstance(url, str), f"base_url must be a string, not {_type_name(url)}")
    assert isinstance(url, str)
    url = url.strip()
    _require(
        all(" " < c < "\x7f" for c in url),
        "base_url must not contain spaces or control characters",
    )
    parts = urllib.parse.urlsplit(url.strip())
    _require(
        parts.scheme in ("http", "https") and bool(parts.hostname),
        "base_url must be an http:// or https:// URL with a host",
    )
    _require(not parts.username, "base_url must not carry credentials; use api_key")
    _require(not parts.query and not parts.fragment, "base_url must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise EdgeeInputError("base_url has an invalid port") from None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


_OPTIONS = ("api_key", "base_url", "timeout", "max_retries", "ssl_context", "deadline")
_INPUT_FIELDS = (
    "messages",
    "tools",
    "tool_choice",
    "tags",
    "compression_model",
    *COMPRESSION_HEADERS,
    "edgee_tool_ids",
    "edgee_pending_id",
    "enable_debug",
)


def resolve_config(config: object, options: dict[str, Any]) -> EdgeeConfig:
    """Merge `config`, keyword options, the environment and the defaults into one EdgeeConfig."""
    if config is None:
        settings: dict[str, Any] = {}
    elif isinstance(config, str):
        settings = {"api_key": config}
    elif isinstance(config, EdgeeConfig):
        settings = {name: getattr(config, name) for name in _OPTIONS}
    elif isinstance(config, dict):
        settings = dict(config)
    else:
        raise EdgeeInputTypeError(
            f"config must be an API key, a dict or an EdgeeConfig, not {_type_name(config)}"
        )
    for name, value in options.items():
        if value is not None:
            settings[name] = value
    unknown = sorted(set(settings) - set(_OPTIONS))
    _require_type(
        not unknown,
        f"unknown option {', '.join(unknown)}; known options: {', '.join(_OPTIONS)}",
    )

    api_key = settings.get("api_key") or os.environ.get("EDGEE_API_KEY", "")
    _require_type(isinstance(api_key, str), "api_key must be a string")
    _require(bool(api_key), "EDGEE_API_KEY is not set")
    _require(
        all("!" <= c <= "~" for c in api_key),
        "api_key must be printable ASCII without spaces (it goes in an HTTP header)",
    )
    base_url = settings.get("base_url") or os.environ.get("EDGEE_BASE_URL") or DEFAULT_BASE_URL
    timeout = settings.get("timeout")
    deadline = settings.get("deadline")
    max_retries = settings.get("max_retries")
    if max_retries is not None:
        _require_type(
            isinstance(max_retries, int) and not isinstance(max_retries, bool),
            f"max_retries must be an int, not {_type_name(max_retries)}",
        )
        _require(max_retries >= 0, "max_retries must not be negative")
    context = settings.get("ssl_context")
    if context is not None:
        _require_type(isinstance(context, ssl.SSLContext), "ssl_context must be an ssl.SSLContext")
        _require(
            context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname,
            "ssl_context must verify certificates and host names "
            "(verify_mode CERT_REQUIRED, check_hostname True)",
        )
    return EdgeeConfig(
        api_key=api_key,
        base_url=_normalize_base_url(base_url),
        timeout=DEFAULT_TIMEOUT if timeout is None else _number(timeout, "timeout"),
        max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        ssl_context=context,
        deadline=None if deadline is None else _number(deadline, "deadline"),
    )


# ---------------------------------------------------------------------------
# Server-sent events: an incremental parser on bytes (WHATWG HTML 9.2.6)
# ---------------------------------------------------------------------------


class SSEDecoder:
    """Turns the bytes of an event stream, in pieces of any size, into events.

    Lines end in CRLF, LF or CR, also when a CRLF is split between two pieces;
    one leading BOM is dropped; text is decoded as UTF-8 only once a line is
    whole. An event is returned as soon as its blank line arrives. Raises
    EdgeeStreamError when a line or an event exceeds `max_event_bytes`.
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.last_event_id = ""
        self.retry: int | None = None
        self._max = max_event_bytes
        self._start = b""  # the stream's first bytes, until we know whether they are a BOM
        self._at_start = True
        self._after_cr = False  # the last piece ended in CR: an LF next is the same line end
        self._partial: list[bytes] = []  # an unfinished line
        self._partial_size = 0
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = ""

    def feed(self, piece: bytes) -> list[ServerSentEvent]:
        """The events completed by `piece` (often none, sometimes many)."""
        if self._at_start:
            piece = self._start + piece
            if len(piece) < 3 and _BOM.startswith(piece):
                self._start = piece
                return []
            self._at_start = False
            self._start = b""
            if piece.startswith(_BOM):
                piece = piece[3:]
        if self._after_cr and piece:
            self._after_cr = False
            if piece[:1] == b"\n":
                piece = piece[1:]
        if b"\n" not in piece and b"\r" not in piece:
            if piece:
                self._partial.append(piece)
                self._partial_size += len(piece)
                self._check_size(self._partial_size + self._data_size)
            return []
        if self._partial:
            self._partial.append(piece)
            piece = b"".join(self._partial)
            self._partial = []
            self._partial_size = 0
        if b"\r" in piece:
            self._after_cr = piece[-1:] == b"\r"
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = piece.split(b"\n")
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
            self._partial_size = len(tail)
        return self._process_lines(lines)

    @property
    def pending(self) -> bool:
        """True while an event or a line has begun but not ended (at EOF it is discarded)."""
        return bool(self._data or self._partial)

    def _check_size(self, size: int) -> None:
        if size > self._max:
            raise EdgeeStreamError(
                f"a server-sent event exceeded {self._max} bytes; refusing to buffer more"
            )

    def _process_lines(self, lines: list[bytes]) -> list[ServerSentEvent]:
        events = []
        data = self._data
        for line in lines:
            if not line:  # a blank line dispatches the event
                if data:
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    events.append(
                        ServerSentEvent(
                            self._event or "message",
                            payload.decode("utf-8", "replace"),
                            self.last_event_id,
                            self.retry,
                        )
                    )
                    data = self._data = []
                    self._data_size = 0
                self._event = ""
                continue
            if line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
            else:
                self._check_size(len(line))
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"event":
                    self._event = value.decode("utf-8", "replace")
                    continue
                if name == b"id":
                    if b"\0" not in value:
                        self.last_event_id = value.decode("utf-8", "replace")
                    continue
                if name == b"retry":
                    if value.isdigit():
                        self.retry = int(value)
                    continue
                if name != b"data":  # a comment (empty name) or an unknown field
                    continue
            data.append(value)
            self._data_size += len(value) + 1
            self._check_size(self._data_size)
        return events


def parse_sse_events(pieces: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """The events of an event stream given as byte pieces of any size."""
    decoder = SSEDecoder()
    for piece in pieces:
        yield from decoder.feed(piece)


# ---------------------------------------------------------------------------
# Parsing answers into the data model
# ---------------------------------------------------------------------------


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    inputs = data.get("input_tokens_details")
    outputs = data.get("output_tokens_details")
    return Usage(
        data.get("prompt_tokens", 0),
        data.get("completion_tokens", 0),
        data.get("total_tokens", 0),
        InputTokenDetails(inputs.get("cached_tokens"), inputs.get("cache_creation_tokens"))
        if isinstance(inputs, dict)
        else None,
        OutputTokenDetails(outputs.get("reasoning_tokens")) if isinstance(outputs, dict) else None,
        data,
    )


def _compression(data: Any) -> Compression | None:
    if not isinstance(data, dict):
        return None
    return Compression(
        data.get("saved_tokens", 0),
        data.get("cost_savings", 0),
        float(data.get("reduction", 0)),
        data.get("time_ms", 0),
    )


def _delta(delta: JSONDict) -> StreamDelta:
    """A StreamDelta from a delta object (or from a whole message)."""
    get = delta.get
    reasoning = get("reasoning_content") or get("reasoning")  # _reasoning(), inlined: hot path
    refusal = get("refusal")
    return StreamDelta(
        get("role"),
        get("content"),
        get("tool_calls"),
        reasoning if type(reasoning) is str else None,
        refusal if type(refusal) is str else None,
        delta,
    )


def _pending_id(data: JSONDict) -> str | None:
    value = data.get("edgee_pending_id")
    return value if isinstance(value, str) and value else None


def _tools_executed(data: JSONDict) -> list[EdgeeToolExecuted]:
    tools = data.get("edgee_tools_executed")
    if not isinstance(tools, list):
        return []
    return [
        EdgeeToolExecuted(tool["name"], tool.get("success") is True)
        for tool in tools
        if isinstance(tool, dict) and isinstance(tool.get("name"), str)
    ]


def lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """`headers` as a dict with lower-case names ({} for None)."""
    return {name.lower(): value for name, value in headers.items()} if headers else {}


def chunk_from_json(data: JSONDict) -> StreamChunk:
    """A StreamChunk from a decoded `chat.completion.chunk` object.

    Raises EdgeeStreamError when `data` does not have that shape.
    """
    try:
        choices = []  # a loop: cheaper than a comprehension for the usual single choice
        for c in data.get("choices") or ():
            choices.append(
                StreamChoice(
                    c.get("index", 0), _delta(c.get("delta") or {}), c.get("finish_reason"), c
                )
            )
        usage = data.get("usage")
        compression = data.get("compression")
        return StreamChunk(
            choices,
            _compression(compression) if compression else None,
            _usage(usage) if usage else None,
            data.get("id"),
            data.get("model"),
            data.get("created"),
            data,
        )
    except (AttributeError, TypeError, ValueError):
        raise EdgeeStreamError("a stream event is not a chat.completion.chunk") from None


def _choice(index: int, choice: JSONDict) -> Choice:
    message = choice.get("message") or {}
    if not isinstance(message, dict):
        raise EdgeeStreamError("the gateway's answer has a message that is not an object")
    return Choice(choice.get("index", index), message, choice.get("finish_reason"), choice)


def response_from_json(data: JSONDict, headers: Mapping[str, str] | None = None) -> SendResponse:
    """A SendResponse from a decoded `chat.completion` object and the answer's headers.

    Raises EdgeeStreamError when `data` does not have that shape.
    """
    try:
        return SendResponse(
            [_choice(i, c) for i, c in enumerate(data.get("choices") or ())],
            _usage(data.get("usage")),
            _compression(data.get("compression")),
            data.get("id"),
            data.get("model"),
            data.get("created"),
            _pending_id(data),
            _tools_executed(data),
            lower_headers(headers),
            data,
        )
    except (AttributeError, TypeError, ValueError):
        raise EdgeeStreamError("the gateway's answer is not a chat.completion") from None


def chunk_from_response(response: SendResponse) -> StreamChunk:
    """A whole completion as one chunk (for a gateway that answers a stream with JSON)."""
    return StreamChunk(
        [
            StreamChoice(c.index, _delta(c.message), c.finish_reason, c.raw)
            for c in response.choices
        ],
        response.compression,
        response.usage,
        response.id,
        response.model,
        response.created,
        response.raw,
    )


def _seconds(value: str | None) -> float | None:
    """A finite, non-negative number of seconds, else None (nan, inf, -5 and junk are ignored)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number < float("inf") else None


def models_from_json(data: Any) -> list[Model]:
    """The models of a decoded `/v1/models` answer; EdgeeStreamError if it has no data list."""
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise EdgeeStreamError("the models answer has no data list")
    return [
        Model(
            m.get("id", ""), m.get("object", "model"), m.get("created", 0), m.get("owned_by", ""), m
        )
        for m in models
        if isinstance(m, dict)
    ]


def count_from_json(data: Any) -> int:
    """The `input_tokens` of a decoded `/v1/count_tokens` answer.

    Raises EdgeeStreamError when it is missing or not a whole number >= 0.
    """
    count = data.get("input_tokens") if isinstance(data, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise EdgeeStreamError("the count_tokens answer has no input_tokens count")
    return count


_COMPRESS_METADATA = (  # the required fields of CompressMetadata, and their JSON types
    ("technique", str),
    ("applied_strategies", list),
    ("compression_rate", (int, float)),
    ("uncompressed_input_tokens", int),
    ("compressed_input_tokens", int),
    ("compression_time_ms", int),
)


def compress_result_from_json(data: Any) -> CompressResult:
    """A CompressResult from a decoded `/v1/compress` answer.

    `request` is the answer without its `compression` object. Raises
    EdgeeStreamError when that object or one of its required fields is
    missing or of the wrong type.
    """
    metadata = data.get("compression") if isinstance(data, dict) else None
    if not isinstance(metadata, dict):
        raise EdgeeStreamError("the compress answer has no compression object")
    values: list[Any] = []
    for name, kind in _COMPRESS_METADATA:
        value = metadata.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EdgeeStreamError(f"the compress answer's compression.{name} is missing or wrong")
        values.append(value)
    technique, strategies, rate, uncompressed, compressed, milliseconds = values
    if not all(isinstance(name, str) for name in strategies):
        raise EdgeeStreamError("the compress answer's compression.applied_strategies is wrong")
    error = metadata.get("error")
    tool_stats = metadata.get("tool_stats")
    compression = CompressMetadata(
        technique,
        strategies,
        float(rate),
        uncompressed,
        compressed,
        milliseconds,
        error if isinstance(error, str) else None,
        tool_stats if isinstance(tool_stats, dict) else None,
    )
    request = {key: value for key, value in data.items() if key != "compression"}
    return CompressResult(request, compression, data)


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_MESSAGE:
        return text[:MAX_ERROR_MESSAGE] + "..."
    return text


def api_error(status: int, body: bytes, headers: dict[str, str], reason: str = "") -> EdgeeAPIError:
    """The EdgeeAPIError for an error answer: the envelope's message, else the body text."""
    text = body.decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        parsed = None
    message = code = kind = param = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            message, code = error.get("message"), error.get("code")
            kind, param = error.get("type"), error.get("param")
        elif isinstance(parsed.get("message"), str):
            # The console API's shape: {"error": "<code>", "message": "..."}.
            message = parsed["message"]
            code = error if isinstance(error, str) else None
        elif isinstance(error, str):
            message = error
    if not isinstance(message, str) or not message.strip():
        message = text if text.strip() else (reason or "no error message")
    return EdgeeAPIError(
        status,
        _shorten(message),
        code if isinstance(code, str) else None,
        kind if isinstance(kind, str) else None,
        param if isinstance(param, str) else None,
        parsed if parsed is not None else text,
        headers,
    )


def stream_error(data: bytes, status: int) -> EdgeeAPIError:
    """The EdgeeAPIError for an error sent inside a stream (an `error` event or object)."""
    error = api_error(status, data, {})
    if isinstance(error.body, dict) and isinstance(error.body.get("error"), dict):
        reported = error.body["error"].get("status")
        if isinstance(reported, int):
            status = reported
        elif error.code in ERROR_CODE_STATUS:
            status = ERROR_CODE_STATUS[error.code]
    if status != error.status:
        error = EdgeeAPIError(
            status, error.message, error.code, error.type, error.param, error.body, {}
        )
    return error


def retry_delay(attempt: int, headers: Mapping[str, str] | None = None) -> float | None:
    """Seconds to wait before retry number `attempt + 1`.

    The server's `retry-after-ms` or `Retry-After` (seconds or an HTTP date)
    when present, else exponential backoff from 0.5 s up to 8 s with jitter.
    None when the server asks for more than MAX_RETRY_AFTER seconds.
    """
    asked = _retry_after(headers) if headers else None
    if asked is not None:
        return asked if asked <= MAX_RETRY_AFTER else None
    return backoff_delay(attempt)


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter: about 0.5, 1, 2, 4, 8, 8, ... seconds."""
    import random  # only retries need it

    delay = min(INITIAL_RETRY_DELAY * 2.0**attempt, MAX_RETRY_DELAY)
    return delay * (1.0 - 0.25 * random.random())


def _retry_after(headers: Mapping[str, str]) -> float | None:
    milliseconds = _seconds(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None or not value.strip()[:1].isalpha():
        return seconds  # an HTTP date starts with the day's name
    import email.utils

    date = email.utils.parsedate_tz(value)
    if date is None:
        return None
    return max(0.0, email.utils.mktime_tz(date) - time.time())


# ---------------------------------------------------------------------------
# The protocol core: HTTP/1.1 and event streams as bytes in, values out; no I/O
# ---------------------------------------------------------------------------


class ChunkedDecoder:
    """Decodes an HTTP/1.1 chunked body (RFC 9112, 7.1) given in pieces of any size.

    `feed()` returns the payload bytes completed so far; `done` turns True after
    the last chunk and its trailers, and `extra` then holds any bytes beyond.
    Raises EdgeeStreamError on malformed framing.
    """

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self.done = False
        self.extra = b""
        self._buffer = b""
        self._state = self._SIZE
        self._remaining = 0
        self._trailer_bytes = 0

    def feed(self, piece: bytes) -> bytes:
        buffer = self._buffer + piece if self._buffer else piece
        position, end = 0, len(buffer)
        out = []
        state, remaining = self._state, self._remaining
        while position < end:
            if state == self._DATA:
                stop = position + remaining
                if stop > end:
                    out.append(buffer[position:])
                    remaining -= end - position
                    position = end
                    break
                out.append(buffer[position:stop])
                position, state = stop, self._DATA_END
            elif state == self._DATA_END:
                if buffer.startswith(b"\r\n", position):
                    position += 2
                elif buffer.startswith(b"\n", position):
                    position += 1
                elif end - position == 1 and buffer[position] == 13:
                    break  # the LF of this CRLF is still on its way
                else:
                    raise EdgeeStreamError("malformed chunked body: no line end after a chunk")
                state = self._SIZE
            else:
                # A line is too long whether or not its end has arrived yet.
                newline = buffer.find(b"\n", position, position + MAX_CHUNK_LINE + 1)
                if newline < 0:
                    if end - position > MAX_CHUNK_LINE:
                        raise EdgeeStreamError("malformed chunked body: overlong size line")
                    break
                line = buffer[position:newline].rstrip(b"\r")
                position = newline + 1
                if state == self._TRAILER:
                    if not line:
                        self.done = True
                        break
                    self._trailer_bytes += len(line)
                    if self._trailer_bytes > MAX_HEAD_BYTES:
                        raise EdgeeStreamError("malformed chunked body: endless trailers")
                    continue
                remaining = _chunk_size(line)
                state = self._DATA if remaining else self._TRAILER
        self._state, self._remaining = state, remaining
        if self.done:
            self.extra, self._buffer = buffer[position:], b""
        else:
            self._buffer = buffer[position:]
        return out[0] if len(out) == 1 else b"".join(out)


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip()
    if not size or size.strip(_HEX_DIGITS) or len(size) > 16:
        raise EdgeeStreamError(f"malformed chunked body: bad chunk size {line[:40]!r}")
    return int(size, 16)


class ResponseHead:
    """The status line and headers of an answer; header names are lower-case."""

    __slots__ = ("headers", "keep_alive", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], keep_alive: bool):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.keep_alive = keep_alive

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").lower()


def _invalid(what: str) -> EdgeeConnectionError:
    return EdgeeConnectionError(f"sent an invalid HTTP answer ({what})")


def parse_head(block: bytes) -> ResponseHead:
    """A ResponseHead from the bytes of a status line and header lines (RFC 9112, 4-5).

    Raises EdgeeConnectionError for anything that is not an HTTP/1.x head.
    """
    lines = block.decode("latin-1").rstrip("\r\n").split("\n")  # without the blank line
    version, _, rest = lines[0].rstrip("\r").partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise _invalid(f"status line {_shorten(lines[0][:40])!r}")
    if len(lines) > MAX_HEADERS + 1:
        raise _invalid(f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    name = ""
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":  # obs-fold: a continuation of the previous value (RFC 9112, 5.2)
            if not name:
                raise _invalid("a folded line before any header")
            headers[name] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if (
            not colon
            or not name
            or name != name.strip()
            or not all(c in _TOKEN_CHARS for c in name)
        ):
            raise _invalid(f"header line {_shorten(line[:40])!r}")
        name = name.lower()
        value = value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    return ResponseHead(int(code), reason.strip(), headers, keep_alive)


def _head_end(buffer: bytes) -> int:
    """The offset just past the blank line that ends a head, or -1."""
    crlf, lf = buffer.find(b"\n\r\n"), buffer.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 3
    return lf + 2 if lf >= 0 else -1


class ResponseParser:
    """One answer on a connection, parsed from the bytes that arrive (RFC 9112); no I/O.

    `feed_head(data)` returns the final head once it is whole (interim 1xx
    answers are read and skipped); then `feed_body(data)` returns body bytes
    and `feed_eof()` tells that the connection ended. `done` is True once the
    body ended; `reusable` says whether the connection may carry another request.
    """

    def __init__(self, method: str) -> None:
        self._method = method
        self._buffer = b""
        self._interim = 0
        self._chunked: ChunkedDecoder | None = None
        self._remaining: int | None = None  # bytes still due of a Content-Length body
        self._keep_alive = True  # until the head, the end or forbid_reuse() says otherwise
        self._extra = False
        self.done = False

    @property
    def exact(self) -> bool:
        """True when the answer was read to its end and no byte came after it."""
        return self.done and not self._extra and not self._buffer

    @property
    def reusable(self) -> bool:
        """True when the answer was read exactly to its end and the server keeps the connection."""
        return self.exact and self._keep_alive

    def forbid_reuse(self) -> None:
        self._keep_alive = False

    @property
    def started(self) -> bool:
        return bool(self._buffer) or self._interim > 0

    def feed_head(self, data: bytes) -> ResponseHead | None:
        """The final head, once the bytes fed so far hold it; else None."""
        buffer = self._buffer + data if self._buffer else data
        while True:
            if not self._interim and buffer[:1] in (b"\r", b"\n"):
                buffer = buffer.lstrip(b"\r\n")  # stray line ends before the status line
            end = _head_end(buffer)
            if end < 0 or end > MAX_HEAD_BYTES:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise _invalid(f"a head larger than {MAX_HEAD_BYTES} bytes")
                if buffer and not b"HTTP/1."[: len(buffer)] == buffer[:7]:
                    raise _invalid(f"it starts with {_shorten(repr(buffer[:20]))}")
                self._buffer = buffer
                return None
            head = parse_head(buffer[:end])
            buffer = buffer[end:]
            if head.status >= 200:
                break
            if head.status == 101 or head.status < 100:
                raise _invalid(f"status {head.status} without an upgrade asked for")
            self._interim += 1  # 100 Continue, 102 Processing, 103 Early Hints: not the answer
            if self._interim > MAX_INTERIM:
                raise _invalid(f"more than {MAX_INTERIM} interim answers")
        self._buffer = buffer
        self._frame(head)
        return head

    def _frame(self, head: ResponseHead) -> None:
        """Decide how the body ends (RFC 9112, 6.3)."""
        headers = head.headers
        if self._method == "CONNECT" and head.status < 300:
            self.done = True  # the connection is now the tunnel, whatever the HTTP version
            return
        self._keep_alive = self._keep_alive and head.keep_alive
        if self._method == "HEAD" or head.status in (204, 304):
            self.done = True
        elif "transfer-encoding" in headers:
            codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
            if codings != ["chunked"]:
                raise _invalid(f"transfer coding {headers['transfer-encoding']!r}")
            self._chunked = ChunkedDecoder()
            if "content-length" in headers:  # a smuggling-shaped answer: never reuse it
                self._keep_alive = False
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            value = values.pop() if len(values) == 1 else ""
            if not value.isdigit() or len(value) > 18:
                raise _invalid(f"Content-Length {headers['content-length']!r}")
            self._remaining = int(value)
            self.done = self._remaining == 0
        else:  # the body ends when the server closes the connection
            self._keep_alive = False

    def feed_body(self, data: bytes) -> bytes:
        """The body bytes in `data` (and in what came with the head)."""
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        if self.done:
            self._extra = self._extra or bool(data)
            return b""
        chunked = self._chunked
        if chunked is not None:
            payload = chunked.feed(data)
            if chunked.done:
                self.done = True
                self._extra = bool(chunked.extra)
            return payload
        remaining = self._remaining
        if remaining is None:
            return data
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            return data
        self._remaining = 0
        self.done = True
        self._extra = len(data) > remaining
        return data[:remaining] if self._extra else data

    def feed_eof(self) -> bytes:
        """The connection ended: b"" if that ends the body, else EdgeeStreamError."""
        self._keep_alive = False
        if self.done:
            return b""
        if self._chunked is not None:
            raise EdgeeStreamError("stream was cut: the connection closed inside the chunked body")
        if self._remaining is not None:
            raise EdgeeStreamError(
                f"stream was cut: the connection closed with {self._remaining} bytes "
                "of the body missing"
            )
        self.done = True
        return b""


class Route:
    """Where requests go: the origin, and the proxy in between (from the environment)."""

    def __init__(self, base_url: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.netloc = parts.netloc
        self.prefix = parts.path
        self.origin = f"{self.scheme}://{parts.netloc}"
        self.proxy, self.proxy_headers = find_proxy(self.scheme, parts.netloc)
        self.tunnel = self.proxy is not None and self.scheme == "https"
        self.where = self.origin + (" through the proxy" if self.proxy else "")

    def same_origin(self, url: str) -> bool:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return (parts.scheme, (parts.hostname or "").lower(), port) == (
            self.scheme,
            self.host.lower(),
            self.port,
        )

    def target(self, path: str) -> str:
        """The request target: the path, or an absolute URL for a plain-HTTP proxy."""
        return self.origin + path if self.proxy and not self.tunnel else path

    def request_bytes(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> bytes:
        """The bytes of a request: head, then body (RFC 9112, 3)."""
        lines = [f"{method} {target} HTTP/1.1", "Host: " + self.netloc]
        lines.extend(name + ": " + value for name, value in headers.items())
        if self.proxy and not self.tunnel:  # only a forwarding proxy reads this header
            lines.extend(name + ": " + value for name, value in self.proxy_headers.items())
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    def connect_bytes(self) -> bytes:
        """The CONNECT request that opens a tunnel through the proxy (RFC 9110, 9.3.6)."""
        authority = (
            f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"
        )
        lines = [f"CONNECT {authority} HTTP/1.1", "Host: " + authority]
        lines.extend(name + ": " + value for name, value in self.proxy_headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def find_proxy(scheme: str, netloc: str) -> tuple[tuple[str, int] | None, dict[str, str]]:
    """The proxy (host, port) for this origin from the environment, and its auth headers."""
    if sys.platform not in ("darwin", "win32") and not any(
        name.lower().endswith("_proxy") and name.lower() != "no_proxy" for name in os.environ
    ):
        return None, {}  # nothing configured: skip importing urllib.request
    import urllib.request

    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(netloc):
        return None, {}
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    headers = {}
    if parts.username is not None:
        import base64

        user = urllib.parse.unquote(parts.username)
        credentials = f"{user}:{urllib.parse.unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(
            credentials.encode("utf-8")
        ).decode("ascii")
    return (parts.hostname or "", parts.port or 80), headers


class Redactor:
    """Removes the API key from server text, in every form JSON may spell it."""

    def __init__(self, secret: str) -> None:
        self._pattern: Any = None
        if len(secret) >= 8:  # a shorter test key would garble ordinary words
            import re

            # Each character literally or as a \\uXXXX escape; "/" also as "\\/".
            parts = []
            for char in secret:
                forms = [re.escape(char), f"\\\\u(?i:{ord(char):04x})"]
                if char in '/"\\':
                    forms.append(re.escape("\\" + char))
                parts.append("(?:" + "|".join(forms) + ")")
            self._pattern = re.compile("".join(parts))

    def text(self, text: str) -> str:
        """`text` without the key."""
        if self._pattern is None:
            return text
        redacted: str = self._pattern.sub("[redacted]", text)
        return redacted

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {name: self.text(value) for name, value in headers.items()}


def _json(text: str | bytes, what: str, redactor: Redactor) -> Any:
    """The decoded JSON, or EdgeeStreamError quoting a short redacted excerpt."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        if isinstance(text, bytes):
            text = text[:200].decode("utf-8", "replace")
        raise EdgeeStreamError(
            f"{what} is not valid JSON: {redactor.text(_shorten(text[:200]))}"
        ) from None


class Call:
    """One API call across its attempts: the request, the retry budget, the clock."""

    def __init__(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
        deadline: float | None,
    ) -> None:
        self.method = method
        self.path = path
        self.body = body
        self.headers = headers
        self.timeout = timeout
        self.deadline = deadline
        self.expires = None if deadline is None else time.monotonic() + deadline
        self.retries = 0

    def wait(self) -> float:
        """Seconds the next wait may take: the silence timeout, capped by the deadline."""
        if self.expires is None:
            return self.timeout
        left = self.expires - time.monotonic()
        if left <= 0:
            raise self.deadline_error()
        return min(self.timeout, left)

    def deadline_error(self) -> EdgeeTimeoutError:
        return EdgeeTimeoutError(f"the call took longer than its deadline of {self.deadline:g} s")

    def timed_out(self, origin: str, doing: str) -> EdgeeTimeoutError:
        """The error for a wait that ran out: the deadline's, or `timeout` seconds of silence."""
        if self.expires is not None and time.monotonic() >= self.expires - 0.001:
            return self.deadline_error()
        return EdgeeTimeoutError(f"no data from {origin} for {self.timeout:g} s {doing}")

    def retry(
        self,
        error: EdgeeError,
        retryable: bool,
        max_retries: int,
        headers: Mapping[str, str] | None,
    ) -> float:
        """Seconds to wait before sending again; raises `error` when the budget is spent."""
        if not retryable or self.retries >= max_retries:
            raise error
        delay = retry_delay(self.retries, headers)
        if delay is None:  # the server wants a longer pause than we are willing to take
            raise error
        if self.expires is not None and time.monotonic() + delay >= self.expires:
            raise error
        self.retries += 1
        return delay


class ChunkReader:
    """Turns the body of a chat-completion event stream into StreamChunks.

    Raises EdgeeAPIError for an error event, EdgeeStreamError for malformed
    data; `end()` raises if the stream stopped before `[DONE]` and before any
    finish_reason.
    """

    def __init__(self, status: int, redactor: Redactor) -> None:
        self._decoder = SSEDecoder()
        self._status = status
        self._redactor = redactor
        self.done = False  # [DONE] arrived
        self.finished = False  # a finish_reason arrived
        self.count = 0

    def feed(self, payload: bytes) -> Iterator[StreamChunk]:
        loads = json.loads
        for event in self._decoder.feed(payload):
            data = event.data
            if data == "[DONE]":
                self.done = True
                return
            if event.event == "error":
                raise self._error(data)
            if not data:
                continue
            number = self.count + 1
            try:  # json.loads itself here: this runs for every chunk
                decoded = loads(data)
            except (ValueError, RecursionError):
                decoded = _json(data, f"stream event {number}", self._redactor)  # raises
            if type(decoded) is not dict:
                raise EdgeeStreamError(f"stream event {number} is not a JSON object")
            if decoded.get("error"):
                raise self._error(data)
            chunk = chunk_from_json(decoded)
            if not self.finished:
                for choice in chunk.choices:
                    if choice.finish_reason:
                        self.finished = True
            self.count = number
            yield chunk

    def _error(self, data: str) -> EdgeeAPIError:
        return stream_error(self._redactor.text(data).encode("utf-8"), self._status)

    def whole(self, body: bytes) -> Iterator[StreamChunk]:
        """A gateway that answered a stream request with one JSON completion."""
        data = _json(body, "the gateway's answer", self._redactor)
        if not isinstance(data, dict):
            raise EdgeeStreamError("the gateway's answer is not a JSON object")
        if data.get("error"):
            raise self._error(body.decode("utf-8", "replace"))
        self.done = True
        yield chunk_from_response(response_from_json(data))

    def end(self) -> None:
        if not self.done and not self.finished:
            count = self.count
            raise EdgeeStreamError(
                f"stream was cut: the gateway ended it after {count} "
                f"chunk{'' if count == 1 else 's'}, before [DONE] and before any finish_reason"
            )


class EventReader:
    """Passes the events of any event stream through, `[DONE]` included (for `request()`)."""

    done = finished = False  # only the body's end ends the stream

    def __init__(self, status: int, redactor: Redactor) -> None:
        self._decoder = SSEDecoder()

    def feed(self, payload: bytes) -> list[ServerSentEvent]:
        return self._decoder.feed(payload)

    def whole(self, body: bytes) -> list[ServerSentEvent]:
        """An answer that is not an event stream, as one event."""
        return [ServerSentEvent("message", body.decode("utf-8", "replace"))]

    def end(self) -> None:
        pass


class Pool:
    """Idle kept-alive connections of one driver; thread-safe."""

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._lock = _thread.allocate_lock()

    def checkout(self) -> Any:
        """An idle connection with nothing waiting on it, or None."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if conn.is_clean():
                conn.reused = True
                return conn
            conn.close()

    def checkin(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def release(pool: Pool, conn: Any, parser: ResponseParser) -> None:
    """The pool rule, the one place it lives: a connection goes back to the pool only
    when its answer was read exactly to its end and nothing else waits on it (in the
    parser, in the TLS layer, on the socket); anything else closes it."""
    if parser.reusable and conn.is_clean():
        pool.checkin(conn)
    else:
        conn.close()


# The operations a plan asks its driver to carry out. A plan is a generator that
# yields them and gets back the result (or has the driver's OSError thrown in).
CONNECT = "connect"  # (CONNECT, host, port, tls_server_name or None, timeout) -> connection
TLS = "tls"  # (TLS, connection, server_name, timeout): start TLS on the connection
SEND = "send"  # (SEND, connection, bytes, timeout)
RECV = "recv"  # (RECV, connection, timeout) -> bytes, b"" at the end
SLEEP = "sleep"  # (SLEEP, seconds)
DELIVER = "deliver"  # (DELIVER, item): hand an item to the caller; resumes when it asks for more


class _Unsent(Exception):
    """A reused connection failed before the request left whole."""


class Transport:
    """HTTP/1.1 to one origin as plans: retries, redirects, the pool rule.

    Plans are generators of operations (see DELIVER); the sync and the async
    driver carry them out, so every rule lives here once.
    """

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None,
        max_retries: int,
        secret: str,
    ) -> None:
        self.route = Route(base_url)
        self.origin = self.route.origin
        self.max_retries = max_retries
        self.redactor = Redactor(secret)
        self.sleep: Callable[[float], Any] = time.sleep
        self.asleep: Callable[[float], Awaitable[Any]] | None = None  # None: asyncio.sleep
        self.pool = Pool()
        self._async_pools: Any = None  # event loop -> Pool, made on first async use
        self._lock = _thread.allocate_lock()
        self._ssl_context = ssl_context

    def context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # built once, on first use, and shared by all threads
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def async_pool(self, loop: Any) -> Pool:
        """The pool of `loop`: each event loop keeps its own connections.

        A new loop is also the moment to free the pools of loops that have closed
        since (each `asyncio.run()` closes its loop), so they neither leak nor warn.
        """
        ended: list[Pool] = []
        with self._lock:  # loops in several threads may share the client
            if self._async_pools is None:
                import weakref

                self._async_pools = weakref.WeakKeyDictionary()
            pool: Pool | None = self._async_pools.get(loop)
            if pool is None:
                pool = self._async_pools[loop] = Pool()
                for old in [old for old in self._async_pools if old.is_closed()]:
                    ended.append(self._async_pools.pop(old))
        for old_pool in ended:
            old_pool.close()
        return pool

    def close(self) -> None:
        """Close every idle connection (the client stays usable)."""
        self.pool.close()
        with self._lock:
            pools = list((self._async_pools or {}).items())
            for loop, _ in pools:
                if loop.is_closed():
                    del self._async_pools[loop]
        for _, pool in pools:
            pool.close()

    # -- connecting ----------------------------------------------------------------

    def _connect(self, call: Call) -> Plan:
        """A new connection to the origin: direct, through a proxy, or tunnelled."""
        route = self.route
        timeout = min(call.wait(), CONNECT_TIMEOUT)
        try:
            if route.proxy is None:
                tls_name = route.host if route.scheme == "https" else None
                return (yield (CONNECT, route.host, route.port, tls_name, timeout))
            conn = yield (CONNECT, route.proxy[0], route.proxy[1], None, timeout)
        except (OSError, EdgeeError) as exc:
            raise self._connect_error(exc, timeout) from exc
        if not route.tunnel:
            return conn
        try:
            yield (SEND, conn, route.connect_bytes(), timeout)
            parser = ResponseParser("CONNECT")
            head = yield from self._read_head(conn, parser, call)
            if head.status != 200:
                raise EdgeeConnectionError(
                    f"the proxy refused the tunnel to {route.origin}: {head.status} "
                    + self.redactor.text(_shorten(head.reason))
                    + (" (check the proxy credentials)" if head.status == 407 else "")
                )
            if not parser.exact:
                raise _invalid("bytes after the proxy's answer to CONNECT")
            yield (TLS, conn, route.host, timeout)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError):
                raise self._connect_error(exc, timeout) from exc
            raise
        return conn

    def _connect_error(self, exc: BaseException, timeout: float) -> EdgeeError:
        where = self.route.where
        if isinstance(exc, EdgeeError):
            return exc
        if isinstance(exc, TimeoutError):
            return EdgeeTimeoutError(f"timed out after {timeout:g} s connecting to {where}", True)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return EdgeeConnectionError(
                f"TLS certificate verification failed for {self.origin}: "
                f"{exc.verify_message or exc.reason}"
            )
        if isinstance(exc, ssl.SSLError):
            return EdgeeConnectionError(f"TLS handshake with {self.origin} failed: {exc}")
        if isinstance(exc, socket.gaierror):
            return EdgeeConnectionError(
                f"cannot resolve the host of {where}: {exc.strerror or exc}",
                exc.errno == getattr(socket, "EAI_AGAIN", None),
            )
        if isinstance(exc, ConnectionRefusedError):
            return EdgeeConnectionError(f"connection refused by {where}", True)
        return EdgeeConnectionError(f"cannot connect to {where}: {exc}", True)

    # -- one exchange ----------------------------------------------------------------

    def _recv(self, conn: Any, call: Call, in_body: bool) -> Plan:
        """The next bytes (b"" at the end); a timeout or a broken connection raises."""
        wait = call.wait()
        try:
            return (yield (RECV, conn, wait))
        except TimeoutError:
            doing = "while reading the answer" if in_body else "waiting for an answer"
            raise call.timed_out(self.origin, doing) from None
        except OSError as exc:
            name = exc.__class__.__name__
            if in_body:
                raise EdgeeStreamError(
                    f"stream was cut: the connection to {self.origin} broke ({name})"
                ) from exc
            raise EdgeeConnectionError(
                f"the connection to {self.origin} broke before an answer ({name})", True
            ) from exc

    def _read_head(self, conn: Any, parser: ResponseParser, call: Call) -> Plan:
        """The final head of the answer (1xx skipped); EdgeeConnectionError if none comes."""
        while True:
            data = yield from self._recv(conn, call, False)
            if not data:
                if parser.started:
                    raise EdgeeConnectionError(
                        f"{self.origin} closed the connection in the middle of an answer", True
                    )
                raise EdgeeConnectionError(
                    f"{self.origin} closed the connection without answering", True
                )
            try:
                head = parser.feed_head(data)
            except EdgeeConnectionError as exc:
                raise EdgeeConnectionError(
                    f"{self.origin} {self.redactor.text(str(exc))}"
                ) from None
            if head is not None:
                return head

    def _exchange(self, conn: Any, parser: ResponseParser, call: Call) -> Plan:
        """Send the request and read the head of its answer."""
        data = self.route.request_bytes(
            call.method, self.route.target(call.path), call.headers, call.body
        )
        wait = call.wait()
        try:
            yield (SEND, conn, data, wait)
        except OSError as exc:
            # The server may have answered before reading everything (413, 401): read it.
            head = yield from self._early_answer(conn, parser, call)
            if head is not None:
                return head
            if conn.reused and not isinstance(exc, TimeoutError):
                raise _Unsent() from exc
            if isinstance(exc, TimeoutError):
                raise call.timed_out(self.origin, "sending the request") from None
            raise EdgeeConnectionError(
                f"the connection to {self.origin} broke while sending ({exc.__class__.__name__})",
                True,
            ) from exc
        return (yield from self._read_head(conn, parser, call))

    def _early_answer(self, conn: Any, parser: ResponseParser, call: Call) -> Plan:
        parser.forbid_reuse()
        try:
            while True:
                data = yield (RECV, conn, min(call.wait(), EARLY_ANSWER_WAIT))
                if not data:
                    return None
                head = parser.feed_head(data)
                if head is not None:
                    return head
        except (OSError, EdgeeError):
            return None

    def open(self, call: Call, pool: Pool) -> Plan:
        """Send the request, retrying and following redirects, until a 2xx head arrives.

        Returns (connection, parser, head). The request goes on the wire at most
        1 + max_retries times; the one free resend is a reused connection that
        broke before the request left whole.
        """
        redirects = 0
        while True:
            conn = pool.checkout()
            try:
                if conn is None:
                    conn = yield from self._connect(call)
                parser = ResponseParser(call.method)
                head = yield from self._exchange(conn, parser, call)
            except _Unsent:
                conn.close()
                continue
            except EdgeeConnectionError as failure:
                if conn is not None:
                    conn.close()
                yield (SLEEP, call.retry(failure, failure.retryable, self.max_retries, None))
                continue
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if head.status < 300:
                return conn, parser, head
            # Not a success: read a bounded part of the body, then decide.
            body = yield from self.read_all(conn, parser, call, pool, MAX_ERROR_BODY, head)
            if head.status in REDIRECT_STATUSES and "location" in head.headers:
                redirects += 1
                self._redirect(call, head, redirects)
                continue
            error = self.api_error(head, body)
            retryable = head.status in RETRY_STATUSES
            yield (SLEEP, call.retry(error, retryable, self.max_retries, head.headers))

    def read_all(
        self,
        conn: Any,
        parser: ResponseParser,
        call: Call,
        pool: Pool,
        limit: int,
        head: ResponseHead,
    ) -> Plan:
        """The body, then the connection is released. An error answer's body is cut at
        `limit` (its connection then closes); a success larger than `limit` raises."""
        pieces = []
        size = 0
        try:
            piece = parser.feed_body(b"")
            while True:
                if piece:
                    pieces.append(piece)
                    size += len(piece)
                    if size > limit:
                        if head.status < 300:
                            raise EdgeeStreamError(f"the answer is larger than {limit} bytes")
                        return b"".join(pieces)[:limit]
                if parser.done:
                    break
                data = yield from self._recv(conn, call, True)
                piece = parser.feed_body(data) if data else parser.feed_eof()
        except EdgeeConnectionError:
            if head.status < 300:
                raise
        finally:
            release(pool, conn, parser)
        return b"".join(pieces)

    def _redirect(self, call: Call, head: ResponseHead, redirects: int) -> None:
        """Follow a redirect within the origin; any other raises EdgeeAPIError."""
        status = head.status
        route = self.route
        location = urllib.parse.urljoin(route.origin + call.path, head.headers["location"])
        parts = urllib.parse.urlsplit(location)
        try:
            same = route.same_origin(location)
        except ValueError:  # a bad port
            same = False
        if not same:
            where = self.redactor.text(
                _shorten(parts.scheme + "://" + parts.netloc.rpartition("@")[2])
            )
            raise EdgeeAPIError(
                status,
                f"redirect to {where} refused: the API key is only sent to {route.origin} "
                "(set base_url to the new address if you trust it)",
                headers=self.redactor.headers(head.headers),
            )
        if redirects > MAX_REDIRECTS:
            raise EdgeeAPIError(status, f"more than {MAX_REDIRECTS} redirects")
        if status == 303 or (status in (301, 302) and call.method == "POST"):
            call.method, call.body = "GET", None
            call.headers = {k: v for k, v in call.headers.items() if k != "Content-Type"}
        call.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")

    def _unasked_encoding(self, head: ResponseHead) -> str | None:
        """The Content-Encoding of a body we did not ask to be encoded (quotable), or None."""
        encoding = head.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("identity", ""):
            return None
        return self.redactor.text(_shorten(encoding[:40]))

    def _check_encoding(self, head: ResponseHead) -> None:
        encoding = self._unasked_encoding(head)
        if encoding is not None:
            raise EdgeeStreamError(
                f"{self.origin} sent a body with Content-Encoding: {encoding}, "
                "which edgee.py did not ask for and cannot read"
            )

    def api_error(self, head: ResponseHead, body: bytes) -> EdgeeAPIError:
        """The EdgeeAPIError of an error answer, with the key redacted everywhere."""
        headers = self.redactor.headers(head.headers)
        reason = self.redactor.text(head.reason)
        encoding = self._unasked_encoding(head)
        if encoding is not None:
            return EdgeeAPIError(
                head.status,
                f"{reason or 'error'} (the body has Content-Encoding: {encoding}, "
                "which edgee.py did not ask for)",
                headers=headers,
            )
        text = self.redactor.text(body.decode("utf-8", "replace"))
        return api_error(head.status, text.encode("utf-8"), headers, reason)

    # -- plans ---------------------------------------------------------------------

    def json_plan(self, call: Call, pool: Pool) -> Plan:
        """A whole JSON answer: delivers (head, decoded object)."""
        conn, parser, head = yield from self.open(call, pool)
        body = yield from self.read_all(conn, parser, call, pool, MAX_BODY, head)
        self._check_encoding(head)
        data = _json(body, "the gateway's answer", self.redactor)
        if isinstance(data, dict) and data.get("error"):
            raise self.api_error(head, body)
        yield (DELIVER, (head, data))

    def stream_plan(self, call: Call, pool: Pool, make_reader: Any) -> Plan:
        """An event-stream answer: delivers the head, then each item the reader makes
        (`make_reader(status, redactor)`: ChunkReader for chat completions)."""
        conn, parser, head = yield from self.open(call, pool)
        try:
            reader = make_reader(head.status, self.redactor)
            self._check_encoding(head)
            yield (DELIVER, head)
            if "text/event-stream" not in head.content_type and "json" in head.content_type:
                body = yield from self.read_all(conn, parser, call, pool, MAX_BODY, head)
                for item in reader.whole(body):
                    yield (DELIVER, item)
                return
            piece = parser.feed_body(b"")
            while True:
                if piece:
                    for item in reader.feed(piece):
                        yield (DELIVER, item)
                    if reader.done:
                        yield from self._drain(conn, parser)
                        return
                if parser.done:
                    break
                try:
                    data = yield from self._recv(conn, call, True)
                    piece = parser.feed_body(data) if data else parser.feed_eof()
                except EdgeeConnectionError:
                    if reader.finished:  # the answer is whole; only the closing [DONE] is missing
                        return
                    raise
            reader.end()
        finally:
            release(pool, conn, parser)

    def _drain(self, conn: Any, parser: ResponseParser) -> Plan:
        """After [DONE], read the body's last framing bytes, briefly, so the connection
        can be reused; a server that does not end the body loses the connection."""
        stop = time.monotonic() + DRAIN_WAIT
        try:
            while not parser.done:
                left = stop - time.monotonic()
                if left <= 0:
                    return
                data = yield (RECV, conn, left)
                if data:
                    parser.feed_body(data)
                else:
                    parser.feed_eof()
        except (OSError, EdgeeError):
            pass


# ---------------------------------------------------------------------------
# Drivers: they carry out a plan's operations, the sync one with blocking
# sockets, the async one on the running asyncio event loop
# ---------------------------------------------------------------------------


def _readable(sock: socket.socket) -> bool:
    """True if the socket has bytes or an end waiting (for an idle connection: trouble)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class SocketConnection:
    """A connection of the sync driver: a socket, plain or TLS."""

    __slots__ = ("_timeout", "reused", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reused = False
        self._timeout = -1.0

    def settimeout(self, timeout: float) -> None:
        if timeout != self._timeout:  # each change is a system call
            self.sock.settimeout(timeout)
            self._timeout = timeout

    def is_clean(self) -> bool:
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        return not _readable(sock)

    def close(self) -> None:
        self.sock.close()


def sync_step(plan: Plan, transport: Transport, op: Any = None) -> Any:
    """Carry out `plan` with blocking sockets until it delivers an item; returns the item.

    `op` is the plan's pending operation, if the caller took it already. Raises
    StopIteration when the plan ends, and whatever the plan raises.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        if op is None:
            op = plan.throw(error) if error is not None else plan.send(value)
        kind = op[0]
        if kind is DELIVER:
            return op[1]
        value = error = None
        try:
            if kind is RECV:
                conn = op[1]
                conn.settimeout(op[2])
                value = conn.sock.recv(READ_SIZE)
            elif kind is SEND:
                conn = op[1]
                conn.settimeout(op[3])
                conn.sock.sendall(op[2])
            elif kind is CONNECT:
                value = _sync_connect(transport, op[1], op[2], op[3], op[4])
            elif kind is TLS:
                conn = op[1]
                conn.sock = _sync_tls(transport, conn.sock, op[2], op[3])
            else:
                transport.sleep(op[1])
        except socket.timeout:
            error = TimeoutError("timed out")
        except OSError as exc:
            error = exc
        except BaseException:
            plan.close()
            raise
        op = None


def _sync_connect(
    transport: Transport, host: str, port: int, tls_name: str | None, timeout: float
) -> SocketConnection:
    sock = socket.create_connection((host, port), timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_name is not None:
            sock = _sync_tls(transport, sock, tls_name, timeout)
    except BaseException:
        sock.close()
        raise
    return SocketConnection(sock)


def _sync_tls(transport: Transport, sock: socket.socket, name: str, timeout: float) -> Any:
    sock.settimeout(timeout)
    return transport.context().wrap_socket(sock, server_hostname=name)


class StreamConnection(_AsyncProtocol):
    """A connection of the async driver: an asyncio protocol whose received bytes
    wait here until the plan asks for them."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.transport: Any = None
        self.reused = False
        self._buffer: list[bytes] = []
        self._size = 0
        self._ended = False
        self._lost: BaseException | None = None
        self._waiter: Any = None
        self._drain: Any = None
        self._reading_paused = False

    # asyncio.Protocol callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer.append(data)
        self._size += len(data)
        if self._size > ASYNC_BUFFER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake(self._waiter)

    def eof_received(self) -> bool:
        self._ended = True
        self._wake(self._waiter)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._ended = True
        self._lost = exc
        self._wake(self._waiter)
        self._wake(self._drain)

    def pause_writing(self) -> None:
        self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake(self._drain)
        self._drain = None

    @staticmethod
    def _wake(waiter: Any) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # what the driver uses
    async def recv(self, timeout: float) -> bytes:
        if not self._buffer and not self._ended:
            waiter = self._waiter = self.loop.create_future()
            await self._wait(waiter, timeout)
            self._waiter = None
        if self._buffer:
            data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
            self._buffer = []
            self._size = 0
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
            return data
        if self._lost is not None:
            raise self._lost
        return b""

    async def send(self, data: bytes, timeout: float) -> None:
        if self.transport.is_closing():
            raise self._lost or ConnectionResetError("the connection is closed")
        self.transport.write(data)
        if self._drain is not None:
            await self._wait(self._drain, timeout)
            if self.transport.is_closing():
                raise self._lost or ConnectionResetError("the connection closed while sending")

    async def _wait(self, waiter: Any, timeout: float) -> None:
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def is_clean(self) -> bool:
        if self._buffer or self._ended or self.transport.is_closing():
            return False
        # Bytes or an end the loop has not read yet are on the socket: ask the kernel.
        sock = self.transport.get_extra_info("socket")
        return sock is None or not _readable(sock)

    def close(self) -> None:
        if self.transport is None:
            return
        if not self.loop.is_closed():
            self.transport.abort()
            return
        # asyncio can no longer close it (its loop has closed): close the socket here, or it
        # leaks until collected and then warns. These are asyncio's own attributes; where one
        # is missing, asyncio's warning is what remains.
        transport = self.transport
        ssl_protocol = getattr(transport, "_ssl_protocol", None)
        if ssl_protocol is not None:
            transport._closed = True
            transport = getattr(ssl_protocol, "_transport", None)
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            transport._sock = None
            sock.close()


def _expire(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("timed out"))


async def async_step(plan: Plan, transport: Transport, op: Any = None) -> Any:
    """Carry out `plan` on the running event loop until it delivers an item; returns it.

    `op` is the plan's pending operation, if the caller took it already. Raises
    StopAsyncIteration when the plan ends, and whatever the plan raises;
    cancelling closes the plan's connection at once.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        if op is None:
            try:
                op = plan.throw(error) if error is not None else plan.send(value)
            except StopIteration:
                raise StopAsyncIteration from None
        kind = op[0]
        if kind is DELIVER:
            return op[1]
        value = error = None
        try:
            if kind is RECV:
                value = await op[1].recv(op[2])
            elif kind is SEND:
                await op[1].send(op[2], op[3])
            elif kind is CONNECT:
                value = await _async_connect(transport, op[1], op[2], op[3], op[4])
            elif kind is TLS:
                await _async_tls(transport, op[1], op[2], op[3])
            else:
                await (transport.asleep or _async_sleep)(op[1])
        except OSError as exc:
            error = exc
        except BaseException:
            plan.close()
            raise
        op = None


async def _async_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _async_connect(
    transport: Transport, host: str, port: int, tls_name: str | None, timeout: float
) -> StreamConnection:
    import asyncio

    loop = asyncio.get_running_loop()
    conn = StreamConnection(loop)
    tls: dict[str, Any] = {}
    if tls_name is not None:
        tls = {"ssl": transport.context(), "server_hostname": tls_name}
        tls["ssl_handshake_timeout"] = timeout
    try:
        await asyncio.wait_for(loop.create_connection(lambda: conn, host, port, **tls), timeout)
    except asyncio.TimeoutError:  # not yet the built-in TimeoutError before Python 3.11
        raise TimeoutError("timed out") from None
    return conn


async def _async_tls(
    transport: Transport, conn: StreamConnection, name: str, timeout: float
) -> None:
    import asyncio

    try:
        conn.transport = await asyncio.wait_for(
            conn.loop.start_tls(
                conn.transport,
                conn,
                transport.context(),
                server_hostname=name,
                ssl_handshake_timeout=timeout,
            ),
            timeout,
        )
    except asyncio.TimeoutError:  # not yet the built-in TimeoutError before Python 3.11
        raise TimeoutError("timed out") from None


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------


class Stream(_StreamBase, _AnswerHeaders):
    """The chunks of a streamed answer, each as soon as it arrives.

    A generator for existing code; `headers` (lower-case names), `provider`
    and `fallback_used` are set once the first chunk was yielded. Leaving the
    loop early, `close()` or dropping it closes the connection.
    """

    def __init__(self, plan: Plan, transport: Transport) -> None:
        self._plan = plan
        self._transport = transport
        self.headers: dict[str, str] = {}

    def __next__(self) -> Any:
        op = self._plan.send(None)  # most often a chunk the plan already has: no step needed
        item = op[1] if op[0] is DELIVER else sync_step(self._plan, self._transport, op)
        if type(item) is ResponseHead:
            self.headers = item.headers
            item = sync_step(self._plan, self._transport)
        return item

    def send(self, value: Any) -> Any:
        return self.__next__()

    def throw(self, *exc_info: Any) -> Any:
        self._plan.close()
        return super().throw(*exc_info)

    def close(self) -> None:
        self._plan.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncStream(_AnswerHeaders):
    """`Stream` for asyncio: `async for chunk in client.astream(...)`."""

    def __init__(self, start: Callable[[Pool], Plan], transport: Transport) -> None:
        self._start = start
        self._plan: Plan | None = None
        self._transport = transport
        self.headers: dict[str, str] = {}

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        if self._plan is None:
            import asyncio

            self._plan = self._start(self._transport.async_pool(asyncio.get_running_loop()))
        try:  # most often a chunk the plan already has: no step needed
            op = self._plan.send(None)
        except StopIteration:
            raise StopAsyncIteration from None
        item = op[1] if op[0] is DELIVER else await async_step(self._plan, self._transport, op)
        if type(item) is ResponseHead:
            self.headers = item.headers
            item = await async_step(self._plan, self._transport)
        return item

    async def aclose(self) -> None:
        if self._plan is not None:
            self._plan.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Edgee:
    """A client of the Edgee AI Gateway; safe to share between threads and event loops.

    `config` is the API key, a dict or an EdgeeConfig; keyword options
    (api_key, base_url, timeout, deadline, max_retries, ssl_context) override
    it. Unset values come from EDGEE_API_KEY and EDGEE_BASE_URL, then the
    defaults. Raises EdgeeInputError ("EDGEE_API_KEY is not set", ...) on bad settings.

    Every call takes `timeout` (seconds of silence), `deadline` (seconds for
    the whole call) and `headers` (extra request headers) keywords, and has an
    async twin named with an `a` in front (`asend`, `astream`, ...).
    """

    def __init__(self, config: str | EdgeeConfig | dict[str, Any] | None = None, **options: Any):
        make_dataclasses()
        settings = resolve_config(config, options)
        assert settings.api_key and settings.base_url and settings.timeout is not None
        self.api_key = settings.api_key
        self.base_url = settings.base_url
        self.timeout = settings.timeout
        self.deadline = settings.deadline
        self.max_retries = settings.max_retries
        self._transport = Transport(
            self.base_url, settings.ssl_context, settings.max_retries or 0, self.api_key
        )
        self._headers = {"Authorization": "Bearer " + self.api_key, "User-Agent": USER_AGENT}
        import weakref

        # Idle pooled sockets are closed when the client goes, without a ResourceWarning.
        weakref.finalize(self, self._transport.close)

    def __repr__(self) -> str:
        return f"Edgee(base_url={self.base_url!r})"

    def __enter__(self) -> Edgee:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Edgee:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close idle pooled connections, sync and async (the client can still be used)."""
        self._transport.close()

    async def aclose(self) -> None:
        """`close()` for asyncio."""
        self.close()

    # -- building calls -------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        options: CallOptions,
        extra: dict[str, str] | None = None,
        accept: str = "application/json",
    ) -> Call:
        """A checked call; `options` are the caller's timeout, deadline and headers."""
        unknown = sorted(set(options) - set(CALL_OPTIONS))
        _require_type(
            not unknown,
            f"unexpected keyword {', '.join(unknown)}; calls take {', '.join(CALL_OPTIONS)}",
        )
        headers = dict(self._headers, Accept=accept)
        if body is not None:
            headers["Content-Type"] = "application/json"
        for name, value in dict(extra or {}, **normalize_headers(options.get("headers"))).items():
            for same in [key for key in headers if key.lower() == name.lower()]:
                del headers[same]  # the caller's header replaces ours
            headers[name] = value
        timeout, deadline = options.get("timeout"), options.get("deadline")
        return Call(
            method,
            self._transport.route.prefix + path,
            body,
            headers,
            self.timeout if timeout is None else _number(timeout, "timeout"),
            self.deadline if deadline is None else _number(deadline, "deadline"),
        )

    def _chat(self, model: object, input: object, stream: bool, options: CallOptions) -> Call:
        body, extra = build_request(model, input, stream)
        accept = "text/event-stream" if stream else "application/json"
        return self._call("POST", API_ENDPOINT, body, options, extra, accept)

    def _count_tokens(self, model: object, input: object, options: CallOptions) -> Call:
        body, extra = build_count_tokens_request(model, input)
        return self._call("POST", COUNT_TOKENS_ENDPOINT, body, options, extra)

    def _compress(self, model: object, input: object, options: CallOptions) -> Call:
        body, extra = build_compress_request(model, input)
        return self._call("POST", COMPRESS_ENDPOINT, body, options, extra)

    def _models(self, provider: object, options: CallOptions) -> Call:
        path = MODELS_ENDPOINT
        if provider is not None:
            _require_type(isinstance(provider, str), "provider must be a string")
            assert isinstance(provider, str)
            _require(bool(provider.strip()), "provider must be a non-empty string")
            path += "?provider=" + urllib.parse.quote(provider, safe="")
        return self._call("GET", path, None, options)

    def _raw(
        self, method: object, path: object, body: object, stream: bool, options: CallOptions
    ) -> Call:
        _require_type(isinstance(method, str), 'method must be a string such as "POST"')
        assert isinstance(method, str)
        _require(bool(method) and method.isalpha(), f"method {method!r} is not an HTTP method")
        _require_type(isinstance(path, str), 'path must be a string such as "/v1/models"')
        assert isinstance(path, str)
        _require(
            path.startswith("/v1/") and all(" " < c < "\x7f" for c in path),
            f"path must start with /v1/ and hold no spaces or control characters: {path!r}",
        )
        data = None
        if body is not None:
            try:
                data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise EdgeeInputTypeError(f"body is not JSON-serialisable: {exc}") from None
        accept = "text/event-stream" if stream else "application/json"
        return self._call(method.upper(), path, data, options, None, accept)

    # -- carrying calls out -----------------------------------------------------------

    def _json(self, call: Call) -> tuple[dict[str, str], Any]:
        """The answer's headers and decoded JSON, with blocking sockets."""
        plan = self._transport.json_plan(call, self._transport.pool)
        try:
            head, data = sync_step(plan, self._transport)
        finally:
            plan.close()
        return head.headers, data

    async def _ajson(self, call: Call) -> tuple[dict[str, str], Any]:
        """`_json` on the running event loop."""
        import asyncio

        plan = self._transport.json_plan(
            call, self._transport.async_pool(asyncio.get_running_loop())
        )
        try:
            head, data = await async_step(plan, self._transport)
        finally:
            plan.close()
        return head.headers, data

    def _events(self, call: Call, reader: Any) -> Callable[[Pool], Plan]:
        transport = self._transport
        return lambda pool: transport.stream_plan(call, pool, reader)

    # -- the API ------------------------------------------------------------------------

    def send(
        self, model: str, input: InputLike, stream: bool = False, **options: Unpack[CallOptions]
    ) -> Any:
        """Send a chat completion request.

        Returns a SendResponse, or with `stream=True` what `stream()` returns.
        Raises EdgeeInputError before sending if the arguments are wrong,
        EdgeeAPIError ("API error <status>: <message>") when the gateway
        refuses, EdgeeConnectionError when the network fails and
        EdgeeTimeoutError when `timeout` (silence) or `deadline` (the whole call) run out.
        """
        if stream:
            return self.stream(model, input, **options)
        headers, data = self._json(self._chat(model, input, False, options))
        return response_from_json(data, headers)

    def stream(self, model: str, input: InputLike, **options: Unpack[CallOptions]) -> Stream:
        """A Stream of StreamChunk objects, each yielded as soon as it arrives.

        The arguments are checked now; the request is sent when iteration
        starts. Raises as `send()` does, and EdgeeStreamError if the stream
        breaks off before it finished.
        """
        call = self._chat(model, input, True, options)
        return Stream(self._events(call, ChunkReader)(self._transport.pool), self._transport)

    def models(self, provider: str | None = None, **options: Unpack[CallOptions]) -> list[Model]:
        """The models the gateway offers (GET /v1/models), of one provider if given."""
        return models_from_json(self._json(self._models(provider, options))[1])

    def count_tokens(self, model: str, input: InputLike, **options: Unpack[CallOptions]) -> int:
        """How many input tokens `input` is for `model` (POST /v1/count_tokens)."""
        return count_from_json(self._json(self._count_tokens(model, input, options))[1])

    def compress(
        self, model: str, input: InputLike, **options: Unpack[CallOptions]
    ) -> CompressResult:
        """Edgee's compression of a request, without sending it on (POST /v1/compress)."""
        return compress_result_from_json(self._json(self._compress(model, input, options))[1])

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        stream: bool = False,
        **options: Unpack[CallOptions],
    ) -> Any:
        """Any endpoint, raw: `body` is sent as JSON; returns the decoded JSON answer, or
        with `stream=True` a Stream of ServerSentEvent. `path` starts with /v1/.

        Errors, retries, redirects, timeouts and key protection are those of `send()`.
        """
        call = self._raw(method, path, body, stream, options)
        if stream:
            return Stream(self._events(call, EventReader)(self._transport.pool), self._transport)
        return self._json(call)[1]

    # -- the API on asyncio: the same calls, awaited ------------------------------------

    async def asend(
        self, model: str, input: InputLike, **options: Unpack[CallOptions]
    ) -> SendResponse:
        """`send()` for asyncio; cancelling closes the connection at once."""
        headers, data = await self._ajson(self._chat(model, input, False, options))
        return response_from_json(data, headers)

    def astream(self, model: str, input: InputLike, **options: Unpack[CallOptions]) -> AsyncStream:
        """`stream()` for asyncio: `async for chunk in client.astream(...)`.

        Leaving the loop early, `aclose()` or cancelling the task closes the connection.
        """
        call = self._chat(model, input, True, options)
        return AsyncStream(self._events(call, ChunkReader), self._transport)

    async def amodels(
        self, provider: str | None = None, **options: Unpack[CallOptions]
    ) -> list[Model]:
        """`models()` for asyncio."""
        return models_from_json((await self._ajson(self._models(provider, options)))[1])

    async def acount_tokens(
        self, model: str, input: InputLike, **options: Unpack[CallOptions]
    ) -> int:
        """`count_tokens()` for asyncio."""
        return count_from_json((await self._ajson(self._count_tokens(model, input, options)))[1])

    async def acompress(
        self, model: str, input: InputLike, **options: Unpack[CallOptions]
    ) -> CompressResult:
        """`compress()` for asyncio."""
        call = self._compress(model, input, options)
        return compress_result_from_json((await self._ajson(call))[1])

    def arequest(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        stream: bool = False,
        **options: Unpack[CallOptions],
    ) -> Any:
        """`request()` for asyncio: an awaitable of the decoded JSON, or with
        `stream=True` an AsyncStream of ServerSentEvent."""
        call = self._raw(method, path, body, stream, options)
        if stream:
            return AsyncStream(self._events(call, EventReader), self._transport)
        return self._arequest(call)

    async def _arequest(self, call: Call) -> Any:
        return (await self._ajson(call))[1]


# ---------------------------------------------------------------------------
# Stream helpers: the finished answer from a stream
# ---------------------------------------------------------------------------


class _ToolCallAssembler:
    """Joins streamed tool-call fragments into whole calls.

    A fragment goes to the call with its `id`, else to the newest call sent
    under its `index`, else (no index) to the last call. A new id under a used
    index starts a new call: some providers number every call 0.
    """

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}  # by position in the result
        self._by_index: dict[int, dict[str, Any]] = {}  # the newest call under each index
        self._by_id: dict[str, dict[str, Any]] = {}
        self._last: dict[str, Any] | None = None

    def add(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            return
        index, call_id = fragment.get("index"), fragment.get("id")
        if not isinstance(index, int):
            index = None
        call = self._find(index, call_id)
        if call is None:
            slot = index if index is not None and index not in self._calls else None
            if slot is None:
                slot = max(self._calls, default=-1) + 1
            call = self._calls[slot] = {"id": None, "type": None, "name": None, "arguments": []}
        if index is not None:
            self._by_index[index] = call
        if call_id and not call["id"]:
            call["id"] = call_id
            self._by_id[call_id] = call
        if fragment.get("type") and not call["type"]:
            call["type"] = fragment["type"]
        function = fragment.get("function") or {}
        if isinstance(function, dict):
            if function.get("name") and not call["name"]:
                call["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                call["arguments"].append(function["arguments"])
        self._last = call

    def _find(self, index: int | None, call_id: Any) -> dict[str, Any] | None:
        if call_id and call_id in self._by_id:
            return self._by_id[call_id]
        if index is not None:
            call = self._by_index.get(index)
            if call is not None and not (call_id and call["id"]):
                return call
            return None  # a new index, or a new id under a used one: a new call
        return None if call_id else self._last

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[dict[str, Any]]:
        """The assembled calls, in index order, shaped as `send()` returns them."""
        return [
            {
                "id": call["id"] or "",
                "type": call["type"] or "function",
                "function": {"name": call["name"] or "", "arguments": "".join(call["arguments"])},
            }
            for _, call in sorted(self._calls.items())
        ]


class _ChoiceAssembler:
    def __init__(self) -> None:
        self.role: str | None = None
        self.text: list[str] = []
        self.reasoning: dict[str, list[str]] = {}  # by the key it arrived under
        self.refusal: list[str] = []
        self.tool_calls = _ToolCallAssembler()
        self.finish_reason: str | None = None

    def add(self, choice: StreamChoice) -> None:
        delta = choice.delta
        if delta.role and not self.role:
            self.role = delta.role
        if delta.content:
            self.text.append(delta.content)
        if delta.reasoning:
            self._add_reasoning(delta)
        if delta.refusal:
            self.refusal.append(delta.refusal)
        for fragment in delta.tool_calls or ():
            self.tool_calls.add(fragment)
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason

    def _add_reasoning(self, delta: StreamDelta) -> None:
        raw = delta.raw or {}
        found = False
        for key in _REASONING_KEYS:
            text = raw.get(key)
            if isinstance(text, str) and text:
                self.reasoning.setdefault(key, []).append(text)
                found = True
        if not found:  # a delta built in code, without the object it came from
            self.reasoning.setdefault(_REASONING_KEYS[0], []).append(delta.reasoning or "")

    def reasoning_text(self) -> str:
        for key in _REASONING_KEYS:
            if key in self.reasoning:
                return "".join(self.reasoning[key])
        return ""

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": "".join(self.text) if self.text else None,
        }
        for key in _REASONING_KEYS:
            if key in self.reasoning:
                message[key] = "".join(self.reasoning[key])
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls.calls()
        return message


class StreamAccumulator(_AnswerHeaders):
    """Builds, chunk by chunk, the SendResponse a stream amounts to.

    accumulator = edgee.StreamAccumulator()
    stream = client.stream(model, input)
    for chunk in stream:
        accumulator.add(chunk)
        print(chunk.text or "", end="")
    accumulator.add_headers(stream.headers)  # for .provider and .fallback_used
    response = accumulator.response()   # what send() would have returned

    Reasoning is joined under the key it arrived with (`reasoning_content` or
    `reasoning`), refusal pieces into `refusal`; the stream's `edgee_pending_id`
    and `edgee_tools_executed` (the last chunk that sent them wins) are kept.
    """

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceAssembler] = {}
        self.usage: Usage | None = None
        self.compression: Compression | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.edgee_pending_id: str | None = None
        self.edgee_tools_executed: list[EdgeeToolExecuted] = []
        self.headers: dict[str, str] = {}

    def add(self, chunk: StreamChunk) -> StreamChunk:
        """Take in one chunk; returns it, for use inside a generator expression."""
        for choice in chunk.choices:
            assembler = self._choices.get(choice.index)
            if assembler is None:
                assembler = self._choices[choice.index] = _ChoiceAssembler()
            assembler.add(choice)
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.compression is not None:
            self.compression = chunk.compression
        self.id = self.id or chunk.id
        self.model = self.model or chunk.model
        self.created = self.created or chunk.created
        raw = chunk.raw
        if raw is not None and ("edgee_pending_id" in raw or "edgee_tools_executed" in raw):
            self.edgee_pending_id = _pending_id(raw) or self.edgee_pending_id
            self.edgee_tools_executed = _tools_executed(raw) or self.edgee_tools_executed
        return chunk

    def add_headers(self, headers: Mapping[str, str] | None) -> None:
        """Take in the stream's answer headers (names in any case; None adds nothing)."""
        self.headers.update(lower_headers(headers))

    @property
    def text(self) -> str:
        """The first choice's text so far."""
        first = self._first()
        return "".join(first.text) if first else ""

    @property
    def reasoning(self) -> str:
        """The first choice's reasoning so far."""
        first = self._first()
        return first.reasoning_text() if first else ""

    def _first(self) -> _ChoiceAssembler | None:
        return self._choices.get(min(self._choices, default=0))

    def response(self) -> SendResponse:
        """The SendResponse of everything added so far (its `raw` is None)."""
        return SendResponse(
            [
                Choice(index, assembler.message(), assembler.finish_reason)
                for index, assembler in sorted(self._choices.items())
            ],
            self.usage,
            self.compression,
            self.id,
            self.model,
            self.created,
            self.edgee_pending_id,
            list(self.edgee_tools_executed),
            dict(self.headers),
        )


def collect(chunks: Iterable[StreamChunk]) -> SendResponse:
    """Consume a stream and return the SendResponse it amounts to.

    The stream's `headers`, when it has them (the stream `client.stream()`
    returns does), go into the response's `headers`, `provider` and `fallback_used`.
    """
    accumulator = StreamAccumulator()
    for chunk in chunks:
        accumulator.add(chunk)
    accumulator.add_headers(getattr(chunks, "headers", None))
    return accumulator.response()


async def acollect(chunks: AsyncIterator[StreamChunk]) -> SendResponse:
    """Consume an async stream (`client.astream(...)`) and return its SendResponse.

    Headers are taken as by `collect()`.
    """
    accumulator = StreamAccumulator()
    async for chunk in chunks:
        accumulator.add(chunk)
    accumulator.add_headers(getattr(chunks, "headers", None))
    return accumulator.response()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

DEFAULT_CLI_MODEL = "openai/gpt-5.2"


def _stream_to(out: Any, stream: Stream) -> SendResponse:
    """Write the streamed text to `out` as it arrives; returns the assembled answer."""
    accumulator = StreamAccumulator()
    for chunk in stream:
        accumulator.add(chunk)
        text = chunk.text
        if text:
            out.write(text)
            out.flush()
    out.write("\n")
    accumulator.add_headers(stream.headers)
    return accumulator.response()


def _answer_report(response: SendResponse) -> str:
    """The `-v` lines about an answer: provider, fallback, usage and compression."""
    usage, compression = response.usage, response.compression
    return (
        f"provider: {response.provider or 'unknown'}\n"
        # the gateway sends X-Edgee-Fallback-Used only when a fallback answered
        f"fallback: {'yes' if response.fallback_used else 'no'}\n"
        + (
            f"usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
            f" = {usage.total_tokens} tokens\n"
            if usage
            else "usage: not reported\n"
        )
        + (
            f"compression: {compression.saved_tokens} tokens saved"
            f" ({compression.reduction:g}% smaller prompt), {compression.time_ms} ms\n"
            if compression
            else "compression: none\n"
        )
    )


def _compress_report(compression: CompressMetadata) -> str:
    """The `-v` line about a `--compress` result."""
    strategies = ", ".join(compression.applied_strategies) or "none"
    return (
        f"compression: {compression.uncompressed_input_tokens} -> "
        f"{compression.compressed_input_tokens} input tokens "
        f"({compression.compression_rate:.0%} removed; technique {compression.technique}; "
        f"strategies: {strategies}), {compression.compression_time_ms} ms\n"
    )


def main(argv: list[str] | None = None) -> int:
    """`python edgee.py [options] PROMPT`: stream an answer to stdout (or print the prompt's
    token count, or its compressed request); returns the exit status."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="edgee.py",
        description="Ask the Edgee AI Gateway; the answer streams to stdout. "
        "The key comes from EDGEE_API_KEY.",
    )
    parser.add_argument("prompt", nargs="*", help="the prompt (read from stdin when omitted)")
    parser.add_argument(
        "-m",
        "--model",
        default=os.environ.get("EDGEE_MODEL") or DEFAULT_CLI_MODEL,
        help=f"model id (default: $EDGEE_MODEL or {DEFAULT_CLI_MODEL})",
    )
    parser.add_argument("-s", "--system", help="a system prompt")
    parser.add_argument(
        "--base-url", help=f"gateway URL (default: $EDGEE_BASE_URL or {DEFAULT_BASE_URL})"
    )
    parser.add_argument("--timeout", type=float, help="seconds to wait for data (default 600)")
    parser.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="after the answer, print the provider, fallback, usage and compression to stderr",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--list-models", action="store_true", help="list the models and exit")
    only.add_argument(
        "--count-tokens",
        action="store_true",
        help="print how many input tokens the prompt is, and send nothing else",
    )
    only.add_argument(
        "--compress",
        action="store_true",
        help="print the request compressed by the gateway as JSON, and send nothing else",
    )
    parser.add_argument("--version", action="version", version="edgee.py " + __version__)
    args = parser.parse_args(argv)

    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # an odd terminal encoding must not end the answer
    try:
        client = Edgee(base_url=args.base_url, timeout=args.timeout)
        if args.list_models:
            for model in client.models():
                out.write(model.id + "\n")
            return 0
        if args.prompt:
            prompt = " ".join(args.prompt)
        elif not sys.stdin.isatty():
            prompt = sys.stdin.read().strip()  # a piped file's final newline is not part of it
        else:
            prompt = ""
        if not prompt.strip():
            parser.print_usage(sys.stderr)
            sys.stderr.write("edgee.py: error: no prompt (give it as an argument or on stdin)\n")
            return 2
        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": prompt})
        request: dict[str, Any] = {"messages": messages}
        if args.count_tokens:
            out.write(f"{client.count_tokens(args.model, request)}\n")
        elif args.compress:
            result = client.compress(args.model, request)
            out.write(json.dumps(result.request, indent=2) + "\n")
            if args.verbose:
                out.flush()
                sys.stderr.write(_compress_report(result.compression))
        else:
            if args.no_stream:
                response = client.send(args.model, request)
                out.write((response.text or "") + "\n")
            else:
                if args.verbose:  # a stream reports its usage only when asked to
                    request["stream_options"] = {"include_usage": True}
                response = _stream_to(out, client.stream(args.model, request))
            if args.verbose:
                out.flush()
                sys.stderr.write(_answer_report(response))
        out.flush()
        return 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 0
    except (EdgeeError, ValueError, TypeError) as exc:
        sys.stderr.write(f"edgee.py: error: {exc}\n")
        return 1


if not TYPE_CHECKING:
    sys.modules[__name__].__class__ = _LazyModule

if __name__ == "__main__":
    sys.exit(main())
