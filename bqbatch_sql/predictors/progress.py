"""Predict stage, request-at-a-time backends: where a job's progress lives, in the warehouse.

The `online`, `openai_compatible` and `gemini_batch` predictors do not hand the
warehouse a table to a service that writes the output; they answer requests
themselves. Rows still stay in the warehouse: requests are streamed out in bounded
batches, answers are appended to a progress table next to the destination
(`<destination>__progress`) as they arrive, and the destination is built from the
two in one SQL statement at the end. A crash or Ctrl-C therefore loses at most the
answers not yet flushed, and the next run sends only the requests without a final
answer in the progress table.

A request row is identified without any key column of the user's: its key is a
hash of the whole row plus its occurrence number among identical rows, so a
request table materialized again by the rerun maps onto the same keys.

`ProgressStore.open(adapter, ...)` picks the DuckDB or the BigQuery implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlglot import exp

from bqbatch_sql.errors import PredictorError
from bqbatch_sql.nodes import Relation

KEY = "__bqb_key"
OUTPUT_COLUMNS = ("response", "status", "processed_time")
# The progress table: one row per answer received (a retried request may have several).
PROGRESS_COLUMNS = (("key", "STRING"), ("spec", "STRING"), ("response", "STRING"), ("status", "STRING"),
                    ("retryable", "BOOL"), ("processed_time", "TIMESTAMP"))


@dataclasses.dataclass(frozen=True)
class PendingRow:
    """A request still to answer: its key, its JSON text, and its validation status (None when valid)."""

    key: str
    request: str
    invalid: str | None


@dataclasses.dataclass(frozen=True)
class RowResult:
    """One answer: the GenerateContentResponse JSON text, or a Vertex-style status text.

    `retryable` marks a failure that a later run should try again (429, 5xx, network).
    """

    key: str
    response: str | None
    status: str
    retryable: bool = False
    processed_time: datetime = dataclasses.field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def ok(self) -> bool:
        return self.response is not None and not self.status


def progress_relation(destination: Relation) -> Relation:
    return destination.with_name(f"{destination.name}__progress")


class ProgressStore(ABC):
    """The job's rows in the warehouse: what is pending, what was answered, and the final table."""

    dialect: ClassVar[str]

    def __init__(self, source: Relation | None, destination: Relation, spec: str):
        # source None: a store that only reads and writes tables next to the destination
        if source == destination:
            raise PredictorError(f"Batch job input and output are the same table {source}; name another destination.")
        self.source = source
        self.destination = destination
        self.progress = progress_relation(destination)
        self.spec = spec  # answers recorded under another model or settings are not reused
        self.columns: list[str] = []
        self.request_type = "JSON"

    @staticmethod
    def open(adapter: Any, source: Relation | None, destination: Relation, spec: str) -> "ProgressStore":
        if adapter.dialect == "duckdb":
            from bqbatch_sql.predictors.progress_io import DuckDBProgress

            return DuckDBProgress(adapter, source, destination, spec)
        if adapter.dialect == "bigquery":
            from bqbatch_sql.predictors.progress_io import BigQueryProgress

            client = getattr(adapter, "client", None)
            if client is None:
                raise PredictorError("The BigQuery adapter exposes no `client`; the streaming predictors need it.")
            return BigQueryProgress(client, source, destination, spec)
        raise PredictorError(f"The streaming predictors do not support the {adapter.dialect} warehouse.")

    # -- what a subclass provides ------------------------------------------------------

    @abstractmethod
    def _columns(self, relation: Relation) -> list[tuple[str, str]] | None:
        """(name, BigQuery type name) of the relation's columns; None when it does not exist."""
        ...

    @abstractmethod
    def _run(self, statement: exp.Expression) -> None:
        ...

    @abstractmethod
    def _fetch(self, query: exp.Expression) -> list[tuple]:
        ...

    @abstractmethod
    def _stream(self, query: exp.Expression, batch_rows: int) -> Iterator[list[tuple]]:
        ...

    @abstractmethod
    def append(self, relation: Relation, columns: tuple[tuple[str, str], ...], rows: list[tuple]) -> None:
        """Append rows (tuples in `columns` order; BigQuery type names) in one statement or call."""
        ...

    def write(self, results: list[RowResult]) -> None:
        """Append answers to the progress table."""
        if results:
            self.append(self.progress, PROGRESS_COLUMNS, [
                (r.key, self.spec, r.response, r.status, r.retryable, r.processed_time) for r in results])

    def ensure_table(self, relation: Relation, columns: tuple[tuple[str, str], ...]) -> None:
        if self._columns(relation) is None:
            schema = exp.Schema(this=relation.table(), expressions=[
                exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=exp.DataType.build(kind, dialect="bigquery"))
                for name, kind in columns
            ])
            self._run(exp.Create(this=schema, kind="TABLE", exists=True))

    def exists(self, relation: Relation) -> bool:
        return self._columns(relation) is not None

    def fetch(self, query: exp.Expression) -> list[tuple]:
        return self._fetch(query)

    def drop(self, relation: Relation) -> None:
        self._drop(relation)

    @abstractmethod
    def _row_hash(self, row: exp.Expression) -> exp.Expression:
        ...

    @abstractmethod
    def _request_text(self, request: exp.Expression) -> exp.Expression:
        ...

    @abstractmethod
    def _parse_json(self, text: exp.Expression) -> exp.Expression:
        ...

    # -- the job's steps -----------------------------------------------------------------

    def prepare(self) -> tuple[int, int, int]:
        """Check the source, create the progress table if new; (total, answered ok, failed for good) so far."""
        columns = self._columns(self.source)
        if columns is None:
            raise PredictorError(f"Batch job input {self.source} does not exist; materialize the request table first.")
        by_lower = {name.lower(): (name, kind) for name, kind in columns}
        if "request" not in by_lower:
            raise PredictorError(
                f"Batch job input {self.source} has no column named 'request' (columns: "
                f"{', '.join(n for n, _ in columns)}). The model's SQL must select the request JSON AS request."
            )
        reserved = [by_lower[c][0] for c in (*OUTPUT_COLUMNS, KEY.lower()) if c in by_lower]
        if reserved:
            raise PredictorError(
                f"Batch job input {self.source} has column(s) {', '.join(reserved)}, which the output table adds; "
                f"rename them in the model's SQL."
            )
        self.columns = [name for name, _ in columns]
        self.request_column, kind = by_lower["request"]
        self.request_type = "STRING" if kind.upper() == "STRING" else "JSON"
        self.ensure_table(self.progress, PROGRESS_COLUMNS)
        total = self._fetch(exp.select(exp.Count(this=exp.Star())).from_(self.source.table()))[0][0]
        done = self._fetch(
            exp.select("COUNTIF(NOT retryable AND status = '')", "COUNTIF(NOT retryable AND status <> '')",
                       dialect="bigquery")
            .from_(self._final_answers().subquery("f"))
        )[0]
        return int(total), int(done[0] or 0), int(done[1] or 0)

    def pending(self, batch_rows: int) -> Iterator[list[PendingRow]]:
        """Batches of the requests without a final answer, each with its validation status."""
        from bqbatch_sql.validate import request_status_sql

        request = exp.column(self.request_column, table="k", quoted=True)
        answered = exp.select("1").from_(self.progress.table(alias="p")).where(exp.and_(
            exp.column("key", "p").eq(exp.column(KEY, "k", quoted=True)),
            exp.column("spec", "p").eq(exp.Literal.string(self.spec)),
            exp.not_(exp.column("retryable", "p")),
        ))
        query = exp.select(
            exp.column(KEY, "k", quoted=True),
            self._request_text(request.copy()),
            request_status_sql(request.copy(), self.dialect, request_type=self.request_type),
        ).from_(self.keyed_source().subquery("k")).where(exp.not_(exp.Exists(this=answered)))
        for batch in self._stream(query, batch_rows):
            yield [PendingRow(key, text if text is not None else "null", invalid) for key, text, invalid in batch]

    def missing(self) -> int:
        """Requests with no answer at all in the progress table (a job that stopped early)."""
        keys = exp.select(KEY).from_(self.keyed_source().subquery("k")).where(exp.not_(exp.Exists(
            this=exp.select("1").from_(self.progress.table(alias="p")).where(exp.and_(
                exp.column("key", "p").eq(exp.column(KEY, "k", quoted=True)),
                exp.column("spec", "p").eq(exp.Literal.string(self.spec)),
            ))
        )))
        return int(self._fetch(exp.select(exp.Count(this=exp.Star())).from_(keys.subquery("m")))[0][0])

    def finish(self) -> int:
        """Build the destination (request columns + response, status, processed_time); drop the progress table."""
        columns = [exp.column(c, "k", quoted=True) for c in self.columns]
        query = exp.select(
            *columns,
            self._parse_json(exp.column("response", "f")).as_("response"),
            exp.column("status", "f").as_("status"),
            exp.column("processed_time", "f").as_("processed_time"),
        ).from_(self.keyed_source().subquery("k")).join(
            self._final_answers().subquery("f"),
            on=exp.column("key", "f").eq(exp.column(KEY, "k", quoted=True)), join_type="left",
        )
        self._replace_table(self.destination, query)
        self._drop(self.progress)
        return int(self._fetch(exp.select(exp.Count(this=exp.Star())).from_(self.destination.table()))[0][0])

    # -- shared SQL ----------------------------------------------------------------------

    def keyed_source(self) -> exp.Select:
        """The source rows with a key: the row's hash, then its occurrence among identical rows."""
        hashed = exp.select(exp.Star(), self._row_hash(exp.column("__bqb_row")).as_("__bqb_h")).from_(
            self.source.table(alias="__bqb_row"))
        occurrence = exp.Window(this=exp.RowNumber(), partition_by=[exp.column("__bqb_h")])
        key = exp.func("CONCAT", exp.column("__bqb_h"), exp.Literal.string(":"),
                       exp.cast(occurrence, exp.DataType.build("STRING", dialect="bigquery")))
        return exp.select(*[exp.column(c, quoted=True) for c in self.columns], key.as_(KEY)).from_(
            hashed.subquery("h"))

    def _final_answers(self) -> exp.Select:
        """One answer per key: a final one before a retryable one, the latest first."""
        rank = exp.Window(
            this=exp.RowNumber(), partition_by=[exp.column("key")],
            order=exp.Order(expressions=[exp.Ordered(this=exp.column("retryable")),
                                         exp.Ordered(this=exp.column("processed_time"), desc=True)]),
        )
        ranked = exp.select("key", "response", "status", "retryable", "processed_time", rank.as_("__bqb_rank")).from_(
            self.progress.table()).where(exp.column("spec").eq(exp.Literal.string(self.spec)))
        return exp.select("key", "response", "status", "retryable", "processed_time").from_(ranked.subquery("r")).where(
            exp.column("__bqb_rank").eq(exp.Literal.number(1)))

    def _replace_table(self, relation: Relation, query: exp.Select) -> None:
        self._run(exp.Create(this=relation.table(), kind="TABLE", expression=query, replace=True))

    def _drop(self, relation: Relation) -> None:
        self._run(exp.Drop(tables=[relation.table()], kind="TABLE", exists=True))
