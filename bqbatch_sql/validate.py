"""Request validation, before anything is submitted (stage: materialize -> **validate** -> submit).

Vertex refuses a bad request only after the job has queued and run; here the same
rules run inside the warehouse, over every row, as one SQL expression rendered from
`request_rules` for DuckDB or BigQuery. Python only sees counts and a few samples.

- `request_status_sql`: the per-row status (NULL when valid), Vertex's wording. The
  local predictor and the emulator write it into the output's `status` column.
- `check_request_table`: the table-level contract of a batch input table.
- `validate_relation`: counts per kind of problem and the first offending rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from bqbatch_sql import request_rules as rules
from bqbatch_sql.errors import RequestTableError
from bqbatch_sql.nodes import Column, Relation

REQUEST_COLUMN = "request"
# Vertex writes these into the output table next to the pass-through columns.
OUTPUT_COLUMNS = ("response", "status", "processed_time")
# BigQuery types Vertex cannot carry through a batch job (seeds: "except ARRAY, STRUCT,
# RANGE, DATETIME and GEOGRAPHY").
FORBIDDEN_TYPES = ("ARRAY", "STRUCT", "RANGE", "DATETIME", "GEOGRAPHY")
ON_INVALID = ("fail", "skip", "submit")


def request_status_sql(request: exp.Expression, dialect: str, *, request_type: str = "JSON") -> exp.Expression:
    """A scalar expression over the request column: NULL for a valid request, else
    Vertex's status text, e.g. 'Bad Request: {"error": {"code": 400, "message": "Please
    use a valid role: user, model.", "status": "INVALID_ARGUMENT"}}'.

    request_type matters on BigQuery only ("JSON" or "STRING"); DuckDB reads both alike.
    """
    ops = rules.make_ops(dialect, request_type)
    problem = rules.problem_sql(request, dialect, request_type)
    return ops.let(problem, lambda p: rules._case([(rules._not_null(p), rules.status_sql(p, dialect))]))


def request_problem_sql(request: exp.Expression, dialect: str, *, request_type: str = "JSON") -> exp.Expression:
    """[code, path, a, b, c] of the first problem of the request (NULL when valid); see
    `request_rules.KINDS` for the codes."""
    return rules.problem_sql(request, dialect, request_type)


def _type_name(column: Column) -> str:
    return column.data_type.upper().split("<")[0].split("(")[0].strip()


def check_request_table(adapter: Any, relation: Relation, *, model: str, path: str) -> list[Column]:
    """The batch input contract of a request table; returns its pass-through columns."""
    where = f"Model '{model}' ({path}): the request table {relation}"
    columns = adapter.columns(relation)
    by_name = {c.name.lower(): c for c in columns}
    request = by_name.get(REQUEST_COLUMN)
    if request is None:
        names = ", ".join(c.name for c in columns) or "no columns"
        raise RequestTableError(
            f"{where} has no column named '{REQUEST_COLUMN}' (it has: {names}). Vertex reads the request from "
            f"that column: end the model's SELECT with `... AS request`, e.g. "
            f"{{{{ gemini_request(prompt=...) }}}} AS request."
        )
    if _type_name(request) not in ("JSON", "STRING"):
        raise RequestTableError(
            f"{where}: column '{request.name}' is {request.data_type}; Vertex needs JSON or STRING holding a "
            f"GenerateContentRequest object. Build it with JSON_OBJECT(...) or the gemini_request macro."
        )
    passthrough = [c for c in columns if c is not request]
    for c in passthrough:
        if c.name.lower() in OUTPUT_COLUMNS:
            raise RequestTableError(
                f"{where}: column '{c.name}' has a name Vertex reserves for the output table "
                f"({', '.join(OUTPUT_COLUMNS)}). Rename it, e.g. `{c.name} AS input_{c.name}`."
            )
        kind = _type_name(c)
        if kind in FORBIDDEN_TYPES:
            fix = {
                "DATETIME": f"CAST({c.name} AS TIMESTAMP) or FORMAT_DATETIME(...) as a STRING",
                "ARRAY": f"TO_JSON({c.name}) (a JSON column) or ARRAY_TO_STRING({c.name}, ',')",
                "STRUCT": f"TO_JSON({c.name}) (a JSON column)",
                "RANGE": f"RANGE_START({c.name}) and RANGE_END({c.name}) as two columns",
                "GEOGRAPHY": f"ST_ASTEXT({c.name}) as a STRING",
            }[kind]
            raise RequestTableError(
                f"{where}: pass-through column '{c.name}' is {c.data_type}; Vertex batch prediction cannot carry "
                f"{', '.join(FORBIDDEN_TYPES)} columns. Select {fix} instead."
            )
    return passthrough


@dataclass
class Sample:
    """One offending row: its key columns, the kind of problem and Vertex's message."""

    keys: dict[str, Any]
    code: str
    message: str

    @property
    def hint(self) -> str:
        return rules.hint_for(self.code, self.message)


@dataclass
class ValidationReport:
    model: str
    path: str
    relation: str
    total: int
    invalid: int
    counts: dict[str, int] = field(default_factory=dict)  # code -> rows, most frequent first
    samples: list[Sample] = field(default_factory=list)
    max_requests: int | None = rules.MAX_REQUESTS_PER_JOB

    @property
    def valid(self) -> int:
        return self.total - self.invalid

    @property
    def over_job_limit(self) -> bool:
        return self.max_requests is not None and self.total > self.max_requests

    def render(self) -> str:
        """The report as a user reads it in the terminal."""
        lines = [f"{self.model} ({self.path}): {self.total:,} requests in {self.relation}, "
                 f"{self.valid:,} valid, {self.invalid:,} invalid"]
        if self.over_job_limit:
            jobs = -(-self.total // self.max_requests)
            lines.append(
                f"  ! {self.total:,} rows exceed Vertex's limit of {self.max_requests:,} requests per batch job: "
                f"Vertex refuses the job, nothing is truncated. Split the model into {jobs} models of at most "
                f"{self.max_requests:,} rows (e.g. WHERE MOD(ABS(FARM_FINGERPRINT(id)), {jobs}) = k)."
            )
        if self.counts:
            lines.append("  problems by kind:")
            width = max(len(f"{n:,}") for n in self.counts.values())
            for code, n in self.counts.items():
                kind = rules.KINDS.get(code)
                lines.append(f"    {n:>{width},}  {code:<20} {kind.title if kind else ''}")
        if self.samples:
            lines.append(f"  first {len(self.samples)} offending rows:")
            for s in self.samples:
                keys = ", ".join(f"{k}={_short(v)}" for k, v in s.keys.items())
                lines.append(f"    {keys}: {s.message}")
                if s.hint:
                    lines.append(f"      fix: {s.hint}")
        return "\n".join(lines)


def _short(value: Any, width: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def validate_relation(
    adapter: Any,
    relation: Relation,
    *,
    model: str,
    path: str,
    key_columns: list[str] | None = None,
    sample_size: int = 10,
    max_requests: int | None = rules.MAX_REQUESTS_PER_JOB,
) -> ValidationReport:
    """Check every row of a request table in the warehouse: one aggregate query for the
    counts per kind of problem, one small query for the first offending rows."""
    passthrough = check_request_table(adapter, relation, model=model, path=path)
    columns = {c.name.lower(): c for c in adapter.columns(relation)}
    request_col = columns[REQUEST_COLUMN]
    request_type = _type_name(request_col)
    dialect = adapter.dialect
    ops = rules.make_ops(dialect, request_type)
    problem = rules.problem_sql(exp.column(request_col.name, quoted=True), dialect, request_type)

    keys = _key_columns(key_columns, passthrough, relation, model, path)
    if dialect == "duckdb":
        total, counts, samples = _duckdb_check(adapter, relation, request_col.name, keys, sample_size)
        return ValidationReport(model, path, str(relation), total, sum(counts.values()), counts, samples, max_requests)

    code = ops.at(exp.column("p"), 1)
    checked = exp.select(problem.as_("p")).from_(relation.table())
    counts_q = (
        exp.select(code.as_("code"), exp.Count(this=exp.Star()).as_("n"))
        .from_(exp.Subquery(this=checked, alias=exp.TableAlias(this=exp.to_identifier("c"))))
        .group_by(exp.column("code"))
    )
    counts: dict[str, int] = {}
    total = 0
    for c, n in adapter.fetchall(counts_q):
        total += n
        if c is not None:
            counts[c] = n
    counts = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    invalid = sum(counts.values())

    samples: list[Sample] = []
    if invalid and sample_size > 0:
        key_exprs = [exp.column(k, quoted=True) for k in keys] or [
            exp.Substring(this=ops.text(exp.column(request_col.name, quoted=True)), start=exp.Literal.number(1),
                          length=exp.Literal.number(80)).as_("request")
        ]
        inner = exp.select(*key_exprs, problem.as_("p")).from_(relation.table())
        outer = (
            exp.select(*[exp.column(k, quoted=True) for k in (keys or ["request"])], code.as_("code"),
                       rules.message_sql(exp.column("p"), dialect).as_("message"))
            .from_(exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier("c"))))
            .where(rules._not_null(exp.column("p")))
            .limit(sample_size)
        )
        names = keys or ["request"]
        for row in adapter.fetchall(outer):
            samples.append(Sample(dict(zip(names, row[: len(names)])), row[-2], row[-1]))
    return ValidationReport(model, path, str(relation), total, invalid, counts, samples, max_requests)


def _duckdb_check(adapter: Any, relation: Relation, request: str, keys: list[str], sample_size: int
                  ) -> tuple[int, dict[str, int], list[Sample]]:
    """One pass on DuckDB: the cheap test (`request_rules.duckdb_fast_valid`) on every row;
    the full checks on the rows it cannot vouch for, gathered first (ORDER BY compacts
    them: run on a handful of rows scattered through every chunk, the full checks would
    pay their fixed cost per chunk); counts per kind and the first rows in one aggregate."""
    ops = rules.DuckDBOps()
    req = exp.column(request, quoted=True)
    fast = rules.duckdb_fast_valid(ops, req)
    full = rules._request_problem(ops, req, fast=False)
    ordinal = exp.Window(this=exp.RowNumber()).as_("_ord")
    if keys:
        names = keys
        shown = [exp.column(k, quoted=True) for k in keys]
    else:  # no pass-through column: show the start of the request
        names = ["request_text"]
        shown = [exp.Substring(this=ops.text(req), start=exp.Literal.number(1), length=exp.Literal.number(80)).as_("request_text")]
    numbered = exp.select(*shown, req.copy(), ordinal).from_(relation.table())
    inner = exp.select(*[exp.column(n, quoted=True) for n in names], req.copy(), exp.column("_ord"))
    gathered = inner.from_(numbered.subquery("n")).where(exp.Not(this=exp.paren(fast))).order_by("_ord")
    checked = exp.select(*[exp.column(n, quoted=True) for n in names], exp.column("_ord"), full.as_("p")).from_(gathered.subquery("g"))
    p = exp.column("p")
    sample = ops.struct(**{f"k{i}": exp.column(n, quoted=True) for i, n in enumerate(names)},
                        message=rules.message_sql(p, "duckdb"), ord=exp.column("_ord"))
    query = (exp.select(ops.at(p, 1).as_("code"), exp.Count(this=exp.Star()).as_("n"),
                        exp.Anonymous(this="min_by", expressions=[sample, exp.column("_ord"), exp.Literal.number(max(sample_size, 1))]))
             .from_(checked.subquery("c")).where(rules._not_null(p)).group_by(ops.at(p, 1)))
    total = adapter.row_count(relation)
    counts: dict[str, int] = {}
    found: list[tuple[int, Sample]] = []
    for code, n, firsts in adapter.fetchall(query):
        counts[code] = n
        for f in firsts or []:
            found.append((f["ord"], Sample({k: f[f"k{i}"] for i, k in enumerate(names)}, code, f["message"])))
    counts = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    samples = [s for _, s in sorted(found, key=lambda x: x[0])][:sample_size]
    return total, counts, samples


def _key_columns(key_columns: list[str] | None, passthrough: list[Column], relation: Relation,
                 model: str, path: str) -> list[str]:
    names = {c.name.lower(): c.name for c in passthrough}
    if key_columns:
        missing = [k for k in key_columns if k.lower() not in names]
        if missing:
            from bqbatch_sql.errors import ConfigError, did_you_mean

            raise ConfigError(
                f"Model '{model}' ({path}): key column '{missing[0]}' is not a column of {relation}."
                f"{did_you_mean(missing[0], list(names.values()))} Columns: {', '.join(names.values()) or 'none'}."
            )
        return [names[k.lower()] for k in key_columns]
    # Without configured keys, the first few pass-through columns identify a row well enough.
    return [c.name for c in passthrough[:3]]
