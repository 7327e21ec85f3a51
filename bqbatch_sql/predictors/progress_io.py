"""Predict stage, request-at-a-time backends: the progress table's I/O in DuckDB and in BigQuery.

`progress.ProgressStore` holds the SQL; these two classes run it. DuckDB streams the
pending requests through a cursor of its own (a second statement on one cursor would
discard the pending result) and appends answers as array parameters, one INSERT per
batch. BigQuery pages through query results and appends with the streaming insert
API (`insertAll`), which needs no load job or bucket; the progress table is only
ever appended to and read, which streaming inserts allow at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlglot import exp

from bqbatch_sql.errors import PredictorError, WarehouseError
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.progress import ProgressStore


class DuckDBProgress(ProgressStore):
    dialect: ClassVar[str] = "duckdb"

    def __init__(self, adapter: Any, source: Relation | None, destination: Relation, spec: str):
        super().__init__(source, destination, spec)
        self.adapter = adapter

    def _columns(self, relation: Relation) -> list[tuple[str, str]] | None:
        if not self.adapter.table_exists(relation):
            return None
        return [(c.name, c.data_type) for c in self.adapter.columns(relation)]

    def _run(self, statement: exp.Expression) -> None:
        self.adapter.execute(statement.sql("duckdb"))

    def _fetch(self, query: exp.Expression) -> list[tuple]:
        return self.adapter.fetchall(query.sql("duckdb"))

    def _stream(self, query: exp.Expression, batch_rows: int) -> Iterator[list[tuple]]:
        import duckdb

        cursor = self.adapter.connection.cursor()
        try:
            result = cursor.execute(query.sql("duckdb"))
            while batch := result.fetchmany(batch_rows):
                yield batch
        except duckdb.Error as e:
            raise WarehouseError(f"DuckDB refused the query of pending requests of {self.source}: {e}") from e
        finally:
            cursor.close()

    def append(self, relation: Relation, columns: tuple[tuple[str, str], ...], rows: list[tuple]) -> None:
        if not rows:
            return
        # One INSERT per batch: each column bound as a list parameter and unnested side by side.
        select = exp.select(*[
            exp.Unnest(expressions=[exp.cast(exp.Placeholder(this=str(i + 1)),
                                             exp.DataType.build(f"{_DUCKDB_TYPES.get(kind, kind)}[]", dialect="duckdb"))])
            for i, (_, kind) in enumerate(columns)
        ])
        statement = exp.insert(select, relation.table(), columns=[exp.to_identifier(n, quoted=True) for n, _ in columns])
        params = [[_naive_utc(row[i]) for row in rows] for i in range(len(columns))]
        self.adapter.execute(statement.sql("duckdb"), params)

    def _row_hash(self, row: exp.Expression) -> exp.Expression:
        return exp.cast(exp.func("HASH", row), exp.DataType.build("VARCHAR", dialect="duckdb"))

    def _request_text(self, request: exp.Expression) -> exp.Expression:
        return exp.cast(request, exp.DataType.build("VARCHAR", dialect="duckdb"))

    def _parse_json(self, text: exp.Expression) -> exp.Expression:
        return exp.cast(text, exp.DataType.build("JSON", dialect="duckdb"))

    def _replace_table(self, relation: Relation, query: exp.Select) -> None:
        # The adapter drops a view of the same name first (DuckDB cannot replace one by a table).
        self.adapter.create_table_as(relation, query)


class BigQueryProgress(ProgressStore):
    dialect: ClassVar[str] = "bigquery"

    def __init__(self, client: Any, source: Relation | None, destination: Relation, spec: str):
        super().__init__(source, destination, spec)
        self.client = client

    def _table_id(self, relation: Relation) -> str:
        project = relation.database or self.client.project
        return f"{project}.{relation.schema}.{relation.name}"

    def _columns(self, relation: Relation) -> list[tuple[str, str]] | None:
        from google.api_core.exceptions import NotFound

        try:
            table = self.client.get_table(self._table_id(relation))
        except NotFound:
            return None
        return [(f.name, _BQ_TYPES.get(f.field_type, f.field_type)) for f in table.schema]

    def _query(self, query: exp.Expression):
        from google.api_core.exceptions import GoogleAPICallError

        sql = query.sql("bigquery")
        try:
            return self.client.query(sql).result()
        except GoogleAPICallError as e:
            raise WarehouseError(f"BigQuery refused a statement of the predictor: {e}\n  SQL: {sql[:600]}") from e

    def _run(self, statement: exp.Expression) -> None:
        self._query(statement)

    def _fetch(self, query: exp.Expression) -> list[tuple]:
        return [tuple(row.values()) for row in self._query(query)]

    def _stream(self, query: exp.Expression, batch_rows: int) -> Iterator[list[tuple]]:
        from google.api_core.exceptions import GoogleAPICallError

        sql = query.sql("bigquery")
        try:
            rows = self.client.query(sql).result(page_size=batch_rows)
            for page in rows.pages:
                batch = [tuple(row.values()) for row in page]
                if batch:
                    yield batch
        except GoogleAPICallError as e:
            raise WarehouseError(f"BigQuery refused the query of pending requests of {self.source}: {e}") from e

    def append(self, relation: Relation, columns: tuple[tuple[str, str], ...], rows: list[tuple]) -> None:
        if not rows:
            return
        payload = [{name: _json_value(value) for (name, _), value in zip(columns, row)} for row in rows]
        errors = self.client.insert_rows_json(self._table_id(relation), payload)
        if errors:
            raise PredictorError(f"BigQuery refused rows written to {relation}: {errors[:3]}")

    def _row_hash(self, row: exp.Expression) -> exp.Expression:
        return exp.func("TO_HEX", exp.func("MD5", exp.func("TO_JSON_STRING", row, dialect="bigquery"), dialect="bigquery"),
                        dialect="bigquery")

    def _request_text(self, request: exp.Expression) -> exp.Expression:
        if self.request_type == "STRING":
            return request
        return exp.func("TO_JSON_STRING", request, dialect="bigquery")

    def _parse_json(self, text: exp.Expression) -> exp.Expression:
        return exp.func("PARSE_JSON", text, dialect="bigquery")


_DUCKDB_TYPES = {"STRING": "VARCHAR", "INT64": "BIGINT", "BOOL": "BOOLEAN", "FLOAT64": "DOUBLE"}


def _naive_utc(value: Any) -> Any:
    # DuckDB TIMESTAMP columns hold UTC without a zone, as the local predictor writes them.
    return value.astimezone(timezone.utc).replace(tzinfo=None) if isinstance(value, datetime) else value


def _json_value(value: Any) -> Any:
    return value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) else value


# google-cloud-bigquery reports legacy type names.
_BQ_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}
