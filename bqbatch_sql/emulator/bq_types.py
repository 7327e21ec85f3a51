"""BigQuery <-> DuckDB types and values, for the emulator's REST surface.

The emulator keeps BigQuery tables as DuckDB tables. This module is the one place
that knows how a BigQuery schema field becomes a DuckDB column type (tables.insert,
query parameters), how a DuckDB column type is reported back as a BigQuery field
(tables.get, query result schemas), and how cell values are written in BigQuery's
REST encoding (every scalar a string, TIMESTAMP as int64 microseconds, BYTES as
base64, RECORD as {"f": [...]}, REPEATED as [{"v": ...}]).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from typing import Any

from sqlglot import exp

T = exp.DataType.Type

# BigQuery type names (legacy and standard spellings, as the REST API accepts
# both) -> DuckDB scalar types. The REST API answers with the legacy spelling.
_BQ_SCALARS: dict[str, exp.DataType] = {
    "STRING": exp.DataType.build("VARCHAR", dialect="duckdb"),
    "BYTES": exp.DataType.build("BLOB", dialect="duckdb"),
    "INTEGER": exp.DataType.build("BIGINT", dialect="duckdb"),
    "INT64": exp.DataType.build("BIGINT", dialect="duckdb"),
    "FLOAT": exp.DataType.build("DOUBLE", dialect="duckdb"),
    "FLOAT64": exp.DataType.build("DOUBLE", dialect="duckdb"),
    "NUMERIC": exp.DataType.build("DECIMAL(38, 9)", dialect="duckdb"),
    "DECIMAL": exp.DataType.build("DECIMAL(38, 9)", dialect="duckdb"),
    # DuckDB's widest decimal is 38 digits; BIGNUMERIC (76 digits) is narrowed.
    "BIGNUMERIC": exp.DataType.build("DECIMAL(38, 18)", dialect="duckdb"),
    "BIGDECIMAL": exp.DataType.build("DECIMAL(38, 18)", dialect="duckdb"),
    "BOOLEAN": exp.DataType.build("BOOLEAN", dialect="duckdb"),
    "BOOL": exp.DataType.build("BOOLEAN", dialect="duckdb"),
    "DATE": exp.DataType.build("DATE", dialect="duckdb"),
    "TIME": exp.DataType.build("TIME", dialect="duckdb"),
    "DATETIME": exp.DataType.build("TIMESTAMP", dialect="duckdb"),
    "TIMESTAMP": exp.DataType.build("TIMESTAMPTZ", dialect="duckdb"),
    "JSON": exp.DataType.build("JSON", dialect="duckdb"),
    "INTERVAL": exp.DataType.build("INTERVAL", dialect="duckdb"),
}

_INTS = {T.TINYINT, T.SMALLINT, T.INT, T.BIGINT, T.INT128, T.UTINYINT, T.USMALLINT, T.UINT, T.UBIGINT, T.UINT128}
_FLOATS = {T.FLOAT, T.DOUBLE}
_DATETIMES = {T.TIMESTAMP, T.TIMESTAMPNTZ, T.TIMESTAMP_S, T.TIMESTAMP_MS, T.TIMESTAMP_NS, T.DATETIME}
_TIMESTAMPS = {T.TIMESTAMPTZ, T.TIMESTAMPLTZ}
_STRINGS = {T.TEXT, T.VARCHAR, T.CHAR, T.NCHAR, T.NVARCHAR, T.UUID, T.ENUM}


class TypeMappingError(ValueError):
    """A type that has no counterpart on the other side; the message names it."""


def field_to_duckdb(field: dict[str, Any]) -> exp.DataType:
    """A BigQuery TableFieldSchema (REST dict) -> the DuckDB column type that holds it."""
    type_name = str(field.get("type", "STRING")).upper()
    if type_name in ("RECORD", "STRUCT"):
        subfields = field.get("fields") or []
        if not subfields:
            raise TypeMappingError(f"Field {field.get('name')!r} is a RECORD without 'fields'.")
        inner = exp.DataType(
            this=T.STRUCT,
            expressions=[
                exp.ColumnDef(this=exp.to_identifier(f["name"], quoted=True), kind=field_to_duckdb(f)) for f in subfields
            ],
            nested=True,
        )
    elif type_name in _BQ_SCALARS:
        inner = _BQ_SCALARS[type_name].copy()
    else:
        raise TypeMappingError(
            f"Field {field.get('name')!r} has type {type_name}, which the emulator does not store "
            f"(supported: {', '.join(sorted(_BQ_SCALARS))}, RECORD)."
        )
    if str(field.get("mode", "NULLABLE")).upper() == "REPEATED":
        return exp.DataType(this=T.ARRAY, expressions=[inner], nested=True)
    return inner


def parameter_type_to_duckdb(ptype: dict[str, Any]) -> exp.DataType:
    """A QueryParameterType (REST dict) -> DuckDB type, for the CAST around a bind parameter."""
    type_name = str(ptype.get("type", "STRING")).upper()
    if type_name == "ARRAY":
        return exp.DataType(this=T.ARRAY, expressions=[parameter_type_to_duckdb(ptype.get("arrayType") or {})], nested=True)
    if type_name == "STRUCT":
        members = []
        for i, member in enumerate(ptype.get("structTypes") or []):
            name = member.get("name") or f"_field_{i + 1}"
            members.append(exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=parameter_type_to_duckdb(member["type"])))
        return exp.DataType(this=T.STRUCT, expressions=members, nested=True)
    if type_name not in _BQ_SCALARS:
        raise TypeMappingError(f"Query parameter type {type_name} is not supported by the emulator.")
    return _BQ_SCALARS[type_name].copy()


def parameter_value(ptype: dict[str, Any], pvalue: dict[str, Any] | None) -> Any:
    """A QueryParameterValue -> the Python value bound to DuckDB (the CAST does the typing)."""
    if pvalue is None:
        return None
    type_name = str(ptype.get("type", "STRING")).upper()
    if type_name == "ARRAY":
        if "arrayValues" not in pvalue and "value" not in pvalue:
            return None
        return [parameter_value(ptype.get("arrayType") or {}, v) for v in pvalue.get("arrayValues") or []]
    if type_name == "STRUCT":
        values = pvalue.get("structValues")
        if values is None:
            return None
        out = {}
        for i, member in enumerate(ptype.get("structTypes") or []):
            name = member.get("name") or f"_field_{i + 1}"
            out[name] = parameter_value(member["type"], values.get(name))
        return out
    raw = pvalue.get("value")
    if raw is None:
        return None
    if type_name == "BYTES":
        return base64.b64decode(raw)
    if type_name == "TIMESTAMP":
        return _timestamp_text(raw)
    return raw


def _timestamp_text(raw: str) -> str:
    # BigQuery accepts "2024-01-01 00:00:00+00:00", "...Z" and zone-less (= UTC);
    # DuckDB's TIMESTAMPTZ cast reads all of these when the session zone is UTC.
    return str(raw).replace("T", " ", 1) if "T" in str(raw)[:11] else str(raw)


# --- DuckDB type -> BigQuery field -------------------------------------------


def duckdb_to_field(name: str, data_type: str | exp.DataType, mode: str = "NULLABLE") -> dict[str, Any]:
    """A DuckDB column (type as DuckDB spells it) -> BigQuery TableFieldSchema dict."""
    dtype = data_type if isinstance(data_type, exp.DataType) else exp.DataType.build(data_type, dialect="duckdb")
    if dtype.this in (T.ARRAY, T.LIST):
        if mode == "REPEATED":
            # BigQuery has no ARRAY<ARRAY<...>>: the nested array is written as JSON text.
            return {"name": name, "type": "JSON", "mode": "REPEATED"}
        return duckdb_to_field(name, dtype.expressions[0], "REPEATED")
    field: dict[str, Any] = {"name": name, "type": _scalar_name(dtype), "mode": mode}
    if dtype.this == T.STRUCT:
        field["type"] = "RECORD"
        field["fields"] = [
            duckdb_to_field(member.name, member.args["kind"] if isinstance(member, exp.ColumnDef) else member)
            for member in dtype.expressions
        ]
    return field


def _scalar_name(dtype: exp.DataType) -> str:
    kind = dtype.this
    if kind in _INTS:
        return "INTEGER"
    if kind in _FLOATS:
        return "FLOAT"
    if kind in (T.DECIMAL, T.BIGDECIMAL):
        scale = dtype.expressions[1].this.to_py() if len(dtype.expressions) > 1 else 3
        return "NUMERIC" if int(scale) <= 9 else "BIGNUMERIC"
    if kind in _STRINGS:
        return "STRING"
    if kind in (T.VARBINARY, T.BINARY, T.BLOB):
        return "BYTES"
    if kind == T.BOOLEAN:
        return "BOOLEAN"
    if kind == T.DATE:
        return "DATE"
    if kind in (T.TIME, T.TIMETZ):
        return "TIME"
    if kind in _DATETIMES:
        return "DATETIME"
    if kind in _TIMESTAMPS:
        return "TIMESTAMP"
    if kind == T.JSON:
        return "JSON"
    if kind == T.INTERVAL:
        return "INTERVAL"
    if kind == T.STRUCT:
        return "RECORD"
    # MAP, UNION, BIT and other DuckDB-only types: reported and written as JSON text.
    return "JSON"


def readable_type(data_type: str) -> exp.DataType | None:
    """The type to CAST a column to before Python reads it, or None to read as is.

    The duckdb module needs pytz to hand out zoned timestamps; with the session in
    UTC, TIMESTAMPTZ -> TIMESTAMP is the same instant without a zone. DuckDB-only
    types that BigQuery reports as JSON are read as their JSON text.
    """
    dtype = exp.DataType.build(data_type, dialect="duckdb")
    changed = False

    def fix(node: exp.Expression) -> exp.Expression:
        nonlocal changed
        if isinstance(node, exp.DataType):
            if node.this in _TIMESTAMPS:
                changed = True
                return exp.DataType.build("TIMESTAMP", dialect="duckdb")
            if node.this in (T.MAP, T.UNION):
                changed = True
                return exp.DataType.build("JSON", dialect="duckdb")
            if node.this in (T.ARRAY, T.LIST) and node.expressions and node.expressions[0].this in (T.ARRAY, T.LIST):
                changed = True
                return exp.DataType(this=T.ARRAY, expressions=[exp.DataType.build("JSON", dialect="duckdb")], nested=True)
        return node

    fixed = dtype.transform(fix)
    return fixed if changed else None


# --- cell values in REST encoding ------------------------------------------------


def encode_cell(value: Any, field: dict[str, Any], *, int64_timestamp: bool = True) -> Any:
    """One DuckDB value -> the 'v' of a BigQuery REST row cell."""
    if field.get("mode") == "REPEATED":
        if value is None:
            return []  # BigQuery has no NULL arrays: a missing array reads as empty
        scalar = {**field, "mode": "NULLABLE"}
        return [{"v": encode_cell(v, scalar, int64_timestamp=int64_timestamp)} for v in value]
    if value is None:
        return None
    type_name = field["type"]
    if type_name == "RECORD":
        return {"f": [{"v": encode_cell(value.get(sub["name"]), sub, int64_timestamp=int64_timestamp)} for sub in field["fields"]]}
    return encode_scalar(value, type_name, int64_timestamp=int64_timestamp)


def encode_scalar(value: Any, type_name: str, *, int64_timestamp: bool = True) -> str:
    if type_name == "BOOLEAN":
        return "true" if value else "false"
    if type_name == "FLOAT":
        f = float(value)
        if f != f:
            return "NaN"
        if f in (float("inf"), float("-inf")):
            return "Infinity" if f > 0 else "-Infinity"
        return repr(f)
    if type_name in ("NUMERIC", "BIGNUMERIC"):
        d = decimal.Decimal(value)
        # BigQuery writes NUMERIC without exponent and without trailing zeros.
        text = format(d.normalize(), "f") if d != 0 else "0"
        return text
    if type_name == "BYTES":
        return base64.b64encode(bytes(value)).decode("ascii")
    if type_name == "TIMESTAMP":
        micros = timestamp_micros(value)
        if int64_timestamp:
            return str(micros)
        return f"{micros / 1_000_000:.6f}".rstrip("0").rstrip(".") or "0"
    if type_name == "DATETIME":
        return value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    if type_name in ("DATE", "TIME"):
        return value.isoformat()
    if type_name == "INTERVAL":
        return _interval_text(value)
    if type_name == "JSON" and not isinstance(value, str):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


_EPOCH = dt.datetime(1970, 1, 1)


def timestamp_micros(value: dt.datetime) -> int:
    """Microseconds since the epoch; naive datetimes are UTC (see readable_type)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _interval_text(value: Any) -> str:
    # BigQuery's canonical interval text "Y-M D H:M:S[.F]"; DuckDB hands out a timedelta
    # (months folded into days), so the calendar part is 0-0.
    if isinstance(value, dt.timedelta):
        sign = "-" if value < dt.timedelta(0) else ""
        value = abs(value)
        hours, rest = divmod(value.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        frac = f".{value.microseconds:06d}" if value.microseconds else ""
        return f"0-0 {sign}{value.days} {sign}{hours}:{minutes}:{seconds}{frac}"
    return str(value)


# --- JSON row values (insertAll) -> Python values for DuckDB -------------------------------


def json_value_for_duckdb(value: Any, field: dict[str, Any]) -> Any:
    """An insertAll JSON value -> a Python value DuckDB can bind for the field's column."""
    if value is None:
        return None
    if field.get("mode") == "REPEATED":
        if not isinstance(value, list):
            raise TypeMappingError(f"Field {field['name']!r} is REPEATED; got {type(value).__name__}, expected an array.")
        scalar = {**field, "mode": "NULLABLE"}
        return [json_value_for_duckdb(v, scalar) for v in value]
    type_name = field["type"]
    if type_name == "RECORD":
        if not isinstance(value, dict):
            raise TypeMappingError(f"Field {field['name']!r} is a RECORD; got {type(value).__name__}, expected an object.")
        return {sub["name"]: json_value_for_duckdb(value.get(sub["name"]), sub) for sub in field["fields"]}
    if type_name == "BYTES":
        return base64.b64decode(value)
    if type_name == "JSON":
        return value if isinstance(value, str) else json.dumps(value)
    if type_name == "TIMESTAMP" and isinstance(value, (int, float)) or (
        type_name == "TIMESTAMP" and isinstance(value, str) and _is_number(value)
    ):
        # insertAll accepts seconds since the epoch for TIMESTAMP.
        return (_EPOCH + dt.timedelta(seconds=float(value))).isoformat(sep=" ")
    if type_name == "TIMESTAMP":
        return _timestamp_text(value)
    if type_name == "BOOLEAN" and isinstance(value, str):
        lowered = value.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise TypeMappingError(f"Field {field['name']!r}: cannot convert value {value!r} to BOOLEAN.")
        return lowered in ("true", "1")
    if isinstance(value, (dict, list)):
        raise TypeMappingError(f"Field {field['name']!r} is {type_name}; got a JSON {type(value).__name__}.")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
