"""tabledata.insertAll of the emulated BigQuery (client.insert_rows / insert_rows_json).

Rows arrive as JSON objects; each value is checked against the table's BigQuery
schema and bound to DuckDB as a parameter wrapped in a CAST to the column type.
BigQuery's all-or-nothing rule is kept: when a row is invalid and skipInvalidRows
is false, nothing is written, the bad row gets its error and every other row gets
reason "stopped".
"""

from __future__ import annotations

from typing import Any

import duckdb
from sqlglot import exp

from bqbatch_sql.emulator import bq_types
from bqbatch_sql.emulator.api_errors import bad_request
from bqbatch_sql.emulator.storage import Catalog, TableRef, sql_table


def insert_rows(catalog: Catalog, ref: TableRef, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Insert the request's rows; return BigQuery's insertErrors (empty when all went in)."""
    rows = body.get("rows") or []
    skip_invalid = bool(body.get("skipInvalidRows"))
    ignore_unknown = bool(body.get("ignoreUnknownValues"))
    with catalog.lock:
        columns = catalog.duckdb_columns(ref)
        fields = {f["name"].lower(): f for f in catalog.fields(ref)}
        # CAST to the column's own DuckDB type, so the value is checked as it is stored.
        types = {name.lower(): exp.DataType.build(dtype, dialect="duckdb") for name, dtype in columns}
        prepared: list[tuple[int, dict[str, Any]]] = []
        errors: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            values, row_errors = _convert(row.get("json") or {}, fields, ignore_unknown)
            if row_errors:
                errors.append({"index": index, "errors": row_errors})
            else:
                prepared.append((index, values))
        if errors and not skip_invalid:
            failed = {e["index"] for e in errors}
            stopped = [
                {"index": i, "errors": [{"reason": "stopped", "location": "", "debugInfo": "", "message": ""}]}
                for i in range(len(rows))
                if i not in failed
            ]
            return sorted(errors + stopped, key=lambda e: e["index"])
        # One INSERT per distinct column set keeps NULL-omitted columns NULL (or default).
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        for _, values in prepared:
            key = tuple(sorted(values))
            by_columns.setdefault(key, []).append([values[k] for k in key])
        for key, params in by_columns.items():
            if not key:
                continue
            insert = exp.insert(
                exp.Values(expressions=[exp.Tuple(expressions=[exp.Cast(this=exp.Placeholder(), to=types[k].copy()) for k in key])]),
                sql_table(ref),
                columns=[exp.to_identifier(_name(fields, k), quoted=True) for k in key],
            )
            try:
                catalog.conn.executemany(insert.sql(dialect="duckdb"), params)
            except duckdb.Error as e:
                raise bad_request(f"insertAll into {ref.legacy_id} failed: {' '.join(str(e).splitlines()[:2])}") from None
        empty = exp.insert(
            exp.Values(expressions=[exp.Tuple(expressions=[exp.null()])]),
            sql_table(ref),
            columns=[exp.to_identifier(columns[0][0], quoted=True)],
        ).sql(dialect="duckdb")
        for _ in range(sum(1 for _, v in prepared if not v)):
            catalog.conn.execute(empty)  # a row of nothing but NULLs
        catalog.record_table(ref, replaced=False)
        return errors


def _convert(
    row: dict[str, Any], fields: dict[str, dict[str, Any]], ignore_unknown: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for key, value in row.items():
        field = fields.get(key.lower())
        if field is None:
            if not ignore_unknown:
                errors.append({"reason": "invalid", "location": key, "debugInfo": "", "message": "no such field: " + key + "."})
            continue
        try:
            values[key.lower()] = bq_types.json_value_for_duckdb(value, field)
        except (bq_types.TypeMappingError, ValueError, TypeError) as e:
            errors.append({"reason": "invalid", "location": key, "debugInfo": "", "message": str(e)})
    for key, field in fields.items():
        if field.get("mode") == "REQUIRED" and values.get(key) is None:
            errors.append({"reason": "invalid", "location": field["name"], "debugInfo": "", "message": f"Missing required field: {field['name']}."})
    return values, errors


def _name(fields: dict[str, dict[str, Any]], key: str) -> str:
    return fields[key]["name"]
