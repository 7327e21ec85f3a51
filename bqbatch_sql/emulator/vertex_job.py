"""The life of one emulated Vertex AI batch prediction job, in its own thread.

PENDING until capacity comes (pending_seconds, or a hold_pending fault), RUNNING
through Vertex's checks (input table and its `request` column, the column types
Vertex accepts, single-region datasets in the job's region, an output table that
does not exist yet), then the local predictor: it reads the input table of the
emulated BigQuery and writes the output table (request columns + response JSON +
status STRING + processed_time TIMESTAMP), with the same validation and answers as
the local target. The job ends SUCCEEDED, PARTIALLY_SUCCEEDED (a fault), FAILED
with a google.rpc.Status error, or CANCELLED.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from bqbatch_sql.emulator.api_errors import RPC_CODES
from bqbatch_sql.emulator.faults import JobFault
from bqbatch_sql.emulator.storage import MULTI_REGIONS, TableRef, schema_name, sql_table

if TYPE_CHECKING:
    from bqbatch_sql.emulator.vertex_api import VertexApi

TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_EXPIRED"}
# Column types Vertex refuses for pass-through columns of the input table (BigQuery spelling).
_REFUSED_TYPES = {"RECORD": "STRUCT", "DATETIME": "DATETIME", "GEOGRAPHY": "GEOGRAPHY", "RANGE": "RANGE"}
# What a job still running when the emulator stops (or was running when it restarts) ends with.
STOPPED_ERROR = {"code": RPC_CODES["ABORTED"], "message": "The emulator stopped while this job ran; submit it again."}
BQ_URI = re.compile(r"^bq://([^.]+)\.([A-Za-z0-9_]+)(?:\.([^.]+))?$")


class JobFailure(Exception):
    """Ends a job FAILED with a google.rpc.Status error."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.code = RPC_CODES[status]
        self.message = message


@dataclasses.dataclass


class Job:
    resource: dict[str, Any]
    location: str
    fault: JobFault | None
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def run_job(api: "VertexApi", job: Job) -> None:
    try:
        state = "JOB_STATE_CANCELLED"
        if _wait_for_capacity(api, job):
            with api.lock:
                api.set_fields(job, state="JOB_STATE_RUNNING", startTime=now())
            if job.fault is not None and job.fault.outcome == "FAILED":
                raise JobFailure("INTERNAL", job.fault.message)
            source, destination = _check(api, job)
            state = _predict(api, job, source, destination)
        if state == "JOB_STATE_CANCELLED" and api.stopping.is_set():
            api.finish(job, "JOB_STATE_FAILED", STOPPED_ERROR)
        else:
            api.finish(job, state)
    except JobFailure as failure:
        api.finish(job, "JOB_STATE_FAILED", {"code": failure.code, "message": failure.message})
    except Exception as e:  # a bug of ours still ends the job, with its cause shown
        traceback.print_exc(file=sys.stderr)
        api.finish(job, "JOB_STATE_FAILED", {"code": RPC_CODES["INTERNAL"], "message": f"Emulator internal error: {type(e).__name__}: {e}"})


def _wait_for_capacity(api: "VertexApi", job: Job) -> bool:
    """PENDING until pending_seconds pass (and a hold_pending fault is cleared); False if cancelled."""
    deadline = time.monotonic() + api.pending_seconds
    while time.monotonic() < deadline or api.faults.is_held(job.fault):
        if job.cancel.wait(api.poll_seconds):
            return False
    return not job.cancel.is_set()


def _check(api: "VertexApi", job: Job) -> tuple[TableRef, TableRef]:
    """What Vertex verifies before predicting; a JobFailure says what is wrong and how to fix it."""
    config = job.resource
    source = table_of(config["inputConfig"]["bigquerySource"]["inputUri"])
    dest_uri = config["outputConfig"]["bigqueryDestination"]["outputUri"]
    dataset = api.catalog.get_dataset(source.project, source.dataset)
    if dataset is None:
        raise JobFailure("NOT_FOUND", f"BigQuery dataset {source.project}.{source.dataset} of the input table was not found.")
    _check_region(api, job, dataset.location, f"{source.project}.{source.dataset}")
    if api.catalog.table_kind(source) is None:
        raise JobFailure(
            "NOT_FOUND", f"BigQuery table {source.project}.{source.dataset}.{source.table} (the job's input) was not found."
        )
    fields = {f["name"].lower(): f for f in api.catalog.fields(source)}
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
    destination = table_of(dest_uri, default_table=f"predictions_{datetime.now(timezone.utc):%Y_%m_%dT%H_%M_%S_%f}")
    dataset = api.catalog.get_dataset(destination.project, destination.dataset)
    if dataset is None:
        raise JobFailure("NOT_FOUND", f"BigQuery dataset {destination.project}.{destination.dataset} of the output table was not found.")
    _check_region(api, job, dataset.location, f"{destination.project}.{destination.dataset}")
    if api.catalog.table_kind(destination) is not None:
        raise JobFailure(
            "ALREADY_EXISTS",
            f"The output table {destination.project}.{destination.dataset}.{destination.table} already exists. "
            "Batch prediction writes a new table: drop it or name another destination.",
        )
    return source, destination


def _check_region(api: "VertexApi", job: Job, dataset_location: str, dataset: str) -> None:
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


def _predict(api: "VertexApi", job: Job, source: TableRef, destination: TableRef) -> str:
    from bqbatch_sql.adapters.duckdb import DuckDBAdapter
    from bqbatch_sql.nodes import Relation
    from bqbatch_sql.predictors.base import BatchJobSpec, JobState
    from bqbatch_sql.predictors.local import LocalPredictor

    options = dict(api.predictor_options)
    partial = job.fault is not None and job.fault.outcome == "PARTIALLY_SUCCEEDED"
    if partial:
        options["failure_rate"] = job.fault.failed_fraction
    with api.catalog.lock:
        # The predictor's threads open their cursors from this connection of its own.
        connection = api.catalog.conn.cursor()
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
            with api.lock:
                # Progress is kept in memory only: a write per poll would compete with the job's own.
                api.set_fields(job, persist=False, completionStats=_stats(snapshot))
            if snapshot.done:
                break
            if job.cancel.is_set():
                predictor.cancel(name)
            time.sleep(api.poll_seconds)
        predictor.wait(name, timeout=30)
    finally:
        connection.close()
    if snapshot.state == JobState.FAILED:
        raise JobFailure("INTERNAL", snapshot.error or "the batch prediction failed")
    # Scratch tables of other jobs may sit in the same schema: look for this output only.
    if api.catalog.get_dataset(destination.project, destination.dataset) is not None and api.catalog.discover(destination):
        _finalize_output(api, destination)
        with api.lock:
            api.set_fields(job, outputInfo={
                "bigqueryOutputDataset": f"bq://{destination.project}.{destination.dataset}",
                "bigqueryOutputTable": destination.table,
            })
    if snapshot.state == JobState.CANCELLED:
        return "JOB_STATE_CANCELLED"
    return "JOB_STATE_PARTIALLY_SUCCEEDED" if partial and snapshot.failed else "JOB_STATE_SUCCEEDED"


def _finalize_output(api: "VertexApi", destination: TableRef) -> None:
    """Vertex's output schema: processed_time is a TIMESTAMP (the predictor writes it zone-less, in UTC)."""
    column = exp.AlterColumn(this=exp.to_identifier("processed_time", quoted=True), dtype=exp.DataType.build("TIMESTAMPTZ", dialect="duckdb"))
    with api.catalog.lock:
        api.catalog.execute(exp.Alter(this=sql_table(destination), kind="TABLE", actions=[column]))
        api.catalog.record_table(destination, kind="TABLE")  # created now, as far as BigQuery shows


def table_of(uri: str, default_table: str | None = None) -> TableRef:
    project, dataset, table = BQ_URI.match(uri).groups()
    return TableRef(project, dataset, table or default_table or "")


def _stats(snapshot: Any) -> dict[str, str]:
    total = snapshot.total or 0
    done = snapshot.succeeded + snapshot.failed
    incomplete = snapshot.incomplete if snapshot.done else max(0, total - done)
    return {"successfulCount": str(snapshot.succeeded), "failedCount": str(snapshot.failed), "incompleteCount": str(incomplete)}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
