"""Request validation on DuckDB, a million rows at a time (stage: validate).

Three statements, each a single pass, on one connection:
1. classify: the fast path (`request_fast`) on every row -- one regular expression
   cuts off the row's head; rows are grouped by what remains (the tail), each group
   keeping its row ids; rows whose head does not match form their own group;
2. check: the full checks (`request_sql`) on a compact table holding one small
   request per distinct tail and the rows the fast path could not vouch for --
   typically a few hundred rows out of a million, planned and run once;
3. spread: each problem back onto its rows (a group's problem onto all its rows).

What the rest of the program reads: per-row problems (`problems`), counts per kind
and the first offending rows (`summary`), or a statuses table (`write_statuses`).
Scratch tables are TEMP tables of the connection, under fixed names: a connection
runs one validation at a time (DuckDB connections are not shared across threads).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from bqbatch_sql import request_fast as fast
from bqbatch_sql import request_spec as spec
from bqbatch_sql.nodes import Relation
from bqbatch_sql.request_template import RequestTemplate
from bqbatch_sql.request_sql import message_sql, request_problem, status_sql
from bqbatch_sql.request_sql_ops import _and, _case, _lit, _not, _not_null

GROUPS = "__bqbatch_v_groups"  # gid, ok, tail, n, rids
CHECK = "__bqbatch_v_check"  # id, grp, request: what the full checks run on
FOUND = "__bqbatch_v_found"  # id, grp, p: the problem of each checked request (NULL: valid)
SOURCE = "__bqbatch_v_source"  # a snapshot when the input is a view (rowids need a table)
_SCRATCH = (GROUPS, CHECK, FOUND, SOURCE)


def _temp(name: str, alias: str | None = None) -> exp.Table:
    # DuckDB keeps a connection's TEMP tables in the catalog "temp"
    return exp.table_(name, db="main", catalog="temp", quoted=True, alias=alias)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def _create(name: str, query: exp.Query) -> exp.Create:
    return exp.Create(this=_temp(name), kind="TABLE", expression=query, replace=True,
                      properties=exp.Properties(expressions=[exp.TemporaryProperty()]))


@dataclass
class Classified:
    total: int
    groups: int  # distinct tails checked once each
    checked_rows: int  # rows that took the full checks themselves
    to_check: int  # requests the full checks ran on: those rows and one per distinct tail (not a bare '}')


def classify_sql(source: Relation, request: str, fitted: tuple[RequestTemplate, str] | None = None) -> exp.Create:
    """Statement 1: every row's head matched or not, rows grouped by their tail.

    fitted: a template of the rows and the tail its instance has (`fitted_tail`): a row
    the template fits takes that tail, sound, without the regular expressions (the
    CASEs make DuckDB run them on the other rows only)."""
    raw = exp.cast(_col(request), exp.DataType.build("VARCHAR"))
    rows = exp.select(exp.column("rid"), exp.column("raw"), _fits(fitted).as_("fits")).from_(
        exp.select(exp.column("rowid").as_("rid"), raw.as_("raw")).from_(source.table()).subquery("s"))
    fits = exp.column("fits")
    cut = exp.select("rid", "raw", "fits", _case([(fits, exp.Null())], fast.tail_sql(exp.column("raw"))).as_("tail")
                     ).from_(rows.subquery("r"))
    head_ok = _sound_head(exp.column("raw"), exp.column("tail"))
    judged = exp.select("rid", "fits", _case([(fits, exp.true())], head_ok).as_("ok"), "tail").from_(cut.subquery("c"))
    # the tail to group by; NULL for the rows whose head did not match
    tail = _case([(fits, _lit(fitted[1]) if fitted else exp.Null()),
                  (exp.column("ok"), fast.canonical_tail_sql(exp.column("tail")))])
    classified = exp.select("rid", "ok", tail.as_("tail")).from_(judged.subquery("j"))
    # Row ids are kept for the rows a problem may have to be spread onto: not those of a
    # sound head with nothing after it (most rows; a million ids cost ~0.2 s to gather).
    rids = exp.Filter(this=exp.func("list", exp.column("rid")), expression=exp.Where(
        this=exp.NullSafeEQ(this=exp.column("tail"), expression=_lit("}")).not_()))
    grouped = (exp.select("ok", "tail", exp.Count(this=exp.Star()).as_("n"), rids.as_("rids"))
               .from_(classified.subquery("k")).group_by(exp.column("ok"), exp.column("tail")))
    groupable = exp.Coalesce(this=exp.column("ok"), expressions=[exp.false()])
    numbered = exp.select(exp.Window(this=exp.RowNumber()).as_("gid"), groupable.as_("ok"), "tail", "n", "rids").from_(
        grouped.subquery("g"))
    return _create(GROUPS, numbered)


def _sound_head(raw: exp.Expression, tail: exp.Expression) -> exp.Expression:
    """The fast path vouches for the head: it matched, and no system instruction is split
    between the head and the tail."""
    return _and(fast.head_ok_sql(raw, tail), _not(fast.system_split_sql(raw.copy(), tail.copy())))


def _fits(fitted: tuple[RequestTemplate, str] | None) -> exp.Expression:
    if fitted is None:
        return exp.false()
    return exp.Coalesce(this=fitted[0].fits_sql(exp.column("raw")), expressions=[exp.false()])


def fitted_tail(con: Any, template: RequestTemplate) -> str | None:
    """The tail rows fitting `template` are grouped by: its instance's, as statement 1
    would find it; None when the instance's head does not pass, or when the varying
    text lies in that tail (the tail would then differ from row to row)."""
    raw = exp.column("raw")
    tail = exp.column("tail")
    query = exp.select(_sound_head(raw, tail).as_("ok"), fast.canonical_tail_sql(tail.copy()).as_("t")).from_(
        exp.select("raw", fast.tail_sql(raw).as_("tail")).from_(
            exp.select(exp.cast(exp.Placeholder(this="1"), exp.DataType.build("VARCHAR")).as_("raw")).subquery("i")).subquery("c"))
    ok_, canonical = con.execute(query.sql("duckdb"), [template.instance()]).fetchone()
    if not ok_ or template.varying_text_in(canonical):
        return None
    return canonical


def check_sql(source: Relation, request: str) -> exp.Create:
    """Statement 2 (input): one request per distinct tail, and the rows the fast path left."""
    g = _temp(GROUPS)
    tails = (exp.select(exp.column("gid").as_("id"), exp.true().as_("grp"),
                        fast.synthesized_request(exp.column("tail")).as_("request"))
             .from_(g).where(exp.and_(exp.column("ok"), _not(fast.bare_tail_sql(exp.column("tail"))))))
    left = exp.select(exp.Unnest(expressions=[exp.column("rids")])).from_(_temp(GROUPS)).where(_not(exp.column("ok")))
    rows = (exp.select(exp.column("rowid").as_("id"), exp.false().as_("grp"),
                       exp.cast(_col(request), exp.DataType.build("VARCHAR")).as_("request"))
            .from_(source.table()).where(exp.In(this=exp.column("rowid"), query=left.subquery())))
    return _create(CHECK, exp.union(tails, rows, distinct=False))


@functools.lru_cache(maxsize=2)
def found_sql(schema: bool = True) -> str:
    """Statement 2: the full checks over the compact table. Rendered once per process:
    the checks are a large tree (~0.3 s to build and render). schema=False: without
    the responseSchema checks, for a table where no request can hold one."""
    problem = request_problem(exp.column("request"), "duckdb", fast=False, schema=schema)
    # Kept whole: a filter on p would make DuckDB plan and evaluate the checks twice.
    return _create(FOUND, exp.select("id", "grp", problem.as_("p")).from_(_temp(CHECK))).sql("duckdb")


def may_hold_schema(request: exp.Expression) -> exp.Expression:
    """The text names a responseSchema key (either spelling), or has a \\u escape, which
    could spell one: without either, no key of that name exists."""
    keys = [json.dumps(a) for a in spec.GENERATION_CONFIG.get("responseSchema").aliases]
    return exp.or_(*[exp.func("contains", request.copy(), exp.Literal.string(t)) for t in [*keys, "\\u"]])


def _bad_rows() -> exp.Select:
    """(rid, p) of every invalid row: rows checked themselves, then the rows of failed groups."""
    own = exp.select(exp.column("id").as_("rid"), "p").from_(_temp(FOUND)).where(_and(_not(exp.column("grp")), _not_null(exp.column("p"))))
    spread = (exp.select(exp.Unnest(expressions=[_col("rids", "g")]).as_("rid"), _col("p", "f"))
              .from_(_temp(FOUND, "f"))
              .join(_temp(GROUPS, "g"), on=exp.and_(_col("grp", "f"), exp.EQ(
                  this=_col("id", "f"), expression=_col("gid", "g")))).where(_not_null(_col("p", "f"))))
    return exp.union(own, spread, distinct=False)


def run(con: Any, source: Relation, request: str, *, is_view: bool = False,
        template: RequestTemplate | None = None) -> tuple[Relation, Classified]:
    """Statements 1 and 2 on `con` (a DuckDB connection). Returns the relation the
    row ids refer to (the source, or its snapshot when it is a view).

    template: the shape most rows are expected to have (`request_template`), a hint
    only: rows it does not fit are judged as if there were none."""
    if is_view:  # a view has no rowid: read it once into a snapshot
        con.execute(_create(SOURCE, exp.select("*").from_(source.table())).sql("duckdb"))
        source = Relation("temp", "main", SOURCE)
    tail = fitted_tail(con, template) if template is not None else None
    con.execute(classify_sql(source, request, (template, tail) if tail is not None else None).sql("duckdb"))
    con.execute(check_sql(source, request).sql("duckdb"))
    classified, schema = survey(con)
    con.execute(found_for(classified, schema))
    return source, classified


def survey(con: Any) -> tuple[Classified, bool]:
    """What statement 1 found, and whether any request to check may hold a responseSchema."""
    total, groups = con.execute(exp.select("coalesce(sum(n), 0)", "count(*) FILTER (WHERE ok)").from_(
        _temp(GROUPS)).sql("duckdb")).fetchone()
    to_check, checked, schema = con.execute(exp.select(
        "count(*)", "count(*) FILTER (WHERE NOT grp)", exp.func("coalesce", exp.func("bool_or", may_hold_schema(
            exp.column("request"))), exp.false())).from_(_temp(CHECK)).sql("duckdb")).fetchone()
    return Classified(int(total), int(groups), int(checked), int(to_check)), bool(schema)


def found_for(classified: Classified, schema: bool) -> str:
    """Statement 2 as the survey allows: the full checks (without the responseSchema part
    when no request can hold one), or none at all when every row was vouched for."""
    if classified.to_check:
        return found_sql(schema=schema)
    # spare the checks' planning (~0.3 s): an empty table of problems
    return _create(FOUND, exp.select("id", "grp", exp.cast(exp.Null(), exp.DataType.build("VARCHAR[]")).as_("p"))
                   .from_(_temp(CHECK))).sql("duckdb")


def counts_sql() -> str:
    """Rows per kind of problem: a row checked itself counts 1, a failed group its rows."""
    weighted = (exp.select(_col("p", "f"), exp.Coalesce(this=_col("n", "g"), expressions=[exp.Literal.number(1)]).as_("n"))
                .from_(_temp(FOUND, "f"))
                .join(_temp(GROUPS, "g"), on=exp.and_(_col("grp", "f"), exp.EQ(
                    this=_col("id", "f"), expression=_col("gid", "g"))), join_type="left")
                .where(_not_null(_col("p", "f"))))
    code = exp.Bracket(this=exp.column("p"), expressions=[exp.Literal.number(1)], offset=1)
    return (exp.select(code.as_("code"), exp.func("sum", exp.column("n")).as_("n"))
            .from_(weighted.subquery("w")).group_by(code.copy())).sql("duckdb")


def first_bad_sql(limit: int) -> str:
    """The first `limit` invalid rows in table order, with their kind and message. A failed
    group contributes its first rows only (its row ids are sorted, not the whole table)."""
    own = exp.select(exp.column("id").as_("rid"), "p").from_(_temp(FOUND)).where(_and(_not(exp.column("grp")), _not_null(exp.column("p"))))
    firsts = exp.func("list_slice", exp.func("list_sort", _col("rids", "g")), exp.Literal.number(1), exp.Literal.number(limit))
    spread = (exp.select(exp.Unnest(expressions=[firsts]).as_("rid"), _col("p", "f"))
              .from_(_temp(FOUND, "f"))
              .join(_temp(GROUPS, "g"), on=exp.and_(_col("grp", "f"), exp.EQ(
                  this=_col("id", "f"), expression=_col("gid", "g")))).where(_not_null(_col("p", "f"))))
    first = exp.select("rid", "p").from_(exp.union(own, spread, distinct=False).subquery("b")).order_by("rid").limit(limit)
    code = exp.Bracket(this=exp.column("p"), expressions=[exp.Literal.number(1)], offset=1)
    return exp.select("rid", code.as_("code"), message_sql(exp.column("p"), "duckdb").as_("message")).from_(
        first.subquery("x")).order_by("rid").sql("duckdb")


def write_statuses_sql(source: Relation, target: Relation, status_column: str = "status") -> list[str]:
    """(rid, status) for every row of the source in table order: NULL first, then the
    problems' statuses written onto the invalid rows (an UPDATE keeps the order)."""
    create = exp.Create(this=target.table(), kind="TABLE", replace=True, expression=exp.select(
        exp.column("rowid").as_("rid"), exp.cast(exp.Null(), exp.DataType.build("VARCHAR")).as_(status_column)).from_(source.table()))
    if target.database == "temp":
        create.set("properties", exp.Properties(expressions=[exp.TemporaryProperty()]))
    bad = exp.select("rid", status_sql(exp.column("p"), "duckdb").as_("status")).from_(_bad_rows().subquery("b"))
    update = exp.Update(this=target.table(), expressions=[exp.EQ(this=_col(status_column), expression=_col("status", "b"))],
                        from_=exp.From(this=bad.subquery("b")),
                        where=exp.Where(this=exp.EQ(this=exp.column("rid", table=target.name, quoted=True), expression=_col("rid", "b"))))
    return [create.sql("duckdb"), update.sql("duckdb")]


def join_columns_sql(source: Relation, statuses: Relation, target: Relation) -> str:
    """Every column of the source, then its status, in table order: both tables are read in
    their order and paired by position (a join would reorder the rows). A mismatch of row
    ids stops the statement rather than pair a status with the wrong row."""
    guard = exp.Case(ifs=[exp.If(this=exp.NullSafeEQ(this=_col("rid", "st"), expression=exp.column("rowid", "s")).not_(),
                                 true=exp.func("error", exp.Literal.string(
                                     "bqbatch validation: statuses out of step with the request rows")))],
                     default=_col("status", "st"))
    query = exp.select(exp.column(exp.Star(), table="s"), guard.as_("status")).from_(source.table(alias="s"))
    query.append("joins", exp.Join(this=statuses.table(alias="st"), method="POSITIONAL"))
    return exp.Create(this=target.table(), kind="TABLE", replace=True, expression=query).sql("duckdb")


def drop_scratch_sql() -> list[str]:
    return [exp.Drop(tables=[_temp(name)], kind="TABLE", exists=True).sql("duckdb") for name in _SCRATCH]
