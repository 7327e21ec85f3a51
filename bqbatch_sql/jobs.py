"""Batch jobs once submitted: how each ending reads, exit codes, Ctrl-C, and `status` / `cancel` / `compile --validate`.

The run stage (`batch.py`) submits and waits; this module says what a job's end
means to the user and gives the commands that look at jobs without running models:
`bqbatch status` (one line per batch model: job, state, counts, age, console link)
and `bqbatch cancel`. The job ledger is the source of truth for which job belongs
to which model; the predictor is asked for the live state.

Exit codes of `run` / `build` / `wait`:
    0    every node succeeded
    1    a node failed (a job FAILED, CANCELLED or EXPIRED, SQL errors, ...)
    2    a job ended PARTIALLY_SUCCEEDED: its output is in place, failed rows carry their status
    3    a job is PAUSED: it is left as it is; a rerun re-attaches
    130  interrupted (Ctrl-C): jobs keep running unless --cancel-on-interrupt
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from bqbatch_sql.errors import BqbatchError, JobNotFoundError, PredictorError
from bqbatch_sql.predictors.base import BatchJob, JobState

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL, EXIT_PAUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED})


class Interrupted(PredictorError):
    """Ctrl-C while waiting for a job."""


def exit_code(results: list[Any], interrupted: bool = False) -> int:
    batches = [r.batch or {} for r in results]
    if interrupted or any(b.get("interrupted") for b in batches):
        return EXIT_INTERRUPTED
    if any(r.status == "error" and (r.batch or {}).get("state") != JobState.PAUSED.value for r in results):
        return EXIT_ERROR
    if any(b.get("state") == JobState.PAUSED.value for b in batches):
        return EXIT_PAUSED
    if any(b.get("state") == JobState.PARTIALLY_SUCCEEDED.value for b in batches):
        return EXIT_PARTIAL
    return EXIT_OK


def batch_info(job: BatchJob, **flags: Any) -> dict[str, Any]:
    """run_results' `batch` entry of a job whose output was not summed in the warehouse: the job's own counts."""
    return {"job_name": job.name, "state": job.state.value, "reused": False, "rows": job.succeeded + job.failed,
            "succeeded": job.succeeded, "failed": job.failed, "prompt_tokens": 0, "output_tokens": 0,
            "total_tokens": 0, **flags}


# -- how a job's end reads -------------------------------------------------------------


def reattach_hint(model: str) -> str:
    return (f"Re-attach with `bqbatch wait -s {model}` (or run the model again: bqbatch re-attaches, it never "
            f"submits twice); stop it with `bqbatch cancel -s {model}`.")


def outcome_error(model: Any, job: BatchJob, requests: Any, output: Any) -> PredictorError:
    """The error of a job that ended without an output to use."""
    where = f"Model '{model.name}' ({model.path}): batch job {job.name}"
    detail = f": {job.error}" if job.error else ""
    kept = f"The request table {requests} is kept and {output} was not changed."
    if job.state == JobState.PAUSED:
        return PredictorError(f"{where} is PAUSED{detail}. It is left as it is. {reattach_hint(model.name)}")
    if job.state == JobState.EXPIRED:
        why = " (Vertex AI gives a job 72 hours in the queue and 24 hours of running)"
    elif job.state == JobState.CANCELLED:
        why = " (cancelled)"
    else:
        why = ""
    return PredictorError(f"{where} ended {job.state.short}{why}{detail}. {kept} A rerun submits a new job.")


def partial_message(job: BatchJob, output: Any) -> str:
    return (f"job {job.name} ended PARTIALLY_SUCCEEDED: {job.failed:,} of {job.succeeded + job.failed:,} rows failed "
            f"and carry their error in {output}.status; the rest have responses. Rerun with --full-refresh to "
            f"predict every row again.")


def interrupted_message(predictor: Any, job: BatchJob, model: str, cancel: bool) -> str:
    """Ctrl-C while waiting: cancel the job when asked to, and say how to find it again."""
    if cancel:
        try:
            predictor.cancel(job.name)
            state = predictor.get(job.name).state.short
        except BqbatchError as e:
            return f"Interrupted; cancelling {job.name} failed: {e}. Cancel it with `bqbatch cancel -s {model}`."
        return f"Interrupted; asked Vertex to cancel {job.name} (now {state}, --cancel-on-interrupt)."
    link = _console(predictor, job.name)
    return f"Interrupted; the job {job.name} keeps running{link}. {reattach_hint(model)}"


def _console(predictor: Any, job_name: str) -> str:
    url = predictor.console_url(job_name) if hasattr(predictor, "console_url") else None
    return f" ({url})" if url else ""


# -- bqbatch status / cancel ------------------------------------------------------------


@dataclass
class StatusRow:
    model: str
    job: str
    state: str
    succeeded: int | None
    failed: int | None
    total: int | None
    age: str
    link: str
    note: str = ""
    prompt_tokens: int | None = None  # actual tokens and cost of the last finished run
    output_tokens: int | None = None
    cost_usd: float | None = None


def _batch_models(ctx: Any, select: Any, exclude: Any) -> list[Any]:
    models = ctx.manifest.models
    return [models[uid] for uid in ctx.select(select, exclude, {"model"})
            if models[uid].config.materialized == "batch_prediction"]


def status_rows(ctx: Any, select: Any = None, exclude: Any = None) -> list[StatusRow]:
    """The newest job of each selected batch model; live ones are asked for their current state."""
    predictor = ctx.predictor
    rows = []
    for model in _batch_models(ctx, select, exclude):
        entry = ctx.ledger.latest(model.unique_id)
        if entry is None:
            rows.append(StatusRow(model.name, "-", "never submitted", None, None, None, "-", ""))
            continue
        if entry.shard is not None:  # a sharded submission still under way: its shards summed
            rows.append(_group_status(ctx, model, entry))
            continue
        state, ok, failed, total = entry.state, entry.succeeded, entry.failed, entry.total
        started, note = entry.recorded_at, ""
        from bqbatch_sql.ledger import LIVE_STATES

        if entry.state in LIVE_STATES and entry.backend == predictor.name:
            try:
                job = predictor.get(entry.job_name)
                state, ok, failed, total = job.state, job.succeeded, job.failed, job.total
                started = job.create_time or started
            except JobNotFoundError as e:
                note = str(e)
        elif entry.backend != predictor.name:
            note = f"recorded by predictor '{entry.backend}'"
        link = predictor.console_url(entry.job_name) if hasattr(predictor, "console_url") else None
        rows.append(StatusRow(model.name, entry.job_name, state.short, ok, failed, total, _age(started),
                              link or "", note, entry.prompt_tokens, entry.output_tokens, entry.cost_usd))
    return rows


def _group_status(ctx: Any, model: Any, entry: Any) -> StatusRow:
    from bqbatch_sql.ledger import LIVE_STATES

    predictor = ctx.predictor
    shards = ctx.ledger.group(model.unique_id, entry.group_id)
    states, ok, failed, total = [], 0, 0, 0
    for shard in shards:
        state, counts = shard.state, (shard.succeeded, shard.failed, shard.total or 0)
        if shard.state in LIVE_STATES and shard.backend == predictor.name:
            try:
                job = predictor.get(shard.job_name)
                state, counts = job.state, (job.succeeded, job.failed, job.total or 0)
            except JobNotFoundError:
                pass
        states.append(state)
        ok, failed, total = ok + counts[0], failed + counts[1], total + counts[2]
    live = [s for s in states if s in LIVE_STATES]
    state = (JobState.RUNNING if JobState.RUNNING in live else live[0]) if live else (
        next((s for s in states if s not in FINISHED_STATES), JobState.SUCCEEDED))
    note = f"{len(shards)} of {entry.shard_count} shards submitted (group {entry.group_id})"
    return StatusRow(model.name, f"{entry.shard_count} shard jobs", state.short, ok, failed, total or None,
                     _age(min(s.recorded_at for s in shards)), "", note)


def format_status(rows: list[StatusRow]) -> list[str]:
    """`bqbatch status` as aligned text: model, job id, state, counts, age, console link (or a note)."""
    def n(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    table = [("model", "job", "state", "succeeded", "failed", "total", "age", "console")]
    table += [(r.model, r.job.rsplit("/", 1)[-1], r.state, n(r.succeeded), n(r.failed), n(r.total), r.age,
               r.link or r.note or "-") for r in rows]
    return _aligned(table)


def format_spend(rows: list[StatusRow]) -> list[str]:
    """What the last finished run of each model sent and cost (tokens from usageMetadata); [] before any."""
    from bqbatch_sql.cost import format_usd

    def n(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    spent = [r for r in rows if r.prompt_tokens is not None]
    if not spent:
        return []
    table = [("model", "last run: tokens in", "tokens out", "cost")]
    table += [(r.model, n(r.prompt_tokens), n(r.output_tokens), format_usd(r.cost_usd)) for r in spent]
    return _aligned(table)


def _aligned(table: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]


def cancel_jobs(ctx: Any, select: Any = None, exclude: Any = None) -> list[str]:
    """Cancel the live job of each selected batch model; the ledger records the new state."""
    from bqbatch_sql.ledger import LIVE_STATES

    predictor = ctx.predictor
    lines = []
    for model in _batch_models(ctx, select, exclude):
        entry = ctx.ledger.latest(model.unique_id)
        if entry is not None and entry.shard is not None:
            lines += _cancel_group(ctx, model, entry)
            continue
        if entry is None or entry.state not in LIVE_STATES:
            last = f" (last job {entry.job_name} ended {entry.state.short})" if entry else ""
            lines.append(f"{model.name}: no live job{last}")
            continue
        if entry.backend != predictor.name:
            lines.append(f"{model.name}: job {entry.job_name} belongs to predictor '{entry.backend}', "
                         f"not to this target's '{predictor.name}'")
            continue
        try:
            predictor.cancel(entry.job_name)
            job = predictor.get(entry.job_name)
        except JobNotFoundError as e:
            lines.append(f"{model.name}: {e}")
            continue
        ctx.ledger.record(entry.model_unique_id, entry.fingerprint, entry.data_checksum, entry.backend, job,
                          entry.source, entry.destination)
        lines.append(f"{model.name}: cancel requested for {job.name} (now {job.state.short})")
    return lines


def _cancel_group(ctx: Any, model: Any, entry: Any) -> list[str]:
    """Cancel every live shard job of a sharded submission."""
    from bqbatch_sql.ledger import LIVE_STATES

    predictor, lines = ctx.predictor, []
    for shard in ctx.ledger.group(model.unique_id, entry.group_id):
        if shard.state not in LIVE_STATES or shard.backend != predictor.name:
            continue
        try:
            predictor.cancel(shard.job_name)
            job = predictor.get(shard.job_name)
        except JobNotFoundError as e:
            lines.append(f"{model.name}: shard {shard.shard + 1}: {e}")
            continue
        ctx.ledger.record(shard.model_unique_id, shard.fingerprint, shard.data_checksum, shard.backend, job,
                          shard.source, shard.destination, kind=shard.kind, shard=shard.shard,
                          shard_count=shard.shard_count, group_id=shard.group_id)
        lines.append(f"{model.name}: cancel requested for shard {shard.shard + 1} of {shard.shard_count}, "
                     f"{job.name} (now {job.state.short})")
    return lines or [f"{model.name}: no live job (sharded submission {entry.group_id})"]


def nothing_to_wait_for(entry: Any) -> str:
    if entry is None:
        return "no job was ever submitted for this model; `bqbatch run` submits one"
    return f"no live job to wait for: the last one, {entry.job_name}, is {entry.state.short}"


# -- compile --validate ------------------------------------------------------------------


def dry_run_lines(ctx: Any, compiled: list[Any]) -> tuple[list[str], int]:
    """Ask the warehouse to check each compiled query without running it; returns lines and the failure count."""
    adapter = ctx.adapter
    lines, failures = [], 0
    for result in compiled:
        name = result.model.name
        try:
            # From the compiled BigQuery SQL: `compile` keeps no tree for a model its check cache vouched for.
            if hasattr(adapter, "dry_run"):
                size = adapter.dry_run(result.bigquery_sql)
                lines.append(f"  OK    {name}: would process {_bytes(size)}")
            else:
                from bqbatch_sql.compile import transpile

                # EXPLAIN plans the query without running it.
                sql = transpile(result.bigquery_sql, adapter.dialect, path=result.model.path, model=name)
                adapter.fetchall(f"EXPLAIN {sql}")
                lines.append(f"  OK    {name}: planned by {adapter.dialect}")
        except BqbatchError as e:
            failures += 1
            first, *rest = str(e).splitlines() or [""]
            lines.append(f"  ERROR {name} ({result.model.path}): {first}")
            lines += [f"        {line}" for line in rest]
    return lines, failures


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _age(when: dt.datetime | None) -> str:
    if when is None:
        return "-"
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    seconds = max(0, int((dt.datetime.now(dt.timezone.utc) - when).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d"
