"""Predict stage, request-at-a-time backends: concurrency, client-side rate limits, retry, resume.

`online` (generateContent) and `openai_compatible` (chat completions) answer one
request per HTTP call. This module is everything they share; each brings only a
`Backend` that turns one GenerateContentRequest into one GenerateContentResponse.

A job runs in background threads, as a Vertex job runs elsewhere: a reader streams
pending requests out of the warehouse in bounded batches (`progress.ProgressStore`),
`concurrency` workers call the backend under the `RateLimiter`, retrying 429 and 5xx
with exponential backoff, and a writer appends answers to the progress table every
`write_batch_rows` answers or `flush_seconds`. The rows never sit in memory beyond a
few batches, and a crash loses at most the last flush interval; at interpreter exit
(Ctrl-C included) running jobs are stopped and their answers flushed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http
import random
import threading
import time
from collections import deque
from typing import Any, Protocol

import orjson

from bqbatch_sql.errors import PredictorError
from bqbatch_sql.predictors.responses import status_text

WINDOW_SECONDS = 60.0
SPACING_MARGIN = 0.01


@dataclasses.dataclass(frozen=True)
class Limits:
    """Client-side limits and the retry and flush policy of a streaming job."""

    requests_per_minute: float | None = 60.0
    tokens_per_minute: float | None = None
    concurrency: int = 8
    max_attempts: int = 6
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    write_batch_rows: int = 500
    flush_seconds: float = 1.0
    read_batch_rows: int = 1_000

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise PredictorError(f"{name} must be a number > 0 (or unset for no limit), got {value!r}.")
        for name in ("concurrency", "max_attempts", "write_batch_rows", "read_batch_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PredictorError(f"{name} must be a positive integer, got {value!r}.")


class RateLimiter:
    """Requests per minute and tokens per minute, enforced before each call.

    Requests are spaced evenly, 60/rpm seconds apart, instead of bursting: then no
    window of 60 seconds, sliding or aligned to the minute, ever holds more than
    `rpm` requests, and the server never sees a burst that its own (unknown) window
    would count against us. Tokens use a sliding 60-second window of reservations,
    each an estimate corrected to the real usage once the answer arrives.
    """

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None, clock=time.monotonic):
        # Spaced 1% wider than the limit allows: the server sees our calls with the network's
        # jitter, and a call that arrives a few ms early must still find room in its window.
        self.interval = WINDOW_SECONDS / requests_per_minute * (1 + SPACING_MARGIN) if requests_per_minute else 0.0
        self.tokens_per_minute = tokens_per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._tokens: deque[list[float]] = deque()  # [time, tokens] per call in the window
        self._token_sum = 0.0

    def acquire(self, tokens: float, cancel: threading.Event) -> list[float] | None:
        """Block until a call of `tokens` estimated tokens may start; None when cancelled."""
        reservation = self._reserve_tokens(tokens, cancel) if self.tokens_per_minute else None
        if reservation is None and self.tokens_per_minute:
            return None
        with self._lock:
            now = self.clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        if slot > now and cancel.wait(slot - now):
            return None
        return reservation if reservation is not None else [slot, 0.0]

    def settle(self, reservation: list[float] | None, tokens: float) -> None:
        """Replace a reservation's estimate by the tokens the call really used."""
        if reservation is None or not self.tokens_per_minute:
            return
        with self._lock:
            self._token_sum += tokens - reservation[1]
            reservation[1] = tokens

    def pause(self, seconds: float) -> None:
        """No call starts for `seconds` (the server said 429: back off, all workers at once)."""
        with self._lock:
            self._next_slot = max(self._next_slot, self.clock() + seconds)

    def _reserve_tokens(self, tokens: float, cancel: threading.Event) -> list[float] | None:
        limit = float(self.tokens_per_minute or 0)
        while True:
            with self._lock:
                now = self.clock()
                while self._tokens and self._tokens[0][0] <= now - WINDOW_SECONDS:
                    self._token_sum -= self._tokens.popleft()[1]
                # A call larger than the whole budget still goes, alone in its window.
                if self._token_sum + tokens <= limit or not self._tokens:
                    entry = [now, float(tokens)]
                    self._tokens.append(entry)
                    self._token_sum += tokens
                    return entry
                wait = self._tokens[0][0] + WINDOW_SECONDS - now
            if cancel.wait(max(wait, 0.001)):
                return None


# HTTP status -> google.rpc status name, as Google's APIs pair them in error bodies.
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}
_HTTP_CODES = {int(code) for code in http.HTTPStatus}


class CallError(Exception):
    """A request the backend could not answer: the row's status text, and whether to try again."""

    def __init__(self, code: int, message: str, status: str | None = None, *, retryable: bool | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.status = status or _STATUS_NAMES.get(code, "INTERNAL" if code >= 500 else "UNKNOWN")
        self.text = status_text(code if code in _HTTP_CODES else 500, message, self.status)
        self.retryable = retryable if retryable is not None else code in (408, 429) or code >= 500
        self.retry_after = retry_after


class Backend(Protocol):
    """One request in, one GenerateContentResponse (JSON text) and its total tokens out; CallError on failure."""

    def estimate_tokens(self, request: dict[str, Any]) -> float: ...

    def call(self, request: dict[str, Any]) -> tuple[str, float]: ...


def estimate_request_tokens(request: dict[str, Any], request_text: str) -> float:
    """About four characters a token for the prompt, plus the answer's ceiling when the request sets one."""
    config = request.get("generationConfig") or request.get("generation_config") or {}
    ceiling = config.get("maxOutputTokens") or config.get("max_output_tokens") if isinstance(config, dict) else None
    return len(request_text) / 4 + (float(ceiling) if isinstance(ceiling, (int, float)) else 256.0)


def backoff_seconds(attempt: int, limits: Limits, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never shorter than the server's Retry-After."""
    ceiling = min(limits.max_backoff_seconds, limits.initial_backoff_seconds * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def spec_fingerprint(*parts: Any) -> str:
    """Identifies the model and settings answers were made with; others are not reused on resume."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]
