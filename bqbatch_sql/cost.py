"""What a batch costs: estimates before submitting, the budget guard, and actual usage after.

Stage: rows to submit -> **estimate / guard** -> validate -> submit -> wait -> **usage**.

- `estimate`: rows, input tokens (characters of the text parts / 4, counted in the
  warehouse) and an output estimate (the previous output's average per answered
  row, else the requests' maxOutputTokens as a ceiling), priced from `prices.py`
  or the project's `prices:`.
- `guard`: config(max_rows=..., max_cost_usd=...) refuse to submit above the limit,
  saying by how much, before any job exists.
- `usage`: the tokens Vertex reported in each response's usageMetadata, summed in the
  warehouse, and their cost. A predictor that tallied what it wrote says so instead
  (the local predictor's emulated answers: the same sums, without reading them again).
- `dry_run`: `bqbatch run --dry-run` for one model: what a run would submit and cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from bqbatch_sql import rowsql
from bqbatch_sql.errors import PredictorError
from bqbatch_sql.nodes import Relation
from bqbatch_sql.prices import Price, price_for
from bqbatch_sql.rowsql import col, fragment

if TYPE_CHECKING:
    from bqbatch_sql.compiled import CompiledModel
    from bqbatch_sql.reporting import NodeResult

CHARS_PER_TOKEN = 4
# Every "text" string of the request (contents, systemInstruction): what the prompt is made of. A literal
# of the template, not a parameter: the transpiler reads its capture group to extract the group on DuckDB.
_TEXT_PARTS = r"""ARRAY_TO_STRING(REGEXP_EXTRACT_ALL(R, r'"text"\s*:\s*"((?:[^"\\]|\\.)*)"'), '')"""


def format_usd(value: float | None) -> str:
    """Dollars with cents, and below a dollar two significant digits: $1,234.50, $0.31, $0.000028."""
    if value is None:
        return "unknown"
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    digits = max(2, 1 - math.floor(math.log10(value)))
    return f"${value:.{digits}f}"


@dataclass
class Estimate:
    model_id: str
    rows: int
    input_tokens: int
    long_input_tokens: int  # of rows above the price's long-context threshold
    output_tokens: int | None
    output_basis: str  # how output_tokens was estimated
    price: Price | None

    @property
    def cost(self) -> float | None:
        if self.price is None:
            return None
        return self.price.cost(self.input_tokens - self.long_input_tokens, self.output_tokens or 0,
                               self.long_input_tokens)

    def describe(self) -> str:
        out = f" + ~{self.output_tokens:,} output ({self.output_basis})" if self.output_tokens is not None else (
            f"; output tokens not estimated ({self.output_basis}), input only")
        if self.price is None:
            priced = (f"no batch price is known for '{self.model_id}': add it under `prices:` in "
                      f"bqbatch_project.yml")
        else:
            priced = f"est. {format_usd(self.cost)} at {self.model_id} {self.price.source}"
        return f"{self.rows:,} rows, ~{self.input_tokens:,} input tokens{out}; {priced}"


def _prices(ctx: Any) -> dict[str, Any]:
    return dict(getattr(ctx.project.config, "prices", None) or {})


def estimate(ctx: Any, model_id: str, rows: Relation, previous: Relation | None = None) -> Estimate:
    """Estimate the rows of a request table, in one aggregate query (plus one over the previous output)."""
    adapter = ctx.adapter
    price = price_for(model_id, _prices(ctx))
    types = rowsql.column_types(adapter, rows)
    text = fragment(_TEXT_PARTS, R=rowsql.request_text(types))
    tokens = fragment("CAST(CEIL(LENGTH(T) / N) AS INT64)", T=text, N=exp.Literal.number(CHARS_PER_TOKEN))
    request = col(next(n for n in types if n.lower() == rowsql.REQUEST))
    max_out = fragment("SAFE_CAST(COALESCE(JSON_VALUE(R, '$.generationConfig.maxOutputTokens'), "
                       "JSON_VALUE(R, '$.generation_config.max_output_tokens')) AS INT64)", R=request)
    long_above = exp.Literal.number(price.long_context_above if price and price.long_context_above else 2**62)
    inner = exp.select(tokens.as_("t"), max_out.as_("m")).from_(rows.table())
    query = exp.select(
        fragment("COUNT(*)"), fragment("COALESCE(SUM(t), 0)"),
        fragment("COALESCE(SUM(IF(t > L, t, 0)), 0)", L=long_above),
        fragment("SUM(m)"), fragment("COUNT(m)"),
    ).from_(inner.subquery("e"))
    n, input_tokens, long_tokens, max_total, with_max = rowsql.fetch(adapter, query)[0]
    n = int(n)
    output, basis = None, "no earlier answers and no maxOutputTokens to go by"
    average = _average_output(adapter, previous) if previous is not None else None
    if average is not None:
        output, basis = round(average * n), f"the previous output's {average:,.0f} per row"
    elif n and with_max == n:
        output, basis = int(max_total), "at most maxOutputTokens per row"
    return Estimate(model_id, n, int(input_tokens), int(long_tokens), output, basis, price)


_USAGE_FIELDS = {"p": "promptTokenCount", "c": "candidatesTokenCount", "th": "thoughtsTokenCount",
                 "tt": "totalTokenCount"}


def _usage_rows(relation: Relation, where: exp.Expression | None = None) -> exp.Select:
    """(p, c, th, tt) as INT64 per row of `relation`: the usageMetadata counts.

    Plain JSON_VALUE items of one SELECT, cast a level up: on DuckDB the transpiler
    reads them with one JSON parse a row (`compile_duckdb_json.shared_json_reads`;
    1M responses: ~0.4 s, against ~1.2 s for four SAFE_CAST(JSON_VALUE(...)))."""
    texts = exp.select(*[fragment(f"JSON_VALUE(response, '$.usageMetadata.{name}')").as_(k)
                         for k, name in _USAGE_FIELDS.items()]).from_(relation.table())
    if where is not None:
        texts = texts.where(where)
    return exp.select(*[fragment(f"SAFE_CAST({k} AS INT64)").as_(k) for k in _USAGE_FIELDS]).from_(texts.subquery("t"))


def _average_output(adapter: Any, previous: Relation) -> float | None:
    """Output tokens (answer + thinking) per answered row of an earlier output, or None without answers."""
    if not adapter.table_exists(previous):
        return None
    if "response" not in {n.lower() for n in rowsql.column_types(adapter, previous)}:
        return None
    inner = _usage_rows(previous, rowsql.succeeded())
    query = exp.select(fragment("AVG(COALESCE(c, 0) + COALESCE(th, 0))"), fragment("COUNT(c)")).from_(
        inner.subquery("u"))
    average, answered = rowsql.fetch(adapter, query)[0]
    return float(average) if answered else None


@dataclass
class Usage:
    prompt_tokens: int
    output_tokens: int  # candidatesTokenCount
    thoughts_tokens: int  # thinking, billed as output
    total_tokens: int
    cost_usd: float | None
    price_source: str | None

    def fields(self) -> dict[str, Any]:
        """run_results' `batch` keys for this run's predicted rows."""
        return {"prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                "thoughts_tokens": self.thoughts_tokens, "total_tokens": self.total_tokens,
                "cost_usd": self.cost_usd,
                "price": self.price_source}


def usage(ctx: Any, model_id: str, relation: Relation) -> Usage:
    """Tokens of the responses in `relation` (from usageMetadata) and their cost, summed in the warehouse."""
    price = price_for(model_id, _prices(ctx))
    threshold = price.long_context_above if price and price.long_context_above else 2**62
    written = _written_usage(ctx, relation)
    if written is not None and written.max_prompt_tokens <= threshold:  # no row at the long-context price
        prompt, out = written.prompt_tokens, written.output_tokens
        thoughts, total, long_in, long_out = 0, prompt + out, 0, 0
    else:
        long_above = exp.Literal.number(threshold)
        inner = _usage_rows(relation)
        query = exp.select(
            fragment("COALESCE(SUM(p), 0)"), fragment("COALESCE(SUM(c), 0)"), fragment("COALESCE(SUM(th), 0)"),
            fragment("COALESCE(SUM(tt), 0)"), fragment("COALESCE(SUM(IF(p > L, p, 0)), 0)", L=long_above),
            fragment("COALESCE(SUM(IF(p > L, COALESCE(c, 0) + COALESCE(th, 0), 0)), 0)", L=long_above),
        ).from_(inner.subquery("u"))
        prompt, out, thoughts, total, long_in, long_out = (int(v) for v in rowsql.fetch(ctx.adapter, query)[0])
    cost = None
    if price is not None:
        cost = price.cost(prompt - long_in, out + thoughts - long_out, long_in, long_out)
    return Usage(prompt, out, thoughts, total, cost, f"{model_id} {price.source}" if price else None)


def _written_usage(ctx: Any, relation: Relation) -> Any:
    """What the predictor tallied of the answers it wrote into `relation` (prompt_tokens,
    output_tokens, max_prompt_tokens; no thoughts), or None: then the responses are read.
    Only the local predictor tallies (its emulated answers); Vertex reports no totals."""
    written_usage = getattr(getattr(ctx, "predictor", None), "written_usage", None)
    return written_usage(relation) if written_usage is not None else None


def guard(ctx: Any, model: Any, rows: Relation, count: int, previous: Relation | None,
          est: Estimate | None = None) -> Estimate | None:
    """Refuse, before any job exists, to submit more rows or more money than the model's config allows."""
    cfg = model.config
    where = f"Model '{model.name}' ({model.path})"
    if cfg.max_rows is not None and count > cfg.max_rows:
        raise PredictorError(
            f"{where}: {count:,} rows to submit exceed max_rows={cfg.max_rows:,} by {count - cfg.max_rows:,}; "
            f"nothing was submitted. Raise config(max_rows=...), or submit fewer rows (incremental=true, a "
            f"narrower WHERE)."
        )
    if cfg.max_cost_usd is None:
        return None
    est = est or estimate(ctx, cfg.model, rows, previous)
    if est.cost is None:
        raise PredictorError(
            f"{where}: max_cost_usd={cfg.max_cost_usd:g} is set, but no batch price is known for model "
            f"'{cfg.model}', so the budget cannot be checked; nothing was submitted. Add the model under `prices:` "
            f"in bqbatch_project.yml, e.g. prices: {{'{cfg.model}': {{input: 0.15, output: 1.25}}}} (USD per "
            f"million tokens)."
        )
    if est.cost > cfg.max_cost_usd:
        over = est.cost - cfg.max_cost_usd
        raise PredictorError(
            f"{where}: the estimated cost {format_usd(est.cost)} exceeds max_cost_usd={cfg.max_cost_usd:g} by "
            f"{format_usd(over)} ({over / cfg.max_cost_usd:.0%} over; {est.describe()}); nothing was submitted. "
            f"Raise config(max_cost_usd=...), submit fewer rows (incremental=true, a narrower WHERE), or choose a "
            f"cheaper model."
        )
    return est


def dry_run(runner: Any, compiled: "CompiledModel", result: "NodeResult") -> None:
    """`bqbatch run --dry-run`: the rows a run would submit, their tokens and cost; nothing is submitted.

    The request rows go to a scratch table of their own (`<model>__requests` may be
    the input of a live job) that is dropped afterwards; upstream models are read
    as they are in the warehouse.
    """
    from bqbatch_sql import incremental, sharding
    from bqbatch_sql.batch import fingerprint, requests_relation
    from bqbatch_sql.ledger import LIVE_STATES
    from bqbatch_sql.validate import check_request_table

    ctx, model = runner.ctx, compiled.model
    adapter, output = ctx.adapter, compiled.relation
    preview = requests_relation(output).with_name(f"{output.name}__requests_dryrun")
    delta_rows = preview.with_name(f"{preview.name}_delta")
    live = ctx.ledger.latest(model.unique_id, fingerprint(compiled, ctx.predictor.name))
    if live is not None and live.state in LIVE_STATES:
        result.message = (f"dry run: job {live.job_name} is {live.state.short} for this model; a run re-attaches to "
                          f"it and submits nothing new")
        result.batch = {"dry_run": True, "rows_to_submit": 0, "live_job": live.job_name}
        return
    try:
        adapter.create_table_as(preview, compiled.query)
        check_request_table(adapter, preview, model=model.name, path=model.path)
        delta, why = incremental.plan(adapter, model, preview, output, full_refresh=runner.options.full_refresh,
                                      rows=delta_rows)
        rows = delta.rows if delta else preview
        count = delta.submit if delta else adapter.row_count(preview)
        previous = output if adapter.table_exists(output) else None
        est = estimate(ctx, model.config.model, rows, previous)
        jobs = sharding.shard_count(count, sharding.job_limit(model.config, ctx.predictor))
        scope = delta.describe() if delta else f"all {count:,} rows" + (f" ({why})" if model.config.incremental else "")
        result.message = (f"dry run: would submit {scope} in {max(jobs, 1) if count else 0} job(s); "
                          f"{est.describe()}. Nothing was submitted.")
        result.rows = count
        result.batch = {"dry_run": True, "rows_to_submit": count, "jobs": jobs if count else 0,
                        "estimated_input_tokens": est.input_tokens, "estimated_output_tokens": est.output_tokens,
                        "estimated_cost_usd": est.cost,
                        "price": f"{est.model_id} {est.price.source}" if est.price else None}
        try:
            guard(ctx, model, rows, count, previous, est)
        except PredictorError as e:
            result.status = "error"
            result.message += f"\nA run would refuse: {e}"
    finally:
        rowsql.drop(adapter, preview, delta_rows)
