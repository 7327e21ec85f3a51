"""Predict stage, production target: Vertex AI batch prediction over BigQuery tables.

`<model>__requests` goes in as `bq://project.dataset.table`, the output comes back as
a BigQuery table (or JSONL under a `gs://` prefix) written by Vertex itself; rows
never pass through this process. google-genai's `client.batches` does the HTTP
calls (imported when the first call is made, never at start-up).

Before a job is created, a pre-flight checks what Vertex would otherwise reject only
after the job queued: the job's region equals the datasets' (no multi-region), and
the output table does not exist yet. Calls answered 429 or 5xx are retried with
backoff by this module, not by the SDK: a create call that failed on the way back
may still have created a job, so before trying again the predictor looks for a live
job carrying the same fingerprint label and adopts it rather than paying twice.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from typing import Any, Callable, ClassVar

from bqbatch_sql.errors import JobNotFoundError, PredictorError, ProfileError
from bqbatch_sql.gcp import check_job_region, console_url, is_multi_region, permission_message
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState, TERMINAL_STATES

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
FINGERPRINT_LABEL = "bqbatch_fingerprint"
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_JOB_NAME = re.compile(r"projects/([^/]+)/locations/([^/]+)/batchPredictionJobs/([^/]+)")


class VertexPredictor:
    """Vertex AI batch prediction, BigQuery in and out (implements `Predictor`)."""

    name: ClassVar[str] = "vertex"
    # Jobs run in Google Cloud, not in this process: `--no-wait` may return and a later run re-attach.
    detached_jobs: ClassVar[bool] = True

    def __init__(
        self,
        adapter: Any,
        *,
        project: str | None = None,
        location: str | None = None,
        base_url: str | None = None,
        poll_initial_seconds: float = 5.0,
        poll_max_seconds: float = 300.0,
        poll_multiplier: float = 1.5,
        gcs_destination: str | None = None,
        retry_attempts: int = 6,
        retry_initial_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        timeout_seconds: float = 120.0,
    ):
        if not hasattr(adapter, "dataset_location"):
            raise ProfileError(
                "Predictor 'vertex' reads and writes BigQuery tables: use it on a `type: bigquery` target "
                "(on a DuckDB target use `predictor: {type: local}`)."
            )
        self.adapter = adapter
        self.project = project or adapter.project
        self.location = location
        self.base_url = base_url
        self.poll_initial_seconds, self.poll_max_seconds = poll_initial_seconds, poll_max_seconds
        self.poll_multiplier = poll_multiplier
        self.gcs_destination = gcs_destination
        self.retry_attempts = retry_attempts
        self.retry_initial_seconds, self.retry_max_seconds = retry_initial_seconds, retry_max_seconds
        self.timeout_seconds = timeout_seconds
        # One id per bqbatch invocation, carried as a label: which run created which job.
        self.run_id = uuid.uuid4().hex[:12]
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._job_location: str | None = None

    @classmethod
    def from_context(cls, context: Any, **options: Any) -> "VertexPredictor":
        return cls(context.adapter, **options)

    @property
    def writes_table(self) -> bool:
        """False when predictions go to Cloud Storage as JSONL instead of a BigQuery table."""
        return self.gcs_destination is None

    # -- clients ----------------------------------------------------------------------

    def job_location(self) -> str:
        """The region jobs run in: the predictor's `location`, else the target dataset's."""
        if self._job_location is None:
            location = self.location or self.adapter.dataset_location() or self.adapter.location
            if not location:
                raise ProfileError(
                    "The Vertex predictor has no region: set `location:` of the target (the dataset's region) or "
                    "of the predictor in profiles.yml, e.g. us-central1."
                )
            self._job_location = location
        return self._job_location

    def client(self, location: str | None = None) -> Any:
        location = location or self.job_location()
        with self._lock:
            if location not in self._clients:
                from google import genai
                from google.genai import types

                # retry_options=None: the SDK makes one attempt; _call owns retries (see module docstring).
                http = types.HttpOptions(base_url=self.base_url, api_version="v1",
                                         timeout=int(self.timeout_seconds * 1000), retry_options=None)
                self._clients[location] = genai.Client(
                    vertexai=True, project=self.project, location=location,
                    credentials=self.adapter.credentials.vertex, http_options=http)
            return self._clients[location]

    # -- the Predictor protocol ----------------------------------------------------------

    def submit(self, spec: BatchJobSpec) -> BatchJob:
        """Pre-flight, then create the job (or adopt one already created with the same fingerprint)."""
        location = self.preflight(spec)
        labels = self._labels(spec)
        fingerprint = labels.get(FINGERPRINT_LABEL)
        dest = self._destination_uri(spec)
        if fingerprint:
            live = self.find_live(fingerprint, dest)
            if live is not None:
                return live

        from google.genai import types

        config = types.CreateBatchJobConfig(
            dest=dest, display_name=spec.display_name,
            http_options=types.HttpOptions(extra_body={"labels": labels}),
        )
        src = f"bq://{_bq_path(spec.source)}"

        def adopt() -> BatchJob | None:
            return self.find_live(fingerprint, dest) if fingerprint else None

        job = self._call(f"create a batch job for {spec.source}",
                         lambda: self.client(location).batches.create(model=spec.model_id, src=src, config=config),
                         before_retry=adopt)
        return job if isinstance(job, BatchJob) else _to_batch_job(job)

    def get(self, job_name: str) -> BatchJob:
        client = self.client(_location_of(job_name))
        return _to_batch_job(self._call(f"read the batch job {job_name}", lambda: client.batches.get(name=job_name),
                                        job_name=job_name))

    def cancel(self, job_name: str) -> None:
        """Ask Vertex to stop the job; it moves to CANCELLING, then CANCELLED."""
        if self.get(job_name).state in TERMINAL_STATES:
            return
        client = self.client(_location_of(job_name))
        self._call(f"cancel the batch job {job_name}", lambda: client.batches.cancel(name=job_name), job_name=job_name)

    # -- pre-flight and the second guard ------------------------------------------------------

    def preflight(self, spec: BatchJobSpec) -> str:
        """What Vertex would reject only after queueing, checked before any job exists. Returns the region."""
        location = self.job_location()
        if is_multi_region(location):
            raise PredictorError(
                f"Vertex AI batch prediction runs in a region, not in the multi-region {location}. Set the "
                f"predictor's `location:` (and the dataset's) to one region, e.g. us-central1."
            )
        datasets = {(spec.source.database or self.project, spec.source.schema): "input"}
        if self.writes_table:
            datasets.setdefault((spec.destination.database or self.project, spec.destination.schema), "output")
        for (project, dataset), role in datasets.items():
            check_job_region(location, f"{project}.{dataset}", self.adapter.dataset_location(dataset, project), role)
        if self.writes_table and self.adapter.table_exists(spec.destination):
            raise PredictorError(
                f"The output table {spec.destination} already exists, and Vertex AI batch prediction writes only "
                f"into a new table. Drop it, or rerun with --full-refresh to replace it."
            )
        return location

    def find_live(self, fingerprint: str, dest: str | None = None) -> BatchJob | None:
        """A job not yet ended that carries this fingerprint label (and writes to `dest`, when given)."""
        from google.genai import types

        config = types.ListBatchJobsConfig(filter=f'labels.{FINGERPRINT_LABEL}="{fingerprint}"', page_size=50)
        client = self.client()
        jobs = self._call("list batch jobs", lambda: list(client.batches.list(config=config)))
        for job in jobs:
            if job.state is None or JobState(job.state.value) in TERMINAL_STATES:
                continue
            if dest is not None and _job_dest(job) not in (None, dest):
                continue
            return _to_batch_job(job)
        return None

    # -- retries and errors -----------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], Any], *, job_name: str | None = None,
              before_retry: Callable[[], Any] | None = None) -> Any:
        delay = self.retry_initial_seconds
        for attempt in range(1, self.retry_attempts + 1):
            try:
                return call()
            except Exception as e:  # classified below; anything unknown is re-raised as it is
                code = _status_code(e)
                if code is None and not _is_transport_error(e):
                    raise
                if code in RETRY_STATUS or code is None:
                    if attempt < self.retry_attempts:
                        # Full jitter: parallel models that hit a quota together do not retry together.
                        time.sleep(delay * random.uniform(0.5, 1.0))
                        delay = min(delay * 2, self.retry_max_seconds)
                        if before_retry is not None and (found := before_retry()) is not None:
                            return found
                        continue
                    raise PredictorError(
                        f"Vertex AI could not {what}: still answering {_describe(e)} after {attempt} attempts "
                        f"(retry_attempts in the predictor config). Try again later; a rerun re-attaches to any job "
                        f"that was created."
                    ) from None
                raise self._error(what, e, code, job_name) from None
        raise AssertionError("unreachable")  # the loop returns or raises

    def _error(self, what: str, error: Exception, code: int, job_name: str | None) -> Exception:
        if code == 404 and job_name:
            return JobNotFoundError(f"Vertex AI has no batch job {job_name} (deleted, or older than its retention).")
        if code in (401, 403):
            principal = self.adapter.credentials.principal
            return PredictorError(
                permission_message("Vertex AI", _describe(error), self.project, principal)
                + f"\nThe account that submits jobs also needs roles/aiplatform.user on project {self.project}."
            )
        return PredictorError(f"Vertex AI could not {what}: {_describe(error)}")

    # -- helpers ---------------------------------------------------------------------------

    def _labels(self, spec: BatchJobSpec) -> dict[str, str]:
        labels = {**spec.labels, "bqbatch_run_id": self.run_id}
        for key, value in labels.items():
            if not _LABEL.fullmatch(key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                raise PredictorError(
                    f"Label {key}={value!r} of {spec.display_name} is not a valid Vertex AI label: keys start with a "
                    f"lowercase letter, keys and values use lowercase letters, digits, '_' and '-', at most 63 "
                    f"characters. Fix config(labels=...) of the model."
                )
        return labels

    def _destination_uri(self, spec: BatchJobSpec) -> str:
        if self.gcs_destination:
            return f"{self.gcs_destination.rstrip('/')}/{spec.destination.name}"
        return f"bq://{_bq_path(spec.destination)}"

    def console_url(self, job_name: str) -> str | None:
        return console_url(job_name)

    def debug_checks(self) -> list[str]:
        """The region rule and one call to the Vertex API; raises with the fix when either fails."""
        location = self.job_location()
        endpoint = self.base_url or f"https://{location}-aiplatform.googleapis.com"
        lines = [f"Vertex AI: project {self.project}, region {location}, endpoint {endpoint}"]
        dataset_location = self.adapter.dataset_location()
        if dataset_location is not None:
            check_job_region(location, f"{self.adapter.project}.{self.adapter.schema}", dataset_location, "target")
            lines.append(f"  region: OK (dataset and jobs in {location})")
        from google.genai import types

        client = self.client(location)
        self._call("list batch jobs", lambda: client.batches.list(config=types.ListBatchJobsConfig(page_size=1)))
        lines.append("  Vertex API: OK (batchPredictionJobs answers)")
        return lines


def _bq_path(relation: Relation) -> str:
    return f"{relation.database}.{relation.schema}.{relation.name}"


def _location_of(job_name: str) -> str:
    match = _JOB_NAME.fullmatch(job_name)
    if not match:
        raise JobNotFoundError(f"'{job_name}' is not a Vertex AI batch job name "
                               f"(projects/PROJECT/locations/REGION/batchPredictionJobs/ID).")
    return match.group(2)


def _job_dest(job: Any) -> str | None:
    dest = getattr(job, "dest", None)
    if dest is None:
        return None
    return dest.bigquery_uri or dest.gcs_uri


def _to_batch_job(job: Any) -> BatchJob:
    state = JobState(job.state.value) if job.state is not None else JobState.UNSPECIFIED
    stats = job.completion_stats
    ok = (stats.successful_count or 0) if stats else 0
    failed = (stats.failed_count or 0) if stats else 0
    incomplete = (stats.incomplete_count or 0) if stats else 0
    total = ok + failed + incomplete
    error = None
    if job.error is not None and (job.error.message or job.error.code):
        error = f"{job.error.message or ''} (code {job.error.code})" if job.error.code else job.error.message
    return BatchJob(
        name=job.name, state=state, total=total or None, succeeded=ok, failed=failed, incomplete=incomplete,
        create_time=job.create_time, start_time=job.start_time, end_time=job.end_time, error=error,
    )


def _status_code(error: Exception) -> int | None:
    from google.genai import errors

    return error.code if isinstance(error, errors.APIError) else None


def _is_transport_error(error: Exception) -> bool:
    """A timeout or a dropped connection: google-genai runs on httpx, or on its fork httpx2."""
    import importlib

    classes: list[type] = [ConnectionError, TimeoutError]
    for name in ("httpx", "httpx2"):
        try:
            classes.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue  # that transport is not installed
    return isinstance(error, tuple(classes))


def _describe(error: Exception) -> str:
    from google.genai import errors

    if isinstance(error, errors.APIError):
        return f"{error.code} {error.status or ''}: {error.message or error.details}".replace(" :", ":")
    return f"{type(error).__name__}: {error}"


__all__ = ["VertexPredictor"]
