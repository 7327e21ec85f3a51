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


def json_array(node: exp.JSONExtractArray | exp.JSONValueArray, ctx: Ctx) -> exp.Expression | None:
    # JSON_QUERY_ARRAY / JSON_VALUE_ARRAY (and the legacy JSON_EXTRACT_ARRAY /
    # JSON_EXTRACT_STRING_ARRAY, parsed into the same two nodes) are NULL in BigQuery
    # where the path holds an object, a scalar or JSON null. sqlglot emits
    # CAST(x -> path AS JSON[]), which fails there ('Expected ARRAY, but got OBJECT').
    # TRY_CAST makes only the conversion lenient: malformed JSON text still fails in
    # the `->` beneath it, as it does in BigQuery (measured, DuckDB 2.0). Its cost is in
    # the noise: the parsed view's parts list over 1M responses, median of 5, 0.79 s
    # against CAST's 0.78 s.
    element = dtype("JSON") if isinstance(node, exp.JSONExtractArray) else dtype("VARCHAR")
    extract = exp.JSONExtract(this=node.this, expression=node.expression)
    array = exp.TryCast(this=extract, to=exp.DataType(this=exp.DType.ARRAY, expressions=[element], nested=True))
    return set_kind(array, "array")


def _is_json_query_array(node: exp.Expression) -> bool:
    """Whether `node` is json_array()'s form of JSON_QUERY_ARRAY (its shape survives clone())."""
    to = node.args.get("to") if isinstance(node, exp.TryCast) else None
    return (isinstance(to, exp.DataType) and to.this == exp.DType.ARRAY and len(to.expressions) == 1
            and to.expressions[0].this == exp.DType.JSON and isinstance(node.this, exp.JSONExtract))


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


# --- reading many values of one JSON -------------------------------------------------
#
# DuckDB keeps JSON as text and parses it again in every function that reads it: a
# view selecting eight JSON_VALUEs of one response parses each response eight times
# (about 0.5 s of CPU each per million 350-byte responses, on the 2-core dev box).
# json_extract_string(x, [paths]) parses once and returns one value per path; the
# rules below hand it every read of one column in a SELECT list.


def _json_read(item: exp.Expression) -> tuple[str, exp.Column, exp.JSONPath] | None:
    """('value'|'exists'|'missing', column, path) for the reads shared_json_reads merges."""
    node = item.this if isinstance(item, exp.Alias) else item
    kind = "value"
    if isinstance(node, exp.Not) and isinstance(node.this, exp.Is):
        node, kind = node.this, "exists"
    elif isinstance(node, exp.Is):
        kind = "missing"
    if kind != "value":
        if not isinstance(node.expression, exp.Null):
            return None
        node = node.this
        wanted: type = exp.JSONExtract
    else:
        wanted = exp.JSONExtractScalar
    if type(node) is not wanted or not isinstance(node.this, exp.Column) or not isinstance(node.expression, exp.JSONPath):
        return None
    if {k for k, v in node.args.items() if v} - {"this", "expression", "scalar_only"}:
        return None  # a variant with options (wrapper, quotes...)
    return kind, node.this, node.expression


def shared_json_reads(node: exp.Select, ctx: Ctx) -> exp.Expression | None:
    # Select items `JSON_VALUE(col, 'path') AS a` and `JSON_QUERY(col, 'path') IS [NOT]
    # NULL AS b` reading one column share one json_extract_string(col, [paths]) list,
    # written out in each item: DuckDB's common-subexpression pass computes it once
    # (measured: 8 reads of 1M responses, 4.0 s of CPU apart, 0.9 s shared).
    # json_extract_string differs from JSON_VALUE only where the value is an object or
    # an array (BigQuery: NULL; DuckDB: its JSON text), and such text starts with [ or {
    # and ends with ] or }; only values shaped like that are checked with json_type
    # (one more parse, for those rows only). A path that holds JSON null reads as NULL,
    # so existence is checked again where the text contains `null` at all.
    # Only aliased items: the rewritten expression would otherwise name the column.
    # GROUP BY selects are left alone (their items must match the GROUP BY text).
    if node.args.get("group"):
        return None
    groups: dict[tuple[str, ...], list[tuple[exp.Alias, str, exp.Column, exp.JSONPath]]] = {}
    for item in node.expressions:
        read = _json_read(item) if isinstance(item, exp.Alias) else None
        if read is not None:
            kind, column, path = read
            key = tuple(part.name.lower() for part in column.parts)  # names are case-insensitive in both
            groups.setdefault(key, []).append((item, kind, column, path))
    for reads in groups.values():
        if len(reads) < 2:
            continue
        paths: dict[str, exp.JSONPath] = {}
        for _, _, _, path in reads:
            paths.setdefault(path.sql(dialect="duckdb"), path)
        order = list(paths)
        column = reads[0][2]
        values = fn("json_extract_string", clone(column), exp.Array(expressions=[clone(p) for p in paths.values()]))
        for item, kind, _, path in reads:
            position = exp.Literal.number(order.index(path.sql(dialect="duckdb")) + 1)
            if kind == "value":
                item.set("this", set_kind(_scalar_or_null(values, position, column, path), "string"))
            else:
                item.set("this", set_kind(_exists(values, position, column, path, kind == "exists"), "bool"))
    return None


def _scalar_or_null(values: exp.Expression, position: exp.Literal, column: exp.Column,
                    path: exp.JSONPath) -> exp.Expression:
    # values[CASE WHEN <looks like an object or array> AND json_type(...) is one THEN NULL
    # ELSE i END]: the list is read outside any CASE branch, where DuckDB shares it.
    value = fn("list_extract", clone(values), clone(position))
    shaped = exp.Paren(this=_or(exp.Like(this=value, expression=lit("[%]")),
                                exp.Like(this=clone(value), expression=lit("{%}"))))
    container = exp.In(this=fn("json_type", clone(column), clone(path)), expressions=[lit("OBJECT"), lit("ARRAY")])
    index = case([(_and(shaped, container), exp.Null())], clone(position))
    return fn("list_extract", clone(values), index)


def _exists(values: exp.Expression, position: exp.Literal, column: exp.Column, path: exp.JSONPath,
            found: bool) -> exp.Expression:
    # CASE WHEN <value> IS NOT NULL OR <JSON null there> THEN found ELSE NOT found END. Only
    # in a CASE condition does DuckDB stop AND/OR early; elsewhere it evaluates both sides
    # on every row, json_exists included (measured: +0.5 s of CPU per 1M rows).
    # A JSON null is spelled `null`, so a text without 'ull' holds none. 'ull', not 'null':
    # DuckDB's contains() scans for the needle's first byte, and 'n' is everywhere in a
    # response ("candidates", "content", "finishReason"...): 1M 360-byte responses, 1
    # thread, 0.17 s of CPU for 'null', 0.09 s for 'ull'.
    value = fn("list_extract", clone(values), clone(position))
    present = _or(
        exp.Not(this=exp.Is(this=value, expression=exp.Null())),
        _and(fn("contains", clone(column), lit("ull")), fn("json_exists", clone(column), clone(path))),
    )
    return case([(present, exp.Boolean(this=found))], exp.Boolean(this=not found))


def json_array_string_agg(node: exp.Subquery, ctx: Ctx) -> exp.Expression | None:
    # (SELECT STRING_AGG(f(e), sep [ORDER BY pos]) FROM UNNEST(JSON_QUERY_ARRAY(...)) AS e
    # [WITH OFFSET AS pos] [WHERE g(e)]) joins the texts of a JSON array's elements. DuckDB
    # plans a correlated subquery as a join over every row of the outer query, even rows
    # whose array is NULL: about 0.5 s of CPU per million rows, taken or not. The same
    # answer from list functions costs nothing where the array is NULL:
    # list_aggregate(list_transform(list_filter(arr, g), f), 'string_agg', sep), which
    # keeps the array's order and, as STRING_AGG does, skips NULLs and gives NULL for none.
    if isinstance(node.parent, (exp.From, exp.Join)) or node.args.get("alias") is not None:
        return None
    select = node.this
    if not isinstance(select, exp.Select) or len(select.expressions) != 1:
        return None
    if any(select.args.get(k) for k in ("joins", "group", "having", "order", "limit", "offset", "qualify",
                                       "distinct", "with_", "with", "windows", "laterals")):
        return None
    source = _unnest_source(select.args.get("from_") or select.args.get("from"))
    if source is None:
        return None
    array, element, offset = source
    agg = select.expressions[0]
    if not isinstance(agg, exp.GroupConcat) or set(k for k, v in agg.args.items() if v) - {"this", "separator"}:
        return None
    value = agg.this
    if isinstance(value, exp.Order):
        keys = value.expressions
        if len(keys) != 1 or keys[0].args.get("desc") or offset is None \
                or not (isinstance(keys[0].this, exp.Column) and keys[0].this.name == offset and not keys[0].this.table):
            return None
        value = value.this
    separator = agg.args.get("separator")
    if separator is None:
        separator = lit(",")  # BigQuery's default delimiter
    if not (isinstance(separator, exp.Literal) and separator.is_string) or isinstance(value, exp.Distinct):
        return None
    where = select.args.get("where")
    condition = where.this if where is not None else None
    parts = [value] + ([condition] if condition is not None else [])
    for part in parts:
        # A lambda body holds no subquery or aggregate; the offset has no counterpart once
        # the list is filtered; `e.field` is not how a lambda reads its element.
        if part.find(exp.Select, exp.Subquery, exp.AggFunc):
            return None
        for column in part.find_all(exp.Column):
            if (offset is not None and column.name == offset and not column.table) or column.table == element.name:
                return None
    if condition is not None:
        array = fn("list_filter", array, exp.Lambda(this=condition, expressions=[element.copy()]))
    texts = fn("list_transform", array, exp.Lambda(this=value, expressions=[element.copy()]))
    return set_kind(fn("list_aggregate", texts, lit("string_agg"), separator), "string")


def _unnest_source(from_: exp.Expression | None) -> tuple[exp.Expression, exp.Identifier, str | None] | None:
    """(array, element name, offset name) of FROM UNNEST(JSON_QUERY_ARRAY(...)) AS e [WITH OFFSET AS o].

    WITH OFFSET arrives already rewritten by compile_duckdb.unnest_offset into
    (SELECT v AS e, o - 1 AS pos FROM UNNEST(...) WITH ORDINALITY AS u(v, o)).
    """
    if not isinstance(from_, exp.From):
        return None
    source, offset = from_.this, None
    if isinstance(source, exp.Subquery) and isinstance(source.this, exp.Select):
        inner = source.this
        unnest = (inner.args.get("from_") or inner.args.get("from") or exp.From()).this
        if not isinstance(unnest, exp.Unnest) or not unnest.args.get("offset") or len(inner.expressions) != 2:
            return None
        value_col, offset_col = inner.expressions
        alias = unnest.args.get("alias")
        names = [c.name for c in alias.columns] if alias is not None else []
        if not (isinstance(value_col, exp.Alias) and isinstance(value_col.this, exp.Column) and names == [value_col.this.name]
                and isinstance(offset_col, exp.Alias) and isinstance(offset_col.this, exp.Sub)):
            return None
        element, offset = value_col.args["alias"], offset_col.alias
    elif isinstance(source, exp.Unnest) and not source.args.get("offset"):
        unnest = source
        alias = unnest.args.get("alias")
        if alias is None or len(alias.columns) != 1:
            return None
        element = alias.columns[0]
    else:
        return None
    if len(unnest.expressions) != 1 or not _is_json_query_array(unnest.expressions[0]):
        return None
    return unnest.expressions[0], element, offset


JSON_RULES = [
    ((exp.JSONKeysAtDepth,), json_keys),
    ((exp.Bracket,), subscript),
    ((exp.ParseJSON,), json_literal_path),
    ((exp.JSONType,), json_type),
    ((exp.Int64, exp.Float64, exp.JSONBool, exp.String), json_converter),
    ((exp.LaxInt64, exp.LaxFloat64, exp.LaxBool, exp.LaxString), lax_converter),
    ((exp.JSONExtractArray, exp.JSONValueArray), json_array),
    ((exp.JSONFormat,), to_json_string),
    ((exp.JSONObject,), json_object_key_order),
    ((exp.Select,), shared_json_reads),
    ((exp.Subquery,), json_array_string_agg),
]
