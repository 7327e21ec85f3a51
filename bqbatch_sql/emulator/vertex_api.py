"""Vertex AI v1 batchPredictionJobs of the emulator: BigQuery table in, BigQuery table out.

create / get / list / cancel / delete under
/v1/projects/{p}/locations/{l}/batchPredictionJobs, in the camelCase proto JSON that
google-genai's `client.batches` sends and parses. A job runs in a thread through
Vertex's state machine: PENDING (waiting for capacity), RUNNING, then SUCCEEDED, or
FAILED with `error` for what Vertex refuses (a missing input table or `request`
column, a multi-region dataset, a dataset in another region than the job, an output
table that already exists), or CANCELLING -> CANCELLED. The rows themselves go
through the local predictor (the same validation and answers as the local target),
reading the input table from, and writing the output table into, the emulated
BigQuery, with Vertex's output schema.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import re
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Any, Callable

from sqlglot import exp

from bqbatch_sql.emulator.api_errors import RPC_CODES, ApiError, not_found
from bqbatch_sql.emulator.faults import Faults, JobFault
from bqbatch_sql.emulator.storage import META, MULTI_REGIONS, Catalog, TableRef, schema_name, sql_table

TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_EXPIRED"}
# Column types Vertex refuses for pass-through columns of the input table (BigQuery spelling).
_REFUSED_TYPES = {"RECORD": "STRUCT", "DATETIME": "DATETIME", "GEOGRAPHY": "GEOGRAPHY", "RANGE": "RANGE"}
_BQ_URI = re.compile(r"^bq://([^.]+)\.([A-Za-z0-9_]+)(?:\.([^.]+))?$")


class JobFailure(Exception):
    """Ends a job FAILED with a google.rpc.Status error."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.code = RPC_CODES[status]
        self.message = message


@dataclasses.dataclass
class _Job:
    resource: dict[str, Any]
    location: str
    fault: JobFault | None
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class VertexApi:
    def __init__(
        self,
        catalog: Catalog,
        faults: Faults,
        *,
        pending_seconds: float = 0.5,
        poll_seconds: float = 0.02,
        predictor_options: dict[str, Any] | None = None,
    ):
        self.catalog = catalog
        self.faults = faults
        self.pending_seconds = pending_seconds
        self.poll_seconds = poll_seconds
        self.predictor_options = dict(predictor_options or {})
        self.jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(random.Random().randrange(10**17, 9 * 10**17) * 10)
        self.catalog.execute(f'CREATE TABLE IF NOT EXISTS "{META}".vertex_jobs (name VARCHAR PRIMARY KEY, resource JSON)')
        self._load()

    def routes(self, prefix: str) -> list[tuple[str, str, Callable[..., Any]]]:
        base = prefix + "/projects/{project}/locations/{location}/batchPredictionJobs"
        return [
            ("POST", base, self.create),
            ("GET", base, self.list),
            ("GET", base + "/{job}", self.get),
            ("DELETE", base + "/{job}", self.delete),
            ("POST", base + "/{job}:cancel", self.cancel),
        ]

    def stop(self) -> None:
        """Cancel running jobs and wait for their threads (the emulator is shutting down)."""
        self._stopping.set()
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=10)

    # -- the REST methods ---------------------------------------------------------------

    def create(self, req, project, location):
        body = req.json()
        model = body.get("model")
        if not model:
            raise ApiError(400, "BatchPredictionJob.model is required, e.g. publishers/google/models/gemini-2.5-flash.")
        source_uri, dest_uri = _uris(body)
        job_id = str(next(self._ids))
        name = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
        now = _now()
        resource = {
            "name": name,
            "displayName": body.get("displayName") or f"batch-job-{job_id}",
            "model": model if model.startswith(("publishers/", "projects/")) else f"publishers/google/models/{model}",
            "inputConfig": {"instancesFormat": "bigquery", "bigquerySource": {"inputUri": source_uri}},
            "outputConfig": {"predictionsFormat": "bigquery", "bigqueryDestination": {"outputUri": dest_uri}},
            "state": "JOB_STATE_PENDING",
            "createTime": now,
            "updateTime": now,
            "labels": dict(body.get("labels") or {}),
        }
        if body.get("modelParameters") is not None:
            resource["modelParameters"] = body["modelParameters"]
        job = _Job(resource, location, self.faults.job_fault(resource["displayName"]))
        with self._lock:
            self.jobs[name] = job
            self._save(job)
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"emulator-vertex-{job_id}", daemon=True)
        job.thread.start()
        return self._snapshot(job)

    def get(self, req, project, location, job):
        return self._snapshot(self._job(project, location, job))

    def list(self, req, project, location):
        prefix = f"projects/{project}/locations/{location}/batchPredictionJobs/"
        with self._lock:
            jobs = [dict(j.resource) for name, j in self.jobs.items() if name.startswith(prefix)]
        matches = _filter(req.arg("filter") or "")
        jobs = [j for j in jobs if matches(j)]
        jobs.sort(key=lambda j: (j["createTime"], j["name"]), reverse=True)  # newest first
        size = int(req.arg("pageSize") or 100)
        start = int(req.arg("pageToken") or 0) if (req.arg("pageToken") or "0").isdigit() else _bad_token(req.arg("pageToken"))
        body: dict[str, Any] = {"batchPredictionJobs": jobs[start : start + size]}
        if start + size < len(jobs):
            body["nextPageToken"] = str(start + size)
        return body

    def cancel(self, req, project, location, job):
        found = self._job(project, location, job)
        with self._lock:
            state = found.resource["state"]
            if state in TERMINAL:
                raise ApiError(
                    400,
                    f"BatchPredictionJob {found.resource['name']} is in state {state} and cannot be cancelled.",
                    status="FAILED_PRECONDITION",
                )
            if state != "JOB_STATE_CANCELLING":
                self._set(found, state="JOB_STATE_CANCELLING")
            found.cancel.set()
        return {}

    def delete(self, req, project, location, job):
        found = self._job(project, location, job)
        with self._lock:
            state = found.resource["state"]
            if state not in TERMINAL:
                raise ApiError(
                    400,
                    f"BatchPredictionJob {found.resource['name']} is in state {state}; cancel it before deleting it.",
                    status="FAILED_PRECONDITION",
                )
            del self.jobs[found.resource["name"]]
            self.catalog.execute(f'DELETE FROM "{META}".vertex_jobs WHERE name = ?', [found.resource["name"]])
        now = _now()
        return {
            "name": f"projects/{project}/locations/{location}/operations/{next(self._ids)}",
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata",
                "genericMetadata": {"createTime": now, "updateTime": now},
            },
            "done": True,
            "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
        }

    # -- the job's life ----------------------------------------------------------------------

    def _run(self, job: _Job) -> None:
        try:
            if not self._wait_for_capacity(job):
                self._finish(job, "JOB_STATE_CANCELLED")
                return
            with self._lock:
                self._set(job, state="JOB_STATE_RUNNING", startTime=_now())
            if job.fault is not None and job.fault.outcome == "FAILED":
                raise JobFailure("INTERNAL", job.fault.message)
            source, destination = self._check(job)
            state = self._predict(job, source, destination)
            self._finish(job, state)
        except JobFailure as failure:
            self._finish(job, "JOB_STATE_FAILED", {"code": failure.code, "message": failure.message})
        except Exception as e:  # a bug of ours still ends the job, with its cause shown
            traceback.print_exc(file=sys.stderr)
            self._finish(job, "JOB_STATE_FAILED", {"code": RPC_CODES["INTERNAL"], "message": f"Emulator internal error: {type(e).__name__}: {e}"})

    def _wait_for_capacity(self, job: _Job) -> bool:
        """PENDING until pending_seconds pass (and a hold_pending fault is cleared); False if cancelled."""
        deadline = time.monotonic() + self.pending_seconds
        while time.monotonic() < deadline or self.faults.is_held(job.fault):
            if job.cancel.wait(self.poll_seconds):
                return False
        return not job.cancel.is_set()

    def _check(self, job: _Job) -> tuple[TableRef, TableRef]:
        """What Vertex verifies before predicting; a JobFailure says what is wrong and how to fix it."""
        config = job.resource
        source = _table_of(config["inputConfig"]["bigquerySource"]["inputUri"])
        dest_uri = config["outputConfig"]["bigqueryDestination"]["outputUri"]
        dataset = self.catalog.get_dataset(source.project, source.dataset)
        if dataset is None:
            raise JobFailure("NOT_FOUND", f"BigQuery dataset {source.project}.{source.dataset} of the input table was not found.")
        self._check_region(job, dataset.location, f"{source.project}.{source.dataset}")
        if self.catalog.table_kind(source) is None:
            raise JobFailure(
                "NOT_FOUND", f"BigQuery table {source.project}.{source.dataset}.{source.table} (the job's input) was not found."
            )
        fields = {f["name"].lower(): f for f in self.catalog.fields(source)}
        if "request" not in fields:
            raise JobFailure(
                "INVALID_ARGUMENT",
                f"The input table {source.project}.{source.dataset}.{source.table} has no column named 'request' "
                f"(columns: {', '.join(f['name'] for f in fields.values())}). Select the GenerateContentRequest JSON AS request.",
            )
        for name, field in fields.items():
            refused = _REFUSED_TYPES.get(field["type"]) or ("ARRAY" if field.get("mode") == "REPEATED" else None)
            if refused and name != "request":
                raise JobFailure(
                    "INVALID_ARGUMENT",
                    f"Column '{field['name']}' of the input table has type {refused}, which batch prediction does not accept "
                    "(ARRAY, STRUCT, RANGE, DATETIME and GEOGRAPHY columns are refused). Cast it, e.g. to STRING or TIMESTAMP.",
                )
        destination = _table_of(dest_uri, default_table=f"predictions_{datetime.now(timezone.utc):%Y_%m_%dT%H_%M_%S_%f}")
        dataset = self.catalog.get_dataset(destination.project, destination.dataset)
        if dataset is None:
            raise JobFailure("NOT_FOUND", f"BigQuery dataset {destination.project}.{destination.dataset} of the output table was not found.")
        self._check_region(job, dataset.location, f"{destination.project}.{destination.dataset}")
        if self.catalog.table_kind(destination) is not None:
            raise JobFailure(
                "ALREADY_EXISTS",
                f"The output table {destination.project}.{destination.dataset}.{destination.table} already exists. "
                "Batch prediction writes a new table: drop it or name another destination.",
            )
        return source, destination

    def _check_region(self, job: _Job, dataset_location: str, dataset: str) -> None:
        if dataset_location.upper() in MULTI_REGIONS:
            raise JobFailure(
                "INVALID_ARGUMENT",
                f"BigQuery dataset {dataset} is in the multi-region {dataset_location}, which batch prediction does not "
                f"support. Use a dataset in the job's region ({job.location}).",
            )
        if dataset_location.lower() != job.location.lower():
            raise JobFailure(
                "INVALID_ARGUMENT",
                f"BigQuery dataset {dataset} is in {dataset_location} but the job runs in {job.location}; "
                "the job and its tables must be in the same region.",
            )

    def _predict(self, job: _Job, source: TableRef, destination: TableRef) -> str:
        from bqbatch_sql.adapters.duckdb import DuckDBAdapter
        from bqbatch_sql.nodes import Relation
        from bqbatch_sql.predictors.base import BatchJobSpec, JobState
        from bqbatch_sql.predictors.local import LocalPredictor

        options = dict(self.predictor_options)
        partial = job.fault is not None and job.fault.outcome == "PARTIALLY_SUCCEEDED"
        if partial:
            options["failure_rate"] = job.fault.failed_fraction
        with self.catalog.lock:
            # The predictor's threads open their cursors from this connection of its own.
            connection = self.catalog.conn.cursor()
        try:
            predictor = LocalPredictor(DuckDBAdapter.from_connection(connection, schema_name(source.project, source.dataset)))
            spec = BatchJobSpec(
                model_id=job.resource["model"],
                source=Relation(None, schema_name(source.project, source.dataset), source.table),
                destination=Relation(None, schema_name(destination.project, destination.dataset), destination.table),
                display_name=job.resource["displayName"],
                labels=job.resource["labels"],
                options=options,
            )
            name = predictor.submit(spec).name
            while True:
                snapshot = predictor.get(name)
                with self._lock:
                    # Progress is kept in memory only: a write per poll would compete with the job's own.
                    self._set(job, persist=False, completionStats=_stats(snapshot))
                if snapshot.done:
                    break
                if job.cancel.is_set():
                    predictor.cancel(name)
                time.sleep(self.poll_seconds)
            predictor.wait(name, timeout=30)
        finally:
            connection.close()
        if snapshot.state == JobState.FAILED:
            raise JobFailure("INTERNAL", snapshot.error or "the batch prediction failed")
        if self.catalog.get_dataset(destination.project, destination.dataset) is not None and self._exists(destination):
            self._finalize_output(destination)
            with self._lock:
                self._set(job, outputInfo={
                    "bigqueryOutputDataset": f"bq://{destination.project}.{destination.dataset}",
                    "bigqueryOutputTable": destination.table,
                })
        if snapshot.state == JobState.CANCELLED:
            return "JOB_STATE_CANCELLED"
        return "JOB_STATE_PARTIALLY_SUCCEEDED" if partial and snapshot.failed else "JOB_STATE_SUCCEEDED"

    def _exists(self, ref: TableRef) -> bool:
        self.catalog.sync(ref.project, ref.dataset)
        return self.catalog.table_kind(ref) is not None

    def _finalize_output(self, destination: TableRef) -> None:
        """Vertex's output schema: processed_time is a TIMESTAMP (the predictor writes it zone-less, in UTC)."""
        column = exp.AlterColumn(this=exp.to_identifier("processed_time", quoted=True), dtype=exp.DataType.build("TIMESTAMPTZ", dialect="duckdb"))
        with self.catalog.lock:
            self.catalog.execute(exp.Alter(this=sql_table(destination), kind="TABLE", actions=[column]))
            self.catalog.record_table(destination, kind="TABLE")

    def _finish(self, job: _Job, state: str, error: dict[str, Any] | None = None) -> None:
        with self._lock:
            changes: dict[str, Any] = {"state": state, "endTime": _now()}
            if error is not None:
                changes["error"] = error
            self._set(job, **changes)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _set(self, job: _Job, *, persist: bool = True, **changes: Any) -> None:
        """Change the job (caller holds self._lock); persisted so --data keeps the job history."""
        if all(job.resource.get(k) == v for k, v in changes.items()):
            return
        job.resource.update(changes)
        job.resource["updateTime"] = _now()
        if persist:
            self._save(job)

    def _save(self, job: _Job) -> None:
        self.catalog.execute(
            f'INSERT OR REPLACE INTO "{META}".vertex_jobs VALUES (?, ?)', [job.resource["name"], json.dumps(job.resource)]
        )

    def _load(self) -> None:
        """Jobs of an earlier run (--data): finished ones as they were; unfinished ones failed, as their thread is gone."""
        for name, text in self.catalog.fetchall(f'SELECT name, resource FROM "{META}".vertex_jobs'):
            resource = json.loads(text)
            location = name.split("/")[3]
            job = _Job(resource, location, None)
            if resource["state"] not in TERMINAL:
                resource.update({"state": "JOB_STATE_FAILED", "endTime": _now(), "error": {
                    "code": RPC_CODES["ABORTED"],
                    "message": "The emulator stopped while this job ran; submit it again.",
                }})
                self._save(job)
            self.jobs[name] = job

    def _job(self, project: str, location: str, job_id: str) -> _Job:
        name = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
        with self._lock:
            found = self.jobs.get(name)
        if found is None:
            raise not_found(f"The BatchPredictionJob does not exist: {name}")
        return found

    def _snapshot(self, job: _Job) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(job.resource))


# --- helpers -------------------------------------------------------------------------------------


def _uris(body: dict[str, Any]) -> tuple[str, str]:
    source = (body.get("inputConfig") or {})
    destination = (body.get("outputConfig") or {})
    if source.get("gcsSource") or destination.get("gcsDestination"):
        raise ApiError(
            400,
            "The bqbatch emulator runs BigQuery batch jobs only (bigquerySource in, bigqueryDestination out); "
            "Cloud Storage (gcsSource / gcsDestination, JSONL files) is not emulated.",
        )
    source_uri = (source.get("bigquerySource") or {}).get("inputUri")
    dest_uri = (destination.get("bigqueryDestination") or {}).get("outputUri")
    if not source_uri:
        raise ApiError(400, "inputConfig.bigquerySource.inputUri is required, e.g. bq://project.dataset.table.")
    if not dest_uri:
        raise ApiError(400, "outputConfig.bigqueryDestination.outputUri is required, e.g. bq://project.dataset.table.")
    for uri in (source_uri, dest_uri):
        if not _BQ_URI.match(uri):
            raise ApiError(400, f"Invalid BigQuery URI {uri!r}: expected bq://project.dataset.table (or bq://project.dataset for the output).")
    if not _BQ_URI.match(source_uri).group(3):
        raise ApiError(400, f"Input URI {source_uri!r} names no table: expected bq://project.dataset.table.")
    return source_uri, dest_uri


def _table_of(uri: str, default_table: str | None = None) -> TableRef:
    project, dataset, table = _BQ_URI.match(uri).groups()
    return TableRef(project, dataset, table or default_table or "")


def _stats(snapshot: Any) -> dict[str, str]:
    total = snapshot.total or 0
    done = snapshot.succeeded + snapshot.failed
    incomplete = snapshot.incomplete if snapshot.done else max(0, total - done)
    return {"successfulCount": str(snapshot.succeeded), "failedCount": str(snapshot.failed), "incompleteCount": str(incomplete)}


def _filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """Vertex list filters: `labels.k=v`, `labels.k:*`, `state=JOB_STATE_X`, `display_name="x"`, joined by AND."""
    clauses = [c.strip() for c in re.split(r"\s+AND\s+", text.strip()) if c.strip()]
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for clause in clauses:
        m = re.fullmatch(r"(labels\.[\w-]+|state|display_name|displayName|model)\s*(=|!=|:)\s*\"?([^\"]*)\"?", clause)
        if not m:
            raise ApiError(400, f"Unsupported list filter {clause!r}: use labels.KEY=VALUE, state=JOB_STATE_..., display_name=\"...\".")
        field, op, value = m.groups()

        def get(job: dict[str, Any], field: str = field) -> Any:
            if field.startswith("labels."):
                return (job.get("labels") or {}).get(field[len("labels."):])
            return job.get({"display_name": "displayName"}.get(field, field))

        if op == ":":
            tests.append(lambda j, get=get, value=value: get(j) is not None and (value == "*" or str(get(j)) == value))
        elif op == "=":
            tests.append(lambda j, get=get, value=value: get(j) is not None and str(get(j)) == value)
        else:
            tests.append(lambda j, get=get, value=value: get(j) is None or str(get(j)) != value)
    return lambda job: all(t(job) for t in tests)


def _bad_token(token: str | None) -> int:
    raise ApiError(400, f"Invalid page token {token!r}.")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
