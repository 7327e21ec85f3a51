"""Emulated model serving shared by the Gemini API endpoints and the OpenAI-compatible fake.

- `ServerLimits`: what a real endpoint imposes on its callers: a latency per call
  and a request quota over a sliding 60-second window, over which it answers 429.
  It keeps the time of every accepted call, so a benchmark can show that no window
  ever held more than the quota.
- `validation_status`: the shared request rules (`validate.request_status_sql`) run
  on one request in an in-memory DuckDB, so the emulator refuses what Vertex refuses,
  in Vertex's words, without a second copy of the rules.
- `emulated_response`: the local predictor's answer shapes (`predictors.responses`)
  for one request: echoed text, or a value conforming to its response schema.
"""

from __future__ import annotations

import atexit
import hashlib
import queue
import threading
import time
from collections import deque
from typing import Any

import orjson

from bqbatch_sql.predictors.responses import HASH_MARKER, model_version, structured_text, text_response

WINDOW_SECONDS = 60.0
EMULATED_TAG = "[bqbatch emulator]"


class ServerLimits:
    """Latency and a requests-per-minute quota of one emulated endpoint (changeable while it runs)."""

    def __init__(self, latency_seconds: float = 0.0, requests_per_minute: float | None = None):
        self.latency_seconds = latency_seconds
        self.requests_per_minute = requests_per_minute
        self._lock = threading.Lock()
        self._window: deque[float] = deque()
        self.accepted: list[float] = []  # monotonic time of every accepted call
        self.rejected = 0

    def admit(self) -> bool:
        """Count one call; False (answer 429) when the last 60 s already hold the quota."""
        with self._lock:
            now = time.monotonic()
            while self._window and self._window[0] <= now - WINDOW_SECONDS:
                self._window.popleft()
            if self.requests_per_minute is not None and len(self._window) >= self.requests_per_minute:
                self.rejected += 1
                return False
            self._window.append(now)
            self.accepted.append(now)
        return True

    def serve(self) -> None:
        if self.latency_seconds:
            time.sleep(self.latency_seconds)

    def max_in_window(self, window: float = WINDOW_SECONDS) -> int:
        """The most accepted calls in any sliding window of `window` seconds."""
        with self._lock:
            times = list(self.accepted)
        best, low = 0, 0
        for high, t in enumerate(times):
            while times[low] <= t - window:
                low += 1
            best = max(best, high - low + 1)
        return best

    def reset(self) -> None:
        with self._lock:
            self._window.clear()
            self.accepted.clear()
            self.rejected = 0


class _Validator:
    """The shared rules over many requests in one statement.

    The rules are one large SQL expression that DuckDB takes ~0.4 s to plan, per
    statement whatever its row count; concurrent generateContent calls therefore
    queue their request here and one thread validates whatever has queued meanwhile.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, list]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._connection = None
        self._sql: str | None = None

    def statuses(self, texts: list[str]) -> list[str | None]:
        import duckdb
        from sqlglot import exp

        from bqbatch_sql.validate import request_status_sql

        with self._lock:
            if self._sql is None:
                request = exp.TryCast(this=exp.column("r"), to=exp.DataType.build("JSON", dialect="duckdb"))
                rows = exp.select(exp.Unnest(expressions=[exp.Placeholder(this="1")]).as_("r"),
                                  exp.Unnest(expressions=[exp.func("RANGE", exp.func("LEN", exp.Placeholder(this="1")))])
                                  .as_("i"))
                self._sql = exp.select("i", request_status_sql(request, "duckdb")).from_(rows.subquery("t")).sql("duckdb")
                self._connection = duckdb.connect()
            result = self._connection.execute(self._sql, [texts]).fetchall()
        out: list[str | None] = [None] * len(texts)
        for i, status in result:
            out[i] = status
        return out

    def close(self) -> None:
        # At exit: a DuckDB connection left to the interpreter's teardown makes nanobind report leaks.
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection, self._sql = None, None

    def status(self, text: str) -> str | None:
        slot: list = [threading.Event(), None]
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="bqbatch-emulator-validator", daemon=True)
                self._thread.start()
        self._queue.put((text, slot))
        slot[0].wait()
        if isinstance(slot[1], BaseException):
            raise slot[1]
        return slot[1]

    def _loop(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                statuses: list = self.statuses([text for text, _ in items])
            except Exception as e:  # every waiting call answers 500 with the cause
                statuses = [e] * len(items)
            for (_, slot), status in zip(items, statuses):
                slot[1] = status
                slot[0].set()


_VALIDATOR = _Validator()
atexit.register(_VALIDATOR.close)


_SHAPES: dict[bytes, str | None] = {}
_SHAPES_MAX = 10_000
_SHAPES_LOCK = threading.Lock()
_IN_FLIGHT: dict[bytes, list] = {}


def validation_status(request_text: str) -> str | None:
    """Vertex's status text for an invalid request (e.g. role 'tester'), None for a valid one.

    Requests of one model differ mostly in their prompt text, which the rules only
    check for emptiness: the verdict is cached per request with its texts blanked,
    so a stream of calls pays the rules' planning time once per shape of request.
    """
    try:
        shape = orjson.dumps(_blank_texts(orjson.loads(request_text)), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return _VALIDATOR.status(request_text)
    with _SHAPES_LOCK:
        if shape in _SHAPES:
            return _SHAPES[shape]
        waiting = _IN_FLIGHT.get(shape)
        owner = waiting is None
        if owner:
            waiting = _IN_FLIGHT[shape] = [threading.Event(), None]
    if not owner:  # the same shape is being validated by another call: share its verdict
        waiting[0].wait()
        return waiting[1]
    try:
        waiting[1] = status = _VALIDATOR.status(shape.decode())
        with _SHAPES_LOCK:
            if len(_SHAPES) >= _SHAPES_MAX:
                _SHAPES.clear()
            _SHAPES[shape] = status
        return status
    finally:
        with _SHAPES_LOCK:
            _IN_FLIGHT.pop(shape, None)
        waiting[0].set()


def _blank_texts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("x" if k == "text" and isinstance(v, str) and v.strip() else _blank_texts(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_blank_texts(v) for v in value]
    return value


def validation_statuses(request_texts: list[str]) -> list[str | None]:
    """validation_status of many requests, in one statement."""
    return _VALIDATOR.statuses(request_texts) if request_texts else []


def status_error(status: str) -> tuple[int, str, str]:
    """(code, message, status name) inside a Vertex status text."""
    body = orjson.loads(status[status.index("{"):])["error"]
    return int(body["code"]), str(body["message"]), str(body["status"])


def emulated_response(request: dict[str, Any], model: str) -> dict[str, Any]:
    """A deterministic GenerateContentResponse for a valid request."""
    digest = hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
    config = request.get("generationConfig") or request.get("generation_config") or {}
    get = lambda *keys: next((config[k] for k in keys if k in config), None)  # noqa: E731
    text = structured_text(get("responseMimeType", "response_mime_type"), get("responseSchema", "response_schema"),
                           get("responseJsonSchema", "response_json_schema"))
    if text is None:
        text = f"{EMULATED_TAG} answer {digest} to: {_prompt(request)[:80]}"
    return text_response(text.replace(HASH_MARKER, digest), request, model_version(model))


def _prompt(request: dict[str, Any]) -> str:
    contents = request.get("contents") or []
    last = contents[-1] if isinstance(contents, list) and contents else {}
    parts = last.get("parts") if isinstance(last, dict) else None
    parts = [parts] if isinstance(parts, dict) else parts or []
    return " ".join(str(p.get("text")) for p in parts if isinstance(p, dict) and "text" in p)
