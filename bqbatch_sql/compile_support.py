"""Compile stage helpers: what a rewrite rule can tell about an expression, and how it
builds DuckDB trees.

The compiler has no schema, so types are known only from the expression itself
(a literal, a function's documented result type, a CAST). `kind_of()` returns
one coarse kind or None; rules treat None as "could be anything" and let DuckDB
decide at bind time with `typeof()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from bqbatch_sql.errors import CompileError


@dataclass
class Ctx:
    """Where the tree came from, for error messages, and a counter for fresh names."""

    path: str = ""
    model: str = ""
    _ids: int = field(default=0, repr=False)

    def where(self) -> str:
        if self.model and self.path:
            return f"Model '{self.model}' ({self.path})"
        if self.model:
            return f"Model '{self.model}'"
        return f"SQL in {self.path}" if self.path else "SQL"

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def reject(self, node: exp.Expression, construct: str, fix: str) -> None:
        """Raise the CompileError for a construct DuckDB would answer differently."""
        line = line_of(node)
        at = f", line {line}" if line else ""
        raise CompileError(
            f"{self.where()}{at}: {construct} cannot run the BigQuery way on DuckDB "
            f"(the local target), so bqbatch stops rather than give a different answer. "
            f"Fix: {fix}"
        )


def line_of(node: exp.Expression) -> int | None:
    """The source line of `node` or of the first descendant that kept one."""
    for n in node.walk():
        line = n.meta.get("line") if n._meta else None  # _meta avoids creating empty dicts
        if line:
            return int(line)
    return None


# --- building trees ---------------------------------------------------------------


def clone(node: exp.Expression) -> exp.Expression:
    """A structural copy: the same SQL, without comments, positions or type annotations.

    Expression.copy() deep-copies each node's meta dict (line/column) through
    copy.deepcopy, about 10 us a node; rewrites that repeat an operand, and the
    trial generation in compile.py, need only the structure.
    """
    root = node.__class__()
    stack = [(node, root)]
    while stack:
        src, dst = stack.pop()
        args = dst.args
        for key, value in src.args.items():
            if isinstance(value, exp.Expression):
                child = value.__class__()
                child.parent, child.arg_key = dst, key
                args[key] = child
                stack.append((value, child))
            elif isinstance(value, list):
                items = []
                for i, item in enumerate(value):
                    if isinstance(item, exp.Expression):
                        child = item.__class__()
                        child.parent, child.arg_key, child.index = dst, key, i
                        items.append(child)
                        stack.append((item, child))
                    else:
                        items.append(item)
                args[key] = items
            else:
                args[key] = value
    return root


def fn(name: str, *args: exp.Expression) -> exp.Anonymous:
    """A DuckDB function call, emitted verbatim (sqlglot does not reinterpret it)."""
    return exp.Anonymous(this=name, expressions=list(args))


def lit(text: str) -> exp.Literal:
    return exp.Literal.string(text)


def case(ifs: list[tuple[exp.Expression, exp.Expression]], default: exp.Expression | None) -> exp.Case:
    return exp.Case(ifs=[exp.If(this=cond, true=value) for cond, value in ifs], default=default)


_DTYPES = {
    "DOUBLE": exp.DType.DOUBLE, "BIGINT": exp.DType.BIGINT, "VARCHAR": exp.DType.VARCHAR,
    "BOOLEAN": exp.DType.BOOLEAN, "JSON": exp.DType.JSON, "DATE": exp.DType.DATE,
    "TIMESTAMP": exp.DType.TIMESTAMP, "TIMESTAMPTZ": exp.DType.TIMESTAMPTZ, "TIME": exp.DType.TIME,
    "BLOB": exp.DType.VARBINARY,
}


def dtype(name: str) -> exp.DataType:
    """A DuckDB type node, built directly (DataType.build('X') parses text: 60 us a call)."""
    if name == "DECIMAL(38, 9)":
        params = [exp.DataTypeParam(this=exp.Literal.number(n)) for n in (38, 9)]
        return exp.DataType(this=exp.DType.DECIMAL, expressions=params, nested=False)
    return exp.DataType(this=_DTYPES[name], nested=False)


def _and(left: exp.Expression, right: exp.Expression) -> exp.And:
    # exp.and_/or_ copy their operands (and parse strings); these nodes are fresh.
    return exp.And(this=left, expression=right)


def _or(left: exp.Expression, right: exp.Expression) -> exp.Or:
    return exp.Or(this=left, expression=right)


def typeof_in(value: exp.Expression, *type_names: str) -> exp.Expression:
    """`typeof(value) IN (...)`: DuckDB folds it to a constant when it binds the query."""
    probe = fn("typeof", clone(value))
    if len(type_names) == 1:
        return exp.EQ(this=probe, expression=lit(type_names[0]))
    return exp.In(this=probe, expressions=[lit(t) for t in type_names])


def cast_target(node: exp.Cast) -> exp.DType:
    """The DType a CAST/SAFE_CAST converts to."""
    return node.to.this if isinstance(node.to, exp.DataType) else exp.DType.UNKNOWN


def int_literal(node: exp.Expression | None) -> int | None:
    """The value of an integer literal (also `-3`), else None."""
    negative = False
    while isinstance(node, (exp.Neg, exp.Paren)):
        negative ^= isinstance(node, exp.Neg)
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            value = int(node.this)
        except ValueError:
            return None
        return -value if negative else value
    return None


def set_kind(node: exp.Expression, kind: str) -> exp.Expression:
    """Remember what a rewritten node computes, for rules applied to its parents."""
    node.meta["bq_kind"] = kind
    return node


# --- kinds ---------------------------------------------------------------------------

_TYPE_KINDS = {
    exp.DType.TEXT: "string", exp.DType.VARCHAR: "string", exp.DType.CHAR: "string",
    exp.DType.BIGINT: "int", exp.DType.INT: "int", exp.DType.SMALLINT: "int", exp.DType.TINYINT: "int",
    exp.DType.DOUBLE: "float", exp.DType.FLOAT: "float",
    exp.DType.DECIMAL: "decimal", exp.DType.BIGDECIMAL: "decimal",
    exp.DType.BOOLEAN: "bool", exp.DType.DATE: "date", exp.DType.TIME: "time",
    exp.DType.TIMESTAMPTZ: "timestamp", exp.DType.TIMESTAMP: "datetime",
    exp.DType.JSON: "json", exp.DType.ARRAY: "array", exp.DType.BINARY: "bytes",
    exp.DType.VARBINARY: "bytes", exp.DType.BLOB: "bytes", exp.DType.STRUCT: "struct",
}


def _classes(kind: str, *names: str) -> dict[type, str]:
    # getattr: tolerate an expression class renamed by a sqlglot upgrade (tests catch
    # the behaviour change; a missing name should not break import).
    return {cls: kind for name in names if (cls := getattr(exp, name, None)) is not None}


_CLASS_KINDS: dict[type, str] = {
    **_classes("string", "Concat", "DPipe", "Lower", "Upper", "Trim", "Substring", "Replace",
               "Format", "JSONExtractScalar", "ArrayToString", "Left", "Right", "Pad", "Repeat",
               "Reverse", "Initcap", "RegexpExtract", "RegexpReplace", "TimeToStr", "GroupConcat",
               "LowerHex", "Hex", "MD5", "SHA2", "ToBase64", "Chr", "Uuid", "String"),
    **_classes("int", "Length", "ArraySize", "Count", "CountIf", "StrPosition", "DateDiff",
               "TimestampDiff", "DatetimeDiff", "FarmFingerprint", "Ascii", "Sign", "UnixSeconds",
               "UnixDate", "Int64"),
    **_classes("float", "Div", "Avg", "Sqrt", "Pow", "Ln", "Log", "Rand", "Exp", "Float64",
               "SafeDivide"),
    **_classes("bool", "EQ", "NEQ", "GT", "GTE", "LT", "LTE", "And", "Or", "Not", "Like", "In",
               "Is", "Exists", "RegexpLike", "StartsWith", "EndsWith", "Between", "Boolean",
               "JSONBool", "LogicalAnd", "LogicalOr"),
    **_classes("json", "ParseJSON", "JSONObject", "JSONArray"),
    **_classes("array", "Array", "Split", "ArrayAgg", "GenerateSeries", "ArrayConcat",
               "RegexpExtractAll", "JSONExtractArray", "JSONValueArray", "StringToArray",
               "ArrayReverse"),
    **_classes("date", "TsOrDsToDate", "CurrentDate", "DateAdd", "DateSub", "DateFromParts",
               "DateFromUnixDate", "LastDay", "StrToDate", "Date"),
    **_classes("timestamp", "CurrentTimestamp", "Timestamp", "TimestampAdd", "TimestampSub",
               "TimestampTrunc", "UnixToTime", "StrToTime", "TsOrDsToTimestamp"),
    **_classes("bytes", "ByteString", "FromBase64", "Unhex", "SHA", "SHA2Digest", "MD5Digest"),
    **_classes("time", "TimeFromParts", "TsOrDsToTime", "CurrentTime"),
    **_classes("datetime", "Datetime", "TimestampFromParts", "ParseDatetime", "TsOrDsToDatetime", "DatetimeAdd", "DatetimeSub", "DatetimeTrunc",
               "CurrentDatetime"),
}


def kind_of(node: exp.Expression | None) -> str | None:
    """'string', 'int', 'float', 'decimal', 'bool', 'date', 'time', 'timestamp',
    'datetime', 'json', 'array', 'bytes', 'struct', 'null', or None when only the
    data could tell."""
    if node is None:
        return None
    if node._meta and "bq_kind" in node._meta:
        return node._meta["bq_kind"]
    if isinstance(node, exp.Null):
        return "null"
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "string"
        return "float" if ("." in node.this or "e" in node.this.lower()) else "int"
    if isinstance(node, (exp.Cast, exp.TryCast)):
        to = node.to
        return _TYPE_KINDS.get(to.this) if isinstance(to, exp.DataType) else None
    if isinstance(node, (exp.Paren, exp.Neg)):
        return kind_of(node.this)
    if isinstance(node, exp.JSONFormat):
        return "json" if node.args.get("to_json") else "string"
    if isinstance(node, exp.JSONExtract):
        # JSON_QUERY returns JSON for JSON input and STRING for STRING input.
        return kind_of(node.this) if kind_of(node.this) in ("json", "string") else None
    if isinstance(node, (exp.Dot, exp.Bracket)):
        return "json" if kind_of(node.this) == "json" else None
    if isinstance(node, exp.SafeFunc):
        return kind_of(node.this)
    if isinstance(node, exp.Anonymous) and node.name.upper() == "TRY" and node.expressions:
        return kind_of(node.expressions[0])
    if isinstance(node, (exp.Case, exp.If, exp.Coalesce)):
        branches = [i.args.get("true") for i in node.args.get("ifs") or []]
        branches += [node.args.get("default"), node.args.get("true"), node.args.get("false")]
        branches += [node.this] + list(node.expressions) if isinstance(node, exp.Coalesce) else []
        kinds = {kind_of(b) for b in branches if b is not None and not isinstance(b, exp.Null)}
        return kinds.pop() if len(kinds) == 1 else None  # {None} pops None: unknown
    return _CLASS_KINDS.get(type(node))
