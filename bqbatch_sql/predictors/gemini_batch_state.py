"""Predict stage, `gemini_batch`: what a job submitted, kept in the warehouse so another process can take it over.

A Gemini batch may run for a day. If the process that submitted it dies, the next
`bqbatch run` finds the job in the ledger and asks the predictor for it by name; the
name carries the destination relation, and `<destination>__batches` next to it
lists each submitted batch (input file, batch name, size) and each batch whose
results were loaded. From that the predictor re-attaches: it polls the same
batches and loads their results, so nothing is submitted (or paid for) twice.

The log is append-only (BigQuery's streaming inserts allow no update for a while),
and dropped with the progress table once the output table is built.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from urllib.parse import quote, unquote

import orjson
from sqlglot import exp

from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.base import JobState
from bqbatch_sql.predictors.progress import ProgressStore

PREFIX = "gemini_batch"
LOG_COLUMNS = (("job", "STRING"), ("shard", "INT64"), ("event", "STRING"), ("rows", "INT64"),
               ("file_name", "STRING"), ("batch_name", "STRING"), ("model", "STRING"), ("source", "STRING"),
               ("at", "TIMESTAMP"))


@dataclasses.dataclass
class Shard:
    """One input file and the batch over it."""

    index: int
    rows: int
    file_name: str | None = None  # the uploaded input file
    batch_name: str | None = None
    state: str = JobState.PENDING.value
    loaded: bool = False


def log_relation(destination: Relation) -> Relation:
    return destination.with_name(f"{destination.name}__batches")


def job_name(job_id: str, destination: Relation) -> str:
    """gemini_batch/<id>/<database>/<schema>/<table>, each part %-quoted."""
    parts = (destination.database or "", destination.schema, destination.name)
    return "/".join((PREFIX, job_id, *(quote(p, safe="") for p in parts)))


def parse_job_name(name: str) -> tuple[str, Relation] | None:
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != PREFIX:
        return None
    database, schema, table = (unquote(p) for p in parts[2:])
    return parts[1], Relation(database or None, schema, table)


def record_submitted(store: ProgressStore, job_id: str, shard: Shard, model: str, source: Relation) -> None:
    store.append(log_relation(store.destination), LOG_COLUMNS, [(
        job_id, shard.index, "submitted", shard.rows, shard.file_name, shard.batch_name, model,
        orjson.dumps([source.database, source.schema, source.name]).decode(), datetime.now(timezone.utc),
    )])


def record_loaded(store: ProgressStore, job_id: str, shard: Shard) -> None:
    store.append(log_relation(store.destination), LOG_COLUMNS, [(
        job_id, shard.index, "loaded", shard.rows, shard.file_name, shard.batch_name, None, None,
        datetime.now(timezone.utc),
    )])


def read_job(store: ProgressStore, job_id: str) -> tuple[str, Relation, list[Shard]] | None:
    """(model, source, shards) of a job the log knows; None when it knows none."""
    log = log_relation(store.destination)
    if not store.exists(log):
        return None
    query = exp.select("shard", "event", "rows", "file_name", "batch_name", "model", "source").from_(
        log.table()).where(exp.column("job").eq(exp.Literal.string(job_id))).order_by("shard")
    rows = store.fetch(query)
    submitted = [r for r in rows if r[1] == "submitted"]
    if not submitted:
        return None
    loaded = {r[0] for r in rows if r[1] == "loaded"}
    shards = [Shard(index=int(r[0]), rows=int(r[2]), file_name=r[3], batch_name=r[4], loaded=r[0] in loaded)
              for r in submitted]
    database, schema, table = orjson.loads(submitted[0][6])
    return submitted[0][5], Relation(database, schema, table), shards
