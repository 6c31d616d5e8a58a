"""Local HTTP fakes of the LLM providers' streaming APIs, for the real client code paths.

Not a model: a stand-in for the wire format and the documented behaviour of each provider, used by
every test that talks to a provider (`tests/agent`, the reliability cluster). `FakeLlmServer`
answers, on a loopback port:

- Anthropic `POST /v1/messages`, `stream: true`: server-sent events. Shapes from the anthropic
  SDK's types in the venv (`anthropic/types/raw_message_*_event.py`, `message_delta_usage.py`:
  `input_tokens` is optional in `message_delta`, only `output_tokens` is required) and its
  streaming docs: text in `text_delta`s, a tool call as a `tool_use` block whose input arrives as
  `input_json_delta` fragments, `stop_reason` `end_turn` / `tool_use` / `max_tokens`, and errors
  after a 200 as an `event: error` (e.g. `overloaded_error`). HTTP errors carry
  `{"type": "error", "error": {"type", "message"}}` (errors docs: 529 is `overloaded_error`).
- OpenAI `POST /v1/chat/completions`, `stream: true`: `data:` chunks (`openai/types/chat/
  chat_completion_chunk.py`): tool calls as `delta.tool_calls[index]` whose `arguments` arrive in
  fragments, `finish_reason` `stop` / `tool_calls` / `length`, a usage chunk with `total_tokens =
  prompt_tokens + completion_tokens`, `[DONE]`. HTTP errors carry `{"error": {"message", "type",
  "param", "code"}}`; a used-up account is 429 `insufficient_quota` (error-codes docs).
- Ollama `POST /api/chat`: newline-delimited JSON (`ollama/_types.py` `ChatResponse`): tool calls
  as whole `message.tool_calls` (`arguments` an object), the last line `done: true` with
  `done_reason` `stop` / `length` and the counts.

What each request answers is scripted with `script(Turn(...), ...)`; unscripted requests stream
`reply` as text. Every request is validated the way the provider validates it (required fields,
tool results answering the previous turn's tool calls) and refused with the provider's 400 when it
is not valid, and recorded (path, headers, JSON body) for tests to inspect.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INPUT_TOKENS = 21
"""Prompt tokens every answer reports."""


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    name: str
    args: Mapping[str, Any]
    id: str = "call_1"


@dataclass(frozen=True)
class Turn:
    """One scripted answer.

    `text` (None: the server's `reply`) and `tool_calls` are what the model says. `truncated`
    cuts the answer off at the token limit in the middle of its last tool call's arguments (or of
    its text), with the provider's stop reason for it. `status` other than 200 answers with that
    HTTP error (`error_type`, `error`, `headers`); `error_type` with status 200 breaks the stream
    off with an error event after the first words. `delta_input_tokens=False` plays an Anthropic
    endpoint whose `message_delta` usage has only `output_tokens`.
    """

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    truncated: bool = False
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    error_type: str = ""
    error: str = ""
    delta_input_tokens: bool = True


class FakeLlmServer:
    """A threaded HTTP server speaking the three providers' streaming formats."""

    def __init__(self, reply: str = "Hello from the fake provider.") -> None:
        self.reply = reply
        self.requests: list[RecordedRequest] = []
        self.rejections: list[str] = []
        """Why each refused request was refused (request validation)."""
        self._turns: list[Turn] = []
        self._always: Turn | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeLlmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *turns: Turn, always: Turn | None = None) -> None:
        """Answer the next requests with `turns`, then with `always` (None: the reply)."""
        with self._lock:
            self._turns = list(turns)
            self._always = always
            self.requests.clear()
            self.rejections.clear()

    def tokens(self, text: str | None = None) -> list[str]:
        words = (self.reply if text is None else text).split(" ")
        return [w + " " for w in words[:-1]] + [words[-1]]

    def _next(self, request: RecordedRequest) -> Turn:
        with self._lock:
            self.requests.append(request)
            if self._turns:
                return self._turns.pop(0)
            return self._always or Turn()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = RecordedRequest(self.path, headers, body)
                provider: _Anthropic | _OpenAi | _Ollama
                if self.path.endswith("/v1/messages"):
                    provider = _Anthropic(fake)
                elif self.path.endswith("/chat/completions"):
                    provider = _OpenAi(fake)
                elif self.path.endswith("/api/chat"):
                    provider = _Ollama(fake)
                else:
                    self.send_error(404)
                    return
                turn = fake._next(recorded)
                problem = provider.invalid(headers, body)
                if problem:
                    fake.rejections.append(problem)
                    turn = Turn(status=400, error_type=provider.invalid_type, error=problem)
                if turn.status != 200:
                    self._send_json(turn.status, provider.error_body(turn), turn.headers)
                    return
                self.send_response(200)
                self.send_header("content-type", provider.content_type)
                self.end_headers()
                for part in provider.stream(body, turn):
                    self.wfile.write(part.encode())
                    self.wfile.flush()

            def _send_json(
                self, status: int, payload: dict[str, Any], headers: Mapping[str, str]
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _cut(text: str) -> str:
    """The first part of `text`: what a model emits before its token limit stops it."""
    return text[: max(1, len(text) * 2 // 3)]


def _fragments(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class _Anthropic:
    content_type = "text/event-stream"
    invalid_type = "invalid_request_error"

    def __init__(self, fake: FakeLlmServer) -> None:
        self.fake = fake

    def invalid(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
        # Messages API reference: model, max_tokens and messages are required; roles are user or
        # assistant; each tool_result answers a tool_use of the assistant turn just before it.
        if "anthropic-version" not in headers:
            return "anthropic-version header is required"
        if not (headers.get("x-api-key") or headers.get("authorization")):
            return "x-api-key header is required"
        if not body.get("model") or not isinstance(body.get("max_tokens"), int):
            return "model and max_tokens are required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        asked: set[str] = set()
        for index, message in enumerate(messages):
            if message.get("role") not in ("user", "assistant"):
                return f"messages.{index}.role: must be user or assistant"
            blocks = message.get("content")
            blocks = blocks if isinstance(blocks, list) else []
            answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
            if not answered <= asked:
                return f"messages.{index}: tool_result without a matching tool_use just before"
            asked = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
        for tool in body.get("tools") or []:
            if not tool.get("name") or "input_schema" not in tool:
                return "tools: each tool needs a name and an input_schema"
        return ""

    def error_body(self, turn: Turn) -> dict[str, Any]:
        return {"type": "error", "error": {"type": turn.error_type, "message": turn.error}}

    def stream(self, body: Mapping[str, Any], turn: Turn) -> Iterator[str]:
        def event(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1},
        }
        yield event("message_start", {"message": message})
        output = 0
        index = 0
        text = self.fake.reply if turn.text is None else turn.text
        cut_text = turn.truncated and not turn.tool_calls
        if text:
            tokens = self.fake.tokens(_cut(text) if cut_text else text)
            if turn.error_type:
                tokens = tokens[:2]
            yield event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
            for token in tokens:
                delta = {"type": "text_delta", "text": token}
                yield event("content_block_delta", {"index": 0, "delta": delta})
            yield event("content_block_stop", {"index": 0})
            output += len(tokens)
            index += 1
        if turn.error_type:
            # After a 200 the API reports an error as an event (streaming docs: "overloaded").
            error = {"type": turn.error_type, "message": turn.error or "Overloaded"}
            yield event("error", {"error": error})
            return
        for number, call in enumerate(turn.tool_calls):
            arguments = json.dumps(dict(call.args))
            last = number == len(turn.tool_calls) - 1
            if turn.truncated and last:
                arguments = _cut(arguments)
            start = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            yield event("content_block_start", {"index": index, "content_block": start})
            for fragment in _fragments(arguments):
                delta = {"type": "input_json_delta", "partial_json": fragment}
                yield event("content_block_delta", {"index": index, "delta": delta})
            yield event("content_block_stop", {"index": index})
            output += len(_fragments(arguments))
            index += 1
        stop = "tool_use" if turn.tool_calls else "end_turn"
        if turn.truncated:
            stop = "max_tokens"
        usage: dict[str, Any] = {"output_tokens": output}
        if turn.delta_input_tokens:
            usage["input_tokens"] = INPUT_TOKENS
        yield event(
            "message_delta",
            {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage},
        )
        yield event("message_stop", {})


class _OpenAi:
    content_type = "text/event-stream"
    invalid_type = "invalid_request_error"

    def __init__(self, fake: FakeLlmServer) -> None:
        self.fake = fake

    def invalid(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
        # Chat completions reference: model and messages are required; a `tool` message answers
        # a tool_call_id of the assistant message before it.
        if not headers.get("authorization", "").startswith("Bearer "):
            return "You didn't provide an API key."
        if not body.get("model"):
            return "you must provide a model parameter"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must contain at least one message"
        asked: set[str] = set()
        for index, message in enumerate(messages):
            role = message.get("role")
            if role not in ("system", "developer", "user", "assistant", "tool"):
                return f"messages[{index}].role: invalid value"
            if role == "tool":
                if message.get("tool_call_id") not in asked:
                    return (
                        f"messages[{index}]: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'"
                    )
                continue
            asked = {c.get("id") for c in message.get("tool_calls") or []}
        for tool in body.get("tools") or []:
            if tool.get("type") != "function" or not (tool.get("function") or {}).get("name"):
                return "tools: each tool needs type function and a function name"
        return ""

    def error_body(self, turn: Turn) -> dict[str, Any]:
        code = turn.error_type or None
        return {
            "error": {"message": turn.error, "type": turn.error_type, "param": None, "code": code}
        }

    def stream(self, body: Mapping[str, Any], turn: Turn) -> Iterator[str]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body.get("model", ""),
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n"

        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        output = 0
        text = self.fake.reply if turn.text is None else turn.text
        if text:
            tokens = self.fake.tokens(
                _cut(text) if turn.truncated and not turn.tool_calls else text
            )
            if turn.error_type:
                tokens = tokens[:2]
            for token in tokens:
                yield chunk([{"index": 0, "delta": {"content": token}, "finish_reason": None}])
            output += len(tokens)
        if turn.error_type:
            # After a 200 an error comes as a `data:` object with `error` (the openai SDK's
            # `_streaming.py` raises `APIError` with that body).
            error = {"message": turn.error or "The server had an error", "type": turn.error_type}
            yield f"data: {json.dumps({'error': {**error, 'param': None, 'code': None}})}\n\n"
            return
        for number, call in enumerate(turn.tool_calls):
            arguments = json.dumps(dict(call.args))
            if turn.truncated and number == len(turn.tool_calls) - 1:
                arguments = _cut(arguments)
            head = {"index": number, "id": call.id, "type": "function"}
            head["function"] = {"name": call.name, "arguments": ""}
            yield chunk([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}])
            for fragment in _fragments(arguments):
                part = {"index": number, "function": {"arguments": fragment}}
                yield chunk([{"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}])
            output += len(_fragments(arguments))
        finish = "tool_calls" if turn.tool_calls else "stop"
        if turn.truncated:
            finish = "length"
        yield chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
        usage = {
            "prompt_tokens": INPUT_TOKENS,
            "completion_tokens": output,
            "total_tokens": INPUT_TOKENS + output,
        }
        if (body.get("stream_options") or {}).get("include_usage"):
            yield chunk([], usage=usage)
        yield "data: [DONE]\n\n"


class _Ollama:
    content_type = "application/x-ndjson"
    invalid_type = "bad_request"

    def __init__(self, fake: FakeLlmServer) -> None:
        self.fake = fake

    def invalid(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
        # Ollama API docs, /api/chat: model is required; messages have a role and content.
        if not body.get("model"):
            return "model is required"
        for message in body.get("messages") or []:
            if message.get("role") not in ("system", "user", "assistant", "tool"):
                return "invalid message role"
        return ""

    def error_body(self, turn: Turn) -> dict[str, Any]:
        return {"error": turn.error}

    def stream(self, body: Mapping[str, Any], turn: Turn) -> Iterator[str]:
        model = body.get("model", "")
        stamp = "2026-01-01T00:00:00Z"
        text = self.fake.reply if turn.text is None else turn.text
        tokens = self.fake.tokens(_cut(text) if turn.truncated else text) if text else []
        for token in tokens:
            message: dict[str, Any] = {"role": "assistant", "content": token}
            yield json.dumps(
                {"model": model, "created_at": stamp, "message": message, "done": False}
            )
            yield "\n"
        if turn.tool_calls:
            # Ollama parses the model's tool-call text itself and sends whole calls; a call cut
            # off by the limit still arrives, with the arguments parsed so far, and `length`.
            calls = []
            for number, call in enumerate(turn.tool_calls):
                args = dict(call.args)
                if turn.truncated and number == len(turn.tool_calls) - 1:
                    args = {k: _cut(str(v)) for k, v in list(args.items())[:1]}
                calls.append({"function": {"name": call.name, "arguments": args}})
            message = {"role": "assistant", "content": "", "tool_calls": calls}
            yield json.dumps(
                {"model": model, "created_at": stamp, "message": message, "done": False}
            )
            yield "\n"
        last = {
            "model": model,
            "created_at": stamp,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "length" if turn.truncated else "stop",
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": INPUT_TOKENS,
            "prompt_eval_duration": 100,
            "eval_count": len(tokens) + len(turn.tool_calls),
            "eval_duration": 100,
        }
        yield json.dumps(last) + "\n"
