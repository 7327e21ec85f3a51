"""Incremental predictions: pick the rows worth paying for, then merge their answers into the output.

Stage: materialize -> **rows to submit** -> validate -> submit -> wait -> **merge**.

`config(incremental=true, unique_key='review_id')`: a run submits only the rows of
`<model>__requests` whose request is new or changed since their last prediction, or
whose last attempt failed (a request the API refused as invalid, 400, waits until it
changes: sending it again would fail again; `bqbatch retry` still tries it). Without
a unique_key, the request itself identifies a row, and rows with the same request
are predicted once.

Everything happens in the warehouse: the rows to submit are an anti-join of the
request table against the output's rows of the same key and the same request text;
the merge rebuilds the output in one CREATE OR REPLACE statement, one row per
current request row: its current pass-through columns, with the response, status
and processed_time of the new job where it predicted the row, else of the previous
output. Rows that left the request table leave the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from bqbatch_sql import rowsql
from bqbatch_sql.errors import ConfigError, RequestTableError
from bqbatch_sql.nodes import Relation
from bqbatch_sql.rowsql import col, fragment

SHOWN_KEYS = 5
# The status of a request row for which neither the new job nor the previous output
# holds an answer for the current request: the next run predicts it.
UNANSWERED = ("bqbatch: no prediction for this row yet (its request is not among the rows the last job "
              "predicted); the next `bqbatch run` or `bqbatch retry` submits it")
_SCALAR = {"STRING", "INT64", "INTEGER", "NUMERIC", "BIGNUMERIC", "FLOAT64", "FLOAT", "BOOL", "BOOLEAN", "DATE",
           "TIMESTAMP", "TIME", "BYTES"}


@dataclass(frozen=True)
class RowKey:
    """What identifies a row across runs: the unique_key columns, or (none given) the request text."""

    columns: tuple[str, ...] = ()

    @property
    def by_request(self) -> bool:
        return not self.columns

    def describe(self) -> str:
        return f"unique_key {', '.join(self.columns)}" if self.columns else "the request itself (no unique_key)"

    def match(self, left: str, right: str, left_request: exp.Expression, right_request: exp.Expression
              ) -> exp.Expression:
        """Same key and same request text on both sides."""
        parts = [exp.EQ(this=col(c, left), expression=col(c, right)) for c in self.columns]
        parts.append(exp.EQ(this=left_request, expression=right_request))
        return exp.and_(*parts)


def row_key(adapter: Any, requests: Relation, cfg: Any, model: Any) -> RowKey:
    """The model's RowKey, checked against the request table: the columns exist, are scalar, unique and not NULL."""
    if not cfg.unique_key:
        return RowKey()
    types = rowsql.column_types(adapter, requests)
    by_lower = {n.lower(): n for n in types}
    columns = []
    for name in cfg.unique_key:
        actual = by_lower.get(name.lower())
        if actual is None or actual.lower() == rowsql.REQUEST:
            from bqbatch_sql.errors import did_you_mean

            others = [n for n in types if n.lower() != rowsql.REQUEST]
            raise ConfigError(
                f"Model '{model.name}' ({model.path}): unique_key '{name}' is not a pass-through column of "
                f"{requests}.{did_you_mean(name, others)} Columns: {', '.join(others) or 'none'}. Select it in the "
                f"model, or leave unique_key out to identify rows by their request."
            )
        if types[actual] not in _SCALAR:
            raise ConfigError(
                f"Model '{model.name}' ({model.path}): unique_key column '{actual}' is {types[actual]}; a key must "
                f"be a scalar column (STRING, INT64, DATE, ...). Select e.g. TO_JSON_STRING({actual}) AS {actual}_key "
                f"and use that."
            )
        columns.append(actual)
    key = RowKey(tuple(columns))
    _check_unique(adapter, requests, key, model)
    return key


def _check_unique(adapter: Any, requests: Relation, key: RowKey, model: Any) -> None:
    keys = [col(c) for c in key.columns]
    shown = fragment("TO_JSON_STRING(STRUCT(K))", K=exp.Tuple(expressions=keys)) if len(keys) > 1 else keys[0]
    any_null = exp.or_(*[exp.Is(this=k.copy(), expression=exp.Null()) for k in keys])
    query = (exp.select(exp.cast(shown, "STRING").as_("k"), exp.Count(this=exp.Star()).as_("n"))
             .from_(requests.table()).group_by(*keys)
             .having(exp.or_(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1)), any_null))
             .limit(SHOWN_KEYS))
    bad = rowsql.fetch(adapter, query)
    if bad:
        shown_rows = "; ".join(f"{k if k is not None else 'NULL'} ({n} rows)" for k, n in bad)
        raise RequestTableError(
            f"Model '{model.name}' ({model.path}): {key.describe()} does not identify one row of {requests}: "
            f"{shown_rows}. Each request row needs its own non-NULL key; fix the model's SELECT (e.g. "
            f"deduplicate with QUALIFY ROW_NUMBER() OVER (PARTITION BY ...) = 1) or choose another unique_key."
        )


_ROWS_SUFFIX = {"full": "__requests", "incremental": "__requests_delta", "retry": "__requests_retry"}


def rows_relation(output: Relation, kind: str) -> Relation:
    """The table a job of this kind predicts: the whole request table, or the rows to submit again."""
    return output.with_name(f"{output.name}{_ROWS_SUFFIX.get(kind, '__requests')}")


@dataclass
class Delta:
    """The rows a run submits, out of the current request table, judged against the previous output."""

    requests: Relation  # every current request row
    previous: Relation  # the output so far
    rows: Relation  # the rows to submit
    key: RowKey
    total: int  # current request rows
    submit: int  # rows to submit

    @property
    def kept(self) -> int:
        """Request rows whose answer comes from the previous output."""
        return max(0, self.total - self.submit)

    def describe(self) -> str:
        same = " (one row per distinct request)" if self.key.by_request else ""
        return f"{self.submit:,} of {self.total:,} rows new, changed or failed{same}; {self.kept:,} kept"


def plan(adapter: Any, model: Any, requests: Relation, output: Relation, *, full_refresh: bool,
         rows: Relation | None = None) -> tuple[Delta | None, str]:
    """The rows an incremental model submits, written to `rows` (default `<output>__requests_delta`).

    Returns (None, why) when the run predicts every row: the model is not
    incremental, --full-refresh, or there is no usable previous output.
    """
    cfg = model.config
    if not cfg.incremental:
        return None, "not incremental"
    # Checked on every run, the first included: a bad key must fail before anything is paid for.
    key = row_key(adapter, requests, cfg, model)
    if full_refresh:
        return None, "--full-refresh predicts every row"
    if not adapter.table_exists(output):
        return None, f"{output} does not exist yet: every row is predicted"
    previous_types = rowsql.column_types(adapter, output)
    needed = [rowsql.REQUEST, *key.columns, *rowsql.OUTPUT_COLUMNS]
    missing = [n for n in needed if n.lower() not in {p.lower() for p in previous_types}]
    if missing:
        return None, f"{output} has no column {missing[0]} to match rows by: every row is predicted"
    rows = rows or output.with_name(f"{output.name}__requests_delta")
    count = select_rows(adapter, requests, output, key, rows, keep_refused=True)
    return Delta(requests, output, rows, key, adapter.row_count(requests), count), ""


def select_rows(adapter: Any, requests: Relation, previous: Relation, key: RowKey, target: Relation, *,
                keep_refused: bool) -> int:
    """Write into `target` the request rows that `previous` holds no answer for; returns their count.

    An answer is a row of the same key and request text that succeeded (or, with
    keep_refused, that the API refused as invalid). Without a unique_key each
    distinct request is written once.
    """
    r_types = rowsql.column_types(adapter, requests)
    p_types = rowsql.column_types(adapter, previous)
    answered = rowsql.succeeded("p")
    if keep_refused:
        answered = exp.or_(answered, rowsql.refused("p"))
    same = key.match("p", "r", rowsql.request_text(p_types, "p"), rowsql.request_text(r_types, "r"))
    match = exp.and_(same, exp.paren(answered))
    exists = exp.Exists(this=exp.select(exp.Literal.number(1)).from_(previous.table("p")).where(match))
    query = exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier("r"))).from_(requests.table("r")).where(
        exp.Not(this=exists))
    if key.by_request:
        # Identical requests get one prediction; the merge hands it to every row that asked it.
        window = exp.Window(this=exp.RowNumber(), partition_by=[rowsql.request_text(r_types, "r")])
        query = query.qualify(exp.EQ(this=window, expression=exp.Literal.number(1)))
    rowsql.create_table(adapter, target, query)
    return adapter.row_count(target)


def merge(adapter: Any, requests: Relation, previous: Relation | None, new: Relation | None, key: RowKey,
          target: Relation) -> None:
    """Rebuild `target` in one statement: one row per request row, answered by `new`, else by `previous`.

    `target` may be `previous` itself (CREATE OR REPLACE reads the old table first),
    so readers see the old output or the merged one, never neither.
    """
    r_types = rowsql.column_types(adapter, requests)
    query = exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier("r"))).from_(requests.table("r"))
    sides = [(alias, relation) for alias, relation in (("n", new), ("p", previous)) if relation is not None]
    for alias, relation in sides:
        types = rowsql.column_types(adapter, relation)
        same = key.match(alias, "r", col("__bqb_req", alias), rowsql.request_text(r_types, "r"))
        # The large side, the previous output, usually holds one row per key: then it needs no deduplication
        # (a window over every row, the costliest part of a merge).
        dedupe = alias == "n" or key.by_request or not _unique(adapter, relation, key)
        query = query.join(_answers(relation, key, types, dedupe), on=same, join_type="LEFT", join_alias=alias)
    for name in rowsql.OUTPUT_COLUMNS:
        case = exp.Case()
        for alias, _ in sides:
            case = case.when(exp.Is(this=col("__bqb_hit", alias), expression=exp.true()), col(name, alias))
        if name == "status":
            case = case.else_(exp.Literal.string(UNANSWERED))
        elif name == "response":
            case = case.else_(exp.cast(exp.Null(), "JSON"))
        query = query.select(case.as_(name) if sides else exp.Null().as_(name))
    rowsql.create_table(adapter, target, query)


def _answers(relation: Relation, key: RowKey, types: dict[str, str], dedupe: bool = True) -> exp.Subquery:
    """The answers of an output table by (key, request); with dedupe, one per pair: a success first, then the newest."""
    request = rowsql.request_text(types)
    query = (exp.select(*[col(c) for c in key.columns], request.as_("__bqb_req"),
                        *[col(c) for c in rowsql.OUTPUT_COLUMNS], exp.true().as_("__bqb_hit"))
             .from_(relation.table()))
    if dedupe:
        partition = [col(c) for c in key.columns] + [request.copy()]
        order = [exp.Ordered(this=fragment("CASE WHEN OK THEN 0 ELSE 1 END", OK=rowsql.succeeded())),
                 exp.Ordered(this=col("processed_time"), desc=True)]
        window = exp.Window(this=exp.RowNumber(), partition_by=partition, order=exp.Order(expressions=order))
        query = query.where(exp.true()).qualify(exp.EQ(this=window, expression=exp.Literal.number(1)))
    return query.subquery()


def _unique(adapter: Any, relation: Relation, key: RowKey) -> bool:
    """Whether no two rows of `relation` share a key (one hash aggregate, no sort)."""
    keys = [col(c) for c in key.columns]
    doubled = (exp.select(exp.Literal.number(1)).from_(relation.table()).group_by(*keys)
               .having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1))).limit(1))
    return not rowsql.fetch(adapter, doubled)


def nothing_to_submit(runner: Any, compiled: Any, result: Any, delta: Delta, entry: Any, fp: str, checksum: str) -> None:
    """An incremental run whose every row already has its answer: the output follows the request table, no job."""
    from bqbatch_sql.batch import _parsed_view, _summary
    from bqbatch_sql.predictors.base import BatchJob, JobState

    ctx, output = runner.ctx, compiled.relation
    adapter = ctx.adapter
    if not (entry and entry.data_checksum == checksum and entry.destination == str(output)):
        # Rows left the request table, or their pass-through columns changed: rebuild the output from the answers.
        merge(adapter, delta.requests, output, None, delta.key, output)
        if entry is not None:
            done = BatchJob(entry.job_name, entry.state, entry.total, entry.succeeded, entry.failed, entry.incomplete)
            ctx.ledger.record(compiled.model.unique_id, fp, checksum, entry.backend, done, delta.requests, output,
                              kind="incremental", prompt_tokens=0, output_tokens=0, cost_usd=0.0)
    rowsql.drop(adapter, delta.rows)
    result.message = f"up to date: {delta.describe()}; nothing was submitted"
    result.rows = adapter.row_count(output)
    result.batch = {**_summary(adapter, output, entry.job_name if entry else "-",
                               entry.state if entry else JobState.SUCCEEDED, reused=True, tokens=False),
                    "submitted_rows": 0, "cost_usd": 0.0}
    _parsed_view(runner, compiled, delta.requests)
