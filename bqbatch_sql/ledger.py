"""Job ledger: which batch job ran for which model and request set, kept in the warehouse.

Kept as a table of the target (`bqbatch_jobs` in the target schema), so every machine
that runs the project sees it: an Airflow retry on another worker re-attaches to the
live job instead of paying for a second one. Rows are appended, never updated in
place; the newest row of a job name is its current state.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from sqlglot import exp

from bqbatch_sql.compile import transpile
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.base import BatchJob, JobState

LEDGER_TABLE = "bqbatch_jobs"
# PAUSED ends a wait but not the job (it may resume): a rerun re-attaches rather than paying again.
LIVE_STATES = frozenset({JobState.QUEUED, JobState.PENDING, JobState.RUNNING, JobState.CANCELLING,
                         JobState.UPDATING, JobState.UNSPECIFIED, JobState.PAUSED})

_COLUMNS = (
    ("model_unique_id", "STRING"),
    ("fingerprint", "STRING"),
    ("data_checksum", "STRING"),
    ("backend", "STRING"),
    ("job_name", "STRING"),
    ("state", "STRING"),
    ("total", "INT64"),
    ("succeeded", "INT64"),
    ("failed", "INT64"),
    ("incomplete", "INT64"),
    ("source", "STRING"),
    ("destination", "STRING"),
    ("recorded_at", "TIMESTAMP"),
    # Added with incremental runs, retries and sharding; an older ledger gets them on first use.
    ("kind", "STRING"),  # full | incremental | retry: what the job's rows were
    ("shard", "INT64"),  # the shard index of a sharded submission; NULL for a single job or a group's summary
    ("shard_count", "INT64"),
    ("group_id", "STRING"),
    ("prompt_tokens", "INT64"),  # actual tokens and cost of the rows a finished run predicted
    ("output_tokens", "INT64"),
    ("cost_usd", "FLOAT64"),
)
_FIRST_COLUMNS = 13  # the columns of the first ledger layout


@dataclass
class LedgerEntry:
    model_unique_id: str
    fingerprint: str
    data_checksum: str | None
    backend: str
    job_name: str
    state: JobState
    total: int | None
    succeeded: int
    failed: int
    incomplete: int
    source: str
    destination: str
    recorded_at: dt.datetime
    kind: str | None = None
    shard: int | None = None
    shard_count: int | None = None
    group_id: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None


class Ledger:
    def __init__(self, adapter, schema: str, database: str | None = None):
        self.adapter = adapter
        self.relation = Relation(database, schema, LEDGER_TABLE)
        self._ready = False
        self._lock = threading.Lock()  # models running in parallel share one ledger

    def _sql(self, bigquery_sql: str) -> str:
        return transpile(bigquery_sql, self.adapter.dialect)

    def _ensure(self) -> None:
        with self._lock:
            if not self._ready:
                self._create()
                self._ready = True

    def _create(self) -> None:
        columns = [exp.ColumnDef(this=exp.to_identifier(name, quoted=True),
                                 kind=exp.DataType.build(kind, dialect="bigquery")) for name, kind in _COLUMNS]
        create = exp.Create(this=exp.Schema(this=self.relation.table(), expressions=columns), kind="TABLE", exists=True)
        self.adapter.execute(create.sql(dialect=self.adapter.dialect))
        # A ledger made by an earlier bqbatch lacks the newer columns: add them (NULL in old rows).
        present = {c.name.lower() for c in self.adapter.columns(self.relation)}
        for name, kind in _COLUMNS[_FIRST_COLUMNS:]:
            if name not in present:
                column = exp.ColumnDef(this=exp.to_identifier(name, quoted=True),
                                       kind=exp.DataType.build(kind, dialect="bigquery"))
                alter = exp.Alter(this=self.relation.table(), kind="TABLE", actions=[column])
                self.adapter.execute(alter.sql(dialect=self.adapter.dialect))

    def record(self, model_unique_id: str, fingerprint: str, data_checksum: str | None, backend: str,
               job: BatchJob, source: Relation, destination: Relation, *, kind: str | None = None,
               shard: int | None = None, shard_count: int | None = None, group_id: str | None = None,
               prompt_tokens: int | None = None, output_tokens: int | None = None,
               cost_usd: float | None = None) -> None:
        self._ensure()
        placeholders = ", ".join("?" for _ in _COLUMNS)
        sql = f"INSERT INTO {self.relation.sql('bigquery')} ({_column_list()}) VALUES ({placeholders})"
        self.adapter.execute(self._sql(sql), [
            model_unique_id, fingerprint, data_checksum, backend, job.name, job.state.value, job.total,
            job.succeeded, job.failed, job.incomplete, str(source), str(destination),
            dt.datetime.now(dt.timezone.utc), kind, shard, shard_count, group_id, prompt_tokens, output_tokens,
            None if cost_usd is None else float(cost_usd),
        ])

    def latest(self, model_unique_id: str, fingerprint: str | None = None) -> LedgerEntry | None:
        """The newest entry of the model (and fingerprint, when given)."""
        self._ensure()
        where = "`model_unique_id` = ?" + (" AND `fingerprint` = ?" if fingerprint else "")
        params = [model_unique_id] + ([fingerprint] if fingerprint else [])
        sql = f"SELECT {_column_list()} FROM {self.relation.sql('bigquery')} WHERE {where} ORDER BY `recorded_at` DESC LIMIT 1"
        rows = self.adapter.fetchall(self._sql(sql), params)
        if not rows:
            return None
        return _entry(rows[0])

    def group(self, model_unique_id: str, group_id: str) -> list[LedgerEntry]:
        """The newest entry of each shard of a sharded submission, by shard index."""
        self._ensure()
        sql = (f"SELECT {_column_list()} FROM {self.relation.sql('bigquery')} "
               f"WHERE `model_unique_id` = ? AND `group_id` = ? AND `shard` IS NOT NULL "
               f"QUALIFY ROW_NUMBER() OVER (PARTITION BY `shard` ORDER BY `recorded_at` DESC) = 1 ORDER BY `shard`")
        return [_entry(row) for row in self.adapter.fetchall(self._sql(sql), [model_unique_id, group_id])]

    def all_latest(self) -> list[LedgerEntry]:
        """The newest entry of every model, for `bqbatch status`."""
        self._ensure()
        # BigQuery accepts QUALIFY only next to WHERE, GROUP BY or HAVING.
        sql = (f"SELECT {_column_list()} FROM {self.relation.sql('bigquery')} WHERE TRUE "
               f"QUALIFY ROW_NUMBER() OVER (PARTITION BY `model_unique_id` ORDER BY `recorded_at` DESC) = 1 "
               f"ORDER BY `model_unique_id`")
        return [_entry(row) for row in self.adapter.fetchall(self._sql(sql))]


def _column_list() -> str:
    """The ledger's columns, quoted, in table order (BigQuery SQL; rendered per warehouse by `_sql`)."""
    return ", ".join(exp.to_identifier(n, quoted=True).sql("bigquery") for n, _ in _COLUMNS)


def _entry(row: tuple) -> LedgerEntry:
    """A ledger row, read in `_column_list` order, as an entry."""
    values = dict(zip([n for n, _ in _COLUMNS], row))
    values["state"] = JobState(values["state"])
    return LedgerEntry(**values)
