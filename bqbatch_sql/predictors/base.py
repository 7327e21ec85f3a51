"""The predictor seam: a batch job turns a request relation into an output relation."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from bqbatch_sql.nodes import Relation


class JobState(str, enum.Enum):
    """Vertex AI's job states, spelled as the API spells them."""

    QUEUED = "JOB_STATE_QUEUED"
    PENDING = "JOB_STATE_PENDING"
    RUNNING = "JOB_STATE_RUNNING"
    SUCCEEDED = "JOB_STATE_SUCCEEDED"
    FAILED = "JOB_STATE_FAILED"
    CANCELLING = "JOB_STATE_CANCELLING"
    CANCELLED = "JOB_STATE_CANCELLED"
    PAUSED = "JOB_STATE_PAUSED"
    EXPIRED = "JOB_STATE_EXPIRED"
    PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"
    UPDATING = "JOB_STATE_UPDATING"
    UNSPECIFIED = "JOB_STATE_UNSPECIFIED"

    @property
    def short(self) -> str:
        return self.value.removeprefix("JOB_STATE_")


# Our own notion of "stop waiting": the SDK's job.done is false for PAUSED and
# PARTIALLY_SUCCEEDED, which would make a naive poll loop wait forever.
TERMINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.EXPIRED,
        JobState.PARTIALLY_SUCCEEDED,
        JobState.PAUSED,
    }
)


@dataclass(frozen=True)
class BatchJobSpec:
    """What to predict: the request table in, the output table out, with which model."""

    model_id: str  # the model as the user configured it (publisher id, publisher path, tuned model)
    source: Relation  # <model>__requests
    destination: Relation  # <model>
    display_name: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # predictor-specific config of the model
    # bqbatch has just checked every row with the shared request rules: a predictor
    # that would check them again (the local one) may skip that work.
    prevalidated: bool = False
    # The shape the model's SQL gives its requests (request_template.RequestTemplate),
    # on DuckDB: a hint for a predictor that checks the rows itself.
    request_template: Any = None


@dataclass
class BatchJob:
    name: str
    state: JobState
    total: int | None = None
    succeeded: int = 0
    failed: int = 0
    incomplete: int = 0
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


class Predictor(Protocol):
    name: ClassVar[str]

    def submit(self, spec: BatchJobSpec) -> BatchJob: ...

    def get(self, job_name: str) -> BatchJob: ...

    def cancel(self, job_name: str) -> None: ...
