"""Sharding: a request table above the per-job limit runs as several jobs, a few at a time.

Stage: validate -> **submit (sharded) -> wait** -> row check -> swap in / merge.

Vertex AI takes at most 200,000 requests per batch job (config(max_requests_per_job=...)
sets another limit; the local predictor has none unless configured). Above it, the
rows to submit are numbered once in the warehouse and cut into equal shard tables
`<source>__s<i>`; each shard is its own job writing `<model>__bqbatch_<fp>_s<i>`, at
most config(max_concurrent_jobs=...) running at once. When every shard has
finished, their outputs are unioned into the one destination and the run goes on
as for a single job (row check, swap in or incremental merge).

The ledger holds a row per shard job (shard index, shard count, group id), so a
rerun re-attaches shard by shard: live shards are waited for, finished ones kept,
failed or never-submitted ones submitted; nothing that succeeded is paid twice.
A last row per group (shard NULL) sums the run up for `bqbatch status`.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from sqlglot import exp

from bqbatch_sql import jobs, rowsql
from bqbatch_sql.errors import JobNotFoundError, PredictorError
from bqbatch_sql.nodes import Relation
from bqbatch_sql.output_check import STAGING_MARK
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState

# Requests per job the service accepts, by predictor name (Vertex AI: 200,000 per batch job).
DEFAULT_LIMITS = {"vertex": 200_000}
_NUMBER = "__bqb_rn"


def job_limit(cfg: Any, predictor: Any) -> int | None:
    """The most requests one job may take: the model's config, else the predictor's own limit."""
    if cfg.max_requests_per_job:
        return cfg.max_requests_per_job
    return getattr(predictor, "max_requests_per_job", None) or DEFAULT_LIMITS.get(predictor.name)


def shard_count(rows: int, limit: int | None) -> int:
    return 1 if not limit or rows <= limit else math.ceil(rows / limit)


@dataclass
class Shard:
    index: int
    source: Relation
    destination: Relation
    job: BatchJob | None = None  # None: not submitted (yet, or again)

    @property
    def finished(self) -> bool:
        return self.job is not None and self.job.state in jobs.FINISHED_STATES


@dataclass
class Group:
    """One sharded submission of a model: its id, shards and what they were cut from."""

    group_id: str
    shards: list[Shard]
    checksum: str | None
    kind: str

    @property
    def count(self) -> int:
        return len(self.shards)

    @property
    def source(self) -> Relation:
        """The table the shards were cut from (`<source>__s<i>` -> `<source>`)."""
        first = self.shards[0].source
        return first.with_name(first.name.rsplit("__s", 1)[0])


def new_group(adapter: Any, source: Relation, output: Relation, fp: str, n: int, checksum: str | None,
              kind: str) -> Group:
    """Cut `source` into `n` shard tables of nearly equal size (numbered once, so no row is lost or doubled)."""
    group_id = uuid.uuid4().hex[:12]
    shards = [Shard(i, source.with_name(f"{source.name}__s{i}"),
                    output.with_name(f"{output.name}{STAGING_MARK}{fp[:12]}_s{i}")) for i in range(n)]
    numbered = source.with_name(f"{source.name}__numbered")
    number = exp.Window(this=exp.RowNumber())
    rowsql.create_table(adapter, numbered, exp.select(exp.Star(), number.as_(_NUMBER)).from_(source.table()))
    total = adapter.row_count(numbered)
    size = math.ceil(total / n)
    try:
        for shard in shards:
            low, high = shard.index * size, (shard.index + 1) * size
            rows = rowsql.fragment("* EXCEPT (N)", N=rowsql.col(_NUMBER))
            query = exp.select(rows).from_(numbered.table()).where(rowsql.fragment(
                "N > LOW AND N <= HIGH", N=rowsql.col(_NUMBER), LOW=exp.Literal.number(low),
                HIGH=exp.Literal.number(high)))
            rowsql.create_table(adapter, shard.source, query)
            adapter.drop_relation(shard.destination)  # a job writes only into a table that does not exist
    finally:
        adapter.drop_relation(numbered)
    return Group(group_id, shards, checksum, kind)


def resume_group(ctx: Any, model_unique_id: str, fp: str, checksum: str | None = None,
                 live_only: bool = False) -> Group | None:
    """The model's latest sharded submission for this fingerprint, if it is unfinished and can go on.

    With live_only, only a group with a shard still running qualifies (a rerun does
    not rebuild the request table under it); otherwise an unfinished group qualifies
    when it was cut from the same rows (checksum) and its shard tables still exist.
    """
    ledger, predictor, adapter = ctx.ledger, ctx.predictor, ctx.adapter
    latest = ledger.latest(model_unique_id, fp)
    if latest is None or latest.group_id is None or latest.shard is None:
        return None  # no group, or the group's summary row: it finished
    entries = {e.shard: e for e in ledger.group(model_unique_id, latest.group_id)}
    from bqbatch_sql.ledger import LIVE_STATES

    live = any(e.state in LIVE_STATES for e in entries.values())
    if live_only and not live:
        return None
    if not live and (checksum is None or latest.data_checksum != checksum):
        return None
    base = latest.source.rsplit(".", 1)[-1].rsplit("__s", 1)[0]
    out_base = latest.destination.rsplit(".", 1)[-1].rsplit("_s", 1)[0]
    template = _relation(latest.source)
    shards = []
    for i in range(latest.shard_count or 0):
        shard = Shard(i, template.with_name(f"{base}__s{i}"), template.with_name(f"{out_base}_s{i}"))
        entry = entries.get(i)
        if entry is not None:
            shard.source, shard.destination = _relation(entry.source), _relation(entry.destination)
            if entry.state in LIVE_STATES and entry.backend == predictor.name:
                try:
                    shard.job = predictor.get(entry.job_name)
                except JobNotFoundError:
                    shard.job = None
            elif entry.state in jobs.FINISHED_STATES and adapter.table_exists(shard.destination):
                shard.job = BatchJob(entry.job_name, entry.state, entry.total, entry.succeeded, entry.failed,
                                     entry.incomplete)
        if shard.job is None and not adapter.table_exists(shard.source):
            return None  # a shard to submit lost its input: start over
        shards.append(shard)
    return Group(latest.group_id, shards, latest.data_checksum, latest.kind or "full")


def _relation(text: str) -> Relation:
    parts = text.split(".")
    return Relation(parts[0] if len(parts) == 3 else None, parts[-2], parts[-1])


def run_group(ctx: Any, model: Any, fp: str, group: Group, spec_for: Callable[[Shard], BatchJobSpec], *,
              reporter: Any, interrupted: Any = None, wait: bool = True, cancel_on_interrupt: bool = False) -> BatchJob:
    """Submit the group's unfinished shards, at most max_concurrent_jobs at once, and wait for all.

    Returns a job standing for the whole group (counts summed). A shard that ends
    without output stops further submissions; the live ones are still waited for,
    then the error names the shards to redo (a rerun submits only those).
    """
    predictor, ledger = ctx.predictor, ctx.ledger
    concurrency = model.config.max_concurrent_jobs
    delay = getattr(predictor, "poll_initial_seconds", 0.5)
    ceiling = getattr(predictor, "poll_max_seconds", 5.0)
    factor = getattr(predictor, "poll_multiplier", 1.5)

    def record(shard: Shard) -> None:
        ledger.record(model.unique_id, fp, group.checksum, predictor.name, shard.job, shard.source,
                      shard.destination, shard=shard.index, shard_count=group.count, group_id=group.group_id,
                      kind=group.kind)

    stopped = False
    progress = reporter.job_progress(f"{model.name} ({group.count} jobs)")
    try:
        while True:
            running = [s for s in group.shards if s.job is not None and not s.job.done]
            waiting = [s for s in group.shards if s.job is None]
            if not stopped:
                for shard in waiting[:max(0, concurrency - len(running))]:
                    shard.job = predictor.submit(spec_for(shard))
                    record(shard)
                    reporter.plain(f"    {model.name}: submitted shard {shard.index + 1} of {group.count} "
                                   f"({shard.source.name}): {shard.job.name}")
                    running.append(shard)
            job = _aggregate(group)
            progress.update(job.state.short, job.succeeded + job.failed, job.total, job.failed)
            if not wait or not running:
                return job
            if interrupted is not None and interrupted.wait(delay):
                raise jobs.Interrupted(_interrupted(predictor, model.name, running, cancel_on_interrupt))
            if interrupted is None:
                time.sleep(delay)
            delay = min(delay * factor, ceiling)
            for shard in running:
                shard.job = predictor.get(shard.job.name)
                if shard.job.done:
                    record(shard)
                    stopped = stopped or not shard.finished
    finally:
        progress.close()


def _aggregate(group: Group) -> BatchJob:
    shards = group.shards
    submitted = [s.job for s in shards if s.job is not None]
    total = sum(j.total or 0 for j in submitted) or None
    if len(submitted) < len(shards) or any(not j.done for j in submitted):
        state = JobState.RUNNING if any(j.state == JobState.RUNNING for j in submitted) else JobState.PENDING
    elif all(j.state == JobState.SUCCEEDED for j in submitted):
        state = JobState.SUCCEEDED
    elif all(j.state in jobs.FINISHED_STATES for j in submitted):
        state = JobState.PARTIALLY_SUCCEEDED
    else:
        bad = [j.state for j in submitted if j.state not in jobs.FINISHED_STATES]
        state = JobState.PAUSED if all(s == JobState.PAUSED for s in bad) else next(
            s for s in bad if s != JobState.PAUSED)
    errors = [f"shard {s.index + 1}: {s.job.error}" for s in shards if s.job is not None and s.job.error]
    return BatchJob(
        name=f"{len(shards)} jobs (group {group.group_id})", state=state, total=total,
        succeeded=sum(j.succeeded for j in submitted), failed=sum(j.failed for j in submitted),
        incomplete=sum(j.incomplete for j in submitted), error="; ".join(errors) or None,
    )


def _interrupted(predictor: Any, model: str, running: list[Shard], cancel: bool) -> str:
    names = ", ".join(s.job.name for s in running)
    if cancel:
        for shard in running:
            try:
                predictor.cancel(shard.job.name)
            except PredictorError as e:
                return (f"Model '{model}': interrupted; cancelling {shard.job.name} failed: {e}. Cancel the rest "
                        f"with `bqbatch cancel -s {model}`.")
        return f"Model '{model}': interrupted; asked to cancel {len(running)} shard job(s) ({names})."
    return f"Model '{model}': interrupted; {len(running)} shard job(s) keep running ({names}). {jobs.reattach_hint(model)}"


def outcome_error(model: Any, group: Group, output: Relation) -> PredictorError:
    """The error of a group in which some shard ended without output."""
    bad = [s for s in group.shards if not s.finished]
    done = group.count - len(bad)
    lines = [f"Model '{model.name}' ({model.path}): {len(bad)} of {group.count} shard jobs did not succeed:"]
    for shard in bad:
        if shard.job is None:
            lines.append(f"  shard {shard.index + 1}: not submitted (an earlier shard failed)")
        else:
            detail = f": {shard.job.error}" if shard.job.error else ""
            lines.append(f"  shard {shard.index + 1}: job {shard.job.name} ended {shard.job.state.short}{detail}")
    lines.append(f"{done} shard(s) succeeded and are kept; {output} was not changed. A rerun re-attaches shard by "
                 f"shard and submits only the {len(bad)} that did not succeed.")
    return PredictorError("\n".join(lines))


def union_outputs(adapter: Any, group: Group, destination: Relation) -> None:
    """The shards' outputs as one table, then the shard tables dropped."""
    selects = [exp.select(exp.Star()).from_(s.destination.table()) for s in group.shards]
    query = selects[0]
    for select in selects[1:]:
        query = exp.union(query, select, distinct=False)
    rowsql.create_table(adapter, destination, query)
    drop_tables(adapter, group)


def drop_tables(adapter: Any, group: Group) -> None:
    rowsql.drop(adapter, *[s.destination for s in group.shards], *[s.source for s in group.shards])
