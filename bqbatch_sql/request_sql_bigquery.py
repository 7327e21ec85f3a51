"""BigQuery rendering of the request rules' primitives (stage: validate).

BigQuery has no lambdas and no arrays of arrays: list work goes through UNNEST
subqueries, a bound value through a one-row UNNEST of a STRUCT, JSON paths must be
literals (so a scope keeps each leaf's JSON text). The functions are typed sqlglot
nodes where sqlglot knows them, so the SQL also transpiles for the emulator.
"""

from __future__ import annotations

from typing import Callable

from sqlglot import exp

from bqbatch_sql.request_sql_ops import Ops, _case, _eq, _fn, _lit, _not_null, _num, _dot

def _bq(name: str, *args: exp.Expression) -> exp.Expression:
    # typed sqlglot nodes where sqlglot knows the function, so the SQL also transpiles
    return exp.func(name, *args, dialect="bigquery")


class BigQueryOps(Ops):
    dialect = "bigquery"
    DOUBLE = "FLOAT64"
    TYPES = {
        "object": ("object",),
        "array": ("array",),
        "string": ("string",),
        "number": ("number",),
        "boolean": ("boolean",),
        "null": ("null",),
    }

    def __init__(self, request_type: str = "JSON") -> None:
        super().__init__()
        self.request_type = request_type.upper()

    def text(self, e: exp.Expression) -> exp.Expression:
        return exp.cast(e, exp.DataType.build("STRING", dialect="bigquery"))

    def _unnest(self, lst: exp.Expression, alias: str, offset: str | None = None) -> exp.Expression:
        return exp.Unnest(expressions=[lst], alias=exp.TableAlias(columns=[exp.to_identifier(alias)]),
                          offset=exp.to_identifier(offset) if offset else None)

    def at(self, lst: exp.Expression, i: exp.Expression | int) -> exp.Expression:
        return exp.Bracket(this=lst, expressions=[_num(i) if isinstance(i, int) else i], offset=1)

    def let(self, value: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        # wrapped in a STRUCT: BigQuery has no arrays of arrays, and the value may be one
        x = self.var("x")
        wrapped = exp.Array(expressions=[self.struct(v=value)])
        return exp.Subquery(this=exp.select(fn(_dot(exp.column(x), "v"))).from_(self._unnest(wrapped, x)))

    def first(self, lst: exp.Expression, pred: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        k, o = self.var("k"), self.var("o")
        q = exp.select(exp.column(k)).from_(self._unnest(lst, k, o)).where(pred(exp.column(k))).order_by(exp.column(o)).limit(1)
        return exp.Subquery(this=q)

    def _first_of(self, inner: exp.Select, p: str, o: str) -> exp.Expression:
        q = exp.select(exp.column(p)).from_(exp.Subquery(this=inner)).where(_not_null(exp.column(p)))
        return exp.Subquery(this=q.order_by(exp.column(o)).limit(1))

    def first_problem(self, items: exp.Expression, fn: Callable[[exp.Expression, exp.Expression], exp.Expression]) -> exp.Expression:
        e, o, p = self.var("e"), self.var("o"), self.var("p")
        inner = exp.select(fn(exp.column(e), exp.column(o)).as_(p), exp.column(o)).from_(self._unnest(items, e, o))
        return self._first_of(inner, p, o)

    def leaf_problem(self, sc, table: dict, n: int, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        i, x, p = self.var("i"), self.var("x"), self.var("p")
        ic = exp.column(i)
        rows = exp.select(
            ic.as_("i"), self.at(sc.member("t"), ic).as_("t"), self.at(sc.member("s"), ic).as_("s"),
            self.at(sc.member("j"), ic).as_("j"), self.leaf_row(table, ic).as_("m"),
        ).from_(self._unnest(_bq("GENERATE_ARRAY", _num(1), _num(n)), i)).where(self.present(self.at(sc.member("t"), ic)))
        rows.set("kind", "STRUCT")
        inner = (exp.select(fn(exp.column(x)).as_(p), _dot(exp.column(x), "i").as_(i))
                 .from_(self._unnest(exp.Array(expressions=[rows]), x)))
        return self._first_of(inner, p, i)

    def leaf_json_text(self, sc, x: exp.Expression) -> exp.Expression:
        return _dot(x, "j")  # BigQuery needs literal JSON paths: the scope keeps each leaf's JSON text

    def contains(self, lst: exp.Expression, item: exp.Expression) -> exp.Expression:
        return exp.In(this=item, unnest=exp.Unnest(expressions=[lst]))

    def length(self, lst: exp.Expression) -> exp.Expression:
        return _bq("ARRAY_LENGTH", lst)

    def strpos(self, s: exp.Expression, sub: exp.Expression) -> exp.Expression:
        return _bq("STRPOS", s, sub)

    def byte_length(self, v: exp.Expression) -> exp.Expression:
        return _bq("BYTE_LENGTH", v if self.request_type == "STRING" else _bq("TO_JSON_STRING", v))

    def regexp(self, s: exp.Expression, pattern: str) -> exp.Expression:
        return _bq("REGEXP_CONTAINS", s, _lit(f"^(?:{pattern})$"))

    def valid_json(self, v: exp.Expression) -> exp.Expression:
        if self.request_type != "STRING":
            return exp.true()  # a JSON column holds valid JSON by construction
        return _not_null(exp.SafeFunc(this=exp.ParseJSON(this=v)))

    def root_json(self, v: exp.Expression) -> exp.Expression:
        return exp.SafeFunc(this=exp.ParseJSON(this=v)) if self.request_type == "STRING" else v

    def json_quote(self, s: exp.Expression) -> exp.Expression:
        return _bq("TO_JSON_STRING", s)

    def types(self, v: exp.Expression, paths: list[str]) -> exp.Expression:
        return exp.Array(expressions=[self.type_at(v, p) for p in paths])

    def strings(self, v: exp.Expression, paths: list[str]) -> exp.Expression:
        return exp.Array(expressions=[self.string_at(v, p) for p in paths])

    def keys(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _bq("JSON_KEYS", v if path == "$" else self.json_at(v, path), _num(1))

    def key_members(self, v: exp.Expression, paths: list[str]) -> dict[str, exp.Expression]:
        return {f"k{i}": self.keys(v, p) for i, p in enumerate(paths)}  # no arrays of arrays in BigQuery

    def key_get(self, sc, index: int) -> exp.Expression:
        return sc.member(f"k{index}")

    def leaf_json_member(self, v: exp.Expression, paths: list[str]) -> dict[str, exp.Expression]:
        return {"j": exp.Array(expressions=[self.json_text(self.json_at(v, p)) for p in paths])}

    def type_at(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _bq("JSON_TYPE", v if path == "$" else self.json_at(v, path))

    def json_at(self, v: exp.Expression, path: str) -> exp.Expression:
        return _bq("JSON_QUERY", v, _lit(path))

    def string_at(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _bq("JSON_VALUE", v, _lit(path))

    def json_text(self, v: exp.Expression) -> exp.Expression:
        return _bq("TO_JSON_STRING", v)

    def array_length(self, v: exp.Expression, path: str) -> exp.Expression:
        return _bq("ARRAY_LENGTH", _bq("JSON_QUERY_ARRAY", v, _lit(path)))

    def items(self, v: exp.Expression, path: str) -> exp.Expression:
        t = self.type_at(v, path)
        return _case([
            (_eq(t, "array"), _bq("JSON_QUERY_ARRAY", v, _lit(path))),
            (self.present(t), exp.Array(expressions=[self.json_at(v, path)])),
        ])

    def indexed(self, items: exp.Expression, prefix: Callable[[exp.Expression], exp.Expression], **flags) -> exp.Expression:
        e, i = self.var("e"), self.var("i")
        sel = (exp.select(prefix(exp.column(i)).as_("p"), exp.column(e).as_("j"), *[v.as_(k) for k, v in flags.items()])
               .from_(self._unnest(items, e, i)).order_by(exp.column(i)))
        sel.set("kind", "STRUCT")
        return exp.Array(expressions=[sel])

    def append_if(self, lst: exp.Expression, cond: exp.Expression, item: exp.Expression) -> exp.Expression:
        return _bq("ARRAY_CONCAT", lst, exp.If(this=cond, true=exp.Array(expressions=[item]), false=exp.Array(expressions=[])))

    def concat_lists(self, lists: list[exp.Expression]) -> exp.Expression:
        return _bq("ARRAY_CONCAT", *[_fn("IFNULL", lst, exp.Array(expressions=[])) for lst in lists])

    def members(self, obj: exp.Expression, prefix: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        k, o = self.var("k"), self.var("o")
        sel = (exp.select(prefix(exp.column(k)).as_("p"), exp.Bracket(this=obj, expressions=[exp.column(k)]).as_("j"))
               .from_(self._unnest(self.keys(obj), k, o)).order_by(exp.column(o)))
        sel.set("kind", "STRUCT")
        return exp.Array(expressions=[sel])

    def flat_map(self, lst: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        n, o, c, j = self.var("n"), self.var("o"), self.var("c"), self.var("j")
        sel = (exp.select(exp.column(c)).from_(self._unnest(lst, n, o))
               .join(self._unnest(fn(exp.column(n)), c, j), join_type="CROSS").order_by(exp.column(o), exp.column(j)))
        return exp.Array(expressions=[sel])

    def flat_items(self, outer: exp.Expression, inner: Callable[[exp.Expression], exp.Expression],
                   path: Callable[[exp.Expression, exp.Expression], exp.Expression]) -> exp.Expression:
        c, o, q, j = self.var("c"), self.var("o"), self.var("q"), self.var("j")
        sel = (exp.select(path(_dot(exp.column(c), "p"), exp.column(j)).as_("p"), exp.column(q).as_("j"))
               .from_(self._unnest(outer, c, o))
               .join(self._unnest(inner(_dot(exp.column(c), "j")), q, j), join_type="CROSS")
               .order_by(exp.column(o), exp.column(j)))
        sel.set("kind", "STRUCT")
        return exp.Array(expressions=[sel])
