"""Predict stage, `openai_compatible`: a local or self-hosted model server speaking chat completions.

Ollama, vLLM and llama.cpp's server answer `POST /v1/chat/completions`. Each request
row is translated (`openai_translate`), sent through the `openai` client library and
its answer translated back into a GenerateContentResponse, so the output table and
the parsed view are the same as with Gemini. Concurrency, rate limits, retries and
resume are the `online` predictor's (`streaming`, `streaming_job`).

The server's model name rarely fits a Gemini model id (`llama3.2:3b`), so it comes
from the profile (`model:`) or the model's `predictor_options: {model: ...}`, and
falls back to the model's `model` config.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from bqbatch_sql.errors import PredictorError
from bqbatch_sql.predictors.base import BatchJobSpec
from bqbatch_sql.predictors.online import read_api_key
from bqbatch_sql.predictors.openai_translate import TranslationError, chat_request, generate_content_response
from bqbatch_sql.predictors.streaming import CallError, Limits, estimate_request_tokens, spec_fingerprint
from bqbatch_sql.predictors.streaming_job import StreamingPredictor


class ChatBackend:
    """One chat completion per request through the `openai` client."""

    def __init__(self, client: Any, model: str):
        self.client = client
        self.model = model

    def estimate_tokens(self, request: dict[str, Any]) -> float:
        return estimate_request_tokens(request, orjson.dumps(request.get("contents")).decode())

    def call(self, request: dict[str, Any]) -> tuple[str, float]:
        import openai

        try:
            kwargs = chat_request(request, self.model)
        except TranslationError as e:
            raise CallError(400, str(e)) from e
        try:
            completion = self.client.chat.completions.create(**kwargs)
        except openai.APIStatusError as e:
            raise CallError(e.status_code, _message(e), retry_after=_retry_after(e.response)) from e
        except openai.APITimeoutError as e:
            raise CallError(504, f"The model server did not answer in time: {e}", retryable=True) from e
        except openai.APIConnectionError as e:
            raise CallError(503, f"Cannot reach the model server: {e}", retryable=True) from e
        response = generate_content_response(completion.model_dump(mode="json", exclude_none=True))
        usage = response.get("usageMetadata") or {}
        return orjson.dumps(response).decode(), float(usage.get("totalTokenCount") or 0)


def _message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(error, "message", error))


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAICompatiblePredictor(StreamingPredictor):
    """Chat completions per row against an OpenAI-compatible server (implements `Predictor`)."""

    name: ClassVar[str] = "openai_compatible"

    def __init__(
        self,
        adapter: Any,
        *,
        base_url: str = "http://127.0.0.1:11434/v1",
        model: str | None = None,
        api_key_env: str | None = None,
        timeout_seconds: float = 300.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        concurrency: int = 4,
        max_attempts: int = 6,
        initial_backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        write_batch_rows: int = 500,
        flush_seconds: float = 1.0,
    ):
        if not base_url:
            raise PredictorError("Predictor 'openai_compatible' needs a base_url, e.g. http://127.0.0.1:11434/v1.")
        super().__init__(adapter, Limits(requests_per_minute, tokens_per_minute, concurrency, max_attempts,
                                         initial_backoff_seconds, max_backoff_seconds, write_batch_rows, flush_seconds))
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.timeout_seconds = timeout_seconds
        self._client = None

    def client(self) -> Any:
        if self._client is None:
            import openai

            # Local servers want no key; the client insists on one, so a placeholder goes when none is named.
            key = read_api_key(self.api_key_env, self.name) if self.api_key_env else "not-needed"
            self._client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0,
                                         timeout=self.timeout_seconds)
        return self._client

    def make_backend(self, spec: BatchJobSpec):
        model = spec.options.get("model") or self.model or spec.model_id
        if not isinstance(model, str) or not model:
            raise PredictorError(f"Predictor 'openai_compatible': predictor_options.model must be a string, got {model!r}.")
        return ChatBackend(self.client(), model), spec_fingerprint(self.name, self.base_url, model)
