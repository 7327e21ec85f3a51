"""Compile stage, DuckDB half: JSON and subscript rules (see compile_duckdb.py).

These matter most to bqbatch: request JSON is built with TO_JSON_STRING/JSON_OBJECT,
and the parsed view reads responses with subscripts (`response.candidates[0]`) and
JSON converters (INT64, STRING). sqlglot's DuckDB output is wrong for several of
them; each rule says how, measured on DuckDB 2.0.
"""

from __future__ import annotations

from sqlglot import exp

from bqbatch_sql.compile_support import (
    Ctx,
    _and,
    _or,
    clone,
    dtype,
    case,
    fn,
    int_literal,
    kind_of,
    lit,
    set_kind,
    typeof_in,
)


# --- subscripts ----------------------------------------------------------------------


def subscript(node: exp.Bracket, ctx: Ctx) -> exp.Expression | None:
    # BigQuery subscripts are 0-based for JSON (`json[0]`) and for arrays (`arr[0]`,
    # `arr[OFFSET(0)]`; ORDINAL is 1-based). DuckDB lists are 1-based, DuckDB JSON is
    # 0-based. sqlglot shifts every integer subscript whose base type it does not know
    # (so PARSE_JSON(r).candidates[0] reads element 1) and shifts none whose index is a
    # column (so arr[OFFSET(i)] reads element i-1). Out of range, BigQuery raises for
    # OFFSET/ORDINAL/bare arrays, returns NULL for SAFE_ and for JSON; DuckDB returns
    # NULL, and counts negative indexes from the end.
    if node.args.get("json_access") or len(node.expressions) != 1:
        return None
    base, index = node.this, node.expressions[0]
    offset = node.args.get("offset")
    safe = bool(node.args.get("safe"))
    base_kind, index_kind = kind_of(base), kind_of(index)
    if base_kind is None and isinstance(base, exp.JSONExtract):
        # JSON_QUERY gives JSON or STRING, and a STRING cannot be subscripted in
        # BigQuery: a subscripted JSON_QUERY is JSON.
        base_kind = "json"

    if offset is None and index_kind == "string":
        new_index: exp.Expression | None = index  # a JSON key: same in both
    elif offset is not None or base_kind in ("array", "struct"):
        new_index = _array_index(node, base, index, int(offset or 0), safe, ctx)
    elif base_kind == "json":
        new_index = _json_index(index, index_kind)
    else:
        # The base is a column or path of unknown type: JSON or ARRAY. Let DuckDB's
        # typeof() (folded at bind time) pick the right index arithmetic.
        json_index = _json_index(index, index_kind)
        array_index = _array_index(node, base, index, 0, False, ctx, reject=False)
        new_index = case(
            [(typeof_in(base, "JSON"), json_index if json_index is not None else exp.Null())],
            array_index if array_index is not None else exp.Null(),
        )
    # A NULL index keeps the element's type (BigQuery's answer is a typed NULL too).
    node.set("expressions", [new_index if new_index is not None else exp.Null()])
    node.set("offset", None)
    node.set("safe", None)
    node.set("json_access", True)  # tells sqlglot's generator not to shift the index again
    return set_kind(node, "json") if base_kind == "json" else node


def _json_index(index: exp.Expression, index_kind: str | None) -> exp.Expression | None:
    value = int_literal(index)
    if value is not None:
        return index if value >= 0 else None  # BigQuery: NULL; DuckDB: from the end
    if index_kind == "int":
        return case([(exp.GTE(this=clone(index), expression=exp.Literal.number(0)), index)], None)
    return index


def _array_index(
    node: exp.Bracket,
    base: exp.Expression,
    index: exp.Expression,
    offset: int,
    safe: bool,
    ctx: Ctx,
    *,
    reject: bool = True,
) -> exp.Expression | None:
    shift = 1 - offset  # BigQuery position -> DuckDB position
    value = int_literal(index)
    if value is not None:
        if value < offset:
            if safe:
                return None
            message = f"Array index {value} is out of bounds"
            if reject:
                ctx.reject(node, f"array subscript [{value}] (always out of bounds in BigQuery)",
                           "Use an index of 0 or more with OFFSET (1 or more with ORDINAL), or SAFE_OFFSET for NULL.")
            return fn("error", lit(message))
        position = exp.Literal.number(value + shift)
        if safe:
            return position
        too_far = exp.GT(this=clone(position), expression=fn("len", clone(base)))
        return case([(too_far, fn("error", lit(f"Array index {value} is out of bounds")))], position)
    position = exp.Add(this=clone(index), expression=exp.Literal.number(shift)) if shift else clone(index)
    below = exp.LT(this=clone(index), expression=exp.Literal.number(offset))
    if safe:
        return case([(below, exp.Null())], position)
    length = fn("len", clone(base))
    above = exp.GTE(
        this=clone(index),
        expression=exp.Add(this=length, expression=exp.Literal.number(offset)) if offset else length,
    )
    message = exp.DPipe(
        this=exp.DPipe(this=lit("Array index "), expression=exp.Cast(this=index, to=dtype("VARCHAR"))),
        expression=lit(" is out of bounds"),
    )
    return case([(_or(below, above), fn("error", message))], position)


def json_literal_path(node: exp.ParseJSON, ctx: Ctx) -> exp.Expression | None:
    # sqlglot reads JSON '{"a":1}'.a as JSON('{"a":1}'.a): the path ends up inside the
    # literal. Parenthesised, it parses right.
    if node.args.get("is_literal") and isinstance(node.this, (exp.Dot, exp.Bracket)):
        ctx.reject(node, "a field access directly on a JSON literal (JSON '...'.field)",
                   "Put the literal in parentheses: (JSON '{\"a\": 1}').a")
    return None


# --- conversions -----------------------------------------------------------------------

_JSON_NUMBER_TYPES = ("BIGINT", "UBIGINT", "DOUBLE", "HUGEINT")


def _as_json(value: exp.Expression) -> exp.Expression:
    return clone(value) if kind_of(value) == "json" else exp.Cast(this=clone(value), to=dtype("JSON"))


def json_type(node: exp.JSONType, ctx: Ctx) -> exp.Expression | None:
    # BigQuery JSON_TYPE says 'number', 'string', 'boolean', 'null', 'array', 'object';
    # DuckDB's json_type says 'UBIGINT', 'VARCHAR', 'BOOLEAN', ... Map the names.
    probe = fn("json_type", _as_json(node.this))
    names = [("VARCHAR", "string"), ("BOOLEAN", "boolean"), ("NULL", "null"), ("ARRAY", "array"), ("OBJECT", "object")]
    names += [(t, "number") for t in _JSON_NUMBER_TYPES]
    return set_kind(exp.Case(this=probe, ifs=[exp.If(this=lit(d), true=lit(b)) for d, b in names]), "string")


def json_converter(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    # INT64/FLOAT64/BOOL/STRING(json) are strict in BigQuery: the JSON value must have
    # that type, else an error. sqlglot emits CAST(json AS ...) (STRING(JSON '"a"')
    # gives '"a"' with quotes, INT64(JSON '"10"') gives 10), FLOAT64() and BOOL() do not
    # exist in DuckDB.
    value = node.this
    if isinstance(node, exp.String):
        if node.args.get("zone") is not None or kind_of(value) not in ("json", None):
            return None  # STRING(timestamp [, zone]): not a JSON converter
    j = _as_json(value)
    probe = fn("json_type", clone(j))
    double = dtype("DOUBLE")
    if isinstance(node, exp.Int64):
        as_double = exp.Cast(this=clone(j), to=double)
        integral = _and(
            exp.EQ(this=clone(probe), expression=lit("DOUBLE")),
            exp.EQ(this=as_double, expression=exp.Floor(this=clone(as_double))),
        )
        ok = [
            (exp.In(this=probe, expressions=[lit("BIGINT"), lit("UBIGINT")]), exp.Cast(this=clone(j), to=dtype("BIGINT"))),
            (integral, exp.Cast(this=clone(as_double), to=dtype("BIGINT"))),
        ]
        kind, message = "int", "The provided JSON input is not an integer"
    elif isinstance(node, exp.Float64):
        ok = [(exp.In(this=probe, expressions=[lit(t) for t in _JSON_NUMBER_TYPES]), exp.Cast(this=clone(j), to=double))]
        kind, message = "float", "The provided JSON input is not a number"
    elif isinstance(node, exp.JSONBool):
        ok = [(exp.EQ(this=probe, expression=lit("BOOLEAN")), exp.Cast(this=clone(j), to=dtype("BOOLEAN")))]
        kind, message = "bool", "The provided JSON input is not a boolean"
    else:
        ok = [(exp.EQ(this=probe, expression=lit("VARCHAR")), fn("json_extract_string", clone(j), lit("$")))]
        kind, message = "string", "The provided JSON input is not a string"
    is_null = exp.Is(this=clone(value), expression=exp.Null())
    converted = case([(is_null, exp.Null()), *ok], fn("error", lit(message)))
    if isinstance(node, exp.String) and kind_of(value) is None:
        # STRING() of a TIMESTAMP is also valid BigQuery; keep that meaning for non-JSON.
        converted = case([(typeof_in(value, "JSON"), converted)], exp.Cast(this=value, to=dtype("VARCHAR")))
    return set_kind(converted, kind)


def lax_converter(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    # LAX_* coerce between JSON types with rules of their own (rounding, 'true'/'1'...);
    # not reproduced, so refused rather than approximated.
    name = {exp.LaxInt64: "INT64", exp.LaxFloat64: "FLOAT64", exp.LaxBool: "BOOL", exp.LaxString: "STRING"}[type(node)]
    ctx.reject(node, f"LAX_{name}()",
               f"Use the strict converter {name}(json) when the JSON type is known, or "
               f"SAFE_CAST(JSON_VALUE(json) AS {name}) for text that may not parse.")
    return None


def to_json_string(node: exp.JSONFormat, ctx: Ctx) -> exp.Expression | None:
    # TO_JSON_STRING(NULL) is the text 'null' in BigQuery, SQL NULL in DuckDB (and
    # TO_JSON(NULL) is JSON null). sqlglot also turns TO_JSON into text, and passes
    # pretty_print to DuckDB's to_json, which takes one argument.
    # Known, not fixed: inside STRUCTs/ARRAYs DuckDB writes TIMESTAMP as
    # "2024-01-01 00:00:00+00" (BigQuery "2024-01-01T00:00:00Z"), BYTES as text
    # (BigQuery base64), FLOAT64 2.0 as 2.0 and NUMERIC with trailing zeros.
    options = node.args.get("options")
    if options is not None and not (isinstance(options, exp.Boolean) and not options.this):
        ctx.reject(node, "TO_JSON_STRING(value, pretty_print)",
                   "Drop the pretty_print argument; DuckDB writes compact JSON only.")
    value = fn("to_json", node.this)
    if node.args.get("to_json"):
        return set_kind(exp.Coalesce(this=value, expressions=[exp.Cast(this=lit("null"), to=dtype("JSON"))]), "json")
    text = exp.Cast(this=value, to=dtype("VARCHAR"))
    return set_kind(exp.Coalesce(this=text, expressions=[lit("null")]), "string")


def json_object_key_order(node: exp.JSONObject, ctx: Ctx) -> exp.Expression | None:
    # BigQuery JSON values keep object keys sorted (JSON_OBJECT('foo', 10, 'bar', TRUE)
    # is {"bar":true,"foo":10}); DuckDB keeps the order written. With literal keys the
    # pairs can be sorted here, so TO_JSON_STRING gives the same text on both.
    pairs = node.expressions
    if not pairs or not all(
        isinstance(p, exp.JSONKeyValue) and isinstance(p.this, exp.Literal) and p.this.is_string for p in pairs
    ):
        return None
    ordered = sorted(pairs, key=lambda p: p.this.this)
    if ordered != pairs:
        node.set("expressions", ordered)
    return None


def json_keys(node: exp.JSONKeysAtDepth, ctx: Ctx) -> exp.Expression | None:
    # BigQuery JSON_KEYS(json, 1) lists the top-level keys, as DuckDB's json_keys does;
    # sqlglot emits a function DuckDB does not have. Deeper (or unbounded) depths list
    # dotted paths of nested keys, which DuckDB has no one function for.
    depth = node.expression
    if depth is not None and isinstance(depth, exp.Literal) and not depth.is_string and depth.this == "1":
        return fn("list_sort", fn("json_keys", _as_json(node.this)))  # BigQuery sorts JSON keys
    ctx.reject(node, "JSON_KEYS without a depth of 1",
               "pass the depth: JSON_KEYS(json_expr, 1) for the top-level keys.")
    return None


JSON_RULES = [
    ((exp.JSONKeysAtDepth,), json_keys),
    ((exp.Bracket,), subscript),
    ((exp.ParseJSON,), json_literal_path),
    ((exp.JSONType,), json_type),
    ((exp.Int64, exp.Float64, exp.JSONBool, exp.String), json_converter),
    ((exp.LaxInt64, exp.LaxFloat64, exp.LaxBool, exp.LaxString), lax_converter),
    ((exp.JSONFormat,), to_json_string),
    ((exp.JSONObject,), json_object_key_order),
]
