"""The emulator's catalog: BigQuery projects, datasets and tables kept in one DuckDB database.

Dataset `project.dataset` is the DuckDB schema named "project:dataset" (BigQuery's
own legacy spelling, unambiguous because dataset ids cannot hold ':'); table
`project.dataset.table` is the DuckDB table "project:dataset"."table". What DuckDB
does not keep (dataset location, labels, descriptions, creation times, a view's
BigQuery SQL) lives in the schema "_bqemu" and, for speed, in memory: a DuckDB
catalog query costs several milliseconds, and every API call needs a few. All
writes go through this class, so the memory copy stays true; tables that appear by
other ways (a batch job's output, a restart on --data) are picked up by `sync`.
Every access holds `Catalog.lock`: the HTTP server is threaded, and statements of
one DuckDB connection must not interleave.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from sqlglot import exp

from bqbatch_sql.emulator import bq_types
from bqbatch_sql.emulator.api_errors import ApiError, bad_request, conflict, not_found

META = "_bqemu"
DEFAULT_LOCATION = "US"
# BigQuery's multi-regions; Vertex refuses datasets there.
MULTI_REGIONS = frozenset({"US", "EU"})

_META_DDL = (
    f'CREATE SCHEMA IF NOT EXISTS "{META}"',
    f'CREATE TABLE IF NOT EXISTS "{META}".datasets ('
    " project VARCHAR, dataset VARCHAR, location VARCHAR, created BIGINT, modified BIGINT,"
    " description VARCHAR, labels JSON, hidden BOOLEAN, PRIMARY KEY (project, dataset))",
    f'CREATE TABLE IF NOT EXISTS "{META}".tables ('
    " project VARCHAR, dataset VARCHAR, table_name VARCHAR, kind VARCHAR, created BIGINT, modified BIGINT,"
    " description VARCHAR, labels JSON, expiration BIGINT, view_query VARCHAR,"
    " PRIMARY KEY (project, dataset, table_name))",
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class TableRef:
    project: str
    dataset: str
    table: str

    @property
    def legacy_id(self) -> str:
        return f"{self.project}:{self.dataset}.{self.table}"

    def api(self) -> dict[str, str]:
        return {"projectId": self.project, "datasetId": self.dataset, "tableId": self.table}

    @classmethod
    def from_api(cls, ref: dict[str, Any], default_project: str) -> "TableRef":
        try:
            return cls(ref.get("projectId") or default_project, ref["datasetId"], ref["tableId"])
        except KeyError as e:
            raise bad_request(f"Table reference {ref!r} is missing {e.args[0]}.") from None


@dataclass(frozen=True)
class Dataset:
    project: str
    dataset: str
    location: str
    created: int
    modified: int
    description: str | None
    labels: dict[str, str]
    hidden: bool

    @property
    def schema(self) -> str:
        return schema_name(self.project, self.dataset)


@dataclass(frozen=True)
class TableMeta:
    name: str  # as created (DuckDB matches names case-insensitively; BigQuery shows them as made)
    kind: str  # TABLE | VIEW
    created: int
    modified: int
    description: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    expiration: int | None = None
    view_query: str | None = None


def schema_name(project: str, dataset: str) -> str:
    return f"{project}:{dataset}"


def sql_table(ref: TableRef, alias: str | None = None) -> exp.Table:
    """The DuckDB table of a BigQuery table, every part quoted by sqlglot."""
    return exp.table_(ref.table, db=schema_name(ref.project, ref.dataset), quoted=True, alias=alias)


def _key(ref: TableRef) -> tuple[str, str, str]:
    return (ref.project, ref.dataset, ref.table.lower())


class Catalog:
    def __init__(self, data_path: str | Path | None = None):
        database = ":memory:" if data_path in (None, "", ":memory:") else str(data_path)
        if database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        self.conn = duckdb.connect(database)
        self.database = database
        self.lock = threading.RLock()
        # The settings the transpiler's rewrites assume (UTC, errors on division by
        # zero), as on the local target; UTC also makes zone-less reads of TIMESTAMPTZ
        # UTC (see bq_types.readable_type). GLOBAL, so batch jobs' cursors share them.
        from bqbatch_sql.compile import apply_duckdb_settings

        apply_duckdb_settings(self.conn)
        for ddl in _META_DDL:
            self.conn.execute(ddl)
        self._datasets: dict[tuple[str, str], Dataset] = {}
        self._tables: dict[tuple[str, str, str], TableMeta] = {}
        for row in self.conn.execute(
            f'SELECT project, dataset, location, created, modified, description, labels, hidden FROM "{META}".datasets'
        ).fetchall():
            d = _dataset(row)
            self._datasets[(d.project, d.dataset)] = d
        for row in self.conn.execute(
            f'SELECT project, dataset, table_name, kind, created, modified, description, labels, expiration, view_query FROM "{META}".tables'
        ).fetchall():
            project, dataset, name, kind, created, modified, description, labels, expiration, view_query = row
            self._tables[(project, dataset, name.lower())] = TableMeta(
                name, kind, created, modified, description, json.loads(labels) if labels else {}, expiration, view_query
            )
        for project, dataset in list(self._datasets):
            self.sync(project, dataset)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def execute(self, sql: str | exp.Expression, params: Any = None) -> duckdb.DuckDBPyConnection:
        text = sql if isinstance(sql, str) else sql.sql(dialect="duckdb")
        with self.lock:
            return self.conn.execute(text, params)

    def fetchall(self, sql: str | exp.Expression, params: Any = None) -> list[tuple]:
        with self.lock:
            return self.execute(sql, params).fetchall()

    # -- datasets -------------------------------------------------------------

    def get_dataset(self, project: str, dataset: str) -> Dataset | None:
        with self.lock:
            return self._datasets.get((project, dataset))

    def require_dataset(self, project: str, dataset: str) -> Dataset:
        found = self.get_dataset(project, dataset)
        if found is None:
            raise not_found(f"Not found: Dataset {project}:{dataset}")
        return found

    def create_dataset(
        self,
        project: str,
        dataset: str,
        location: str | None = None,
        *,
        description: str | None = None,
        labels: dict[str, str] | None = None,
        hidden: bool = False,
        exists_ok: bool = False,
    ) -> Dataset:
        _check_dataset_id(dataset)
        with self.lock:
            existing = self.get_dataset(project, dataset)
            if existing is not None:
                if exists_ok:
                    return existing
                raise conflict(f"Already Exists: Dataset {project}:{dataset}")
            stamp = now_ms()
            created = Dataset(project, dataset, location or DEFAULT_LOCATION, stamp, stamp, description, dict(labels or {}), hidden)
            self.execute(exp.Create(this=exp.Table(db=exp.to_identifier(created.schema, quoted=True)), kind="SCHEMA", exists=True))
            self._save_dataset(created)
            return created

    def _save_dataset(self, d: Dataset) -> None:
        self.execute(
            f'INSERT OR REPLACE INTO "{META}".datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            [d.project, d.dataset, d.location, d.created, d.modified, d.description, json.dumps(d.labels), d.hidden],
        )
        self._datasets[(d.project, d.dataset)] = d

    def update_dataset(self, project: str, dataset: str, changes: dict[str, Any]) -> Dataset:
        with self.lock:
            current = self.require_dataset(project, dataset)
            updated = dataclasses.replace(
                current,
                description=changes.get("description", current.description),
                labels=_merge_labels(current.labels, changes.get("labels")),
                modified=now_ms(),
            )
            self._save_dataset(updated)
            return updated

    def list_datasets(self, project: str, include_hidden: bool = False) -> list[Dataset]:
        with self.lock:
            found = [d for (p, _), d in self._datasets.items() if p == project]
        return sorted((d for d in found if include_hidden or not d.hidden), key=lambda d: d.dataset)

    def delete_dataset(self, project: str, dataset: str, delete_contents: bool) -> None:
        with self.lock:
            found = self.require_dataset(project, dataset)
            if self.list_tables(project, dataset) and not delete_contents:
                raise ApiError(
                    400,
                    f"Dataset {project}:{dataset} is still in use. Delete its tables first, "
                    "or delete the dataset with deleteContents=true (delete_contents=True).",
                    reason="resourceInUse",
                )
            self.execute(exp.Drop(tables=[exp.Table(db=exp.to_identifier(found.schema, quoted=True))], kind="SCHEMA", exists=True, cascade=True))
            self.execute(f'DELETE FROM "{META}".datasets WHERE project = ? AND dataset = ?', [project, dataset])
            self.execute(f'DELETE FROM "{META}".tables WHERE project = ? AND dataset = ?', [project, dataset])
            del self._datasets[(project, dataset)]
            for key in [k for k in self._tables if k[:2] == (project, dataset)]:
                del self._tables[key]

    # -- tables ---------------------------------------------------------------

    def table_kind(self, ref: TableRef) -> str | None:
        """'TABLE', 'VIEW' or None when the table does not exist."""
        with self.lock:
            meta = self._tables.get(_key(ref))
        return meta.kind if meta else None

    def require_table(self, ref: TableRef) -> str:
        dataset = self.require_dataset(ref.project, ref.dataset)
        kind = self.table_kind(ref)
        if kind is None:
            raise not_found(f"Not found: Table {ref.legacy_id} was not found in location {dataset.location}")
        return kind

    def list_tables(self, project: str, dataset: str) -> list[tuple[str, str]]:
        with self.lock:
            found = [(m.name, m.kind) for k, m in self._tables.items() if k[:2] == (project, dataset)]
        return sorted(found)

    def sync(self, project: str, dataset: str) -> None:
        """Re-read which tables and views a dataset's schema holds (after renames, outside writers)."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = ? "
                "UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() WHERE database_name = current_database() AND schema_name = ?",
                [schema_name(project, dataset)] * 2,
            ).fetchall()
            present = {name.lower(): (name, kind) for name, kind in rows}
            for key in [k for k in self._tables if k[:2] == (project, dataset) and k[2] not in present]:
                self.forget_table(TableRef(project, dataset, key[2]))
            for lowered, (name, kind) in present.items():
                meta = self._tables.get((project, dataset, lowered))
                if meta is None or meta.kind != kind:
                    self.record_table(TableRef(project, dataset, name), kind=kind)

    def discover(self, ref: TableRef) -> str | None:
        """Record one table written outside the catalog (a batch job's output); its kind, or None if absent."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = ? AND lower(table_name) = lower(?)",
                [schema_name(ref.project, ref.dataset), ref.table],
            ).fetchall()
            if not rows:
                return None
            self.record_table(TableRef(ref.project, ref.dataset, rows[0][0]), kind="TABLE")
            return "TABLE"

    def duckdb_columns(self, ref: TableRef) -> list[tuple[str, str]]:
        return [(name, dtype) for name, dtype, _ in self._describe(ref)]

    def _describe(self, ref: TableRef) -> list[tuple[str, str, bool]]:
        rows = self.fetchall(exp.Describe(this=sql_table(ref)))
        return [(row[0], row[1], row[2] == "YES") for row in rows]

    def fields(self, ref: TableRef) -> list[dict[str, Any]]:
        """The table's schema as BigQuery TableFieldSchema dicts (NOT NULL columns are REQUIRED)."""
        return [
            bq_types.duckdb_to_field(name, dtype, "NULLABLE" if nullable else "REQUIRED")
            for name, dtype, nullable in self._describe(ref)
        ]

    def row_count(self, ref: TableRef) -> int:
        return int(self.fetchall(exp.select(exp.Count(this=exp.Star())).from_(sql_table(ref)))[0][0])

    def table_meta(self, ref: TableRef) -> TableMeta:
        with self.lock:
            meta = self._tables.get(_key(ref))
        if meta is None:
            raise not_found(f"Not found: Table {ref.legacy_id}")
        return meta

    def record_table(
        self,
        ref: TableRef,
        *,
        kind: str | None = None,
        replaced: bool = True,
        description: str | None = None,
        labels: dict[str, str] | None = None,
        expiration: int | None = None,
        view_query: str | None = None,
    ) -> None:
        """Note that a table was created (replaced=True: a new creation time) or modified."""
        stamp = now_ms()
        with self.lock:
            current = self._tables.get(_key(ref))
            if current is not None and not replaced:
                self._save_table(ref, dataclasses.replace(current, modified=stamp))
                return
            if kind is None:
                kind = current.kind if current else self._duckdb_kind(ref)
            if kind is None:
                raise not_found(f"Not found: Table {ref.legacy_id}")
            self._save_table(ref, TableMeta(ref.table, kind, stamp, stamp, description, dict(labels or {}), expiration, view_query))

    def _duckdb_kind(self, ref: TableRef) -> str | None:
        self.sync(ref.project, ref.dataset)
        meta = self._tables.get(_key(ref))
        return meta.kind if meta else None

    def _save_table(self, ref: TableRef, meta: TableMeta) -> None:
        self.execute(
            f'INSERT OR REPLACE INTO "{META}".tables VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            [ref.project, ref.dataset, meta.name, meta.kind, meta.created, meta.modified, meta.description,
             json.dumps(meta.labels), meta.expiration, meta.view_query],
        )
        self._tables[_key(ref)] = meta

    def update_table_meta(self, ref: TableRef, changes: dict[str, Any]) -> None:
        with self.lock:
            meta = self.table_meta(ref)
            expiration = changes.get("expirationTime", meta.expiration)
            self._save_table(
                ref,
                dataclasses.replace(
                    meta,
                    description=changes.get("description", meta.description),
                    labels=_merge_labels(meta.labels, changes.get("labels")),
                    expiration=int(expiration) if expiration is not None else None,
                    modified=now_ms(),
                ),
            )

    def forget_table(self, ref: TableRef) -> None:
        with self.lock:
            meta = self._tables.pop(_key(ref), None)
            name = meta.name if meta else ref.table
            self.execute(
                f'DELETE FROM "{META}".tables WHERE project = ? AND dataset = ? AND lower(table_name) = lower(?)',
                [ref.project, ref.dataset, name],
            )

    def drop_table(self, ref: TableRef) -> None:
        with self.lock:
            kind = self.require_table(ref)
            self.execute(exp.Drop(tables=[sql_table(ref)], kind=kind, exists=True))
            self.forget_table(ref)

    def create_table(self, ref: TableRef, fields: list[dict[str, Any]], *, exists_ok: bool = False) -> None:
        """CREATE TABLE from a BigQuery schema (tables.insert)."""
        with self.lock:
            self.require_dataset(ref.project, ref.dataset)
            if self.table_kind(ref) is not None:
                if exists_ok:
                    return
                raise conflict(f"Already Exists: Table {ref.legacy_id}")
            try:
                columns = [
                    exp.ColumnDef(
                        this=exp.to_identifier(f["name"], quoted=True),
                        kind=bq_types.field_to_duckdb(f),
                        constraints=[exp.ColumnConstraint(kind=exp.NotNullColumnConstraint())] if f.get("mode") == "REQUIRED" else [],
                    )
                    for f in fields
                ]
            except (bq_types.TypeMappingError, KeyError) as e:
                raise bad_request(f"Invalid schema for table {ref.legacy_id}: {e}") from None
            if not columns:
                # BigQuery allows a table without a schema; DuckDB needs a column.
                raise bad_request(
                    f"Table {ref.legacy_id} has no schema fields; the emulator needs at least one column. "
                    "Fix: pass schema=[SchemaField(...)] when creating the table."
                )
            self.execute(exp.Create(this=exp.Schema(this=sql_table(ref), expressions=columns), kind="TABLE"))

    def read_rows(
        self, ref: TableRef, *, offset: int, limit: int | None, selected: list[str] | None = None
    ) -> tuple[list[dict[str, Any]], list[tuple]]:
        """A page of a table in storage order: (BigQuery fields, rows of Python values)."""
        described = self._describe(ref)
        if selected:
            wanted = {s.strip().lower() for s in selected}
            described = [c for c in described if c[0].lower() in wanted]
        fields = [bq_types.duckdb_to_field(name, dtype, "NULLABLE" if nullable else "REQUIRED") for name, dtype, nullable in described]
        projections = []
        for name, dtype, _ in described:
            column: exp.Expression = exp.column(name, quoted=True)
            readable = bq_types.readable_type(dtype)
            if readable is not None:
                column = exp.alias_(exp.Cast(this=column, to=readable), name, quoted=True)
            projections.append(column)
        if not projections:
            return fields, []
        # rowid is storage order, which is the order rows were written in: the same
        # order BigQuery keeps for a query's result table.
        query = exp.select(*projections).from_(sql_table(ref)).order_by(exp.column("rowid"))
        query = query.offset(exp.Literal.number(max(offset, 0)))
        if limit is not None:
            query = query.limit(exp.Literal.number(max(limit, 0)))
        return fields, self.fetchall(query)


def _merge_labels(current: dict[str, str], changes: dict[str, Any] | None) -> dict[str, str]:
    labels = dict(current)
    for key, value in (changes or {}).items():
        if value is None:
            labels.pop(key, None)  # a PATCH removes a label by sending it as null
        else:
            labels[key] = value
    return labels


def _dataset(row: tuple) -> Dataset:
    project, dataset, location, created, modified, description, labels, hidden = row
    return Dataset(project, dataset, location, created, modified, description, json.loads(labels) if labels else {}, bool(hidden))


def _check_dataset_id(dataset: str) -> None:
    if not dataset or len(dataset) > 1024 or not all(c.isalnum() or c == "_" for c in dataset):
        raise bad_request(
            f"Invalid dataset ID \"{dataset}\". Dataset IDs must be alphanumeric (plus underscores) "
            "and must be at most 1024 characters long."
        )
