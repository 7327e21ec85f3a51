"""`bqbatch retry`: resubmit the rows of a batch model that have no answer, and merge the answers in.

Stage: (after a run) **rows without an answer -> submit -> wait -> merge**, repeated.

The rows are those of `<model>__requests` (as the last run built it) whose output
row has a non-empty status or is missing. Each attempt submits only them (sharded
above the per-job limit), checks the job's output holds one row per resubmitted
row, and merges it into the output in one statement, so the output keeps exactly
one row per request row whatever happens. Attempts stop when every row has an
answer, after config(max_retries=...) attempts, or as soon as an attempt makes no
progress (a request the API refuses as invalid fails every time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bqbatch_sql import cost, incremental, jobs, output_check, rowsql, sharding
from bqbatch_sql.errors import PredictorError
from bqbatch_sql.predictors.base import BatchJob, JobState

if TYPE_CHECKING:
    from bqbatch_sql.compiled import CompiledModel
    from bqbatch_sql.reporting import NodeResult
    from bqbatch_sql.runner import Runner


def retry_model(runner: "Runner", compiled: "CompiledModel", result: "NodeResult") -> None:
    from bqbatch_sql.batch import _data_checksum, _parsed_view, _summary, fingerprint, requests_relation
    from bqbatch_sql.ledger import LIVE_STATES

    ctx, model = runner.ctx, compiled.model
    cfg, adapter, predictor, ledger = model.config, ctx.adapter, ctx.predictor, ctx.ledger
    output = compiled.relation
    requests = requests_relation(output)
    where = f"Model '{model.name}' ({model.path})"
    latest = ledger.latest(model.unique_id)
    if latest is not None and latest.state in LIVE_STATES:
        raise PredictorError(f"{where}: job {latest.job_name} is still {latest.state.short}; let it finish first "
                             f"(`bqbatch wait -s {model.name}`), then retry what failed.")
    if not (adapter.table_exists(output) and adapter.table_exists(requests)):
        raise PredictorError(f"{where}: there is no output to retry yet ({output} or {requests} is missing). "
                             f"Run the model first: `bqbatch run -s {model.name}`.")
    fp = fingerprint(compiled, predictor.name)
    key = incremental.row_key(adapter, requests, cfg, model)
    rows = incremental.rows_relation(output, "retry")
    checksum = _data_checksum(adapter, requests)
    failing = first = incremental.select_rows(adapter, requests, output, key, rows, keep_refused=False)
    spent: list[cost.Usage] = []
    attempts, stalled, last = 0, False, None
    try:
        while failing and attempts < cfg.max_retries:
            attempts += 1
            runner.reporter.plain(f"    {model.name}: attempt {attempts} of {cfg.max_retries}: resubmitting "
                                  f"{failing:,} row(s) without an answer")
            cost.guard(ctx, model, rows, failing, output)
            last, usage = _attempt(runner, compiled, fp, checksum, rows, key, result)
            spent.append(usage)
            remaining = incremental.select_rows(adapter, requests, output, key, rows, keep_refused=False)
            stalled = remaining >= failing
            failing = remaining
            if stalled:
                break
    finally:
        rowsql.drop(adapter, rows)
    result.rows = adapter.row_count(output)
    summary = _summary(adapter, output, last.name if last else "-", last.state if last else JobState.SUCCEEDED,
                       reused=last is None, tokens=False)
    if first == 0:
        result.message = "nothing to retry: every row has an answer"
    else:
        why = (f"stopped: attempt {attempts} made no progress" if stalled
               else f"max_retries={cfg.max_retries} reached" if failing else "every row now has an answer")
        result.message = (f"{attempts} attempt(s): {first - failing:,} of {first:,} row(s) without an answer got one; "
                          f"{failing:,} still fail ({why})")
        if failing:
            # Exit code 2, as a PARTIALLY_SUCCEEDED run: the output is in place, some rows carry their error.
            summary["state"] = JobState.PARTIALLY_SUCCEEDED.value
    total = _sum_usage(spent)
    result.batch = {**summary, **(total.fields() if total else {}), "submitted_rows": first, "attempts": attempts,
                    "kind": "retry"}
    _parsed_view(runner, compiled, requests)


def _attempt(runner: "Runner", compiled: "CompiledModel", fp: str, checksum: str, rows: Any, key: Any,
             result: "NodeResult") -> tuple[BatchJob, cost.Usage]:
    """One resubmission of `rows`: a job (or shard jobs), the row check, the merge into the output."""
    from bqbatch_sql.batch import _run_group, _spec, _wait, requests_relation

    ctx, model = runner.ctx, compiled.model
    adapter, predictor, ledger = ctx.adapter, ctx.predictor, ctx.ledger
    output = compiled.relation
    count = adapter.row_count(rows)
    destination = output_check.choose_destination(adapter, output, fp)
    shards = sharding.shard_count(count, sharding.job_limit(model.config, predictor))
    group = None
    if shards > 1:
        group = sharding.new_group(adapter, rows, output, fp, shards, checksum, "retry")
        job = _run_group(runner, compiled, fp, group, result)
        sharding.union_outputs(adapter, group, destination)
    else:
        job = predictor.submit(_spec(ctx, compiled, fp, rows, destination))
        ledger.record(model.unique_id, fp, checksum, predictor.name, job, rows, destination, kind="retry")
        runner.reporter.plain(f"    {model.name}: submitted {job.name}")
        try:
            job = _wait(predictor, job, runner.reporter, model.name, getattr(runner, "interrupted", None))
        except jobs.Interrupted:
            message = jobs.interrupted_message(predictor, job, model.name,
                                               runner.options.cancel_on_interrupt)
            result.batch = jobs.batch_info(job, interrupted=True)
            raise jobs.Interrupted(f"Model '{model.name}': {message}") from None
        ledger.record(model.unique_id, fp, checksum, predictor.name, job, rows, destination, kind="retry")
        if job.state not in jobs.FINISHED_STATES:
            result.batch = jobs.batch_info(job)
            raise jobs.outcome_error(model, job, rows, output)
    actual = adapter.row_count(destination)
    if actual != count:
        differences = output_check.row_differences(adapter, rows, destination, model.config.key_columns)
        result.batch = jobs.batch_info(job)
        raise PredictorError(output_check.describe_count_mismatch(
            model.name, destination, output, job.name, count, actual, differences))
    usage = cost.usage(ctx, model.config.model, destination)
    incremental.merge(adapter, requests_relation(output), output, destination, key, output)
    rowsql.drop(adapter, destination)
    ledger.record(model.unique_id, fp, checksum, predictor.name, job, rows, output, kind="retry",
                  shard_count=group.count if group else None, group_id=group.group_id if group else None,
                  prompt_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens + usage.thoughts_tokens,
                  cost_usd=usage.cost_usd)
    return job, usage


def _sum_usage(usages: list[cost.Usage]) -> cost.Usage | None:
    if not usages:
        return None
    costs = [u.cost_usd for u in usages]
    return cost.Usage(
        sum(u.prompt_tokens for u in usages), sum(u.output_tokens for u in usages),
        sum(u.thoughts_tokens for u in usages), sum(u.total_tokens for u in usages),
        None if any(c is None for c in costs) else sum(costs), usages[-1].price_source,
    )
