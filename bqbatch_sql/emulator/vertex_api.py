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

import itertools
import json
import random
import re
import threading
from typing import Any, Callable

from bqbatch_sql.emulator.api_errors import ApiError, not_found
from bqbatch_sql.emulator.faults import Faults
from bqbatch_sql.emulator.storage import META, Catalog
from bqbatch_sql.emulator.vertex_job import BQ_URI, STOPPED_ERROR, TERMINAL, Job, now, run_job


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
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
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
        """Stop running jobs (they end FAILED, not CANCELLED: nobody cancelled them) and wait for their threads."""
        self.stopping.set()
        with self.lock:
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
        stamp = now()
        resource = {
            "name": name,
            "displayName": body.get("displayName") or f"batch-job-{job_id}",
            "model": model if model.startswith(("publishers/", "projects/")) else f"publishers/google/models/{model}",
            "inputConfig": {"instancesFormat": "bigquery", "bigquerySource": {"inputUri": source_uri}},
            "outputConfig": {"predictionsFormat": "bigquery", "bigqueryDestination": {"outputUri": dest_uri}},
            "state": "JOB_STATE_PENDING",
            "createTime": stamp,
            "updateTime": stamp,
            "labels": dict(body.get("labels") or {}),
        }
        if body.get("modelParameters") is not None:
            resource["modelParameters"] = body["modelParameters"]
        job = Job(resource, location, self.faults.job_fault(resource["displayName"]))
        with self.lock:
            self.jobs[name] = job
            self._save(job)
        job.thread = threading.Thread(target=run_job, args=(self, job), name=f"emulator-vertex-{job_id}", daemon=True)
        job.thread.start()
        return self._snapshot(job)

    def get(self, req, project, location, job):
        return self._snapshot(self._job(project, location, job))

    def list(self, req, project, location):
        prefix = f"projects/{project}/locations/{location}/batchPredictionJobs/"
        with self.lock:
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
        with self.lock:
            state = found.resource["state"]
            if state in TERMINAL:
                raise ApiError(
                    400,
                    f"BatchPredictionJob {found.resource['name']} is in state {state} and cannot be cancelled.",
                    status="FAILED_PRECONDITION",
                )
            if state != "JOB_STATE_CANCELLING":
                self.set_fields(found, state="JOB_STATE_CANCELLING")
            found.cancel.set()
        return {}

    def delete(self, req, project, location, job):
        found = self._job(project, location, job)
        with self.lock:
            state = found.resource["state"]
            if state not in TERMINAL:
                raise ApiError(
                    400,
                    f"BatchPredictionJob {found.resource['name']} is in state {state}; cancel it before deleting it.",
                    status="FAILED_PRECONDITION",
                )
            del self.jobs[found.resource["name"]]
            self.catalog.execute(f'DELETE FROM "{META}".vertex_jobs WHERE name = ?', [found.resource["name"]])
        stamp = now()
        return {
            "name": f"projects/{project}/locations/{location}/operations/{next(self._ids)}",
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata",
                "genericMetadata": {"createTime": stamp, "updateTime": stamp},
            },
            "done": True,
            "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
        }

    # -- the job's life ----------------------------------------------------------------------

    def finish(self, job: Job, state: str, error: dict[str, Any] | None = None) -> None:
        with self.lock:
            changes: dict[str, Any] = {"state": state, "endTime": now()}
            if error is not None:
                changes["error"] = error
            self.set_fields(job, **changes)

    # -- bookkeeping -----------------------------------------------------------------------------

    def set_fields(self, job: Job, *, persist: bool = True, **changes: Any) -> None:
        """Change the job (caller holds self.lock); persisted so --data keeps the job history."""
        if all(job.resource.get(k) == v for k, v in changes.items()):
            return
        job.resource.update(changes)
        job.resource["updateTime"] = now()
        if persist:
            self._save(job)

    def _save(self, job: Job) -> None:
        self.catalog.execute(
            f'INSERT OR REPLACE INTO "{META}".vertex_jobs VALUES (?, ?)', [job.resource["name"], json.dumps(job.resource)]
        )

    def _load(self) -> None:
        """Jobs of an earlier run (--data): finished ones as they were; unfinished ones failed, as their thread is gone."""
        for name, text in self.catalog.fetchall(f'SELECT name, resource FROM "{META}".vertex_jobs'):
            resource = json.loads(text)
            location = name.split("/")[3]
            job = Job(resource, location, None)
            if resource["state"] not in TERMINAL:
                resource.update({"state": "JOB_STATE_FAILED", "endTime": now(), "error": STOPPED_ERROR})
                self._save(job)
            self.jobs[name] = job

    def _job(self, project: str, location: str, job_id: str) -> Job:
        name = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
        with self.lock:
            found = self.jobs.get(name)
        if found is None:
            raise not_found(f"The BatchPredictionJob does not exist: {name}")
        return found

    def _snapshot(self, job: Job) -> dict[str, Any]:
        with self.lock:
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
        if not BQ_URI.match(uri):
            raise ApiError(400, f"Invalid BigQuery URI {uri!r}: expected bq://project.dataset.table (or bq://project.dataset for the output).")
    if not BQ_URI.match(source_uri).group(3):
        raise ApiError(400, f"Input URI {source_uri!r} names no table: expected bq://project.dataset.table.")
    return source_uri, dest_uri


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
