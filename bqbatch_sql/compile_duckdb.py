"""Compile stage, DuckDB half: make DuckDB compute what BigQuery computes.

`bqbatch_sql.compile.to_dialect(tree, "duckdb")` hands a copy of the BigQuery tree
to `rewrite()`. sqlglot's own BigQuery -> DuckDB generation is right for most
constructs; the rules below cover the ones measured to give a *different answer*
on DuckDB (sqlglot 30.30, DuckDB 2.0). Each rule either rewrites its node into
DuckDB that gives BigQuery's documented result, or raises a CompileError that
names the construct and the fix. Rules run in one bottom-up pass over the tree,
so a rule sees its children already rewritten. Numbers, casts, strings, arrays and
DDL are here; JSON and subscripts in compile_duckdb_json, dates and times in
compile_duckdb_time.

Where BigQuery's answer depends on a type the compiler cannot see (a column of
unknown type), the rewrite asks DuckDB: `typeof(x)` is folded to a constant when
DuckDB binds the query, so a `CASE WHEN typeof(x) = 'JSON' ...` costs nothing at
run time and picks the right semantics per column type.

The rewrites assume the DuckDB settings in `DUCKDB_SETTINGS` (UTC, and errors
instead of Infinity on division by zero, as BigQuery does); adapters apply them
with `apply_duckdb_settings(connection)`.
"""

from __future__ import annotations

import re
from typing import Callable

from sqlglot import exp

from bqbatch_sql.compile_duckdb_json import JSON_RULES
from bqbatch_sql.compile_duckdb_time import TIME_RULES
from bqbatch_sql.compile_support import (
    Ctx,
    _and,
    _or,
    case,
    cast_target,
    clone,
    dtype,
    fn,
    int_literal,
    kind_of,
    lit,
    set_kind,
    typeof_in,
)

# Settings a DuckDB database must run with for the rewrites to be exact: BigQuery
# evaluates TIMESTAMP <-> civil time in UTC, and raises "division by zero" (also for
# floats, and for MOD) where DuckDB's IEEE default returns Infinity/NaN.
DUCKDB_SETTINGS: dict[str, str] = {"TimeZone": "UTC", "ieee_floating_point_ops": "false"}


def apply_duckdb_settings(connection) -> None:  # duckdb.DuckDBPyConnection; duckdb not imported here
    """SET GLOBAL each of DUCKDB_SETTINGS on `connection`'s database.

    GLOBAL, not the default session scope: connection.cursor() opens a new session,
    and a plain SET on the parent is not seen by cursors (measured, DuckDB 2.0).
    """
    for name, value in DUCKDB_SETTINGS.items():
        connection.execute(f"SET GLOBAL {name} = '{value}'")

Rule = Callable[[exp.Expression, Ctx], "exp.Expression | None"]


# --- numbers and casts ------------------------------------------------------------


def float_literal(node: exp.Literal, ctx: Ctx) -> exp.Expression | None:
    # BigQuery reads `2.5` as FLOAT64; DuckDB reads it as DECIMAL(2,1). The answers
    # differ: ROUND(2.675, 2), 0.1 + 0.2, CAST(2.0 AS STRING) ('2' vs '2.0').
    if node.is_string or isinstance(node.parent, (exp.DataTypeParam, exp.DataType, exp.TableSample)):
        return None  # type parameters and sample sizes are syntax, not FLOAT64 values
    text = node.this
    if "." not in text or "e" in text.lower():
        return None
    return set_kind(exp.Cast(this=node, to=dtype("DOUBLE")), "float")


def decimal_precision(node: exp.DataType, ctx: Ctx) -> exp.Expression | None:
    # BigQuery NUMERIC is DECIMAL(38, 9); DuckDB's bare DECIMAL is DECIMAL(18, 3), so
    # CAST('1.123456789' AS NUMERIC) would silently round to 1.123.
    if node.this == exp.DType.BIGDECIMAL:
        ctx.reject(
            node,
            "BIGNUMERIC",
            "DuckDB has no 76-digit decimal. Use NUMERIC (38 digits, 9 after the point) "
            "or FLOAT64 for this column.",
        )
    if node.this == exp.DType.DECIMAL and not node.expressions:
        return dtype("DECIMAL(38, 9)")
    return None


_NUMBER_AS_TEXT = r"(\.[0-9]*[1-9])0+$|\.0+$"
# STRING -> INT64 in BigQuery: a whole number in decimal or 0x hex, signed, with ASCII
# whitespace around it ('0x123' is 291, '-0x123' is -291); anything else is 'Bad int64
# value'. DuckDB's VARCHAR -> BIGINT takes more ('1.5' -> 2, '1_000', '0b11', '1e3')
# and less: no sign before 0x, no whitespace around 0x (' 0x1F ' and '-0x1F' -> NULL).
_SPACE = r"[\t\n\v\f\r ]*"
_DECIMAL_TEXT = rf"{_SPACE}[+-]?[0-9]+{_SPACE}"
_HEX_TEXT = rf"{_SPACE}[+-]?0[xX][0-9a-fA-F]+{_SPACE}"
_INT64_TEXT = rf"{_SPACE}[+-]?(0[xX][0-9a-fA-F]+|[0-9]+){_SPACE}"


def cast_to_string(node: exp.Cast, ctx: Ctx) -> exp.Expression | None:
    # BigQuery prints FLOAT64 2.0 as '2' and NUMERIC 1.50 as '1.5'; DuckDB prints
    # '2.0' and '1.500000000'. Only numbers are affected; the typeof() test folds away.
    if cast_target(node) not in (exp.DType.TEXT, exp.DType.VARCHAR):
        return None
    value = node.this
    kind = kind_of(value)
    if kind not in (None, "float", "decimal"):
        return None
    text = clone(node)
    trimmed = fn("regexp_replace", clone(node), lit(_NUMBER_AS_TEXT), lit(r"\1"))
    if kind in ("float", "decimal"):
        return set_kind(trimmed, "string")
    is_number = _or(
        typeof_in(value, "DOUBLE", "FLOAT"),
        exp.Like(this=fn("typeof", clone(value)), expression=lit("DECIMAL%")),
    )
    return set_kind(case([(is_number, trimmed)], text), "string")


def cast_to_int64(node: exp.Cast, ctx: Ctx) -> exp.Expression | None:
    # CAST(2.5 AS INT64) is 3 in BigQuery (half away from zero), 2 in DuckDB (half to
    # even); CAST('1.5' AS INT64) is an error in BigQuery ('Bad int64 value'), 2 in
    # DuckDB; SAFE_CAST gives NULL for it in BigQuery. Text: see _INT64_TEXT.
    if cast_target(node) != exp.DType.BIGINT:
        return None
    value = node.this
    kind = kind_of(value)
    if kind not in (None, "float", "string"):
        return None  # INT64, BOOL and NUMERIC convert alike; other types cannot be INT64
    safe = isinstance(node, exp.TryCast) or bool(node.args.get("safe"))
    if isinstance(value, exp.Literal) and value.is_string:
        return _int64_from_literal(node, value.this, safe, ctx)
    if kind == "float":
        return set_kind(_rounded_int64(value, kind, safe), "int")
    if kind == "string":
        return set_kind(_int64_from_text(value, safe), "int")
    return set_kind(
        case(
            [
                (typeof_in(value, "DOUBLE", "FLOAT"), _rounded_int64(value, kind, safe)),
                (typeof_in(value, "VARCHAR"), _int64_from_text(exp.Cast(this=clone(value), to=dtype("VARCHAR")), safe)),
            ],
            (exp.TryCast if safe else exp.Cast)(this=clone(value), to=dtype("BIGINT")),
        ),
        "int",
    )


def _rounded_int64(value: exp.Expression, kind: str | None, safe: bool) -> exp.Expression:
    as_double = clone(value) if kind == "float" else exp.Cast(this=clone(value), to=dtype("DOUBLE"))
    return (exp.TryCast if safe else exp.Cast)(this=exp.Round(this=as_double), to=dtype("BIGINT"))


def _int64_from_text(text: exp.Expression, safe: bool) -> exp.Expression:
    # CASE WHEN <digits only> THEN TRY_CAST(text) WHEN <decimal> THEN TRY_CAST(text)
    # WHEN <hex> THEN sign * hex digits END: the text is first read in the first WHEN,
    # which DuckDB's common-subexpression pass lifts below the CASE, so an operand
    # like JSON_VALUE(x, '$.a') is parsed once per row (EXPLAIN shows one
    # `x ->> '$.a'`; binding it in a lambda instead was slower: 1M 1.5 KB documents,
    # 1 thread, 1.30 s against 1.23 s, one parse alone 0.92 s).
    # The whole rule costs what a bare TRY_CAST does there: 1M 350-byte documents,
    # median of 3, 0.37 s against 0.36 s.
    # Hex goes through HUGEINT, which holds 0x8000000000000000 for '-0x8000000000000000'
    # (INT64's minimum); leading zeros are dropped so that HUGEINT's 32 digits suffice.
    def failure() -> exp.Expression:
        if safe:
            return exp.Null()
        message = exp.DPipe(this=lit("Bad int64 value: "), expression=clone(text))
        return fn("error", message)

    def checked(number: exp.Expression) -> exp.Expression:
        # Out of INT64's range is 'Bad int64 value' too (DuckDB: 'Could not convert').
        as_int = exp.TryCast(this=number, to=dtype("BIGINT"))
        return as_int if safe else exp.Coalesce(this=as_int, expressions=[failure()])

    digits = fn("regexp_extract", clone(text), lit("0[xX]0*([0-9a-fA-F]+)"), exp.Literal.number(1))
    magnitude = exp.TryCast(this=exp.DPipe(this=lit("0x"), expression=digits), to=exp.DataType(this=exp.DType.INT128))
    sign = case([(fn("contains", clone(text), lit("-")), exp.Literal.number(-1))], exp.Literal.number(1))
    ifs = [
        (_digits_only(text), checked(clone(text))),
        (fn("regexp_full_match", clone(text), lit(_DECIMAL_TEXT)), checked(clone(text))),
        (fn("regexp_full_match", clone(text), lit(_HEX_TEXT)), checked(exp.Mul(this=magnitude, expression=sign))),
    ]
    if not safe:
        ifs.append((exp.Not(this=exp.Is(this=clone(text), expression=exp.Null())), failure()))
    return case(ifs, None)


def _digits_only(text: exp.Expression) -> exp.Expression:
    # The common text, a token count read from JSON, is ASCII digits only, and for
    # those DuckDB's VARCHAR -> BIGINT gives BigQuery's answer: '007' is 7, past INT64's
    # range is NULL ('Bad int64 value' through checked()), and so is '' (CAST fails on
    # it in BigQuery too). Such texts skip the two regexes, which see only the rest.
    # NULL GLOB ... is NULL: a NULL text falls through to the CASE's end, NULL.
    # GLOB is the cheapest test found, 1M 1-4 digit texts, 1 thread, best of 5, the test
    # alone: GLOB 0.03 s of CPU, regexp_full_match(x, '[0-9]+') 0.05 s, ltrim(x,
    # '0123456789') = '' 0.29 s, translate(x, '0123456789', '') = '' 0.26 s. Whole rule,
    # 1M x 3 token texts: 0.16 -> 0.11 s (DuckDB's bare TRY_CAST: 0.06 s). The test
    # CAST(TRY_CAST(x AS BIGINT) AS VARCHAR) = x costs about the same but leans on how
    # DuckDB prints numbers.
    return exp.Not(this=exp.Glob(this=clone(text), expression=lit("*[!0-9]*")))


def _int64_from_literal(node: exp.Cast, text: str, safe: bool, ctx: Ctx) -> exp.Expression:
    # A literal is checked now, with BigQuery's rule, instead of at run time.
    m = re.fullmatch(_INT64_TEXT, text)
    value = None
    if m:
        digits = text.strip("\t\n\v\f\r ").lstrip("+-")
        value = int(digits, 16 if digits[:2].lower() == "0x" else 10)
        value = -value if text.strip("\t\n\v\f\r ").startswith("-") else value
    if value is None or not -(2**63) <= value < 2**63:
        if safe:
            return exp.Cast(this=exp.Null(), to=dtype("BIGINT"))
        ctx.reject(node, f"CAST('{text}' AS INT64) (BigQuery fails with 'Bad int64 value: {text}')",
                   "Cast a whole number written in decimal or 0x hex, or use SAFE_CAST for NULL.")
    return set_kind(exp.Literal.number(value), "int")


def cast_to_bool(node: exp.Cast, ctx: Ctx) -> exp.Expression | None:
    # BigQuery accepts only 'true'/'false' (any case) as BOOL text; DuckDB also takes
    # 't', '1', 'yes'... so CAST('t' AS BOOL) must fail (SAFE_CAST: NULL), not be TRUE.
    if cast_target(node) != exp.DType.BOOLEAN:
        return None
    value = node.this
    kind = kind_of(value)
    if kind not in (None, "string"):
        return None
    safe = isinstance(node, exp.TryCast) or bool(node.args.get("safe"))
    if isinstance(value, exp.Literal):
        word = value.this.lower()
        if word in ("true", "false"):
            return set_kind(exp.Boolean(this=word == "true"), "bool")
        if safe:
            return exp.Cast(this=exp.Null(), to=dtype("BOOLEAN"))
        ctx.reject(node, f"CAST('{value.this}' AS BOOL) (BigQuery fails with 'Bad bool value')",
                   "BigQuery reads only 'true' and 'false' as BOOL; use SAFE_CAST for NULL.")
    text = exp.Cast(this=clone(value), to=dtype("VARCHAR"))
    bad = exp.Not(this=exp.In(this=exp.Lower(this=text), expressions=[lit("true"), lit("false")]))
    if kind is None:
        bad = _and(typeof_in(value, "VARCHAR"), bad)
    failure = exp.Null() if safe else fn("error", exp.DPipe(this=lit("Bad bool value: "), expression=clone(text)))
    plain = (exp.TryCast if safe else exp.Cast)(this=clone(value), to=dtype("BOOLEAN"))
    return set_kind(case([(bad, failure)], plain), "bool")


def array_concat_nulls(node: exp.ArrayConcat, ctx: Ctx) -> exp.Expression | None:
    # ARRAY_CONCAT is NULL if any argument is NULL; DuckDB's list_concat skips NULLs
    # (ARRAY_CONCAT(NULL, [1]) would be [1]). Array literals are never NULL.
    args = [node.this, *node.expressions]
    nullable = [a for a in args if a is not None and not isinstance(a, exp.Array)]
    if not nullable:
        return None
    tests = [exp.Is(this=clone(a), expression=exp.Null()) for a in nullable]
    any_null = tests[0]
    for test in tests[1:]:
        any_null = _or(any_null, test)
    return set_kind(case([(any_null, exp.Null())], node), "array")


def ieee_divide(node: exp.Anonymous, ctx: Ctx) -> exp.Expression | None:
    # IEEE_DIVIDE does not exist in DuckDB; with the session's non-IEEE division
    # (see DUCKDB_SETTINGS) x/0 is an error, so spell out BigQuery's +-inf/NaN.
    if node.name.upper() != "IEEE_DIVIDE" or len(node.expressions) != 2:
        return None
    x, y = node.expressions
    double = dtype("DOUBLE")

    def const(text: str) -> exp.Expression:
        return exp.Cast(this=lit(text), to=clone(double))

    by_zero = case(
        [
            (fn("isnan", exp.Cast(this=clone(x), to=clone(double))), const("nan")),
            (exp.GT(this=clone(x), expression=exp.Literal.number(0)), const("inf")),
            (exp.LT(this=clone(x), expression=exp.Literal.number(0)), const("-inf")),
        ],
        const("nan"),
    )
    quotient = exp.Div(this=exp.Cast(this=x, to=clone(double)), expression=clone(y))
    return set_kind(case([(exp.EQ(this=y, expression=exp.Literal.number(0)), by_zero)], quotient), "float")


def safe_arithmetic(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    # SAFE_ADD/SUBTRACT/MULTIPLY/NEGATE are missing in DuckDB; TRY() turns its
    # overflow error into NULL, which is what the SAFE_ variants return.
    ops: dict[type, Callable[[], exp.Expression]] = {
        exp.SafeAdd: lambda: exp.Add(this=node.this, expression=node.expression),
        exp.SafeSubtract: lambda: exp.Sub(this=node.this, expression=node.expression),
        exp.SafeMultiply: lambda: exp.Mul(this=node.this, expression=node.expression),
        exp.SafeNegate: lambda: exp.Neg(this=exp.Paren(this=node.this)),
    }
    build = ops.get(type(node))
    return fn("TRY", build()) if build else None


def safe_prefix(node: exp.SafeFunc, ctx: Ctx) -> exp.Expression | None:
    # `SAFE.f(x)` returns NULL where f would raise; DuckDB has no SAFE. prefix but
    # TRY(expr) has that meaning (sqlglot emits `SAFE.JSON(x)`, which fails to bind).
    return fn("TRY", node.this)


# --- strings -----------------------------------------------------------------------

_FORMAT_SPEC = re.compile(r"%(?P<flags>[-+ #0']*)(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d+))?(?P<conv>.?)")
_PRINTF_CONVERSIONS = {"d": "d", "i": "d", "o": "o", "x": "x", "X": "X", "f": "f", "F": "F",
                       "e": "e", "E": "E", "g": "g", "G": "G", "s": "s", "%": "%"}


def format_printf(node: exp.Format, ctx: Ctx) -> exp.Expression | None:
    # DuckDB's format() uses {} placeholders, so sqlglot's FORMAT('%d %s', ...) returns
    # the pattern unchanged. DuckDB's printf() has C semantics like BigQuery's FORMAT
    # for the conversions below; %t/%T/%p/%P have no printf counterpart.
    pattern = node.this
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        ctx.reject(node, "FORMAT() with a format string that is not a literal",
                   "Write the format as a string literal so it can be checked and translated.")
    out: list[str] = []
    pos = 0
    text = pattern.this
    for m in _FORMAT_SPEC.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        conv = m.group("conv")
        if conv not in _PRINTF_CONVERSIONS or "'" in m.group("flags") or "*" in m.group(0):
            ctx.reject(node, f"FORMAT() specifier '{m.group(0)}'",
                       "On DuckDB, FORMAT supports %d %i %o %x %X %f %F %e %E %g %G %s and %% with "
                       "flags -+ #0, a width and a precision. Replace %t/%T with CAST(x AS STRING), "
                       "%p/%P with TO_JSON_STRING(x).")
        out.append(m.group(0)[:-1] + _PRINTF_CONVERSIONS[conv])
    out.append(text[pos:])
    return set_kind(fn("printf", lit("".join(out)), *node.expressions), "string")


def like_escape(node: exp.Like, ctx: Ctx) -> exp.Expression | None:
    # In BigQuery LIKE, backslash escapes % and _ ('50\\%' matches '50%'); DuckDB's
    # LIKE has no escape character unless told, so the same pattern matches nothing.
    if isinstance(node.parent, exp.Escape) or node.args.get("escape"):
        return None
    return exp.Escape(this=node, expression=lit("\\"))


def substr_position(node: exp.Substring, ctx: Ctx) -> exp.Expression | None:
    # BigQuery SUBSTR treats position 0, and positions left of the start, as 1
    # (SUBSTR('abc', 0, 2) = 'ab'); DuckDB counts them as characters before the
    # string ('a', ''). A negative length is an error in BigQuery.
    start, length = node.args.get("start"), node.args.get("length")
    changed = False
    value = int_literal(start) if start is not None else None
    if start is not None and value is not None and value == 0:
        node.set("start", exp.Literal.number(1))
        changed = True
    elif start is not None and (value is None or value < 0):
        too_far_left = _or(
            exp.EQ(this=clone(start), expression=exp.Literal.number(0)),
            exp.LT(this=clone(start), expression=exp.Neg(this=exp.Length(this=clone(node.this)))),
        )
        node.set("start", case([(too_far_left, exp.Literal.number(1))], start))
        changed = True
    if length is not None:
        n = int_literal(length)
        if n is not None and n < 0:
            ctx.reject(node, f"SUBSTR() with negative length {n}", "Use a length of 0 or more.")
        if n is None:
            negative = exp.LT(this=clone(length), expression=exp.Literal.number(0))
            message = lit("Third argument in SUBSTR() cannot be negative")
            node.set("length", case([(negative, fn("error", message))], length))
            changed = True
    return node if changed else None


def byte_length(node: exp.ByteLength, ctx: Ctx) -> exp.Expression | None:
    # BYTE_LENGTH takes STRING or BYTES; sqlglot emits octet_length(), which DuckDB
    # defines for BLOB only. strlen() is the UTF-8 byte count of a VARCHAR.
    value = node.this
    kind = kind_of(value)
    if kind == "string":
        return set_kind(fn("strlen", value), "int")
    if kind == "bytes":
        return None
    as_blob = exp.TryCast(this=clone(value), to=dtype("BLOB"))
    as_text = exp.TryCast(this=value, to=dtype("VARCHAR"))
    return set_kind(case([(typeof_in(value, "BLOB"), fn("octet_length", as_blob))], fn("strlen", as_text)), "int")


def countif_zero(node: exp.CountIf, ctx: Ctx) -> exp.Expression | None:
    # COUNTIF over no rows is 0 in BigQuery; DuckDB's COUNT_IF returns NULL there.
    # COUNT(CASE ...) counts the same rows and is 0 on empty input, also as a window.
    return set_kind(exp.Count(this=case([(node.this, exp.Literal.number(1))], None)), "int")


# --- arrays ------------------------------------------------------------------------


def unnest_offset(node: exp.Unnest, ctx: Ctx) -> exp.Expression | None:
    # BigQuery's WITH OFFSET counts from 0; sqlglot emits DuckDB's WITH ORDINALITY,
    # which counts from 1. Wrap the UNNEST in a derived table that subtracts 1
    # (DuckDB joins it laterally, as BigQuery does with a correlated UNNEST).
    offset = node.args.get("offset")
    if not offset or not isinstance(node.parent, (exp.From, exp.Join)):
        return None
    alias = node.args.get("alias")
    columns = alias.columns if alias is not None else []
    if len(columns) != 1:
        ctx.reject(node, "UNNEST(...) WITH OFFSET without a name for the element",
                   "Name it: UNNEST(array) AS element WITH OFFSET AS pos.")
    offset_name = offset.name if isinstance(offset, exp.Expression) else "offset"
    n = ctx.next_id()
    value_col, offset_col = f"_bq_value{n}", f"_bq_offset{n}"
    inner_unnest = exp.Unnest(
        expressions=node.expressions,
        alias=exp.TableAlias(this=exp.to_identifier(f"_bq_unnest{n}"), columns=[exp.to_identifier(value_col)]),
        offset=exp.to_identifier(offset_col),
    )
    inner = exp.select(
        exp.alias_(exp.column(value_col), columns[0].copy()),
        exp.alias_(exp.Sub(this=exp.column(offset_col), expression=exp.Literal.number(1)),
                   exp.to_identifier(offset_name, quoted=getattr(offset, "quoted", False))),
    ).from_(inner_unnest, copy=False)
    return exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(f"_bq_offsets{n}")))


def storage_properties(node: exp.Properties, ctx: Ctx) -> exp.Expression | None:
    # PARTITION BY, CLUSTER BY and OPTIONS(...) of BigQuery DDL steer storage and
    # metadata, not answers; DuckDB has no such clauses and sqlglot reports them as
    # unsupported. Dropped, so DDL from hooks and emulator clients still runs.
    layout = (exp.PartitionedByProperty, exp.ClusterProperty, exp.Property)
    # Exact types: TemporaryProperty and friends subclass exp.Property and must stay.
    kept = [p for p in node.expressions if type(p) not in layout]
    if len(kept) == len(node.expressions):
        return None
    if not kept:
        node.pop()
        return None
    node.set("expressions", kept)
    return None


def table_copy(node: exp.Create, ctx: Ctx) -> exp.Expression | None:
    # CREATE TABLE t COPY s (a full copy) has no DuckDB spelling; sqlglot emits it
    # verbatim. CREATE TABLE t AS SELECT * FROM s copies rows and column types.
    clone_ = node.args.get("clone")
    if not isinstance(clone_, exp.Clone) or not clone_.args.get("copy"):
        return None
    node.set("clone", None)
    node.set("expression", exp.select("*").from_(clone_.this, copy=False))
    return None


def reject_missing(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    # Functions DuckDB cannot compute the BigQuery way; an error now beats a wrong
    # or missing function later.
    fixes = {
        exp.FarmFingerprint: ("FARM_FINGERPRINT", "DuckDB has no FarmHash. Compute it in BigQuery, or "
                              "use a target-specific macro (e.g. hash() on DuckDB) where the value itself does not matter."),
    }
    name, fix = fixes[type(node)]
    ctx.reject(node, name, fix)
    return None


# --- the pipeline ------------------------------------------------------------------

RULES: list[tuple[tuple[type[exp.Expression], ...], Rule]] = [
    ((exp.FarmFingerprint,), reject_missing),
    ((exp.Literal,), float_literal),
    ((exp.DataType,), decimal_precision),
    ((exp.Cast, exp.TryCast), cast_to_string),
    ((exp.Cast, exp.TryCast), cast_to_int64),
    ((exp.Cast, exp.TryCast), cast_to_bool),
    ((exp.Anonymous,), ieee_divide),
    ((exp.ArrayConcat,), array_concat_nulls),
    ((exp.SafeAdd, exp.SafeSubtract, exp.SafeMultiply, exp.SafeNegate), safe_arithmetic),
    ((exp.SafeFunc,), safe_prefix),
    ((exp.Format,), format_printf),
    ((exp.Like,), like_escape),
    ((exp.Substring,), substr_position),
    ((exp.ByteLength,), byte_length),
    ((exp.CountIf,), countif_zero),
    *TIME_RULES,
    ((exp.Unnest,), unnest_offset),
    ((exp.Properties,), storage_properties),
    ((exp.Create,), table_copy),
    *JSON_RULES,
]

_BY_TYPE: dict[type, list[Rule]] = {}
for _types, _rule in RULES:
    for _t in _types:
        _BY_TYPE.setdefault(_t, []).append(_rule)


def rewrite(tree: exp.Expression, ctx: Ctx) -> exp.Expression:
    """Apply every rule to `tree` in place, children before parents; returns the root."""
    root = tree
    # Reverse pre-order visits every child before its parent; nodes a rule creates
    # are already DuckDB-ready and are not visited again.
    for node in reversed(list(tree.dfs())):
        rules = _BY_TYPE.get(type(node))
        if not rules:
            continue
        # Where the node hangs, taken before a rule re-parents it inside its replacement.
        parent, arg_key, index = node.parent, node.arg_key, node.index
        current = node
        for rule in rules:
            result = rule(current, ctx)
            if result is None or result is current:
                continue
            if parent is None:
                root = result
            else:
                parent.set(arg_key, result, index)
            current = result
            if type(current) is not type(node):
                break  # a different construct now; the remaining rules were for the old one
    return root
