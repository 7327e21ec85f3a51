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
from bqbatch_sql import jobs, output_check
from bqbatch_sql.compiled import CompiledModel
from bqbatch_sql.errors import JobNotFoundError, PredictorError, RequestTableError
from bqbatch_sql.ledger import LIVE_STATES
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState

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
    attach_only = getattr(options, "attach_only", False)  # `bqbatch wait`: finish submitted jobs, submit none
    writes_table = getattr(predictor, "writes_table", True)
    job: BatchJob | None = None
    source, destination = requests, output
    lost: JobNotFoundError | None = None
    entry = ledger.latest(model.unique_id, fp)
    if entry is None and attach_only:
        entry = ledger.latest(model.unique_id)  # the job that was submitted, even if the model changed since
    # A live job is re-attached even on --full-refresh: it is never paid for twice.
    if entry and entry.state in LIVE_STATES:
        try:
            job = predictor.get(entry.job_name)
            source = output.with_name(entry.source.rsplit(".", 1)[-1])
            destination = output.with_name(entry.destination.rsplit(".", 1)[-1])
            reporter.plain(f"    {model.name}: re-attached to live job {job.name} ({job.state.short})")
        except JobNotFoundError as e:
            job, lost = None, e
    if job is None and attach_only:
        result.status = "skipped"
        result.message = str(lost) if lost else jobs.nothing_to_wait_for(entry)
        return
    checksum = entry.data_checksum if entry else None
    invalid_held_back = source != requests
    if job is None:
        adapter.create_table_as(requests, compiled.query)
        from bqbatch_sql.validate import check_request_table, validate_relation

        check_request_table(adapter, requests, model=model.name, path=model.path)
        checksum = _data_checksum(adapter, requests)
        if (entry and entry.state in jobs.FINISHED_STATES and entry.data_checksum == checksum and not full_refresh
                and entry.destination == str(output) and adapter.table_exists(output)):
            result.message = f"up to date: job {entry.job_name} already predicted these rows"
            result.rows = entry.total
            result.batch = _summary(adapter, output, entry.job_name, entry.state, reused=True)
            _parsed_view(runner, compiled, requests)
            return
        if cfg.on_invalid in ("fail", "skip"):
            report = validate_relation(adapter, requests, model=model.name, path=model.path, key_columns=cfg.key_columns)
            if report.invalid and cfg.on_invalid == "fail":
                raise RequestTableError(
                    f"Model '{model.name}' ({model.path}): {report.invalid:,} of {report.total:,} requests are invalid; "
                    f"nothing was submitted.\n{report.render()}\nFix the rows, or set config(on_invalid='skip') to "
                    f"submit the valid rows and record the invalid ones with their status."
                )
            if report.invalid:
                source = requests.with_name(f"{output.name}__requests_valid")
                _split_valid(adapter, requests, source)
                invalid_held_back = True
        # Vertex writes only into a new table: the old output stays readable until the new one replaces it.
        if writes_table:
            destination = output_check.choose_destination(adapter, output, fp)
        spec = BatchJobSpec(
            model_id=cfg.model, source=source, destination=destination,
            display_name=f"bqbatch-{ctx.project.name}-{model.name}",
            labels={"bqbatch_model": _label_value(model.name), "bqbatch_fingerprint": fp, **cfg.labels},
            options=dict(cfg.predictor_options),
        )
        job = predictor.submit(spec)
        ledger.record(model.unique_id, fp, checksum, predictor.name, job, source, destination)
        reporter.plain(f"    {model.name}: submitted {job.name}")
        if not getattr(options, "wait", True):
            result.status = "skipped"
            result.message = (f"submitted {job.name} and returned (--no-wait); `bqbatch wait -s {model.name}` "
                              f"waits for it and builds {output}")
            result.batch = jobs.batch_info(job, submitted=True)
            return

    try:
        job = _wait(predictor, job, reporter, model.name, getattr(runner, "interrupted", None))
    except jobs.Interrupted:
        message = jobs.interrupted_message(predictor, job, model.name, getattr(options, "cancel_on_interrupt", False))
        result.batch = jobs.batch_info(job, interrupted=True)
        raise jobs.Interrupted(f"Model '{model.name}': {message}") from None
    ledger.record(model.unique_id, fp, checksum, predictor.name, job, source, destination)
    if job.state not in jobs.FINISHED_STATES:
        result.batch = jobs.batch_info(job)
        raise jobs.outcome_error(model, job, requests, output)
    if not writes_table:
        result.message = f"predictions written as JSONL under {predictor.gcs_destination} by {job.name}"
        result.batch = jobs.batch_info(job)
        return
    if invalid_held_back:
        _append_invalid(adapter, requests, destination)
    expected, actual = adapter.row_count(requests), adapter.row_count(destination)
    if expected != actual:
        differences = output_check.row_differences(adapter, requests, destination, cfg.key_columns)
        result.batch = jobs.batch_info(job)
        raise PredictorError(output_check.describe_count_mismatch(
            model.name, destination, output, job.name, expected, actual, differences))
    if destination != output:
        output_check.swap_in(adapter, destination, output)
        ledger.record(model.unique_id, fp, checksum, predictor.name, job, source, output)
    if job.state == JobState.PARTIALLY_SUCCEEDED:
        result.message = jobs.partial_message(job, output)
    result.rows = actual
    result.batch = _summary(adapter, output, job.name, job.state, reused=False)
    _parsed_view(runner, compiled, requests)


def validate_model(ctx, compiled: CompiledModel):
    """`bqbatch validate`: materialize the request table and check it, submitting nothing."""
    from bqbatch_sql.validate import validate_relation

    model = compiled.model
    # A table of its own: <model>__requests may be the input of a live job.
    preview = compiled.relation.with_name(f"{compiled.relation.name}__requests_validate")
    ctx.adapter.create_schema(preview.schema)
    ctx.adapter.create_table_as(preview, compiled.query)
    try:
        return validate_relation(ctx.adapter, preview, model=model.name, path=model.path,
                                 key_columns=model.config.key_columns)
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


def _status_expr(adapter, requests: Relation) -> exp.Expression:
    from bqbatch_sql.validate import request_status_sql

    kind = next(c.data_type for c in adapter.columns(requests) if c.name.lower() == "request")
    return request_status_sql(exp.column("request", quoted=True), adapter.dialect, request_type=kind)


def _split_valid(adapter, requests: Relation, valid: Relation) -> None:
    status = _status_expr(adapter, requests)
    query = exp.select("*").from_(requests.table()).where(exp.Is(this=status, expression=exp.Null()))
    adapter.create_table_as(valid, query)


def _append_invalid(adapter, requests: Relation, output: Relation) -> None:
    """Rows held back by on_invalid='skip' join the output with their status, as Vertex would write them."""
    columns = [c.name for c in adapter.columns(requests)]
    status = _status_expr(adapter, requests)
    select = exp.select(
        *[exp.column(c, quoted=True) for c in columns],
        exp.cast(exp.Null(), exp.DataType.build("JSON")).as_("response"),
        status.copy().as_("status"),
        exp.CurrentTimestamp().as_("processed_time"),
    ).from_(requests.table()).where(exp.Not(this=exp.Is(this=status, expression=exp.Null())))
    insert = exp.insert(select, output.table(), columns=[*columns, *BATCH_COLUMNS])
    for ident in insert.find_all(exp.Identifier):
        ident.set("quoted", True)
    adapter.execute(insert)


def _summary(adapter, output: Relation, job_name: str, state: JobState, reused: bool) -> dict[str, Any]:
    """Rows, successes, failures and token totals of the output table, summed in the warehouse."""
    def usage(field: str) -> str:
        return f"SUM(SAFE_CAST(JSON_VALUE(response, '$.usageMetadata.{field}') AS INT64))"

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
    """The requests' responseSchema when they all share one; None otherwise."""
    sql = (
        "SELECT DISTINCT TO_JSON_STRING(COALESCE(JSON_QUERY(request, '$.generationConfig.responseSchema'), "
        "JSON_QUERY(request, '$.generation_config.response_schema'))) AS s "
        f"FROM {requests.sql('bigquery')} LIMIT 2"
    )
    rows = [r[0] for r in adapter.fetchall(transpile(sql, adapter.dialect)) if r[0] not in (None, "null")]
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
