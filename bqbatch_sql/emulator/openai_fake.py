"""A small OpenAI-compatible model server, the stand-in for Ollama, vLLM or llama.cpp in tests.

    with OpenAIFake(latency_seconds=0.1, requests_per_minute=600) as fake:
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="x")

Serves `POST /v1/chat/completions` and `GET /v1/models`. The answer echoes the last
user message, or, when the request asks for `response_format` json_schema, a value
that conforms to the schema (the local predictor's generator). It keeps every
request body (`requests`), so tests can check the translation; `fail_next(status,
times)` makes the next calls fail as an overloaded server does; `limits` adds
latency and a 429 quota.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bqbatch_sql.emulator.model_serving import ServerLimits
from bqbatch_sql.predictors.responses import estimate_tokens, schema_value

FAKE_MODEL = "fake-llm"


class OpenAIFake:
    def __init__(self, *, latency_seconds: float = 0.0, requests_per_minute: float | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.limits = ServerLimits(latency_seconds, requests_per_minute)
        self.requests: list[dict[str, Any]] = []
        self._failures: deque[int] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="bqbatch-openai-fake", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "OpenAIFake":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, status: int, times: int = 1) -> None:
        """The next `times` chat calls answer `status` (429, 500, 503 ...)."""
        with self._lock:
            self._failures.extend([status] * times)

    # -- one call ----------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": FAKE_MODEL, "object": "model", "owned_by": "bqbatch"}]}, {}
        if method != "POST" or path != "/v1/chat/completions":
            return 404, _error(f"No route for {method} {path}", "not_found"), {}
        try:
            request = json.loads(body)
        except ValueError:
            return 400, _error("We could not parse the JSON body of your request.", "invalid_request_error"), {}
        with self._lock:
            self.requests.append(request)
            status = self._failures.popleft() if self._failures else None
        if status is not None:
            return status, _error(f"Injected failure {status} (bqbatch OpenAI fake).", "server_error"), {"retry-after": "0"}
        if not self.limits.admit():
            return 429, _error("Rate limit reached for requests.", "rate_limit_exceeded"), {"retry-after": "1"}
        self.limits.serve()
        if not isinstance(request.get("messages"), list) or not request["messages"]:
            return 400, _error("'messages' must be a non-empty array.", "invalid_request_error"), {}
        return 200, completion(request), {}


def completion(request: dict[str, Any]) -> dict[str, Any]:
    """A chat completion for the request: echo, or a schema-conforming JSON value."""
    messages = request["messages"]
    last = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    content = last.get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    prompt = str(content or "")
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        answer = json.dumps(schema_value(fmt["json_schema"]["schema"]))
    elif fmt.get("type") == "json_object":
        answer = json.dumps({"answer": prompt[:80]})
    else:
        answer = f"[openai fake] {prompt[:80]}"
    max_tokens = request.get("max_tokens") or request.get("max_completion_tokens")
    finish = "stop"
    if isinstance(max_tokens, int) and estimate_tokens(answer) > max_tokens:
        answer, finish = answer[: max_tokens * 4], "length"
    prompt_tokens = sum(estimate_tokens(str(m.get("content"))) for m in messages)
    output_tokens = estimate_tokens(answer)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
        "model": request.get("model") or FAKE_MODEL,
        "choices": [{"index": i, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}
                    for i in range(int(request.get("n") or 1))],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                  "total_tokens": prompt_tokens + output_tokens},
    }


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": kind}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, headers = self.server.fake.handle(self.command, self.path.split("?")[0], body)  # type: ignore[attr-defined]
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and benchmarks read `requests` and `limits`, not a log
