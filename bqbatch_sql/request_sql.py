"""The request rules as one scalar SQL expression per dialect (stage: validate).

The expression is NULL for a valid request, else a problem [code, path, a, b, c]
that `message_sql` turns into the Kind's message (`request_spec.KINDS`). Each JSON
object of the request is a "scope": its leaves are read once (DuckDB: one
multi-path json_type and one json_extract_string per object) and checked by one
table-driven expression over a constant list describing the leaves, so the SQL
stays small (DuckDB's bind time grows with the size of the expression and steeply
with lambda nesting) and the per-row cost is a handful of JSON parses.

These are the full checks: exact messages with field paths. On DuckDB a row first
meets `request_fast`'s cheap test; only the rows it cannot vouch for pay for these.
"""

from __future__ import annotations

import re
from typing import Callable

from sqlglot import exp

from bqbatch_sql.request_spec import (
    CONTENT, DATA_FIELDS, GENERATION_CONFIG, KINDS, MAX_REQUEST_BYTES, PART, PROTO, REQUEST, RESPONSE_MIME_TYPES,
    ROLES, SAFETY_SETTING, SCHEMA, SCHEMA_MAX_DEPTH, SCHEMA_MIME_TYPES, TOOL, Field, Message, snake,
)
from bqbatch_sql.request_sql_bigquery import BigQueryOps
from bqbatch_sql.request_sql_ops import (
    BASE64, FILE_URI, NO_PATH, SCALAR_KINDS, DuckDBOps, Ops, Path, _and, _case, _coalesce, _dot, _eq, _fn,
    _in, _is_null, _leaves, _lit, _not, _not_null, _num, _or,
)

class Scope:
    """One JSON object of the request, read once: leaf types, scalar values and keys."""

    def __init__(self, ops: Ops, v: exp.Expression, msg: Message, extra: dict | None = None):
        self.ops, self.msg, self.value = ops, msg, v
        self.leaves = _leaves(msg)
        self.index = {(leaf.json_path): i for i, leaf in enumerate(self.leaves, start=1)}
        self.key_paths = ["$"] + [f"$.{oa}" for o in msg.nested for oa in msg.get(o).aliases]
        paths = [leaf.json_path for leaf in self.leaves]
        members = {
            "v": v,
            "st": ops.type_at(v),
            "t": ops.types(v, paths),
            "s": ops.strings(v, [leaf.json_path if leaf.field.kind in SCALAR_KINDS else NO_PATH for leaf in self.leaves]),
            **ops.key_members(v, self.key_paths),
            **ops.leaf_json_member(v, paths),
        }
        members.update({n: fn(v) for n, fn in (extra or {}).items()})
        self.struct = ops.struct(**members)
        self.var: exp.Expression | None = None

    def bind(self, body: Callable[["Scope"], exp.Expression]) -> exp.Expression:
        def with_var(x: exp.Expression) -> exp.Expression:
            self.var = x
            return body(self)

        return self.ops.let(self.struct, with_var)

    def member(self, name: str) -> exp.Expression:
        return _dot(self.var, name)

    @property
    def v(self) -> exp.Expression:
        return self.member("v")

    def _paths(self, fname: str, obj: str | None) -> list[str]:
        if obj is None:
            return [f"$.{a}" for a in self.msg.get(fname).aliases]
        return [f"$.{oa}.{ga}" for oa in self.msg.get(obj).aliases for ga in self.msg.nested[obj].get(fname).aliases]

    def type(self, fname: str, obj: str | None = None) -> exp.Expression:
        """The field's JSON type; NULL when absent or null (proto3 JSON: null = not set)."""
        null = _lit(self.ops.TYPES["null"][0])
        return _coalesce([exp.Nullif(this=self.ops.at(self.member("t"), self.index[p]), expression=null)
                          for p in self._paths(fname, obj)])

    def str(self, fname: str, obj: str | None = None) -> exp.Expression:
        return _coalesce([self.ops.at(self.member("s"), self.index[p]) for p in self._paths(fname, obj)])

    def keys(self, obj: str | None = None) -> exp.Expression:
        if obj is None:
            return self.ops.key_get(self, 0)
        return _coalesce([self.ops.key_get(self, self.key_paths.index(f"$.{oa}")) for oa in self.msg.get(obj).aliases])

    def field_json(self, fname: str) -> exp.Expression:
        return _coalesce([self.ops.json_at(self.v, p) for p in self._paths(fname, None)])

    def items(self, fname: str) -> exp.Expression:
        return _coalesce([self.ops.items(self.v, p) for p in self._paths(fname, None)])


# ---------------------------------------------------------------------------
# The checks, evaluated in order, the first problem wins: (condition, problem) pairs,
# or (None, expression) for an expression that is itself the problem or NULL (so an
# expensive expression is never written twice, once to test it and once to report it).
# ---------------------------------------------------------------------------

Check = tuple["exp.Expression | None", exp.Expression]


def _chain(checks: list[Check], rest: exp.Expression | None = None) -> exp.Expression:
    acc = rest
    whens: list[tuple[exp.Expression, exp.Expression]] = []
    for cond, value in reversed(checks):
        if cond is not None:
            whens.insert(0, (cond, value))
            continue
        if whens:
            acc = _case(whens, acc)
            whens = []
        acc = value if acc is None else exp.Coalesce(this=value, expressions=[acc])
    if whens:
        acc = _case(whens, acc)
    return acc if acc is not None else exp.Null()


def _key_checks(ops: Ops, sc: Scope, path: Path, obj: str | None = None) -> list[Check]:
    """Unknown keys, and one field spelled both ways (camelCase and snake_case)."""
    m = sc.msg.nested[obj] if obj else sc.msg
    where = path.key(snake(obj)) if obj else path
    keys = sc.keys(obj)
    checks: list[Check] = [(None, ops.first_problem(
        keys, lambda k, i: _case([(_not(_in(k, m.names)), ops.problem("unknown_field", where, k))])))]
    pairs = [(f.name, f.snake) for f in m.fields if f.snake != f.name]
    if pairs:
        table = exp.Array(expressions=[ops.struct(c=_lit(c), s=_lit(s)) for c, s in pairs])
        both = lambda pr: _and(ops.contains(keys, _dot(pr, "c")), ops.contains(keys, _dot(pr, "s")))  # noqa: E731
        checks.append((None, ops.first_problem(table, lambda pr, i: _case(
            [(both(pr), ops.problem("duplicate_field", where, _dot(pr, "c"), _dot(pr, "s")))]))))
    return checks


def _leaf_checks(ops: Ops, sc: Scope, path: Path) -> Check:
    """Type, enum, range and base64 checks of every present leaf, from the leaf table."""
    def problem(x: exp.Expression) -> exp.Expression:
        t, s, m = _dot(x, "t"), _dot(x, "s"), _dot(x, "m")
        k = _dot(m, "k")
        n = ops.number(s)
        is_t = lambda *kinds: ops.is_type(t, *kinds)  # noqa: E731
        field_path = path.key(_dot(m, "e"))
        parent = _case([(_eq(_dot(m, "pe"), ""), ops.path(path))],
                       ops.path(path.key(_dot(m, "pe")))) if path.parts else _dot(m, "pe")
        value = ops.leaf_json_text(sc, x)
        type_ok = exp.Case(this=k, ifs=[
            exp.If(this=_lit("a"), true=exp.true()),
            exp.If(this=_lit("s"), true=is_t("string")),
            exp.If(this=_lit("y"), true=is_t("string")),
            exp.If(this=_lit("b"), true=is_t("boolean")),
            exp.If(this=_lit("o"), true=is_t("object")),
            exp.If(this=_lit("n"), true=_or(is_t("number"), _and(is_t("string"), _not_null(n)))),
            exp.If(this=_lit("i"), true=_and(is_t("number", "string"), _not_null(n), _eq(n, _fn("floor", n)),
                                             exp.LT(this=_fn("abs", n), expression=_num(2**31)))),
            exp.If(this=_lit("e"), true=is_t("number", "string")),
        ], default=exp.false())
        name = _case([(_dot(m, "ci"), _fn("upper", s))], s)
        bad_enum = _and(_eq(k, "e"), _or(
            _and(is_t("string"), _eq(ops.strpos(_dot(m, "en"), ops.concat("|", name, "|")), 0)),
            _and(is_t("number"), _not(_eq(n, _fn("floor", n))))))
        hi, lo = _dot(m, "hi"), _dot(m, "lo")
        out_of_range = _and(_not_null(lo), _or(
            exp.LT(this=n, expression=lo),
            _and(_not_null(hi), _or(exp.GT(this=n, expression=hi), _and(_not(_dot(m, "hinc")), _eq(n, hi))))))
        parent_path = Path((parent,))
        return _case([
            (_and(is_t("array"), _not(_dot(m, "r"))), ops.problem("not_repeating", parent_path, _dot(m, "n"))),
            (is_t("array"), exp.Null()),  # a list for a repeated field: its items are checked on their own
            (_not(type_ok), ops.problem("wrong_type", field_path, _dot(m, "t"), value)),
            (bad_enum, ops.problem("invalid_enum", field_path, _dot(m, "t"), value)),
            (out_of_range, ops.problem("out_of_range", field_path, _dot(m, "c"), s, _dot(m, "rt"))),
            (_and(_eq(k, "y"), _not(ops.regexp(s, BASE64))), ops.problem("invalid_base64", field_path)),
        ])

    return (None, ops.leaf_problem(sc, ops.leaf_table(sc.leaves), len(sc.leaves), problem))


def _repeated_scalar_checks(ops: Ops, sc: Scope, path: Path) -> list[Check]:
    """Lists of scalars (stopSequences, responseModalities, ...): their length and each item."""
    checks: list[Check] = []
    for f in sc.msg.fields:
        if not (f.repeated and f.kind in SCALAR_KINDS):
            continue
        items = sc.items(f.name)
        fpath = path.key(f.snake)
        is_list = ops.is_type(sc.type(f.name), "array")
        if f.max_items is not None:
            too_many = exp.GT(this=ops.length(items), expression=_num(f.max_items))
            checks.append((_and(is_list, too_many),
                           ops.problem("too_many_items", fpath, ops.length(items), str(f.max_items))))

        def item_problem(e: exp.Expression, i: exp.Expression, f: Field = f, fpath: Path = fpath) -> exp.Expression:
            t, s = ops.type_at(e), ops.string_at(e)
            ok = {"string": ops.is_type(t, "string"), "enum": _and(ops.is_type(t, "string"), _in(s, f.enum))}[f.kind]
            code = "invalid_enum" if f.kind == "enum" else "wrong_type"
            return _case([(_not(ok), ops.problem(code, fpath.index(i), f.proto, ops.json_text(e)))])

        checks.append((None, _case([(is_list, ops.first_problem(items, item_problem))])))
    return checks


def _object_problem(ops: Ops, v: exp.Expression, msg: Message, path: Path, *,
                    extra: Callable[[Scope], list[Check]] | None = None,
                    children: Callable[[Scope], list[exp.Expression]] | None = None,
                    self_check: bool = True, members: dict | None = None) -> exp.Expression:
    """The first problem of one JSON object: its own type, keys, leaves, extra rules, then children."""
    def body(sc: Scope) -> exp.Expression:
        whens: list[Check] = []
        if self_check:
            whens.append((_not(ops.is_type(sc.member("st"), "object")),
                          ops.problem("wrong_type", path, PROTO + msg.name, ops.json_text(sc.v))))
        whens += _key_checks(ops, sc, path)
        for obj in msg.nested:
            whens += _key_checks(ops, sc, path, obj)
        whens.append(_leaf_checks(ops, sc, path))
        whens += _repeated_scalar_checks(ops, sc, path)
        whens += extra(sc) if extra else []
        rest = _coalesce(children(sc)) if children else None
        return _chain(whens, None if rest is None or isinstance(rest, exp.Null) else rest)

    return Scope(ops, v, msg, members).bind(body)


def _content_problem(ops: Ops, row: exp.Expression) -> exp.Expression:
    """A content of `contents`, or the system instruction (row.sys): the row is {p, j, sys}."""
    path = Path((_dot(row, "p"),))

    def extra(sc: Scope) -> list[Check]:
        role, parts_type = sc.str("role"), sc.type("parts")
        no_parts = _or(_is_null(parts_type),
                       _and(ops.is_type(parts_type, "array"), _eq(ops.array_length(sc.v, "$.parts"), 0)))
        user_turn = _not(_dot(row, "sys"))  # the role of a system instruction is ignored by the API
        return [
            # "" is the proto default (unset) and is accepted; any other role is refused.
            (_and(user_turn, _not_null(role), _not(_in(role, ROLES))), ops.problem("invalid_role")),
            (_and(user_turn, no_parts), ops.problem("parts_empty", path.key("parts"))),
        ]

    return _object_problem(ops, _dot(row, "j"), CONTENT, path, extra=extra)


def _part_problem(ops: Ops, v: exp.Expression, path: Path) -> exp.Expression:
    def extra(sc: Scope) -> list[Check]:
        flags = [(_not_null(sc.type(d)), d) for d in DATA_FIELDS]
        count = exp.paren(_sum([_case([(c, _num(1))], _num(0)) for c, _ in flags]), copy=False)
        names = _fn("trim", ops.concat(*[_case([(c, _lit(f" {d}"))], _lit("")) for c, d in flags]))
        text, checks = sc.str("text"), []
        checks += [
            (_eq(count, 0), ops.problem("part_no_data", path)),
            (exp.GT(this=count, expression=_num(1)), ops.problem("part_multiple_data", path, names)),
            (_eq(text, ""), ops.problem("empty_text", path.key("text"))),
        ]
        for obj in ("inlineData", "fileData"):
            mime = sc.str("mimeType", obj)
            checks.append((_and(_not_null(sc.type(obj)), _or(_is_null(mime), _eq(mime, ""))),
                           ops.problem("missing_mime_type", path.key(snake(obj)))))
        uri = sc.str("fileUri", "fileData")
        checks.append((_and(_not_null(sc.type("fileData")), _or(_is_null(uri), _not(ops.regexp(uri, FILE_URI)))),
                       ops.problem("invalid_file_uri", path.key("file_data").key("file_uri"), uri)))
        return checks

    return _object_problem(ops, v, PART, path, extra=extra)


def _sum(terms: list[exp.Expression]) -> exp.Expression:
    out = terms[0]
    for t in terms[1:]:
        out = exp.Add(this=out, expression=t)
    return out


def _generation_config_problem(ops: Ops, v: exp.Expression, path: Path, *, with_schema: bool = True) -> exp.Expression:
    def extra(sc: Scope) -> list[Check]:
        mime = sc.str("responseMimeType")
        schema, json_schema = _not_null(sc.type("responseSchema")), _not_null(sc.type("responseJsonSchema"))
        return [
            (_and(_not_null(mime), _not(_in(mime, RESPONSE_MIME_TYPES))), ops.problem("invalid_mime_type", path, mime)),
            (_and(schema, json_schema), ops.problem("schema_conflict", path)),
            (_and(_or(schema, json_schema), _or(_is_null(mime), _not(_in(mime, SCHEMA_MIME_TYPES)))),
             ops.problem("schema_needs_json", path.key("response_mime_type"), mime)),
        ]

    def children(sc: Scope) -> list[exp.Expression]:
        if not with_schema:  # the caller knows no row has a responseSchema (a third of the SQL)
            return []
        schema = _coalesce([ops.json_at(sc.v, f"$.{a}") for a in GENERATION_CONFIG.get("responseSchema").aliases])
        is_object = ops.is_type(sc.type("responseSchema"), "object")
        return [_case([(is_object, _schema_problem(ops, schema, path.key("response_schema")))])]

    return _object_problem(ops, v, GENERATION_CONFIG, path, extra=extra, children=children, self_check=False)


def _schema_problem(ops: Ops, schema: exp.Expression, path: Path) -> exp.Expression:
    """Every node of a responseSchema, found level by level down to SCHEMA_MAX_DEPTH
    (properties.<name>, items, anyOf[i]), checked as a Schema object."""
    def children(nodes: exp.Expression) -> exp.Expression:
        def of(n: exp.Expression) -> exp.Expression:
            p, j = _dot(n, "p"), _dot(n, "j")
            props = ops.json_at(j, "$.properties")
            items = _coalesce([ops.json_at(j, "$.items")])
            any_of = _coalesce([ops.items(j, f"$.{a}") for a in SCHEMA.get("anyOf").aliases])
            return ops.concat_lists([
                _case([(ops.is_type(ops.type_at(j, "$.properties"), "object"),
                        ops.members(props, lambda k: ops.concat(p, ".properties.", k)))]),
                _case([(ops.is_type(ops.type_at(j, "$.items"), "object"),
                        exp.Array(expressions=[ops.struct(p=ops.concat(p, ".items"), j=items)]))]),
                ops.indexed(any_of, lambda i: ops.concat(p, ".any_of[", i, "]")),
            ])
        return ops.flat_map(nodes, of)

    levels = [exp.Array(expressions=[ops.struct(p=ops.path(path), j=schema)])]
    for _ in range(SCHEMA_MAX_DEPTH):
        levels.append(children(levels[-1]))
    nodes = ops.concat_lists(levels)
    return ops.first_problem(nodes, lambda e, i: _object_problem(ops, _dot(e, "j"), SCHEMA, Path((_dot(e, "p"),))))


def _request_problem(ops: Ops, request: exp.Expression, *, fast: bool = True, schema: bool = True) -> exp.Expression:
    root = Path()

    def extra(sc: Scope) -> list[Check]:
        contents_type = sc.type("contents")
        no_contents = _or(_is_null(contents_type),
                          _and(ops.is_type(contents_type, "array"), _eq(ops.array_length(sc.v, "$.contents"), 0)))
        return [(no_contents, ops.problem("contents_empty"))]

    def children(sc: Scope) -> list[exp.Expression]:
        # One flat list per kind of object (every content and the system instruction,
        # then all their parts), so no check sits more than three lambdas deep.
        out = [
            ops.first_problem(sc.member("contents"), lambda e, i: _content_problem(ops, e)),
            ops.first_problem(sc.member("parts"), lambda e, i: _part_problem(ops, _dot(e, "j"), Path((_dot(e, "p"),)))),
        ]
        config = sc.field_json("generationConfig")
        out.append(_case([(ops.is_type(sc.type("generationConfig"), "object"),
                           _generation_config_problem(ops, config, root.key("generation_config"), with_schema=schema))]))
        for name, msg in (("safetySettings", SAFETY_SETTING), ("tools", TOOL)):
            out.append(ops.first_problem(
                sc.items(name), lambda e, i, name=name, msg=msg: _object_problem(ops, e, msg, root.key(snake(name)).index(i))))
        return out

    def contents(v: exp.Expression) -> exp.Expression:
        listed = ops.indexed(ops.items(v, "$.contents"), lambda i: ops.concat("contents[", i, "]"), sys=exp.false())
        system = _coalesce([ops.json_at(v, f"$.{a}") for a in REQUEST.get("systemInstruction").aliases])
        is_system = _or(*[ops.is_type(ops.type_at(v, f"$.{a}"), "object") for a in REQUEST.get("systemInstruction").aliases])
        return ops.append_if(listed, is_system, ops.struct(p=_lit("system_instruction"), j=system, sys=exp.true()))

    def parts(v: exp.Expression) -> exp.Expression:
        return ops.flat_items(contents(v), lambda c: ops.items(c, "$.parts"),
                              lambda p, j: ops.concat(p, ".parts[", j, "]"))

    def body(x: exp.Expression) -> exp.Expression:
        whens_first: list[Check] = [
            (_not(ops.is_type(ops.type_at(x), "object")), ops.problem("not_object", None, _fn("lower", ops.type_at(x)))),
            (exp.GT(this=ops.byte_length(request), expression=_num(MAX_REQUEST_BYTES)),
             ops.problem("request_too_large", None, ops.byte_length(request), str(MAX_REQUEST_BYTES))),
        ]
        checked = _object_problem(ops, x, REQUEST, root, extra=extra, children=children, self_check=False,
                                  members={"contents": contents, "parts": parts})
        return _case(whens_first, checked)

    whens = [(_is_null(request), ops.problem("request_null")), (_not(ops.valid_json(request)), ops.problem("not_json"))]
    if isinstance(ops, DuckDBOps):
        if fast:  # the cheap test vouches for most rows; the rest pay for the checks below
            from bqbatch_sql.request_fast import scalar_fast_valid

            whens.append((scalar_fast_valid(request), exp.Null()))
        return _case(whens, body(request))
    return _case(whens, ops.let(ops.root_json(request), body))


def make_ops(dialect: str, request_type: str = "JSON") -> Ops:
    if dialect == "duckdb":
        return DuckDBOps()
    if dialect == "bigquery":
        return BigQueryOps(request_type)
    raise ValueError(f"Request validation has no SQL rendering for the dialect '{dialect}' (duckdb, bigquery).")


def problem_sql(request: exp.Expression, dialect: str, request_type: str = "JSON") -> exp.Expression:
    """[code, path, a, b, c] of the first problem of the request, NULL when it is valid."""
    return _request_problem(make_ops(dialect, request_type), request)


def request_problem(request: exp.Expression, dialect: str, request_type: str = "JSON", *,
                    fast: bool = True, schema: bool = True) -> exp.Expression:
    """`problem_sql`; fast=False leaves out DuckDB's cheap test, for rows known to need
    the full checks (it would only cost time there); schema=False leaves out the checks
    of generationConfig.responseSchema, for rows known to have none (DuckDB plans the
    smaller expression in half the time)."""
    return _request_problem(make_ops(dialect, request_type), request, fast=fast, schema=schema)


def message_sql(problem: exp.Expression, dialect: str) -> exp.Expression:
    """The status message of a problem list (problem is evaluated once per template piece)."""
    ops = make_ops(dialect)
    code, path = ops.at(problem, 1), ops.at(problem, 2)
    args = {"{a}": ops.at(problem, 3), "{b}": ops.at(problem, 4), "{c}": ops.at(problem, 5), "{path}": path,
            "{at}": _case([(_eq(path, ""), _lit(""))], ops.concat(" at '", path, "'"))}
    ifs = []
    for kind in KINDS.values():
        pieces = [p for p in re.split(r"(\{a\}|\{b\}|\{c\}|\{path\}|\{at\})", kind.message) if p]
        ifs.append(exp.If(this=_lit(kind.code), true=ops.concat(*[args.get(p, p) for p in pieces])))
    return exp.Case(this=code, ifs=ifs)


def status_sql(problem: exp.Expression, dialect: str) -> exp.Expression:
    """Vertex's status text for a problem: Bad Request: {"error": {"code": 400, ...}}."""
    ops = make_ops(dialect)
    return ops.concat('Bad Request: {"error": {"code": 400, "message": ', ops.json_quote(message_sql(problem, dialect)),
                      ', "status": "INVALID_ARGUMENT"}}')
