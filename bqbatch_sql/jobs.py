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
                              link or "", note))
    return rows


def format_status(rows: list[StatusRow]) -> list[str]:
    """`bqbatch status` as aligned text: model, job id, state, counts, age, console link (or a note)."""
    def n(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    table = [("model", "job", "state", "succeeded", "failed", "total", "age", "console")]
    table += [(r.model, r.job.rsplit("/", 1)[-1], r.state, n(r.succeeded), n(r.failed), n(r.total), r.age,
               r.link or r.note or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]


def cancel_jobs(ctx: Any, select: Any = None, exclude: Any = None) -> list[str]:
    """Cancel the live job of each selected batch model; the ledger records the new state."""
    from bqbatch_sql.ledger import LIVE_STATES

    predictor = ctx.predictor
    lines = []
    for model in _batch_models(ctx, select, exclude):
        entry = ctx.ledger.latest(model.unique_id)
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
