"""Predict stage, `online`: the synchronous generateContent API, one call per request row.

For small jobs and quick iteration: no batch queue, answers as fast as the quota
allows. Calls go through google-genai to the Gemini Developer API (API key from an
environment variable) or to Vertex AI (application default credentials), under the
client-side limits of `streaming` and with its resume machinery (`streaming_job`).

The SDK's own retries are turned off: a retry must pass the rate limiter again, or
the limiter's count would not be what the server counts. The answer is kept as the
API sent it (the raw JSON body), so the output table holds exactly what Vertex
batch output would hold.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

import orjson

from bqbatch_sql.errors import PredictorError, ProfileError
from bqbatch_sql.predictors.base import BatchJobSpec
from bqbatch_sql.predictors.streaming import CallError, Limits, estimate_request_tokens, spec_fingerprint
from bqbatch_sql.predictors.streaming_job import StreamingPredictor

# Top-level keys of a GenerateContentRequest that move into the SDK's GenerateContentConfig.
_CONFIG_KEYS = {"systemInstruction": "system_instruction", "safetySettings": "safety_settings", "tools": "tools",
                "toolConfig": "tool_config", "labels": "labels", "cachedContent": "cached_content"}
_SNAKE_TO_CAMEL = {v: k for k, v in _CONFIG_KEYS.items()} | {"generation_config": "generationConfig"}


def read_api_key(env_name: str, predictor: str) -> str:
    """The API key from the environment; the error names the variable, never a value."""
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise ProfileError(
            f"Predictor '{predictor}': the environment variable {env_name} is not set. Export the API key in it "
            f"(profiles.yml names only the variable: predictor.api_key_env: {env_name})."
        )
    return key


def is_local_url(url: str | None) -> bool:
    from urllib.parse import urlsplit

    return bool(url) and (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def split_request(request: dict[str, Any], *, vertex: bool) -> tuple[Any, dict[str, Any]]:
    """(contents, GenerateContentConfig dict) of a GenerateContentRequest in either key spelling."""
    contents = None
    config: dict[str, Any] = {}
    for key, value in request.items():
        key = _SNAKE_TO_CAMEL.get(key, key)
        if key == "contents":
            contents = value
        elif key == "generationConfig":
            if not isinstance(value, dict):
                raise CallError(400, "Invalid value at 'generation_config': expected an object.")
            config.update(value)
        elif key in _CONFIG_KEYS:
            # Labels are Vertex billing metadata; the Gemini API has none and the answer does not depend on them.
            if key == "labels" and not vertex:
                continue
            config[_CONFIG_KEYS[key]] = value
        else:
            raise CallError(400, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
    if not contents:
        raise CallError(400, "Please ensure that contents is non-empty.")
    return contents, config


class GeminiBackend:
    """One generateContent call per request through google-genai."""

    def __init__(self, client: Any, model: str, *, vertex: bool):
        self.client = client
        self.model = model
        self.vertex = vertex

    def estimate_tokens(self, request: dict[str, Any]) -> float:
        return estimate_request_tokens(request, orjson.dumps(request.get("contents")).decode())

    def call(self, request: dict[str, Any]) -> tuple[str, float]:
        from google.genai import errors

        contents, config = split_request(request, vertex=self.vertex)
        config["should_return_http_response"] = True  # the body as the API sent it
        config["automatic_function_calling"] = {"disable": True}
        try:
            response = self.client.models.generate_content(model=self.model, contents=contents, config=config)
        except errors.APIError as e:
            raise CallError(int(e.code or 500), str(e.message or e), e.status,
                            retry_after=_retry_after(getattr(e, "response", None))) from e
        except _network_errors() as e:
            raise CallError(503, f"{type(e).__name__}: {e}", retryable=True) from e
        except ValueError as e:  # the SDK's validation of contents/config (pydantic errors are ValueErrors)
            raise CallError(400, f"Invalid request: {e}".splitlines()[0][:500]) from e
        body = response.sdk_http_response.body if response.sdk_http_response else None
        if not body:
            raise CallError(500, "generateContent answered with an empty body.")
        usage = orjson.loads(body).get("usageMetadata") or {}
        return body, float(usage.get("totalTokenCount") or 0)


def _network_errors() -> tuple[type[BaseException], ...]:
    """Timeouts and connection failures of whichever HTTP library google-genai runs on (httpx or httpx2)."""
    import importlib

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found += [module.TimeoutException, module.NetworkError]
    return tuple(found)


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


class OnlinePredictor(StreamingPredictor):
    """generateContent per row, concurrent under client-side limits (implements `Predictor`)."""

    name: ClassVar[str] = "online"

    def __init__(
        self,
        adapter: Any,
        *,
        api: Literal["gemini", "vertex"] = "gemini",
        api_key_env: str = "GEMINI_API_KEY",
        project: str | None = None,
        location: str | None = None,
        base_url: str | None = None,
        timeout_seconds: float = 120.0,
        requests_per_minute: float | None = 60.0,
        tokens_per_minute: float | None = None,
        concurrency: int = 8,
        max_attempts: int = 6,
        initial_backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        write_batch_rows: int = 500,
        flush_seconds: float = 1.0,
    ):
        if api not in ("gemini", "vertex"):
            raise PredictorError(f"Predictor 'online': api must be 'gemini' or 'vertex', got {api!r}.")
        super().__init__(adapter, Limits(requests_per_minute, tokens_per_minute, concurrency, max_attempts,
                                         initial_backoff_seconds, max_backoff_seconds, write_batch_rows, flush_seconds))
        self.api, self.api_key_env = api, api_key_env
        self.project, self.location, self.base_url = project, location, base_url
        self.timeout_seconds = timeout_seconds
        self._client = None

    @classmethod
    def from_context(cls, context: Any, **options: Any) -> "OnlinePredictor":
        cfg = context.target.config
        if options.get("api") == "vertex":  # Vertex defaults to the BigQuery target's project and location
            options.setdefault("project", getattr(cfg, "project", None))
            options.setdefault("location", getattr(cfg, "location", None))
        return cls(context.adapter, **options)

    def client(self) -> Any:
        if self._client is None:
            from google import genai
            from google.genai import types

            http = types.HttpOptions(base_url=self.base_url, timeout=int(self.timeout_seconds * 1000),
                                     retry_options=types.HttpRetryOptions(attempts=1))
            if self.api == "gemini":
                http.api_version = "v1beta"
                self._client = genai.Client(api_key=read_api_key(self.api_key_env, self.name), http_options=http)
            else:
                if not self.project or not self.location:
                    raise ProfileError("Predictor 'online' with api: vertex needs a project and a location.")
                credentials = None
                if is_local_url(self.base_url):  # the emulator: a static token, no Google sign-in
                    import google.oauth2.credentials

                    credentials = google.oauth2.credentials.Credentials(token="bqbatch-emulator")
                http.api_version = "v1"
                self._client = genai.Client(vertexai=True, project=self.project, location=self.location,
                                            credentials=credentials, http_options=http)
        return self._client

    def make_backend(self, spec: BatchJobSpec):
        backend = GeminiBackend(self.client(), spec.model_id, vertex=self.api == "vertex")
        return backend, spec_fingerprint(self.name, self.api, spec.model_id, self.base_url, self.project, self.location)
