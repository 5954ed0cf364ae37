"""edgee.py: a one-file, zero-dependency client for the Edgee AI Gateway.

    import edgee
    client = edgee.Edgee("your-api-key")          # or set EDGEE_API_KEY
    print(client.send("openai/gpt-5.2", "Hello!").text)
    for chunk in client.stream("openai/gpt-5.2", "Tell me a story"):
        print(chunk.text or "", end="", flush=True)

Standard library only, CPython 3.7 and newer. Drop-in compatible with the
official `edgee` package (1.1.0); adds timeouts, retries, connection reuse,
a strict server-sent-events parser, streamed-answer assembly and asyncio.
Run `python edgee.py --help` for the command line.
"""

from __future__ import annotations

import _thread
import http.client
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
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
    from dataclasses import dataclass
    from typing import Any, TypeVar, Union

    JSONDict = dict[str, Any]
    InputLike = Union[str, "InputObject", Mapping[str, Any]]
    T = TypeVar("T")

__all__ = [
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

__version__ = "1.0.0"

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

DEFAULT_BASE_URL = "https://edgee.io"
API_ENDPOINT = "/v1/chat/completions"
MODELS_ENDPOINT = "/v1/models"
USER_AGENT = f"edgee.py/{__version__} (Python {sys.version_info[0]}.{sys.version_info[1]})"

DEFAULT_TIMEOUT = 600.0  # seconds of silence allowed; reasoning models think for minutes
CONNECT_TIMEOUT = 10.0  # connecting (TCP and TLS) never waits longer than this
DEFAULT_MAX_RETRIES = 2
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
MAX_IDLE_CONNECTIONS = 16
DRAIN_WAIT = 0.1  # seconds a reused connection waits for the bytes after a stream's [DONE]
ASYNC_WINDOW = 64  # chunks a stream's worker thread may read ahead of an async consumer

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

    def __repr__(self) -> str:  # never shows the key
        return (
            f"EdgeeConfig(api_key={'***' if self.api_key else None}, "
            f"base_url={self.base_url!r}, timeout={self.timeout!r}, "
            f"max_retries={self.max_retries!r})"
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
        except ValueError:
            raise EdgeeStreamError(
                "server-sent event data is not valid JSON: " + _shorten(self.data[:200])
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
    """Per-call headers, checked: `{name: value}` with str names and values ({} for None).

    Names keep their case; a name given twice in different cases is refused.
    Raises EdgeeInputError naming the header (never quoting its value) when a
    name is not an HTTP token, when a value holds CR, LF, NUL or another
    control character but tab, or a character beyond Latin-1, and when the
    header is one the client sets itself: its credentials (Authorization,
    Proxy-Authorization, X-Api-Key, X-Edgee-Api-Key), Host, and the framing and
    connection headers (Content-Length, Transfer-Encoding, Content-Encoding,
    Accept-Encoding, Connection, Proxy-Connection, Keep-Alive, TE, Trailer,
    Upgrade, Expect). EdgeeInputTypeError when `headers` is not a dict or a
    name or value is not a string.
    """
    if headers is None:
        return {}
    _require_type(isinstance(headers, dict), f"headers must be a dict, not {_type_name(headers)}")
    assert isinstance(headers, dict)
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


_OPTIONS = ("api_key", "base_url", "timeout", "max_retries", "ssl_context")
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
        api_key.isprintable() and " " not in api_key,
        "api_key contains spaces or control characters",
    )
    base_url = settings.get("base_url") or os.environ.get("EDGEE_BASE_URL") or DEFAULT_BASE_URL
    timeout = settings.get("timeout")
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
            context.verify_mode == ssl.CERT_REQUIRED,
            "ssl_context must verify certificates (verify_mode CERT_REQUIRED)",
        )
    return EdgeeConfig(
        api_key=api_key,
        base_url=_normalize_base_url(base_url),
        timeout=DEFAULT_TIMEOUT if timeout is None else _number(timeout, "timeout"),
        max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        ssl_context=context,
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
    refusal = get("refusal")
    return StreamDelta(
        get("role"),
        get("content"),
        get("tool_calls"),
        _reasoning(delta),
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
    except ValueError:
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
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # http.client has already imported it

    date = email.utils.parsedate_tz(value)
    if date is None:
        return None
    return max(0.0, email.utils.mktime_tz(date) - time.time())


# ---------------------------------------------------------------------------
# Transport: pooled HTTP/1.1 connections, our own body framing, retries
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
                newline = buffer.find(b"\n", position)
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
    if not size or size.strip(_HEX_DIGITS):
        raise EdgeeStreamError(f"malformed chunked body: bad chunk size {line[:40]!r}")
    return int(size, 16)


def _socket_dropped(sock: socket.socket) -> bool:
    """True if an idle keep-alive socket was closed by the server (or has stray bytes)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _Abort:
    """Lets another thread cut a call short (used by async cancellation)."""

    def __init__(self) -> None:
        self.aborted = False
        self._sock: socket.socket | None = None
        self._lock = _thread.allocate_lock()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.aborted and sock is not None:
                _shutdown(sock)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self._sock is not None:
                _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _Response:
    """An answer being read: the status, the headers, and a body reader that sees truncation."""

    def __init__(
        self,
        transport: Transport,
        conn: http.client.HTTPConnection,
        raw: http.client.HTTPResponse,
        timeout: float,
        abort: _Abort | None,
    ) -> None:
        self.status = raw.status
        self.reason = raw.reason
        self.headers = {name.lower(): value for name, value in raw.getheaders()}
        self.content_type = self.headers.get("content-type", "").lower()
        self.done = raw.length == 0 or raw.status in (204, 304)
        self._transport = transport
        self._conn: http.client.HTTPConnection | None = conn
        self._raw = raw
        self._fp = raw.fp
        self._timeout = timeout
        self._abort = abort
        self._chunked = ChunkedDecoder() if raw.chunked else None
        self._remaining = None if raw.chunked else raw.length
        self._reusable = not raw.will_close and (raw.chunked or raw.length is not None)
        self.ended = False  # the stream said [DONE]: only the body's framing may be left

    def redact(self, text: bytes) -> bytes:
        """`text` without the API key (see Transport.redact)."""
        return self._transport.redact(text)

    def read_block(self) -> bytes:
        """The next piece of the body, b"" at its end.

        Raises EdgeeStreamError if the body is cut short and EdgeeTimeoutError
        if no byte arrives within the timeout.
        """
        while not self.done:
            remaining = self._remaining
            try:
                piece = self._fp.read1(
                    READ_SIZE if remaining is None else min(READ_SIZE, remaining)
                )
            except socket.timeout:
                raise EdgeeTimeoutError(
                    f"no data from {self._transport.origin} for {self._timeout:g} s: "
                    "the answer stalled"
                ) from None
            except (OSError, ValueError, AttributeError) as exc:
                raise EdgeeStreamError(
                    f"stream was cut: the connection to {self._transport.origin} broke "
                    f"({exc.__class__.__name__})"
                ) from exc
            if self._chunked is not None:
                if not piece:
                    raise EdgeeStreamError(
                        "stream was cut: the connection closed inside the chunked body"
                    )
                data = self._chunked.feed(piece)
                if self._chunked.done:
                    self.done = True
                    self._reusable = self._reusable and not self._chunked.extra
                if data:
                    return data
            elif remaining is not None:
                if not piece:
                    raise EdgeeStreamError(
                        f"stream was cut: the connection closed with {remaining} bytes "
                        "of the body missing"
                    )
                self._remaining = remaining - len(piece)
                self.done = self._remaining == 0
                return piece
            else:  # no length: the body ends when the server closes the connection
                if not piece:
                    self.done = True
                return piece
        return b""

    def read_all(self, limit: int, truncate: bool = False) -> bytes:
        """The whole (rest of the) body.

        Beyond `limit` bytes: the first `limit` bytes if `truncate`, else
        EdgeeStreamError (the rest is never read, so memory stays bounded).
        """
        pieces: list[bytes] = []
        size = 0
        while True:
            piece = self.read_block()
            if not piece:
                return b"".join(pieces)
            pieces.append(piece)
            size += len(piece)
            if size > limit:
                if truncate:
                    return b"".join(pieces)[:limit]
                raise EdgeeStreamError(f"the answer is larger than {limit} bytes")

    def close(self) -> None:
        """Give the connection back for reuse if the body was read whole, else close it.

        After [DONE] the body's last bytes may still be on their way: the pool
        reads them when it next hands the connection out, so nobody waits now.
        """
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._abort is not None:
            self._abort.watch(None)
        if self._reusable and conn.sock is not None and (self.done or self.ended):
            if self.done:
                self._raw.close()
                self._transport.release(conn)
            else:
                self._transport.release(conn, self)
            return
        self._raw.close()
        conn.close()

    def finish(self, conn: http.client.HTTPConnection) -> bool:
        """Read the rest of a body that ended with [DONE]; True if the connection is clean."""
        assert conn.sock is not None
        try:
            conn.sock.settimeout(DRAIN_WAIT)
            for _ in range(8):  # only framing is left: a few small reads at most
                if self.done or not self.read_block():
                    break
        except EdgeeConnectionError:
            return False
        finally:
            self._raw.close()
        return self.done and self._reusable


class Transport:
    """HTTP/1.1 to one origin: a thread-safe pool of kept-alive connections,
    proxies from the environment, retries with backoff, and redirects that
    never carry the API key to another origin.
    """

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        secret: str = "",
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.prefix = parts.path
        self.origin = f"{self.scheme}://{parts.netloc}"
        self.max_retries = max_retries
        self.sleep: Callable[[float], None] = time.sleep
        self._secret = secret
        self._ssl_context = ssl_context
        # Idle connections; with the answer whose last bytes (after [DONE]) are unread.
        self._idle: list[tuple[http.client.HTTPConnection, _Response | None]] = []
        self._lock = _thread.allocate_lock()
        self._proxy, self._proxy_headers = _find_proxy(self.scheme, parts.netloc)

    # -- connections ---------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # built once, on first use, and shared by all threads
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        host, port = self._proxy or (self.host, self.port)
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context())
            if self._proxy:
                conn.set_tunnel(self.host, self.port, headers=self._proxy_headers)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        return conn

    def _checkout(self) -> tuple[http.client.HTTPConnection | None, bool]:
        """An idle connection that still looks alive, or (None, False)."""
        while True:
            with self._lock:
                if not self._idle:
                    return None, False
                conn, unfinished = self._idle.pop()
            if unfinished is not None and not unfinished.finish(conn):
                conn.close()
                continue
            if conn.sock is not None and not _socket_dropped(conn.sock):
                return conn, True
            conn.close()

    def release(
        self, conn: http.client.HTTPConnection, unfinished: _Response | None = None
    ) -> None:
        """Put a connection back in the pool once its answer was read (or ended with [DONE])."""
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((conn, unfinished))
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection (the client stays usable)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    # -- one exchange ----------------------------------------------------------

    def _connect(self, conn: http.client.HTTPConnection, timeout: float) -> None:
        conn.timeout = min(timeout, CONNECT_TIMEOUT)
        try:
            conn.connect()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, (OSError, http.client.HTTPException)):
                raise self._connect_error(exc, conn.timeout) from exc
            raise
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _connect_error(self, exc: BaseException, timeout: float) -> EdgeeConnectionError:
        where = self.origin + (" through the proxy" if self._proxy else "")
        if isinstance(exc, socket.timeout):
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

    def _exchange_error(self, exc: BaseException, timeout: float) -> EdgeeConnectionError:
        if isinstance(exc, socket.timeout):
            return EdgeeTimeoutError(f"no answer from {self.origin} within {timeout:g} s")
        if isinstance(exc, http.client.RemoteDisconnected):
            return EdgeeConnectionError(
                f"{self.origin} closed the connection without answering", True
            )
        if isinstance(exc, (ConnectionError, http.client.IncompleteRead)):
            return EdgeeConnectionError(
                f"the connection to {self.origin} broke before an answer "
                f"({exc.__class__.__name__})",
                True,
            )
        if isinstance(exc, http.client.HTTPException):
            return EdgeeConnectionError(
                f"{self.origin} sent an invalid HTTP answer ({exc.__class__.__name__})"
            )
        return EdgeeConnectionError(f"request to {self.origin} failed: {exc}", True)

    def _exchange(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
        abort: _Abort | None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request and read the head of its answer, on a pooled or new connection."""
        for _ in range(MAX_IDLE_CONNECTIONS + 1):  # stale pooled connections are skipped
            conn, reused = self._checkout()
            if conn is None:
                conn = self._new_connection(timeout)
                self._connect(conn, timeout)
            assert conn.sock is not None
            if abort is not None:
                abort.watch(conn.sock)
            try:
                conn.sock.settimeout(timeout)
                conn.request(method, target, body, headers)
                return conn, conn.getresponse()
            except BaseException as exc:
                conn.close()
                if not isinstance(exc, (OSError, http.client.HTTPException)):
                    raise
                error = self._exchange_error(exc, timeout)
                # A kept-alive connection the server closed meanwhile: try a fresh one.
                if reused and error.retryable and not isinstance(exc, socket.timeout):
                    continue
                raise error from exc
        raise EdgeeConnectionError(f"could not get a working connection to {self.origin}", True)

    # -- requests with retries and redirects -----------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
        abort: _Abort | None = None,
    ) -> _Response:
        """Send a request and return the successful answer, its body still unread.

        Retries connection failures and 408/409/429/5xx answers up to
        `max_retries` times; raises EdgeeAPIError for an error answer and
        EdgeeConnectionError (or EdgeeTimeoutError) for a network failure.
        """
        target = self._target(self.prefix + path)
        attempt = redirects = 0
        while True:
            if abort is not None and abort.aborted:
                raise EdgeeConnectionError("the call was cancelled")
            try:
                conn, raw = self._exchange(method, target, body, headers, timeout, abort)
            except EdgeeConnectionError as failure:
                if not failure.retryable or attempt >= self.max_retries:
                    raise
                delay = backoff_delay(attempt)
            else:
                response = _Response(self, conn, raw, timeout, abort)
                if 200 <= response.status < 300:
                    return response
                if response.status in REDIRECT_STATUSES and "location" in response.headers:
                    redirects += 1
                    method, target, body = self._redirect(response, method, target, body, redirects)
                    continue
                error = self._error_from(response)
                if response.status not in RETRY_STATUSES or attempt >= self.max_retries:
                    raise error
                asked = retry_delay(attempt, response.headers)
                if asked is None:  # the server wants a longer pause than we are willing to take
                    raise error
                delay = asked
            attempt += 1
            self.sleep(delay)

    def _target(self, path: str) -> str:
        """The request target: a path, or an absolute URL for a plain-HTTP proxy."""
        if self._proxy and self.scheme == "http":
            return self.origin + path
        return path

    def _error_from(self, response: _Response) -> EdgeeAPIError:
        try:
            body = response.read_all(MAX_ERROR_BODY, truncate=True)
        except EdgeeConnectionError:  # a broken error body still gives its status
            body = b""
        finally:
            response.close()
        return api_error(response.status, self.redact(body), response.headers, response.reason)

    def redact(self, text: bytes) -> bytes:
        """`text` without the API key: a server echoing it must not put it in our errors."""
        if len(self._secret) >= 8:  # a shorter test key would garble ordinary words
            return text.replace(self._secret.encode("utf-8", "replace"), b"[redacted]")
        return text

    def _redirect(
        self, response: _Response, method: str, target: str, body: bytes | None, count: int
    ) -> tuple[str, str, bytes | None]:
        """The next (method, target, body) after a redirect; same origin only."""
        try:  # read the small body so the connection can be reused
            response.read_all(MAX_ERROR_BODY)
        except EdgeeConnectionError:
            pass
        response.close()
        status = response.status
        current = target if target.startswith(("http://", "https://")) else self.origin + target
        location = urllib.parse.urljoin(current, response.headers["location"])
        parts = urllib.parse.urlsplit(location)
        port = parts.port if parts.port else (443 if parts.scheme == "https" else 80)
        if (parts.scheme, (parts.hostname or "").lower(), port) != (
            self.scheme,
            self.host.lower(),
            self.port,
        ):
            raise EdgeeAPIError(
                status,
                f"redirect to {parts.scheme}://{parts.netloc} refused: "
                f"the API key is only sent to {self.origin} "
                "(set base_url to the new address if you trust it)",
                headers=response.headers,
            )
        if count > MAX_REDIRECTS:
            raise EdgeeAPIError(status, f"more than {MAX_REDIRECTS} redirects")
        if status == 303 or (status in (301, 302) and method == "POST"):
            method, body = "GET", None
        path = parts.path + ("?" + parts.query if parts.query else "")
        return method, self._target(path or "/"), body


def _find_proxy(scheme: str, netloc: str) -> tuple[tuple[str, int] | None, dict[str, str]]:
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


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------


class _Prepared:
    """A checked request, ready to send (and to send again on a retry)."""

    __slots__ = ("body", "headers", "timeout")

    def __init__(self, body: bytes, headers: dict[str, str], timeout: float) -> None:
        self.body = body
        self.headers = headers
        self.timeout = timeout


class Edgee:
    """A client of the Edgee AI Gateway; safe to share between threads.

    `config` is the API key, a dict or an EdgeeConfig; keyword options
    (api_key, base_url, timeout, max_retries, ssl_context) override it. Unset
    values come from EDGEE_API_KEY and EDGEE_BASE_URL, then the defaults.
    Raises EdgeeInputError ("EDGEE_API_KEY is not set", ...) on bad settings.
    """

    def __init__(self, config: str | EdgeeConfig | dict[str, Any] | None = None, **options: Any):
        make_dataclasses()
        settings = resolve_config(config, options)
        assert settings.api_key and settings.base_url and settings.timeout is not None
        self.api_key = settings.api_key
        self.base_url = settings.base_url
        self.timeout = settings.timeout
        self.max_retries = settings.max_retries
        self._transport = Transport(
            self.base_url, settings.ssl_context, settings.max_retries or 0, self.api_key
        )
        self._headers = {
            "Authorization": "Bearer " + self.api_key,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        import weakref

        # Idle pooled sockets are closed when the client goes, without a ResourceWarning.
        weakref.finalize(self, self._transport.close)

    def __repr__(self) -> str:
        return f"Edgee(base_url={self.base_url!r})"

    def __enter__(self) -> Edgee:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close idle pooled connections (the client can still be used)."""
        self._transport.close()

    # -- requests -------------------------------------------------------------------

    def _prepare(self, model: object, input: object, stream: bool, timeout: object) -> _Prepared:
        body, extra = build_request(model, input, stream)
        headers = dict(self._headers, Accept="text/event-stream" if stream else "application/json")
        headers.update(extra)
        seconds = self.timeout if timeout is None else _number(timeout, "timeout")
        return _Prepared(body, headers, seconds)

    def send(
        self,
        model: str,
        input: InputLike,
        stream: bool = False,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Send a chat completion request.

        Returns a SendResponse, or with `stream=True` the generator `stream()`
        returns. Raises EdgeeInputError before sending if the arguments are
        wrong, EdgeeAPIError ("API error <status>: <message>") when the gateway
        refuses, and EdgeeConnectionError when the network fails.
        """
        request = self._prepare(model, input, stream, timeout)
        if stream:
            return self._stream(request)
        return self._send(request)

    def stream(
        self, model: str, input: InputLike, *, timeout: float | None = None
    ) -> Iterator[StreamChunk]:
        """A generator of StreamChunk objects, each yielded as soon as it arrives.

        The arguments are checked now; the request is sent when iteration
        starts. Raises as `send()` does, and EdgeeStreamError if the stream
        breaks off before it finished.
        """
        return self._stream(self._prepare(model, input, True, timeout))

    def models(self, *, timeout: float | None = None) -> list[Model]:
        """The models the gateway offers (GET /v1/models)."""
        seconds = self.timeout if timeout is None else _number(timeout, "timeout")
        return self._models(seconds)

    def _send(self, request: _Prepared, abort: _Abort | None = None) -> SendResponse:
        data = self._request_json("POST", API_ENDPOINT, request, abort)
        return response_from_json(data)

    def _models(self, timeout: float, abort: _Abort | None = None) -> list[Model]:
        request = _Prepared(b"", dict(self._headers, Accept="application/json"), timeout)
        del request.headers["Content-Type"]
        data = self._request_json("GET", MODELS_ENDPOINT, request, abort)
        models = data.get("data")
        if not isinstance(models, list):
            raise EdgeeStreamError("the models answer has no data list")
        return [
            Model(
                m.get("id", ""),
                m.get("object", "model"),
                m.get("created", 0),
                m.get("owned_by", ""),
            )
            for m in models
            if isinstance(m, dict)
        ]

    def _request_json(
        self, method: str, path: str, request: _Prepared, abort: _Abort | None
    ) -> JSONDict:
        body = request.body if method == "POST" else None
        response = self._transport.request(
            method, path, body, request.headers, request.timeout, abort
        )
        try:
            raw = response.read_all(MAX_BODY)
        finally:
            response.close()
        return _decode_json_answer(raw, response)

    def _stream(self, request: _Prepared, abort: _Abort | None = None) -> Iterator[StreamChunk]:
        response = self._transport.request(
            "POST", API_ENDPOINT, request.body, request.headers, request.timeout, abort
        )
        try:
            if "json" in response.content_type:  # a gateway that did not stream
                data = _decode_json_answer(response.read_all(MAX_BODY), response)
                yield chunk_from_response(response_from_json(data))
                return
            yield from _read_event_stream(response)
        finally:
            response.close()

    # -- asyncio ---------------------------------------------------------------------

    async def asend(
        self, model: str, input: InputLike, *, timeout: float | None = None
    ) -> SendResponse:
        """`send()` for asyncio: runs in a worker thread; cancelling closes the connection."""
        request = self._prepare(model, input, False, timeout)
        return await _call_in_thread(lambda abort: self._send(request, abort))

    def astream(
        self, model: str, input: InputLike, *, timeout: float | None = None
    ) -> AsyncIterator[StreamChunk]:
        """`stream()` for asyncio: `async for chunk in client.astream(...)`.

        Chunks are read by a worker thread, so the event loop never blocks;
        leaving the loop early or cancelling the task closes the connection.
        """
        request = self._prepare(model, input, True, timeout)
        return _stream_in_thread(lambda abort: self._stream(request, abort))

    async def amodels(self, *, timeout: float | None = None) -> list[Model]:
        """`models()` for asyncio."""
        seconds = self.timeout if timeout is None else _number(timeout, "timeout")
        return await _call_in_thread(lambda abort: self._models(seconds, abort))


def _decode_json_answer(raw: bytes, response: _Response) -> JSONDict:
    """The JSON object of a 2xx answer; an error envelope in it raises EdgeeAPIError."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise EdgeeStreamError(
            "the gateway's answer is not valid JSON: "
            + _shorten(raw[:200].decode("utf-8", "replace"))
        ) from None
    if not isinstance(data, dict):
        raise EdgeeStreamError("the gateway's answer is not a JSON object")
    if data.get("error"):
        raw = response.redact(raw)
        raise api_error(response.status, raw, response.headers, response.reason)
    return data


def _read_event_stream(response: _Response) -> Iterator[StreamChunk]:
    """The chunks of an event-stream answer, until `[DONE]` or the end of the body.

    Raises EdgeeAPIError for an error event, EdgeeStreamError for malformed
    data or for a stream that ends before `[DONE]` and before any finish_reason.
    """
    decoder = SSEDecoder()
    feed, read, loads = decoder.feed, response.read_block, json.loads
    finished = False
    count = 0
    while True:
        try:
            piece = read()
        except EdgeeConnectionError:
            if finished:  # the answer is complete; only the closing [DONE] is missing
                return
            raise
        if not piece:
            break
        for event in feed(piece):
            data = event.data
            if data == "[DONE]":
                response.ended = True
                return
            if event.event == "error":
                raise stream_error(response.redact(data.encode("utf-8")), response.status)
            if not data:
                continue
            try:
                payload = loads(data)
            except ValueError:
                raise EdgeeStreamError(
                    f"malformed JSON in stream event {count + 1}: {_shorten(data[:200])}"
                ) from None
            if type(payload) is not dict:
                raise EdgeeStreamError(f"stream event {count + 1} is not a JSON object")
            if payload.get("error"):
                raise stream_error(response.redact(data.encode("utf-8")), response.status)
            try:
                chunk = chunk_from_json(payload)
            except (AttributeError, TypeError, ValueError):
                raise EdgeeStreamError(
                    f"stream event {count + 1} is not a chat.completion.chunk"
                ) from None
            if not finished:
                for choice in chunk.choices:
                    if choice.finish_reason:
                        finished = True
            count += 1
            yield chunk
    if not finished:
        raise EdgeeStreamError(
            f"stream was cut: the gateway ended it after {count} chunk{'' if count == 1 else 's'}, "
            "before [DONE] and before any finish_reason"
        )


# ---------------------------------------------------------------------------
# asyncio: each call runs in its own worker thread
# ---------------------------------------------------------------------------


async def _call_in_thread(call: Callable[[_Abort], T]) -> T:
    import asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    abort = _Abort()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            result = call(abort)
        except BaseException as exc:  # handed to the awaiting task
            error = exc
            deliver: Callable[[], None] = lambda: future.set_exception(error)  # noqa: E731
        else:
            deliver = lambda: future.set_result(result)  # noqa: E731
        try:
            loop.call_soon_threadsafe(settle, deliver)
        except RuntimeError:  # the loop has closed: nobody is waiting
            pass

    import threading

    threading.Thread(target=work, name="edgee-call", daemon=True).start()
    try:
        return await future
    except asyncio.CancelledError:  # cut the worker's call short: close its connection
        abort.abort()
        raise


async def _stream_in_thread(
    start: Callable[[_Abort], Iterator[StreamChunk]],
) -> AsyncIterator[StreamChunk]:
    import asyncio
    import queue
    import threading

    loop = asyncio.get_running_loop()
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(ASYNC_WINDOW)
    wake = asyncio.Event()
    abort = _Abort()

    def notify() -> None:
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop has closed
            abort.abort()

    def hand_over(item: tuple[str, Any]) -> bool:
        while not abort.aborted:
            try:
                handoff.put(item, timeout=0.05)
            except queue.Full:
                continue
            notify()
            return True
        return False

    def work() -> None:
        try:
            for chunk in start(abort):
                if not hand_over(("chunk", chunk)):
                    return
            hand_over(("end", None))
        except BaseException as exc:  # handed to the consumer
            hand_over(("error", exc))

    threading.Thread(target=work, name="edgee-stream", daemon=True).start()
    ended = False
    try:
        while True:
            try:
                kind, value = handoff.get_nowait()
            except queue.Empty:
                wake.clear()
                if handoff.empty():
                    await wake.wait()
                continue
            if kind == "chunk":
                yield value
            elif kind == "error":
                ended = True
                raise value
            else:
                ended = True
                return
    finally:
        if not ended:
            abort.abort()


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


def main(argv: list[str] | None = None) -> int:
    """`python edgee.py [options] PROMPT`: stream an answer to stdout; returns the exit status."""
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
    parser.add_argument("--list-models", action="store_true", help="list the models and exit")
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
        if args.no_stream:
            out.write((client.send(args.model, {"messages": messages}).text or "") + "\n")
        else:
            for chunk in client.stream(args.model, {"messages": messages}):
                text = chunk.text
                if text:
                    out.write(text)
                    out.flush()
            out.write("\n")
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
