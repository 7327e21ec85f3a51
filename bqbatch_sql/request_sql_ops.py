"""SQL primitives of the request rules, per dialect (stage: validate).

The checks of `request_sql` are written once against `Ops`: JSON reads, lists,
strings and lambdas. `DuckDBOps` renders them with DuckDB's JSON and list functions
(lambdas); `BigQueryOps` (request_sql_bigquery) with JSON_QUERY/JSON_VALUE and
UNNEST subqueries. Everything is a sqlglot tree; constants are sqlglot literals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from dataclasses import dataclass
from typing import Callable, Sequence

from sqlglot import exp

from bqbatch_sql.request_spec import KINDS, Field, Message

KIND_CODES = {"string": "s", "bytes": "y", "number": "n", "int": "i", "bool": "b", "enum": "e", "object": "o", "any": "a"}
SCALAR_KINDS = ("string", "bytes", "number", "int", "bool", "enum")
NO_PATH = "$.__bqbatch_absent__"  # keeps the scalar-value list aligned with the leaf list
BASE64 = r"[A-Za-z0-9+/_\-]*={0,2}"  # proto3 JSON bytes: standard or URL-safe base64, padding optional
FILE_URI = r"(gs://[^/]+/.+|https?://[^/]+.*)"


def _lit(value: str) -> exp.Expression:
    return exp.Literal.string(value)


def _num(value: float | int) -> exp.Expression:
    return exp.Literal.number(value)


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _and(*conds: exp.Expression) -> exp.Expression:
    return exp.and_(*[exp.paren(c, copy=False) for c in conds], copy=False)


def _or(*conds: exp.Expression) -> exp.Expression:
    return exp.or_(*[exp.paren(c, copy=False) for c in conds], copy=False)


def _not(cond: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.paren(cond, copy=False))


def _is_null(e: exp.Expression) -> exp.Expression:
    return exp.Is(this=e, expression=exp.Null())


def _not_null(e: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.Is(this=e, expression=exp.Null()))


def _eq(a: exp.Expression, b: exp.Expression | str | int) -> exp.Expression:
    if isinstance(b, str):
        b = _lit(b)
    elif isinstance(b, int):
        b = _num(b)
    return exp.EQ(this=a, expression=b)


def _in(e: exp.Expression, values: Sequence[str]) -> exp.Expression:
    return exp.In(this=e, expressions=[_lit(v) for v in values])


def _case(whens: list[tuple[exp.Expression, exp.Expression]], default: exp.Expression | None = None) -> exp.Expression:
    if not whens:
        return default if default is not None else exp.Null()
    return exp.Case(ifs=[exp.If(this=c, true=v) for c, v in whens], default=default)


def _coalesce(items: list[exp.Expression]) -> exp.Expression:
    items = [i for i in items if not isinstance(i, exp.Null)]
    if not items:
        return exp.Null()
    return items[0] if len(items) == 1 else exp.Coalesce(this=items[0], expressions=items[1:])


def _dot(e: exp.Expression, name: str) -> exp.Expression:
    return exp.Dot(this=e, expression=exp.to_identifier(name))


class Path:
    """An ESF-style field path (snake_case, [i] for list items) as pieces of SQL."""

    def __init__(self, parts: tuple = ()):
        self.parts = parts

    def key(self, name: str | exp.Expression) -> "Path":
        if isinstance(name, str):
            return Path(self.parts + ((f".{name}" if self.parts else name),))
        return Path(self.parts + ((".", name) if self.parts else (name,)))

    def index(self, i: exp.Expression) -> "Path":
        return Path(self.parts + ("[", i, "]"))


@dataclass(frozen=True)
class Leaf:
    """One place a field can be, in one spelling: the row of the leaf table."""

    json_path: str  # $.inlineData.mime_type
    error_path: str  # inline_data.mime_type (ESF paths are snake_case)
    parent: str  # inline_data ('' for a field of the scope itself)
    field: Field


def _leaves(msg: Message) -> list[Leaf]:
    out = [Leaf(f"$.{a}", f.snake, "", f) for f in msg.fields for a in f.aliases]
    for oname, sub in msg.nested.items():
        o = msg.get(oname)
        for oa in o.aliases:
            out += [Leaf(f"$.{oa}.{ga}", f"{o.snake}.{g.snake}", o.snake, g) for g in sub.fields for ga in g.aliases]
    return out


def _range_text(f: Field) -> str:
    if f.low is None:
        return ""
    if f.high is None:
        return f"from {f.low:g} (inclusive)"
    return f"from {f.low:g} (inclusive) to {f.high:g} ({'inclusive' if f.high_inclusive else 'exclusive'})"


class Ops(ABC):
    """The JSON, list and string primitives the rules are written with, for one dialect."""

    dialect = ""
    TYPES: dict[str, tuple[str, ...]] = {}
    DOUBLE = "DOUBLE"

    def __init__(self) -> None:
        self._n = 0

    def var(self, stem: str) -> str:
        self._n += 1
        return f"_{stem}{self._n}"

    def is_type(self, t: exp.Expression, *kinds: str) -> exp.Expression:
        return _in(t, [n for k in kinds for n in self.TYPES[k]])

    def present(self, t: exp.Expression) -> exp.Expression:
        # JSON null means "not set" in the proto3 JSON mapping
        return _and(_not_null(t), exp.NEQ(this=t, expression=_lit(self.TYPES["null"][0])))

    def concat(self, *parts: exp.Expression | str) -> exp.Expression:
        items: list[exp.Expression] = []
        for p in parts:
            if isinstance(p, str):
                if p:
                    items.append(_lit(p))
            elif isinstance(p, exp.Literal) and p.is_string:
                items.append(p)
            else:
                # a NULL piece must not turn a message into NULL, which would read as "valid"
                items.append(exp.Coalesce(this=self.text(p), expressions=[_lit("")]))
        if not items:
            return _lit("")
        out = items[0]
        for item in items[1:]:
            out = exp.DPipe(this=out, expression=item, safe=True)
        return out

    def path(self, p: Path | None) -> exp.Expression:
        return self.concat(*p.parts) if p is not None and p.parts else _lit("")

    def problem(self, code: str, path: Path | None = None, *args: exp.Expression | str) -> exp.Expression:
        """[code, path, a, b, c]: what `message_sql` turns into the status text."""
        assert code in KINDS, code
        vals = [self.concat(a) if not isinstance(a, str) else _lit(a) for a in args]
        vals += [_lit("")] * (3 - len(vals))
        return exp.Array(expressions=[_lit(code), self.path(path), *vals])

    def struct(self, **members: exp.Expression) -> exp.Expression:
        return exp.Struct(expressions=[exp.PropertyEQ(this=exp.to_identifier(k), expression=v) for k, v in members.items()])

    def const(self, value) -> exp.Expression:
        if value is None:
            return exp.Null()
        if isinstance(value, bool):
            return exp.Boolean(this=value)
        if isinstance(value, (int, float)):
            return _num(float(value))
        return _lit(value)

    def leaf_table(self, leaves: list[Leaf]) -> dict[str, exp.Expression]:
        """The constants describing each leaf, one list per attribute (read by `leaf_problem`)."""
        def col(values: list) -> exp.Expression:
            return exp.Array(expressions=[self.const(v) for v in values])

        fields = [leaf.field for leaf in leaves]
        return {
            "p": col([leaf.json_path for leaf in leaves]),
            "e": col([leaf.error_path for leaf in leaves]),
            "pe": col([leaf.parent for leaf in leaves]),
            "n": col([f.snake for f in fields]),
            "c": col([f.name for f in fields]),
            "k": col([KIND_CODES[f.kind] for f in fields]),
            "r": col([f.repeated for f in fields]),
            "t": col([f.proto for f in fields]),
            "en": col(["|" + "|".join(f.enum) + "|" if f.enum else "" for f in fields]),
            "ci": col([f.proto.endswith(".Type") for f in fields]),
            "lo": col([f.low for f in fields]),
            "hi": col([f.high for f in fields]),
            "hinc": col([f.high_inclusive for f in fields]),
            "rt": col([_range_text(f) for f in fields]),
        }

    def leaf_row(self, table: dict[str, exp.Expression], i: exp.Expression) -> exp.Expression:
        return self.struct(**{name: self.at(values, i) for name, values in table.items()})

    @abstractmethod
    def text(self, e: exp.Expression) -> exp.Expression:
        ...

    def number(self, s: exp.Expression) -> exp.Expression:
        return exp.TryCast(this=s, to=exp.DataType.build(self.DOUBLE, dialect=self.dialect))


class DuckDBOps(Ops):
    dialect = "duckdb"
    TYPES = {
        "object": ("OBJECT",),
        "array": ("ARRAY",),
        "string": ("VARCHAR",),
        "number": ("BIGINT", "UBIGINT", "HUGEINT", "DOUBLE"),
        "boolean": ("BOOLEAN",),
        "null": ("NULL",),
    }

    def text(self, e: exp.Expression) -> exp.Expression:
        return exp.cast(e, exp.DataType.build("VARCHAR"))

    def lam(self, fn: Callable[..., exp.Expression], *stems: str) -> exp.Expression:
        names = [self.var(s) for s in stems]
        return exp.Lambda(this=fn(*[exp.column(n) for n in names]), expressions=[exp.to_identifier(n) for n in names])

    def at(self, lst: exp.Expression, i: exp.Expression | int) -> exp.Expression:
        return exp.Bracket(this=lst, expressions=[_num(i) if isinstance(i, int) else i], offset=1)

    def let(self, value: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        # Bind once: DuckDB computes `value` one time per row, `fn` reads it many times.
        return self.at(_fn("list_transform", exp.Array(expressions=[value]), self.lam(fn, "x")), 1)

    def first(self, lst: exp.Expression, pred: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        return self.at(_fn("list_filter", lst, self.lam(pred, "k")), 1)

    def first_problem(self, items: exp.Expression, fn: Callable[[exp.Expression, exp.Expression], exp.Expression]) -> exp.Expression:
        """The first non-NULL fn(item, zero-based index) over the items."""
        per_item = _fn("list_transform", items, self.lam(lambda e, i: fn(e, exp.Sub(this=i, expression=_num(1))), "e", "i"))
        return self.first(per_item, _not_null)

    def leaf_problem(self, sc, table: dict, n: int, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        """The first problem of fn(x) over the present leaves, x = {i, t, s, m: the leaf's constants}."""
        t = sc.member("t")
        idx = _fn("list_filter", _fn("range", _num(1), _num(n + 1)), self.lam(lambda i: self.present(self.at(t, i)), "i"))
        rows = _fn("list_transform", idx, self.lam(
            lambda i: self.struct(i=i, t=self.at(t, i), s=self.at(sc.member("s"), i), m=self.leaf_row(table, i)), "i"))
        return self.first(_fn("list_transform", rows, self.lam(fn, "x")), _not_null)

    def leaf_json_text(self, sc, x: exp.Expression) -> exp.Expression:
        return self.text(_fn("json_extract", sc.v, _dot(_dot(x, "m"), "p")))

    def contains(self, lst: exp.Expression, item: exp.Expression) -> exp.Expression:
        return _fn("list_contains", lst, item)

    def length(self, lst: exp.Expression) -> exp.Expression:
        return _fn("len", lst)

    def strpos(self, s: exp.Expression, sub: exp.Expression) -> exp.Expression:
        return _fn("strpos", s, sub)

    def byte_length(self, v: exp.Expression) -> exp.Expression:
        return _fn("strlen", self.text(v))

    def regexp(self, s: exp.Expression, pattern: str) -> exp.Expression:
        return _fn("regexp_full_match", s, _lit(pattern))

    def valid_json(self, v: exp.Expression) -> exp.Expression:
        return _fn("json_valid", v)

    def json_quote(self, s: exp.Expression) -> exp.Expression:
        return self.text(_fn("to_json", s))

    def types(self, v: exp.Expression, paths: list[str]) -> exp.Expression:
        return _fn("json_type", v, exp.Array(expressions=[_lit(p) for p in paths]))

    def strings(self, v: exp.Expression, paths: list[str]) -> exp.Expression:
        return _fn("json_extract_string", v, exp.Array(expressions=[_lit(p) for p in paths]))

    def keys(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _fn("json_keys", v, _lit(path)) if path != "$" else _fn("json_keys", v)

    def key_members(self, v: exp.Expression, paths: list[str]) -> dict[str, exp.Expression]:
        # one parse for the keys of the object and of its nested objects
        return {"k": _fn("json_keys", v, exp.Array(expressions=[_lit(p) for p in paths]))}

    def key_get(self, sc, index: int) -> exp.Expression:
        return self.at(sc.member("k"), index + 1)

    def leaf_json_member(self, v: exp.Expression, paths: list[str]) -> dict[str, exp.Expression]:
        return {}

    def type_at(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _fn("json_type", v, _lit(path)) if path != "$" else _fn("json_type", v)

    def json_at(self, v: exp.Expression, path: str) -> exp.Expression:
        return _fn("json_extract", v, _lit(path))

    def string_at(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _fn("json_extract_string", v, _lit(path))

    def json_text(self, v: exp.Expression) -> exp.Expression:
        return self.text(v)

    def array_length(self, v: exp.Expression, path: str) -> exp.Expression:
        return _fn("json_array_length", v, _lit(path))

    def items(self, v: exp.Expression, path: str) -> exp.Expression:
        """The items of the JSON array at `path`; any other value counts as a list of one."""
        t = _fn("json_type", v, _lit(path))
        return _case([
            (_eq(t, "ARRAY"), _fn("json_extract", v, _lit(path + "[*]"))),
            (self.present(t), exp.Array(expressions=[_fn("json_extract", v, _lit(path))])),
        ])

    def indexed(self, items: exp.Expression, prefix: Callable[[exp.Expression], exp.Expression], **flags) -> exp.Expression:
        """The items as {p: path, j: item, ...flags}, the path made from the zero-based index."""
        return _fn("list_transform", items, self.lam(
            lambda e, i: self.struct(p=prefix(exp.Sub(this=i, expression=_num(1))), j=e, **flags), "e", "i"))

    def append_if(self, lst: exp.Expression, cond: exp.Expression, item: exp.Expression) -> exp.Expression:
        return _fn("list_concat", lst, _case([(cond, exp.Array(expressions=[item]))]))

    def concat_lists(self, lists: list[exp.Expression]) -> exp.Expression:
        return _fn("flatten", exp.Array(expressions=lists))

    def members(self, obj: exp.Expression, prefix: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        """The members of a JSON object as {p: prefix(key), j: value} (keys and values in order)."""
        return _fn("list_transform", _fn("json_keys", obj), self.lam(
            lambda k, i: self.struct(p=prefix(k), j=self.at(_fn("json_extract", obj, _lit("$.*")), i)), "k", "i"))

    def flat_map(self, lst: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        return _fn("flatten", _fn("list_transform", lst, self.lam(fn, "n")))

    def flat_items(self, outer: exp.Expression, inner: Callable[[exp.Expression], exp.Expression],
                   path: Callable[[exp.Expression, exp.Expression], exp.Expression]) -> exp.Expression:
        """Items of items as one list of {p: path, j: item}, so the checks need not nest lambdas
        (DuckDB's bind time grows steeply with lambda depth). `outer` holds {p, j} rows."""
        def per_outer(c: exp.Expression) -> exp.Expression:
            return self.indexed(inner(_dot(c, "j")), lambda j: path(_dot(c, "p"), j))

        return _fn("flatten", _fn("list_transform", outer, self.lam(per_outer, "c")))
