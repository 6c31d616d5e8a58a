"""Local HTTP fakes of the LLM providers' streaming APIs, for the real client code paths.

`FakeLlmServer` answers, on a loopback port:

- Anthropic `POST /v1/messages` with `stream: true`: server-sent events (`message_start`,
  `content_block_delta` per token, `message_delta` with usage, `message_stop`);
- OpenAI `POST /v1/chat/completions` with `stream: true`: `data:` chunks, a usage chunk, `[DONE]`;
- Ollama `POST /api/chat`: newline-delimited JSON, the last line `done: true` with counts.

Every request is recorded (path, headers, JSON body) so tests can check what the client sent. The
reply text is fixed per server. It is a stand-in for the wire format only, not for a model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeLlmServer:
    """A threaded HTTP server speaking the three providers' streaming formats."""

    def __init__(self, reply: str = "Hello from the fake provider.") -> None:
        self.reply = reply
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeLlmServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def tokens(self) -> list[str]:
        words = self.reply.split(" ")
        return [w + " " for w in words[:-1]] + [words[-1]]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(
                    RecordedRequest(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                if self.path.endswith("/v1/messages"):
                    self._send("text/event-stream", fake._anthropic(body))
                elif self.path.endswith("/chat/completions"):
                    self._send("text/event-stream", fake._openai(body))
                elif self.path.endswith("/api/chat"):
                    self._send("application/x-ndjson", fake._ollama(body))
                else:
                    self.send_error(404)

            def _send(self, content_type: str, parts: Iterator[str]) -> None:
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.end_headers()
                for part in parts:
                    self.wfile.write(part.encode())
                    self.wfile.flush()

        return Handler

    # -- wire formats ----------------------------------------------------------------------------

    def _anthropic(self, body: dict[str, Any]) -> Iterator[str]:
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
            "usage": {"input_tokens": 21, "output_tokens": 1},
        }
        yield event("message_start", {"message": message})
        block = {"type": "text", "text": ""}
        yield event("content_block_start", {"index": 0, "content_block": block})
        for token in self.tokens():
            delta = {"type": "text_delta", "text": token}
            yield event("content_block_delta", {"index": 0, "delta": delta})
        yield event("content_block_stop", {"index": 0})
        yield event(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                # The API repeats the cumulative usage here; LangChain reads it from this event.
                "usage": {"input_tokens": 21, "output_tokens": len(self.tokens())},
            },
        )
        yield event("message_stop", {})

    def _openai(self, body: dict[str, Any]) -> Iterator[str]:
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
        for token in self.tokens():
            yield chunk([{"index": 0, "delta": {"content": token}, "finish_reason": None}])
        yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        usage = {"prompt_tokens": 21, "completion_tokens": len(self.tokens()), "total_tokens": 30}
        yield chunk([], usage=usage)
        yield "data: [DONE]\n\n"

    def _ollama(self, body: dict[str, Any]) -> Iterator[str]:
        model = body.get("model", "")
        stamp = "2026-01-01T00:00:00Z"
        for token in self.tokens():
            message = {"role": "assistant", "content": token}
            yield json.dumps(
                {"model": model, "created_at": stamp, "message": message, "done": False}
            )
            yield "\n"
        last = {
            "model": model,
            "created_at": stamp,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": 21,
            "prompt_eval_duration": 100,
            "eval_count": len(self.tokens()),
            "eval_duration": 100,
        }
        yield json.dumps(last) + "\n"
