"""DuckDB warehouse adapter: the embedded default target.

Every statement is a sqlglot tree until it is rendered in the DuckDB dialect here.
A DuckDB connection must not be shared by threads, so each thread gets its own
cursor on the one database (cursors share the catalog and see each other's commits).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar, Sequence

import duckdb
from sqlglot import exp

from bqbatch_sql.adapters.base import RelationDDL
from bqbatch_sql.errors import WarehouseError
from bqbatch_sql.nodes import Column, Relation


def duckdb_type_to_bigquery(data_type: str) -> str:
    """A DuckDB column type in BigQuery's spelling (the request-table rules are BigQuery's)."""
    upper = data_type.upper()
    if upper == "JSON":
        return "JSON"
    if upper.endswith("[]") or upper.startswith(("LIST", "MAP")) or "[" in upper:
        return "ARRAY"
    if upper.startswith(("STRUCT", "UNION")):
        return "STRUCT"
    if upper in ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"):
        return "DATETIME"  # DuckDB's zone-less TIMESTAMP is BigQuery's DATETIME
    try:
        return exp.DataType.build(data_type, dialect="duckdb").sql(dialect="bigquery").split("(")[0]
    except Exception:
        return upper


class DuckDBAdapter(RelationDDL):
    dialect: ClassVar[str] = "duckdb"

    def __init__(self, database: str | Path = ":memory:", schema: str = "main", *, threads: int | None = None):
        database = str(database)
        if database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.connection = duckdb.connect(database)
        except duckdb.Error as e:
            raise WarehouseError(f"Cannot open the DuckDB database '{database}': {e}") from e
        if threads:
            self.connection.execute(f"SET threads = {int(threads)}")
        _apply_bigquery_semantics(self.connection)
        self.database = database
        self.schema = schema
        self._local = threading.local()
        self._lock = threading.Lock()
        self.create_schema(schema)

    @classmethod
    def from_connection(cls, connection: duckdb.DuckDBPyConnection, schema: str = "main") -> "DuckDBAdapter":
        """Wrap an existing connection (the emulator keeps its own database)."""
        self = cls.__new__(cls)
        self.connection = connection
        _apply_bigquery_semantics(connection)
        self.database = ":connection:"
        self.schema = schema
        self._local = threading.local()
        self._lock = threading.Lock()
        self.create_schema(schema)
        return self

    def relation(self, name: str, schema: str | None = None) -> Relation:
        return Relation(None, schema or self.schema, name)

    # -- statements ---------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the shared database."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self.connection.cursor()
            self._local.cursor = cur
        return cur

    def render(self, sql: str | exp.Expression) -> str:
        return sql if isinstance(sql, str) else sql.sql(dialect=self.dialect)

    def execute(self, sql: str | exp.Expression, params: Sequence[Any] | None = None) -> None:
        text = self.render(sql)
        try:
            self.cursor().execute(text, params)
        except duckdb.Error as e:
            raise WarehouseError(f"DuckDB refused the statement: {e}\n  SQL: {_shorten(text)}") from e

    def fetchall(self, sql: str | exp.Expression, params: Sequence[Any] | None = None) -> list[tuple]:
        text = self.render(sql)
        try:
            return self.cursor().execute(text, params).fetchall()
        except duckdb.Error as e:
            raise WarehouseError(f"DuckDB refused the query: {e}\n  SQL: {_shorten(text)}") from e

    # -- DDL ------------------------------------------------------------------

    def create_schema(self, schema: str) -> None:
        self.execute(exp.Create(this=exp.Table(db=exp.to_identifier(schema, quoted=True)), kind="SCHEMA", exists=True))

    def drop_relation(self, relation: Relation) -> None:
        kind = self.relation_kind(relation)
        if kind:
            self.execute(exp.Drop(tables=[relation.table()], kind=kind, exists=True))

    def replace_table(self, relation: Relation, staged: Relation) -> None:
        """`relation` becomes `staged` by a rename in one transaction: no row is copied (a
        copy of a 1M-row output costs ~2 s), and readers see the old table or the new one."""
        kind = self.relation_kind(relation)
        cursor = self.cursor()
        cursor.begin()
        try:
            if kind:
                cursor.execute(exp.Drop(tables=[relation.table()], kind=kind).sql("duckdb"))
            cursor.execute(exp.Alter(this=staged.table(), kind="TABLE", actions=[
                exp.AlterRename(this=exp.to_identifier(relation.name, quoted=True))]).sql("duckdb"))
            cursor.commit()
        except duckdb.Error as e:
            cursor.rollback()
            raise WarehouseError(f"DuckDB could not replace {relation} by {staged}: {e}") from e

    def rename(self, relation: Relation, new_name: str) -> None:
        kind = self.relation_kind(relation) or "TABLE"
        self.execute(f"ALTER {kind} {relation.sql(self.dialect)} RENAME TO {exp.to_identifier(new_name, quoted=True).sql(self.dialect)}")

    def load_csv(self, relation: Relation, path: Path, column_types: dict[str, str] | None = None) -> int:
        """A seed: the CSV's types inferred by DuckDB, overridable per column (BigQuery type names)."""
        self._drop_other_kind(relation, "TABLE")
        options = "header = true, auto_detect = true"
        if column_types:
            types = exp.Struct(expressions=[
                exp.PropertyEQ(this=exp.to_identifier(col), expression=exp.Literal.string(
                    exp.DataType.build(typ, dialect="bigquery").sql("duckdb")))
                for col, typ in column_types.items()
            ])
            options += f", types = {types.sql('duckdb')}"
        # The path is a bound parameter, never SQL text.
        self.execute(f"CREATE OR REPLACE TABLE {relation.sql(self.dialect)} AS SELECT * FROM read_csv(?, {options})",
                     [str(path)])
        return self.row_count(relation)

    # -- catalog --------------------------------------------------------------

    def relation_kind(self, relation: Relation) -> str | None:
        rows = self.fetchall(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [relation.schema, relation.name],
        )
        if not rows:
            return None
        return "VIEW" if rows[0][0] == "VIEW" else "TABLE"

    def table_exists(self, relation: Relation) -> bool:
        return self.relation_kind(relation) is not None

    def columns(self, relation: Relation) -> list[Column]:
        rows = self.fetchall(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [relation.schema, relation.name],
        )
        return [Column(name, duckdb_type_to_bigquery(dtype)) for name, dtype in rows]

    def row_count(self, relation: Relation) -> int:
        query = exp.select(exp.Count(this=exp.Star())).from_(relation.table())
        return int(self.fetchall(query)[0][0])

    def close(self) -> None:
        self.connection.close()


def _apply_bigquery_semantics(connection: duckdb.DuckDBPyConnection) -> None:
    """UTC and error-on-division-by-zero, as BigQuery: transpiled models assume them."""
    from bqbatch_sql.compile import apply_duckdb_settings

    apply_duckdb_settings(connection)


def _shorten(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."
