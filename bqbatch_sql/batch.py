"""The batch_prediction materialization: request table -> checks -> job -> output -> parsed view.

For one model `m`: `m__requests` is materialized from the model's SQL, checked
against the batch input contract and validated row by row in the warehouse, handed
to the target's predictor, waited for, and its output `m` checked to hold exactly
one row per request. The default post-hook then builds `m__parsed`. The job ledger
keeps a rerun from paying twice: a live job with the same fingerprint is re-attached,
a succeeded one over the same rows is kept.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import orjson
from sqlglot import exp

from bqbatch_sql.compile import parse_model_sql, to_dialect, transpile
from bqbatch_sql import cost, incremental, jobs, output_check, rowsql, sharding
from bqbatch_sql.compiled import CompiledModel
from bqbatch_sql.errors import JobNotFoundError, PredictorError, RequestTableError
from bqbatch_sql.ledger import LIVE_STATES
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState
from bqbatch_sql.request_spec import STRUCTURED_OUTPUT_HINT

if TYPE_CHECKING:
    from bqbatch_sql.reporting import NodeResult
    from bqbatch_sql.runner import Runner

BATCH_COLUMNS = ("response", "status", "processed_time")


def requests_relation(output: Relation) -> Relation:
    return output.with_name(f"{output.name}__requests")


def parsed_relation(output: Relation) -> Relation:
    return output.with_name(f"{output.name}__parsed")


def fingerprint(compiled: CompiledModel, predictor_name: str) -> str:
    cfg = compiled.model.config
    payload = orjson.dumps([compiled.bigquery_sql, cfg.model, cfg.predictor_options, cfg.on_invalid, predictor_name],
                           option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()[:32]


def run_batch_prediction(runner: "Runner", compiled: CompiledModel, result: "NodeResult") -> None:
    ctx = runner.ctx
    adapter = ctx.adapter
    model = compiled.model
    cfg = model.config
    output = compiled.relation
    requests = requests_relation(output)
    predictor = ctx.predictor
    ledger = ctx.ledger
    fp = fingerprint(compiled, predictor.name)
    full_refresh = runner.options.full_refresh
    reporter = runner.reporter

    options = runner.options
    if options.dry_run:  # `bqbatch run --dry-run`: rows, tokens and cost; submit nothing
        return cost.dry_run(runner, compiled, result)
    if options.retry:  # `bqbatch retry`: resubmit failed and missing rows
        from bqbatch_sql.retry import retry_model

        return retry_model(runner, compiled, result)
    attach_only = getattr(options, "attach_only", False)  # `bqbatch wait`: finish submitted jobs, submit none
    wait = getattr(options, "wait", True)
    writes_table = getattr(predictor, "writes_table", True)
    job: BatchJob | None = None
    group: sharding.Group | None = None
    kind = "full"  # or "incremental" / "retry": the job predicts only some rows, merged into the output
    source, destination = requests, output
    lost: JobNotFoundError | None = None
    entry = ledger.latest(model.unique_id, fp)
    if entry is None and attach_only:
        entry = ledger.latest(model.unique_id)  # the job that was submitted, even if the model changed since
    # Live jobs are re-attached even on --full-refresh: never paid for twice. A sharded
    # submission goes on shard by shard (`bqbatch wait` also submits its remaining shards).
    if entry and entry.shard is not None:
        group = sharding.resume_group(ctx, model.unique_id, entry.fingerprint,
                                      checksum=entry.data_checksum if attach_only else None, live_only=not attach_only)
        if group is not None:
            kind, source = group.kind, group.source
            reporter.plain(f"    {model.name}: re-attached to sharded submission {group.group_id} "
                           f"({sum(s.finished for s in group.shards)} of {group.count} shards done)")
    elif entry and entry.state in LIVE_STATES:
        try:
            job = predictor.get(entry.job_name)
            source = output.with_name(entry.source.rsplit(".", 1)[-1])
            destination = output.with_name(entry.destination.rsplit(".", 1)[-1])
            kind = entry.kind or "full"
            reporter.plain(f"    {model.name}: re-attached to live job {job.name} ({job.state.short})")
        except JobNotFoundError as e:
            job, lost = None, e
    if job is None and group is None and attach_only:
        result.status = "skipped"
        result.message = str(lost) if lost else jobs.nothing_to_wait_for(entry)
        return
    checksum = entry.data_checksum if entry else None
    basis = incremental.rows_relation(output, kind)  # the rows this job's output must hold, one each
    invalid_held_back = source != basis
    if job is None and group is None:
        adapter.create_table_as(requests, compiled.query)
        from bqbatch_sql.validate import check_request_table, validate_relation

        check_request_table(adapter, requests, model=model.name, path=model.path)
        checksum = _data_checksum(adapter, requests)
        if (entry and entry.state in jobs.FINISHED_STATES and entry.data_checksum == checksum and not full_refresh
                and not cfg.incremental and entry.destination == str(output) and adapter.table_exists(output)):
            result.message = f"up to date: job {entry.job_name} already predicted these rows"
            result.rows = entry.total
            result.batch = _summary(adapter, output, entry.job_name, entry.state, reused=True)
            _parsed_view(runner, compiled, requests)
            return
        delta, _ = incremental.plan(adapter, model, requests, output, full_refresh=full_refresh,
                                    rows=incremental.rows_relation(output, "incremental"))
        if delta is not None:
            kind, basis = "incremental", delta.rows
            if delta.submit == 0:
                return incremental.nothing_to_submit(runner, compiled, result, delta, entry, fp, checksum)
            reporter.plain(f"    {model.name}: {delta.describe()}")
        source = basis
        cost.guard(ctx, model, basis, adapter.row_count(basis), output if delta is not None else None)
        if cfg.on_invalid in ("fail", "skip"):
            report = validate_relation(adapter, basis, model=model.name, path=model.path, key_columns=cfg.key_columns,
                                       template=_template(adapter, compiled))
            if report.invalid and cfg.on_invalid == "fail":
                raise RequestTableError(
                    f"Model '{model.name}' ({model.path}): {report.invalid:,} of {report.total:,} requests are invalid; "
                    f"nothing was submitted.\n{report.render()}\nFix the rows, or set config(on_invalid='skip') to "
                    f"submit the valid rows and record the invalid ones with their status."
                )
            if report.invalid:
                source = basis.with_name(f"{basis.name}_valid")
                _split_valid(adapter, basis, source)
                invalid_held_back = True
        # Vertex writes only into a new table: the old output stays readable until the new one replaces it.
        if writes_table:
            destination = output_check.choose_destination(adapter, output, fp)
        shards = sharding.shard_count(adapter.row_count(source), sharding.job_limit(cfg, predictor))
        if shards > 1:
            if not writes_table:
                raise PredictorError(
                    f"Model '{model.name}' ({model.path}): {adapter.row_count(source):,} requests need {shards} jobs "
                    f"(at most {sharding.job_limit(cfg, predictor):,} each), and sharded jobs need a BigQuery output "
                    f"table: remove gcs_destination from the predictor, or split the model.")
            group = (sharding.resume_group(ctx, model.unique_id, fp, checksum)
                     or sharding.new_group(adapter, source, output, fp, shards, checksum, kind))
        else:
            job = predictor.submit(_spec(ctx, compiled, fp, source, destination,
                                         prevalidated=cfg.on_invalid in ("fail", "skip")))
            ledger.record(model.unique_id, fp, checksum, predictor.name, job, source, destination, kind=kind)
            reporter.plain(f"    {model.name}: submitted {job.name}")
            if not wait:
                result.status = "skipped"
                result.message = (f"submitted {job.name} and returned (--no-wait); `bqbatch wait -s {model.name}` "
                                  f"waits for it and builds {output}")
                result.batch = jobs.batch_info(job, submitted=True)
                return

    if group is not None:
        job = _run_group(runner, compiled, fp, group, result)
        if job is None:
            return  # --no-wait
        destination = output_check.choose_destination(adapter, output, fp)
        sharding.union_outputs(adapter, group, destination)
    else:
        try:
            job = _wait(predictor, job, reporter, model.name, getattr(runner, "interrupted", None))
        except jobs.Interrupted:
            message = jobs.interrupted_message(predictor, job, model.name, getattr(options, "cancel_on_interrupt", False))
            result.batch = jobs.batch_info(job, interrupted=True)
            raise jobs.Interrupted(f"Model '{model.name}': {message}") from None
        ledger.record(model.unique_id, fp, checksum, predictor.name, job, source, destination, kind=kind)
        if job.state not in jobs.FINISHED_STATES:
            result.batch = jobs.batch_info(job)
            raise jobs.outcome_error(model, job, requests, output)
        if not writes_table:
            result.message = f"predictions written as JSONL under {predictor.gcs_destination} by {job.name}"
            result.batch = jobs.batch_info(job)
            return
    if invalid_held_back:
        _append_invalid(adapter, basis, destination)
    expected, actual = adapter.row_count(basis), adapter.row_count(destination)
    if expected != actual:
        differences = output_check.row_differences(adapter, basis, destination, cfg.key_columns)
        result.batch = jobs.batch_info(job)
        raise PredictorError(output_check.describe_count_mismatch(
            model.name, destination, output, job.name, expected, actual, differences))
    spent = cost.usage(ctx, cfg.model, destination)  # this run's predictions only, before they join the rest
    if kind != "full":
        key = incremental.row_key(adapter, requests, cfg, model)
        incremental.merge(adapter, requests, output, destination, key, output)
        rowsql.drop(adapter, destination, *{basis, source})
        actual = adapter.row_count(output)
        result.message = (f"predicted {expected:,} of {actual:,} rows ({kind}); the other "
                          f"{max(0, actual - expected):,} kept their answers")
    elif destination != output:
        output_check.swap_in(adapter, destination, output)
    ledger.record(model.unique_id, fp, checksum, predictor.name, job, source, output, kind=kind,
                  shard_count=group.count if group else None, group_id=group.group_id if group else None,
                  prompt_tokens=spent.prompt_tokens, output_tokens=spent.output_tokens + spent.thoughts_tokens,
                  cost_usd=spent.cost_usd)
    if job.state == JobState.PARTIALLY_SUCCEEDED:
        result.message = jobs.partial_message(job, output)
    result.rows = actual
    result.batch = {**_summary(adapter, output, job.name, job.state, reused=False, tokens=False), **spent.fields(),
                    "submitted_rows": expected, "kind": kind, **({"jobs": group.count} if group else {})}
    _parsed_view(runner, compiled, requests)


def _template(adapter, compiled: CompiledModel):
    """The shape the model's SQL gives its requests, on DuckDB (a hint for validation)."""
    if adapter.dialect != "duckdb":
        return None
    from bqbatch_sql.request_template import template_of

    return template_of(compiled.query, adapter.cursor())


def _spec(ctx, compiled: CompiledModel, fp: str, source: Relation, destination: Relation,
          shard: str | None = None, prevalidated: bool = False) -> BatchJobSpec:
    model, cfg = compiled.model, compiled.model.config
    labels = {"bqbatch_model": _label_value(model.name), "bqbatch_fingerprint": fp, **cfg.labels}
    if shard is not None:
        labels["bqbatch_shard"] = shard
    return BatchJobSpec(
        model_id=cfg.model, source=source, destination=destination,
        display_name=f"bqbatch-{ctx.project.name}-{model.name}" + (f"-shard-{shard}" if shard is not None else ""),
        labels=labels, options=dict(cfg.predictor_options), prevalidated=prevalidated,
        request_template=None if prevalidated else _template(ctx.adapter, compiled),
    )


def _run_group(runner: "Runner", compiled: CompiledModel, fp: str, group: "sharding.Group",
               result: "NodeResult") -> BatchJob | None:
    """Submit and wait for a sharded submission; None after --no-wait. Raises when a shard did not succeed."""
    ctx, model, options = runner.ctx, compiled.model, runner.options
    try:
        job = sharding.run_group(
            ctx, model, fp, group, lambda s: _spec(ctx, compiled, fp, s.source, s.destination, str(s.index)),
            reporter=runner.reporter, interrupted=getattr(runner, "interrupted", None),
            wait=getattr(options, "wait", True), cancel_on_interrupt=getattr(options, "cancel_on_interrupt", False))
    except jobs.Interrupted:
        result.batch = {"state": "interrupted", "interrupted": True, "jobs": group.count}
        raise
    if not getattr(options, "wait", True):
        submitted = sum(s.job is not None for s in group.shards)
        result.status = "skipped"
        result.message = (f"submitted {submitted} of {group.count} shard jobs and returned (--no-wait); "
                          f"`bqbatch wait -s {model.name}` waits for them, submits the rest and builds {compiled.relation}")
        result.batch = jobs.batch_info(job, submitted=True)
        return None
    if job.state not in jobs.FINISHED_STATES:
        result.batch = jobs.batch_info(job)
        raise sharding.outcome_error(model, group, compiled.relation)
    return job


def validate_model(ctx, compiled: CompiledModel):
    """`bqbatch validate`: materialize the request table and check it, submitting nothing."""
    from bqbatch_sql.validate import validate_relation

    model = compiled.model
    # A table of its own: <model>__requests may be the input of a live job.
    preview = compiled.relation.with_name(f"{compiled.relation.name}__requests_validate")
    ctx.adapter.create_schema(preview.schema)
    ctx.adapter.create_table_as(preview, compiled.query)
    try:
        # No per-job limit to report: past it a run shards the table into several jobs (sharding.py).
        return validate_relation(ctx.adapter, preview, model=model.name, path=model.path,
                                 key_columns=model.config.key_columns, max_requests=None,
                                 template=_template(ctx.adapter, compiled))
    finally:
        ctx.adapter.drop_relation(preview)


def _label_value(text: str) -> str:
    # Vertex label values: lowercase letters, digits, '-' and '_', at most 63 characters.
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower())[:63]


def _wait(predictor, job: BatchJob, reporter, name: str, interrupted=None) -> BatchJob:
    delay = getattr(predictor, "poll_initial_seconds", 0.5)
    ceiling = getattr(predictor, "poll_max_seconds", 5.0)
    factor = getattr(predictor, "poll_multiplier", 1.5)
    progress = reporter.job_progress(name)
    try:
        while True:
            progress.update(job.state.short, job.succeeded + job.failed, job.total, job.failed)
            if job.done:
                return job
            # Ctrl-C reaches the main thread only; it sets `interrupted`, which ends this wait at once.
            if interrupted is not None and interrupted.wait(delay):
                raise jobs.Interrupted(f"interrupted while waiting for {job.name}")
            if interrupted is None:
                time.sleep(delay)
            delay = min(delay * factor, ceiling)
            job = predictor.get(job.name)
    finally:
        progress.close()


# An order-independent checksum of whole rows. Each warehouse has its own row hash
# (BigQuery's FarmHash does not exist in DuckDB); the value is only ever compared
# with one computed by the same warehouse.
_ROW_HASH = {
    # 60 bits of MD5 rather than FARM_FINGERPRINT: the emulator runs BigQuery SQL on DuckDB, which has no FarmHash.
    "bigquery": "BIT_XOR(CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5(TO_JSON_STRING(t))), 1, 15)) AS INT64))",
    "duckdb": "BIT_XOR(HASH(t))",
}


def _data_checksum(adapter, relation: Relation) -> str:
    """A checksum of the request rows, computed in the warehouse."""
    sql = f"SELECT COUNT(*), {_ROW_HASH[adapter.dialect]} FROM {relation.sql(adapter.dialect)} AS t"
    count, digest = adapter.fetchall(sql)[0]
    return f"{count}:{digest}"


def _with_statuses(adapter, requests: Relation, scratch: Relation, use) -> None:
    """`use(checked)` with `checked` = every row of `requests` and its status, the validator's
    fast way (on DuckDB the full rules run only on the rows its fast path cannot vouch for)."""
    from bqbatch_sql.validate import materialize_statuses

    materialize_statuses(adapter, requests, scratch, keep_columns=True)
    try:
        use(scratch)
    finally:
        adapter.drop_relation(scratch)


def _split_valid(adapter, requests: Relation, valid: Relation) -> None:
    columns = [exp.column(c.name, quoted=True) for c in adapter.columns(requests)]
    _with_statuses(adapter, requests, valid.with_name(f"{valid.name}__checked"), lambda checked: adapter.create_table_as(
        valid, exp.select(*columns).from_(checked.table()).where(exp.Is(this=exp.column("status"), expression=exp.Null()))))


def _append_invalid(adapter, requests: Relation, output: Relation) -> None:
    """Rows held back by on_invalid='skip' join the output with their status, as Vertex would write them."""
    columns = [c.name for c in adapter.columns(requests)]

    def append(checked: Relation) -> None:
        select = exp.select(
            *[exp.column(c, quoted=True) for c in columns],
            exp.cast(exp.Null(), exp.DataType.build("JSON")).as_("response"),
            exp.column("status"),
            exp.CurrentTimestamp().as_("processed_time"),
        ).from_(checked.table()).where(exp.Not(this=exp.Is(this=exp.column("status"), expression=exp.Null())))
        insert = exp.insert(select, output.table(), columns=[*columns, *BATCH_COLUMNS])
        for ident in insert.find_all(exp.Identifier):
            ident.set("quoted", True)
        adapter.execute(insert)

    _with_statuses(adapter, requests, output.with_name(f"{output.name}__checked"), append)


def _summary(adapter, output: Relation, job_name: str, state: JobState, reused: bool,
             tokens: bool = True) -> dict[str, Any]:
    """Rows, successes, failures and token totals of the output table, summed in the warehouse.

    tokens=False skips reading every response (the caller has this run's tokens from cost.usage)."""
    def usage(field: str) -> str:
        return f"SUM(SAFE_CAST(JSON_VALUE(response, '$.usageMetadata.{field}') AS INT64))" if tokens else "0"

    sql = (
        f"SELECT COUNT(*), COUNTIF(status IS NULL OR status = ''), {usage('promptTokenCount')}, "
        f"{usage('candidatesTokenCount')}, {usage('totalTokenCount')} FROM {output.sql('bigquery')}"
    )
    rows, ok, prompt, out, total = adapter.fetchall(transpile(sql, adapter.dialect))[0]
    return {
        "job_name": job_name, "state": state.value, "reused": reused, "rows": rows, "succeeded": ok,
        "failed": rows - ok, "prompt_tokens": prompt or 0, "output_tokens": out or 0, "total_tokens": total or 0,
    }


def _response_schema(adapter, requests: Relation) -> Any:
    """The requests' responseSchema when they all share one; None otherwise.

    Only requests whose text could name the key are parsed (the JSON functions parse
    every row otherwise: ~0.3 s per million rows); a \\u escape could spell it too
    (request_spec.STRUCTURED_OUTPUT_HINT)."""
    query = parse_model_sql(
        "SELECT DISTINCT TO_JSON_STRING(COALESCE(JSON_QUERY(request, '$.generationConfig.responseSchema'), "
        "JSON_QUERY(request, '$.generation_config.response_schema'))) AS s "
        f"FROM {requests.sql('bigquery')} LIMIT 2", path=f"{requests} (response schema)", model=requests.name)
    query = to_dialect(query, adapter.dialect, copy=False)
    # The request's text as the warehouse stores it: DuckDB reads a JSON column as text
    # for free, BigQuery has to serialize it.
    if adapter.dialect == "duckdb":
        text = exp.cast(exp.column("request"), exp.DataType.build("VARCHAR"))
    else:
        text = rowsql.request_text(rowsql.column_types(adapter, requests))
    may_name = exp.or_(*[exp.GT(this=exp.func("strpos", text.copy(), exp.Literal.string(s)), expression=exp.Literal.number(0))
                         for s in (STRUCTURED_OUTPUT_HINT, "\\u")])
    sql = query.where(may_name, copy=False).sql(adapter.dialect)
    rows = [r[0] for r in adapter.fetchall(sql) if r[0] not in (None, "null")]
    if len(rows) != 1:
        return None
    value = orjson.loads(rows[0]) if isinstance(rows[0], (str, bytes)) else rows[0]
    if isinstance(value, str):  # a STRING request column gives the schema as JSON text
        value = orjson.loads(value)
    return value if isinstance(value, dict) else None


def _parsed_view(runner: "Runner", compiled: CompiledModel, requests: Relation) -> None:
    """The default post-hook: `<model>__parsed`, built by the parsed_response_view macro."""
    model = compiled.model
    if not model.config.parsed_view:
        return
    adapter = runner.ctx.adapter
    manifest = runner.manifest
    passthrough = [c.name for c in adapter.columns(requests) if c.name != "request"]
    schema = _response_schema(adapter, requests)
    sql = manifest.renderer.render_snippet(
        f"{model.path}#parsed_view",
        "{{ parsed_response_view(relation, passthrough, response_schema) }}",
        f"Model '{model.name}' ({model.path}) parsed view",
        compiled.relation,
        extra={"relation": compiled.relation.sql("bigquery"), "passthrough": passthrough, "response_schema": schema},
    )
    tree = parse_model_sql(sql, path=f"{model.path} (parsed view)", model=model.name)
    query = tree if adapter.dialect == "bigquery" else to_dialect(tree, adapter.dialect, model=model.name)
    adapter.create_view(parsed_relation(compiled.relation), query)
