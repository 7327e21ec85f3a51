"""Configuration models: bqbatch_project.yml, profiles.yml and a model's merged config.

Pydantic with extra="forbid": a typo in any key is an error with a did-you-mean,
never a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Any, Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bqbatch_sql.errors import did_you_mean


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# -- bqbatch_project.yml -------------------------------------------------------


class ProjectConfig(Strict):
    name: str
    version: str | None = None
    config_version: int | None = Field(default=None, alias="config-version")
    profile: str | None = None
    model_paths: list[str] = Field(default=["models"], alias="model-paths")
    macro_paths: list[str] = Field(default=["macros"], alias="macro-paths")
    seed_paths: list[str] = Field(default=["seeds"], alias="seed-paths")
    target_path: str = Field(default="target", alias="target-path")
    vars: dict[str, Any] = Field(default_factory=dict)
    # Folder-level config, dbt style: {project_name: {"+materialized": "table", "staging": {...}}}
    models: dict[str, Any] = Field(default_factory=dict)
    seeds: dict[str, Any] = Field(default_factory=dict)
    # Batch prices per model id, USD per million tokens, over the packaged table (prices.py).
    prices: dict[str, "ModelPrice"] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must be letters, digits and underscores, not starting with a digit")
        return value


class ModelPrice(Strict):
    """A batch price of bqbatch_project.yml `prices:`: USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    # Some models bill a prompt above a size at a higher rate (gemini-2.5-pro: 200,000 tokens).
    long_context_above: int | None = Field(default=None, gt=0)
    long_input: float | None = Field(default=None, ge=0)
    long_output: float | None = Field(default=None, ge=0)


ProjectConfig.model_rebuild()


# -- a model's config ------------------------------------------------------------

MODEL_ID_FORMS = (
    "a publisher model id such as 'gemini-2.5-flash'",
    "a publisher model path such as 'publishers/google/models/gemini-2.0-flash-001'",
    "a tuned model such as 'projects/PROJECT/locations/LOCATION/models/MODEL_ID'",
)
_MODEL_ID_PATTERNS = (
    re.compile(r"[a-z0-9][a-z0-9.\-_@]*"),
    re.compile(r"publishers/[a-z0-9\-_]+/models/[a-z0-9][a-z0-9.\-_@]*"),
    re.compile(r"projects/[^/\s]+/locations/[^/\s]+/(models|endpoints)/[^/\s]+"),
)


def check_model_id(model_id: str) -> str:
    if not any(p.fullmatch(model_id) for p in _MODEL_ID_PATTERNS):
        forms = "; ".join(MODEL_ID_FORMS)
        raise ValueError(f"'{model_id}' is not a model id bqbatch can submit. Use {forms}")
    return model_id


def _listify(value: Any) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class ModelConfig(Strict):
    enabled: bool = True
    materialized: Literal["view", "table", "batch_prediction"] = "view"
    schema_: str | None = Field(default=None, alias="schema")
    alias: str | None = None
    tags: list[str] = Field(default_factory=list)
    pre_hook: list[str] = Field(default_factory=list, alias="pre-hook")
    post_hook: list[str] = Field(default_factory=list, alias="post-hook")
    meta: dict[str, Any] = Field(default_factory=dict)
    # batch_prediction
    model: str = "gemini-2.5-flash"
    parsed_view: bool = True
    on_invalid: Literal["fail", "skip", "submit"] = "fail"
    key_columns: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    predictor_options: dict[str, Any] = Field(default_factory=dict)
    # Spending (incremental.py, retry.py, sharding.py, cost.py)
    incremental: bool = False  # submit only rows whose request is new, changed or failed; merge into the output
    unique_key: list[str] = Field(default_factory=list)  # incremental row identity; default: the request itself
    max_retries: int = Field(default=3, ge=0)  # `bqbatch retry`: attempts per model
    max_rows: int | None = Field(default=None, gt=0)  # refuse to submit more rows than this
    max_cost_usd: float | None = Field(default=None, gt=0)  # refuse to submit above this estimated cost
    max_requests_per_job: int | None = Field(default=None, gt=0)  # shard above this (Vertex: 200,000)
    max_concurrent_jobs: int = Field(default=4, gt=0)  # shards running at once

    _listify_fields = field_validator("tags", "pre_hook", "post_hook", "key_columns", "unique_key", mode="before")(
        classmethod(lambda cls, v: _listify(v))
    )

    @field_validator("model")
    @classmethod
    def _model_id(cls, value: str) -> str:
        return check_model_id(value)


# Keys accepted as config in any of their spellings (dbt writes pre-hook and pre_hook).
CONFIG_KEY_ALIASES = {"pre_hook": "pre-hook", "post_hook": "post-hook", "schema_": "schema"}


def normalize_config_keys(raw: dict[str, Any]) -> dict[str, Any]:
    return {CONFIG_KEY_ALIASES.get(k, k): v for k, v in raw.items()}


# -- profiles.yml ------------------------------------------------------------------


class LocalPredictorConfig(Strict):
    type: Literal["local"] = "local"
    response_function: str | None = None
    failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    latency_seconds: float = Field(default=0.0, ge=0.0)
    chunk_rows: int = Field(default=100_000, gt=0)


class VertexPredictorConfig(Strict):
    type: Literal["vertex"] = "vertex"
    project: str | None = None  # defaults to the BigQuery target's project
    location: str | None = None  # defaults to the dataset's location
    base_url: str | None = None  # an emulator, e.g. http://127.0.0.1:9050
    poll_initial_seconds: float = Field(default=5.0, gt=0)
    poll_max_seconds: float = Field(default=300.0, gt=0)
    poll_multiplier: float = Field(default=1.5, ge=1.0)
    gcs_destination: str | None = None  # gs://bucket/prefix: JSONL output instead of a BigQuery table
    # Vertex calls answered 429/5xx are retried: this many attempts, backoff doubling from initial to max.
    retry_attempts: int = Field(default=6, ge=1)
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)

    @field_validator("gcs_destination")
    @classmethod
    def _gcs_uri(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"gs://[a-z0-9][a-z0-9._\-]{1,220}(/.*)?", value):
            raise ValueError(f"'{value}' is not a Cloud Storage prefix; write gs://BUCKET/PATH")
        return value


def _env_name(value: str | None) -> str | None:
    # The key itself never goes in a profile: only the name of the variable holding it.
    if value is not None and (not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) or value.startswith("AIza")):
        raise ValueError("must be the NAME of an environment variable holding the API key (e.g. GEMINI_API_KEY), "
                         "not the key itself")
    return value


class _StreamingLimits(Strict):
    """Client-side limits, retry and flush policy of the request-at-a-time predictors."""

    requests_per_minute: float | None = Field(default=60.0, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    concurrency: int = Field(default=8, gt=0)
    max_attempts: int = Field(default=6, gt=0)
    initial_backoff_seconds: float = Field(default=1.0, gt=0)
    max_backoff_seconds: float = Field(default=60.0, gt=0)
    timeout_seconds: float = Field(default=120.0, gt=0)
    write_batch_rows: int = Field(default=500, gt=0)
    flush_seconds: float = Field(default=1.0, gt=0)

    _env = field_validator("api_key_env", check_fields=False)(classmethod(lambda cls, v: _env_name(v)))


class OnlinePredictorConfig(_StreamingLimits):
    type: Literal["online"] = "online"
    api: Literal["gemini", "vertex"] = "gemini"
    api_key_env: str = "GEMINI_API_KEY"  # Gemini API only; Vertex uses application default credentials
    project: str | None = None  # Vertex; defaults to the BigQuery target's project
    location: str | None = None  # Vertex; defaults to the BigQuery target's location
    base_url: str | None = None  # an emulator, e.g. http://127.0.0.1:9050


class OpenAICompatiblePredictorConfig(_StreamingLimits):
    type: Literal["openai_compatible"] = "openai_compatible"
    base_url: str = "http://127.0.0.1:11434/v1"  # Ollama's; vLLM http://HOST:8000/v1, llama.cpp http://HOST:8080/v1
    model: str | None = None  # the server's model name; else predictor_options.model, else the model's `model`
    api_key_env: str | None = None  # local servers need none
    requests_per_minute: float | None = Field(default=None, gt=0)
    concurrency: int = Field(default=4, gt=0)
    timeout_seconds: float = Field(default=300.0, gt=0)


class GeminiBatchPredictorConfig(Strict):
    type: Literal["gemini_batch"] = "gemini_batch"
    api_key_env: str = "GEMINI_API_KEY"
    base_url: str | None = None  # an emulator, e.g. http://127.0.0.1:9050
    poll_initial_seconds: float = Field(default=10.0, gt=0)
    poll_max_seconds: float = Field(default=300.0, gt=0)
    poll_multiplier: float = Field(default=1.5, ge=1.0)
    max_file_bytes: int = Field(default=2 * 1024**3, gt=0, le=2 * 1024**3)  # the Files API's limit per file
    max_file_rows: int | None = Field(default=None, gt=0)
    work_dir: str | None = None  # where JSONL files are staged; default a temporary directory
    keep_files: bool = False  # keep uploaded and result files in the Files API (they expire after 48 h anyway)
    timeout_seconds: float = Field(default=600.0, gt=0)

    _env = field_validator("api_key_env")(classmethod(lambda cls, v: _env_name(v)))


PredictorConfig = Annotated[
    Union[LocalPredictorConfig, VertexPredictorConfig, GeminiBatchPredictorConfig, OnlinePredictorConfig,
          OpenAICompatiblePredictorConfig],
    Field(discriminator="type"),
]


class DuckDBTarget(Strict):
    type: Literal["duckdb"] = "duckdb"
    path: str = "target/bqbatch.duckdb"
    schema_: str = Field(default="main", alias="schema")
    threads: int = Field(default=4, gt=0)
    predictor: PredictorConfig = Field(default_factory=LocalPredictorConfig)


class BigQueryTarget(Strict):
    type: Literal["bigquery"] = "bigquery"
    project: str
    dataset: str
    location: str | None = None
    method: Literal["oauth", "service-account", "emulator"] = "oauth"
    keyfile: str | None = None
    api_endpoint: str | None = None
    threads: int = Field(default=4, gt=0)
    job_labels: dict[str, str] = Field(default_factory=dict)
    maximum_bytes_billed: int | None = Field(default=None, gt=0)
    query_timeout_seconds: float = Field(default=600.0, gt=0)
    # BigQuery API calls answered 429/5xx are retried with backoff from this delay, up to the deadline.
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_deadline_seconds: float = Field(default=600.0, gt=0)
    predictor: PredictorConfig = Field(default_factory=VertexPredictorConfig)

    @property
    def schema_(self) -> str:
        return self.dataset


TargetConfig = Annotated[Union[DuckDBTarget, BigQueryTarget], Field(discriminator="type")]


class ProfileConfig(Strict):
    target: str
    outputs: dict[str, TargetConfig]


def _vocabulary() -> set[str]:
    words: set[str] = set()
    for model in (ProjectConfig, ModelConfig, ModelPrice, LocalPredictorConfig, VertexPredictorConfig, GeminiBatchPredictorConfig,
                  OnlinePredictorConfig, OpenAICompatiblePredictorConfig, DuckDBTarget, BigQueryTarget, ProfileConfig):
        for name, info in model.model_fields.items():
            words.add(info.alias or name)
    return words


def describe_validation_error(err: ValidationError, where: str) -> str:
    """One line per problem: the dotted key path, what is wrong and, for a typo, the closest key."""
    lines = []
    for problem in err.errors():
        loc = ".".join(str(p) for p in problem["loc"])
        if problem["type"] == "extra_forbidden":
            key = str(problem["loc"][-1])
            msg = f"unknown key '{key}'.{did_you_mean(key, _vocabulary())}"
        else:
            msg = problem["msg"]
        lines.append(f"  - {loc}: {msg}")
    return f"{where} is invalid:\n" + "\n".join(lines)
