"""Request validation, before anything is submitted (stage: materialize -> **validate** -> submit).

Vertex refuses a bad request only after the job has queued and run; here the same
rules run inside the warehouse, over every row: one SQL expression per dialect
(`request_sql`, from the rules in `request_spec`), and on DuckDB a fast path in
front of it (`request_fast`, `validate_duckdb`). Python only sees counts and a few
samples.

- `request_status_sql`: the per-row status (NULL when valid), Vertex's wording, as
  one scalar expression; the emulator writes it into the output's `status` column.
- `materialize_statuses`: every row's status in a table, the fast way; the batch
  flow (on_invalid='skip') and the local predictor read it.
- `check_request_table`: the table-level contract of a batch input table.
- `validate_relation`: counts per kind of problem and the first offending rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from bqbatch_sql import request_spec as spec
from bqbatch_sql.errors import RequestTableError, WarehouseError
from bqbatch_sql.nodes import Column, Relation
from bqbatch_sql.request_sql import make_ops, message_sql, problem_sql, status_sql
from bqbatch_sql.request_sql_ops import _case, _not_null
from bqbatch_sql.request_template import RequestTemplate

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
    ops = make_ops(dialect, request_type)
    problem = problem_sql(request, dialect, request_type)
    return ops.let(problem, lambda p: _case([(_not_null(p), status_sql(p, dialect))]))


def request_problem_sql(request: exp.Expression, dialect: str, *, request_type: str = "JSON") -> exp.Expression:
    """[code, path, a, b, c] of the first problem of the request (NULL when valid); see
    `request_spec.KINDS` for the codes."""
    return problem_sql(request, dialect, request_type)


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
        return spec.hint_for(self.code, self.message)


@dataclass
class ValidationReport:
    model: str
    path: str
    relation: str
    total: int
    invalid: int
    counts: dict[str, int] = field(default_factory=dict)  # code -> rows, most frequent first
    samples: list[Sample] = field(default_factory=list)
    max_requests: int | None = spec.MAX_REQUESTS_PER_JOB

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
                kind = spec.KINDS.get(code)
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
    max_requests: int | None = spec.MAX_REQUESTS_PER_JOB,
    template: RequestTemplate | None = None,
) -> ValidationReport:
    """Check every row of a request table in the warehouse: counts per kind of problem
    and the first offending rows with their key columns.

    max_requests: the per-job limit the report warns about (Vertex's 200,000); None
    for predictors without one. template (DuckDB): the shape the model's SQL gives
    most rows (`request_template`), a hint that spares most of the work on them."""
    passthrough = check_request_table(adapter, relation, model=model, path=path)
    columns = {c.name.lower(): c for c in adapter.columns(relation)}
    request_col = columns[REQUEST_COLUMN]
    request_type = _type_name(request_col)
    keys = _key_columns(key_columns, passthrough, relation, model, path)
    if adapter.dialect == "duckdb":
        total, counts, samples = _duckdb_report(adapter, relation, request_col.name, keys, sample_size, template)
        return ValidationReport(model, path, str(relation), total, sum(counts.values()), counts, samples, max_requests)

    dialect = adapter.dialect
    ops = make_ops(dialect, request_type)
    problem = problem_sql(exp.column(request_col.name, quoted=True), dialect, request_type)
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
    counts = _by_frequency(counts)
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
                       message_sql(exp.column("p"), dialect).as_("message"))
            .from_(exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier("c"))))
            .where(_not_null(exp.column("p")))
            .limit(sample_size)
        )
        names = keys or ["request"]
        for row in adapter.fetchall(outer):
            samples.append(Sample(dict(zip(names, row[: len(names)])), row[-2], row[-1]))
    return ValidationReport(model, path, str(relation), total, invalid, counts, samples, max_requests)


def _by_frequency(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _duckdb_report(adapter: Any, relation: Relation, request: str, keys: list[str], sample_size: int,
                   template: RequestTemplate | None = None) -> tuple[int, dict[str, int], list[Sample]]:
    """The fast path and the full checks (`validate_duckdb`), then counts per kind and the
    first offending rows, whose key columns are read by row id."""
    from bqbatch_sql import validate_duckdb as vd

    with _duckdb_session(adapter, relation) as (con, is_view):
        source, classified = vd.run(con, relation, request, is_view=is_view, template=template)
        counts = _by_frequency({code: int(n) for code, n in con.execute(vd.counts_sql()).fetchall()})
        first = con.execute(vd.first_bad_sql(max(sample_size, 1))).fetchall() if counts and sample_size > 0 else []
        shown: dict[int, dict[str, Any]] = {}
        if first:
            names = keys or ["request"]
            cols = [exp.column(k, quoted=True) for k in keys] or [exp.Substring(
                this=exp.cast(exp.column(request, quoted=True), exp.DataType.build("VARCHAR")),
                start=exp.Literal.number(1), length=exp.Literal.number(80)).as_("request")]
            query = exp.select(exp.column("rowid"), *cols).from_(source.table()).where(
                "rowid = ANY($1)", dialect="duckdb")
            for rid, *values in con.execute(query.sql("duckdb"), [[r[0] for r in first]]).fetchall():
                shown[rid] = dict(zip(names, values))
    samples = [Sample(shown.get(rid, {}), code, message) for rid, code, message in first]
    return classified.total, counts, samples


@dataclass
class StatusCounts:
    total: int
    invalid: int


def materialize_statuses(adapter: Any, relation: Relation, target: Relation, *, request_type: str | None = None,
                         keep_columns: bool = False, status_column: str = "status",
                         template: RequestTemplate | None = None) -> StatusCounts:
    """Create `target` with every row's Vertex-style status (NULL when the request is valid).

    keep_columns=False (DuckDB): `rid` (the row's rowid in `relation`) and the status (in
    `status_column`), one row per row in table order -- what the local predictor pairs
    with each chunk of its input.
    keep_columns=True (any warehouse): every column of `relation`, then `status`, in
    table order on DuckDB -- what the batch flow splits into rows to submit and rows
    to record as failed.

    `adapter` is a warehouse adapter, or a DuckDB connection (the local predictor's
    own). On DuckDB the fast path vouches for most rows; the full checks run on the
    rest only. request_type ("JSON"/"STRING") matters on BigQuery only; template as for
    validate_relation.
    """
    dialect = getattr(adapter, "dialect", "duckdb")
    if dialect != "duckdb":
        if not keep_columns:
            raise ValueError("materialize_statuses(keep_columns=False) needs DuckDB row ids; BigQuery has none.")
        kind = request_type or next(_type_name(c) for c in adapter.columns(relation) if c.name.lower() == REQUEST_COLUMN)
        status = request_status_sql(exp.column(REQUEST_COLUMN, quoted=True), dialect, request_type=kind)
        adapter.create_table_as(target, exp.select(exp.Star(), status.as_("status")).from_(relation.table()))
        total, invalid = adapter.fetchall(exp.select("COUNT(*)", "COUNTIF(status IS NOT NULL)", dialect="bigquery")
                                          .from_(target.table()))[0]
        return StatusCounts(int(total), int(invalid))

    from bqbatch_sql import validate_duckdb as vd

    with _duckdb_session(adapter, relation) as (con, is_view):
        request = _request_column(con, relation)
        source, classified = vd.run(con, relation, request, is_view=is_view, template=template)
        statuses = target if not keep_columns else Relation("temp", "main", "__bqbatch_v_statuses")
        for sql in vd.write_statuses_sql(source, statuses, "status" if keep_columns else status_column):
            con.execute(sql)
        if keep_columns:
            con.execute(vd.join_columns_sql(source, statuses, target))
            con.execute(exp.Drop(tables=[statuses.table()], kind="TABLE", exists=True).sql("duckdb"))
        column = exp.column("status" if keep_columns else status_column, quoted=True)
        invalid = con.execute(exp.select("count(*)").from_(target.table()).where(column.is_(exp.Null()).not_()).sql("duckdb")).fetchone()[0]
    return StatusCounts(classified.total, int(invalid))


def _request_column(con: Any, relation: Relation) -> str:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "AND lower(column_name) = 'request'", [relation.schema, relation.name]).fetchall()
    if not rows:
        raise RequestTableError(f"The request table {relation} has no column named 'request'.")
    return rows[0][0]


class _duckdb_session:
    """The DuckDB connection to validate on (the adapter's, or the one given), DuckDB
    errors as WarehouseError naming the table, scratch tables dropped at the end."""

    def __init__(self, adapter: Any, relation: Relation):
        self.adapter, self.relation = adapter, relation

    def __enter__(self):
        import duckdb

        adapter = self.adapter
        self.con = adapter if isinstance(adapter, duckdb.DuckDBPyConnection) else adapter.cursor()
        kind = self.con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [self.relation.schema, self.relation.name]).fetchall()
        return self.con, bool(kind) and kind[0][0] == "VIEW"

    def __exit__(self, kind, error, tb):
        import duckdb

        from bqbatch_sql import validate_duckdb as vd

        try:
            for sql in vd.drop_scratch_sql():
                self.con.execute(sql)
        except duckdb.Error:
            if error is None:
                raise
        # a cancelled job interrupts the statement: that is not the warehouse refusing it
        if isinstance(error, duckdb.Error) and not isinstance(error, duckdb.InterruptException):
            raise WarehouseError(f"Validating the requests of {self.relation} failed in DuckDB: {error}") from error
        return False


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
