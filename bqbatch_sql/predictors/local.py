"""Predict stage, embedded target: a batch prediction job run inside DuckDB.

`LocalPredictor` behaves as Vertex AI batch prediction does, seen from the user's
side: submit returns a PENDING job at once, a background thread moves it to RUNNING
and SUCCEEDED (or FAILED / CANCELLED) while the completion stats advance, and the
output table holds every request column plus `response`, `status` and
`processed_time`, exactly one row per request row.

Rows stay in the warehouse. Each chunk of the request table (a rowid range) is one
INSERT ... SELECT that validates the request with the shared rules of
`bqbatch_sql.validate`, injects the asked-for fraction of transient failures and
builds the emulated GenerateContentResponse (`responses.py`). Structured output
costs one Python call per distinct schema, joined onto the rows. Only a user's
response function pulls requests into Python, one bounded batch at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, ClassVar

import duckdb
import orjson
from sqlglot import exp

from bqbatch_sql.errors import BqbatchError, JobNotFoundError, PredictorError
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState, TERMINAL_STATES
from bqbatch_sql.predictors.responses import (
    HASH_MARKER,
    SchemaValueError,
    coerce_function_result,
    default_text_sql,
    failure_sql,
    function_error_status,
    model_version,
    response_json_sql,
    schema_error_status,
    sql_fragment,
    structured_text,
    token_estimate_sql,
)

# Rows handed to a response function per fetch, and results written back per insert:
# what bounds the Python side's memory whatever the table size.
FUNCTION_BATCH_ROWS = 2_000
FUNCTION_WRITE_ROWS = 20_000


# Up to this many distinct structured-output settings are looked up from list
# parameters (a linear search per row); more go through a join and a sort.
MAX_LISTED_TEMPLATES = 64


@dataclasses.dataclass
class _Templates:
    kind: str = "lists"  # or "table": the 'templates' scratch table
    keys: list[str] = dataclasses.field(default_factory=list)
    texts: list[str | None] = dataclasses.field(default_factory=list)
    errors: list[str | None] = dataclasses.field(default_factory=list)

    def params(self) -> list[list]:
        return [self.keys, self.texts, self.errors] if self.kind == "lists" else []


class JobCancelled(Exception):
    """Raised inside the worker when cancel() was asked for."""


@dataclasses.dataclass
class _Run:
    job: BatchJob
    spec: BatchJobSpec
    settings: "_Settings"
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    cursors: list[duckdb.DuckDBPyConnection] = dataclasses.field(default_factory=list)
    thread: threading.Thread | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per phase


@dataclasses.dataclass(frozen=True)
class _Settings:
    response_function: str | None
    function: Callable[[dict], Any] | None
    failure_rate: float
    latency_seconds: float
    chunk_rows: int


class LocalPredictor:
    """Emulated Gemini batch prediction in the DuckDB warehouse (implements `Predictor`)."""

    name: ClassVar[str] = "local"
    # The runner polls with these (seconds): a local job finishes fast, so poll briskly.
    poll_initial_seconds: ClassVar[float] = 0.05
    poll_max_seconds: ClassVar[float] = 1.0
    poll_multiplier: ClassVar[float] = 1.5

    def __init__(
        self,
        adapter: Any,
        *,
        response_function: str | None = None,
        failure_rate: float = 0.0,
        latency_seconds: float = 0.0,
        chunk_rows: int = 100_000,
    ):
        self.adapter = adapter
        self.defaults = _settings(response_function, failure_rate, latency_seconds, chunk_rows)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_context(cls, context: Any, **options: Any) -> "LocalPredictor":
        """The registry's constructor: the target's DuckDB adapter plus the profile's options."""
        return cls(context.adapter, **options)

    # -- the Predictor protocol ---------------------------------------------------

    def submit(self, spec: BatchJobSpec) -> BatchJob:
        """Start the job in a background thread; returns at once with state PENDING.

        A model's `predictor_options` (spec.options) may override response_function,
        failure_rate, latency_seconds and chunk_rows for that model alone.
        """
        overrides = {k: spec.options[k] for k in _OPTION_NAMES if k in spec.options}
        settings = self.defaults if not overrides else _settings(**{**_as_kwargs(self.defaults), **overrides})
        now = _utcnow()
        job = BatchJob(
            name=f"projects/local/locations/local/batchPredictionJobs/{uuid.uuid4().int % 10**19:019d}",
            state=JobState.PENDING,
            create_time=now,
        )
        run = _Run(job=job, spec=spec, settings=settings)
        run.thread = threading.Thread(target=self._work, args=(run,), name=f"bqbatch-local-{job.name[-6:]}", daemon=True)
        with self._lock:
            self._runs[job.name] = run
            snapshot = dataclasses.replace(job)  # PENDING, as Vertex answers a create call
        run.thread.start()
        return snapshot

    def get(self, job_name: str) -> BatchJob:
        """A snapshot of the job: state, counts (total, succeeded, failed, incomplete), times, error."""
        with self._lock:
            run = self._runs.get(job_name)
            if run is None:
                raise JobNotFoundError(
                    f"The local predictor knows no job '{job_name}'. Local jobs live in the process that "
                    f"submitted them; run the model again to submit a new job."
                )
            return dataclasses.replace(run.job)

    def cancel(self, job_name: str) -> None:
        """Ask the job to stop; rows already written stay, the rest count as incomplete."""
        self.get(job_name)
        with self._lock:
            run = self._runs[job_name]
            if run.job.state in TERMINAL_STATES:
                return
            run.cancel.set()
            run.job.state = JobState.CANCELLING
            cursors = list(run.cursors)
        for cursor in cursors:
            cursor.interrupt()  # stops the chunk statement in flight; DuckDB rolls it back

    def timings(self, job_name: str) -> dict[str, float]:
        """Where the job's time went, in seconds per phase (validate, templates, chunks, ...)."""
        self.get(job_name)
        with self._lock:
            return dict(self._runs[job_name].timings)

    def wait(self, job_name: str, timeout: float | None = None) -> BatchJob:
        """Block until the job ends (or `timeout` seconds pass); the emulator and tests use this."""
        with self._lock:
            run = self._runs.get(job_name)
        if run is None:
            return self.get(job_name)
        if run.thread is not None:
            run.thread.join(timeout)
        return self.get(job_name)

    # -- the worker ------------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        cursor = None
        try:
            if run.settings.latency_seconds and run.cancel.wait(run.settings.latency_seconds):
                raise JobCancelled()
            with self._lock:  # a cancel() racing this sees either PENDING or RUNNING, never a step back
                if run.cancel.is_set():
                    raise JobCancelled()
                run.job.state, run.job.start_time = JobState.RUNNING, _utcnow()
            # A DuckDB connection is not to be shared across threads: the job has its own.
            cursor = self.adapter.connection.cursor()
            with self._lock:
                run.cursors.append(cursor)
            self._predict(run, cursor)
            self._finish(run, JobState.SUCCEEDED)
        except JobCancelled:
            self._finish(run, JobState.CANCELLED)
        except duckdb.InterruptException:
            self._finish(run, JobState.CANCELLED if run.cancel.is_set() else JobState.FAILED, "interrupted")
        except BqbatchError as e:
            self._finish(run, JobState.FAILED, str(e))
        except duckdb.Error as e:
            self._finish(run, JobState.FAILED, f"DuckDB refused a statement of the local predictor: {e}")
        except Exception as e:  # a bug of ours must still end the job, with its cause on record
            self._finish(run, JobState.FAILED, f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                cursors, run.cursors = run.cursors, []
            for c in cursors:
                c.close()

    def _predict(self, run: _Run, cursor: duckdb.DuckDBPyConnection) -> None:
        spec, settings = run.spec, run.settings
        plan = _Plan.inspect(cursor, spec.source, spec.destination, run.job.name.rsplit("/", 1)[-1][-12:])
        self._update(run, total=plan.total)
        try:
            for statement in plan.create_destination():
                cursor.execute(statement)
            # One validation pass over the whole table: the shared rules are a large
            # expression that DuckDB takes ~0.5 s to plan, too much to pay per chunk.
            with _phase(run, "validate"):
                cursor.execute(plan.validate_all())
            using_function = settings.function is not None
            templates: _Templates | None = None
            if using_function:
                cursor.execute(plan.create_scratch("fn", ["rid BIGINT", "response TEXT", "error TEXT"]))
            elif plan.total:
                with _phase(run, "templates"):
                    templates = self._load_templates(run, cursor, plan)
            statement = plan.chunk_insert(
                model_version(spec.model_id), settings.failure_rate,
                templates=templates.kind if templates else None, function=using_function,
            )
            extra = templates.params() if templates else []
            counts = plan.written_counts()
            written = 0
            for low, high in plan.chunks(settings.chunk_rows):
                if run.cancel.is_set():
                    raise JobCancelled()
                if using_function:
                    with _phase(run, "response_function"):
                        self._call_function(run, cursor, plan, low, high)
                    if run.cancel.is_set():  # asked while the function ran: the chunk is dropped whole
                        raise JobCancelled()
                with _phase(run, "chunks"):
                    cursor.execute(statement, [low, high, _utcnow().replace(tzinfo=None), *extra])
                    done, failed = cursor.execute(counts, [written]).fetchone()
                written += done
                with self._lock:
                    run.job.succeeded += done - failed
                    run.job.failed += failed
        finally:
            for statement in plan.drop_scratch():
                cursor.execute(statement)

    def _load_templates(self, run: _Run, cursor: duckdb.DuckDBPyConnection, plan: "_Plan") -> "_Templates | None":
        """One emulated answer per distinct structured-output setting; None when no row asks for one.

        A few settings travel as list parameters of the chunk statement (looked up
        per row, no join, table order kept); past MAX_LISTED_TEMPLATES they go to a
        scratch table, streamed in batches, so even a table whose every row has its
        own schema costs bounded memory (and one Python call per schema).
        """
        result = self._reader(run).execute(plan.distinct_output_settings())
        templates = _Templates()
        while batch := result.fetchmany(1_000):
            if run.cancel.is_set():
                raise JobCancelled()
            for (key,) in batch:
                text, error = _template_for(key)
                templates.keys.append(key), templates.texts.append(text), templates.errors.append(error)
            if templates.kind == "table" or len(templates.keys) > MAX_LISTED_TEMPLATES:
                if templates.kind != "table":
                    cursor.execute(plan.create_scratch("templates", ["key TEXT", "template TEXT", "error TEXT"]))
                    templates.kind = "table"
                cursor.execute(plan.insert_lists("templates", ["TEXT", "TEXT", "TEXT"]),
                               [templates.keys, templates.texts, templates.errors])
                templates.keys, templates.texts, templates.errors = [], [], []
        return templates if templates.kind == "table" or templates.keys else None

    def _call_function(self, run: _Run, cursor: duckdb.DuckDBPyConnection, plan: "_Plan", low: int, high: int) -> None:
        """Stream one chunk's valid requests through the user's function into the results temp table."""
        settings = run.settings
        version = model_version(run.spec.model_id)
        cursor.execute(plan.clear_scratch("fn"))
        insert = plan.insert_lists("fn", ["BIGINT", "TEXT", "TEXT"])
        result = self._reader(run).execute(plan.function_inputs(settings.failure_rate), [low, high])
        rids: list[int] = []
        responses: list[str | None] = []
        errors: list[str | None] = []
        while batch := result.fetchmany(FUNCTION_BATCH_ROWS):
            if run.cancel.is_set():
                raise JobCancelled()
            for rid, text in batch:
                response, error = _call_user_function(settings, text, version)
                rids.append(rid), responses.append(response), errors.append(error)
            if len(rids) >= FUNCTION_WRITE_ROWS:
                cursor.execute(insert, [rids, responses, errors])
                rids, responses, errors = [], [], []
        if rids:
            cursor.execute(insert, [rids, responses, errors])

    def _reader(self, run: _Run) -> duckdb.DuckDBPyConnection:
        # A second connection streams rows out while the job's own connection writes
        # (a new statement on one connection would discard the pending result).
        with self._lock:
            if len(run.cursors) < 2:
                run.cursors.append(self.adapter.connection.cursor())
            return run.cursors[1]

    # -- bookkeeping -------------------------------------------------------------------

    def _update(self, run: _Run, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(run.job, key, value)

    def _finish(self, run: _Run, state: JobState, error: str | None = None) -> None:
        with self._lock:
            job = run.job
            job.state = state
            job.error = error
            job.end_time = _utcnow()
            if job.total is not None:
                job.incomplete = max(0, job.total - job.succeeded - job.failed)


# -- helpers ---------------------------------------------------------------------------

_OPTION_NAMES = ("response_function", "failure_rate", "latency_seconds", "chunk_rows")


def _settings(response_function: str | None, failure_rate: float, latency_seconds: float, chunk_rows: int) -> _Settings:
    if isinstance(failure_rate, bool) or not isinstance(failure_rate, (int, float)) or not 0.0 <= failure_rate <= 1.0:
        raise PredictorError(f"Local predictor: failure_rate must be a number from 0 to 1, got {failure_rate!r}.")
    if isinstance(latency_seconds, bool) or not isinstance(latency_seconds, (int, float)) or latency_seconds < 0:
        raise PredictorError(f"Local predictor: latency_seconds must be a number >= 0, got {latency_seconds!r}.")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows <= 0:
        raise PredictorError(f"Local predictor: chunk_rows must be a positive integer, got {chunk_rows!r}.")
    function = load_response_function(response_function) if response_function else None
    return _Settings(response_function, function, float(failure_rate), float(latency_seconds), chunk_rows)


def _as_kwargs(settings: _Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in _OPTION_NAMES}


def load_response_function(path: str) -> Callable[[dict], Any]:
    """Import `package.module:function` (or `package.module.function`); a clear error names the path."""
    if not isinstance(path, str) or not path.strip():
        raise PredictorError(f"Local predictor: response_function must be 'package.module:function', got {path!r}.")
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise PredictorError(
            f"Local predictor: response_function '{path}' names no module; write it as 'package.module:function'."
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise PredictorError(
            f"Local predictor: response_function '{path}': cannot import module '{module_name}' "
            f"({type(e).__name__}: {e}). Put the module on PYTHONPATH or in an installed package."
        ) from e
    function = module
    for part in attr.split("."):
        if not hasattr(function, part):
            from bqbatch_sql.errors import did_you_mean

            names = [n for n in dir(module) if not n.startswith("_")]
            raise PredictorError(
                f"Local predictor: response_function '{path}': module '{module_name}' has no attribute "
                f"'{attr}'.{did_you_mean(attr, names)}"
            )
        function = getattr(function, part)
    if not callable(function):
        raise PredictorError(f"Local predictor: response_function '{path}' is a {type(function).__name__}, not a function.")
    return function


def _call_user_function(settings: _Settings, text: str, version: str) -> tuple[str | None, str | None]:
    """(response JSON, None) or (None, status text): a failing row, never a failed job."""
    try:
        request = orjson.loads(text)
        result = coerce_function_result(settings.function(request), request, version)
        return orjson.dumps(result).decode(), None
    except Exception as e:
        return None, function_error_status(settings.response_function or "?", e)


def _template_for(key: str) -> tuple[str | None, str | None]:
    """The candidate text (or the status of an unusable schema) for one structured-output setting."""
    try:
        mime, schema, json_schema = orjson.loads(key)
        schema = orjson.loads(schema) if schema is not None else None
        json_schema = orjson.loads(json_schema) if json_schema is not None else None
        return structured_text(mime, schema, json_schema), None
    except (SchemaValueError, orjson.JSONDecodeError, ValueError, TypeError) as e:
        return None, schema_error_status(e)


@contextlib.contextmanager
def _phase(run: _Run, name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        run.timings[name] = run.timings.get(name, 0.0) + time.perf_counter() - start


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- the job's statements --------------------------------------------------------------

# Read from each valid request in one JSON parse: DuckDB evaluates a list of paths
# against a single parse of the document (wildcards excepted). The API takes either
# spelling of every key, at every level, hence the four spellings per setting.
_SETTINGS = {
    # The prompt and system text the answer echoes and the token estimate counts:
    # first parts only. A wildcard over every part costs a second parse (~0.3 s per
    # million rows); multi-part and multi-turn prompts are estimated low.
    "prompt": ["$.contents[0].parts[0].text"],
    "system": [f"$.{k}.parts[0].text" for k in ("systemInstruction", "system_instruction")],
    "mime": [f"$.{g}.{k}" for g in ("generationConfig", "generation_config") for k in ("responseMimeType", "response_mime_type")],
    "schema": [f"$.{g}.{k}" for g in ("generationConfig", "generation_config") for k in ("responseSchema", "response_schema")],
    "json_schema": [
        f"$.{g}.{k}" for g in ("generationConfig", "generation_config") for k in ("responseJsonSchema", "response_json_schema")
    ],
}
_PATHS = [p for paths in _SETTINGS.values() for p in paths]
_TEXT_PATHS = _SETTINGS["prompt"] + _SETTINGS["system"]  # first in _PATHS: rows without templates read only these


def _path_list(paths: list[str]) -> str:
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"

# Every structured-output key contains this; a cheap substring test spares the JSON
# parse of the other rows when looking for the distinct settings.
_SETTINGS_HINT = "esponse"
_OUTPUT_COLUMNS = ("response", "status", "processed_time")


def _setting(e: exp.Expression, name: str) -> exp.Expression:
    """COALESCE over the spellings of one setting in the extracted path list `e` (1-based)."""
    start = _PATHS.index(_SETTINGS[name][0]) + 1
    items = [sql_fragment(f"E[{start + i}]", E=e) for i in range(len(_SETTINGS[name]))]
    return exp.Coalesce(this=items[0], expressions=items[1:])


def _settings_key(e: exp.Expression) -> exp.Expression:
    """The structured-output settings of a row as one text key: [mime, schema, jsonSchema] in JSON."""
    parts = [_setting(e, n) for n in ("mime", "schema", "json_schema")]
    return sql_fragment(
        "CASE WHEN COALESCE(A, B, C) IS NOT NULL THEN CAST(TO_JSON(LIST) AS TEXT) END",
        A=parts[0], B=parts[1], C=parts[2], LIST=exp.Array(expressions=parts),
    )


@dataclasses.dataclass
class _Plan:
    """What one job reads and writes, and the statements that do it (rendered once, run per chunk).

    Scratch tables (`__bqbatch_<what>_<job>` next to the destination, dropped when
    the job ends) are plain tables: the job's second connection reads them too.
    """

    source: Relation
    destination: Relation
    destination_kind: str | None
    columns: list[str]
    request: str
    low: int
    high: int
    total: int
    tag: str
    scratch: list[Relation] = dataclasses.field(default_factory=list)

    @classmethod
    def inspect(cls, cursor: duckdb.DuckDBPyConnection, source: Relation, destination: Relation, tag: str) -> "_Plan":
        kind = _relation_kind(cursor, source)
        if kind is None:
            raise PredictorError(f"Batch job input {source} does not exist; materialize the request table first.")
        if source == destination:
            raise PredictorError(f"Batch job input and output are the same table {source}; name another destination.")
        columns = [r[0] for r in cursor.execute(*_catalog_query("columns", source, "column_name")).fetchall()]
        by_lower = {c.lower(): c for c in columns}
        if "request" not in by_lower:
            raise PredictorError(
                f"Batch job input {source} has no column named 'request' (columns: {', '.join(columns)}). "
                f"The model's SQL must select the GenerateContentRequest JSON AS request."
            )
        reserved = [by_lower[c] for c in _OUTPUT_COLUMNS if c in by_lower]
        if reserved:
            raise PredictorError(
                f"Batch job input {source} has column(s) {', '.join(reserved)}, which the output table adds; "
                f"rename them in the model's SQL."
            )
        plan = cls(source, destination, _relation_kind(cursor, destination), columns, by_lower["request"], 0, -1, 0, tag)
        if kind == "VIEW":
            # rowid ranges need a table: a view is read once into a snapshot.
            snapshot = plan._scratch("source")
            cursor.execute(exp.Create(this=snapshot.table(), kind="TABLE", replace=True,
                                      expression=exp.select("*").from_(source.table())).sql("duckdb"))
            plan.source = snapshot
        low, high, total = cursor.execute(
            exp.select("MIN(rowid)", "MAX(rowid)", "COUNT(*)").from_(plan.source.table()).sql("duckdb")
        ).fetchone()
        plan.low, plan.high, plan.total = (low or 0), (high if high is not None else -1), total
        return plan

    def chunks(self, size: int):
        for low in range(self.low, self.high + 1, size):
            yield low, low + size

    def _scratch(self, what: str) -> Relation:
        relation = self.destination.with_name(f"__bqbatch_{what}_{self.tag}")
        if relation not in self.scratch:
            self.scratch.append(relation)
        return relation

    # -- DDL -----------------------------------------------------------------------

    def create_destination(self) -> list[str]:
        """Replace the destination by an empty table: the source's columns, then the output columns."""
        query = exp.select(
            "s.*", "CAST(NULL AS JSON) AS response", "CAST(NULL AS TEXT) AS status",
            "CAST(NULL AS TIMESTAMP) AS processed_time", dialect="duckdb",
        ).from_(self.source.table(alias="s")).limit(0)
        statements = [exp.Create(this=self.destination.table(), kind="TABLE", expression=query, replace=True)]
        if self.destination_kind == "VIEW":  # DuckDB cannot replace a view by a table
            statements.insert(0, exp.Drop(tables=[self.destination.table()], kind="VIEW", exists=True))
        return [s.sql("duckdb") for s in statements]

    def validate_all(self) -> str:
        """Every row's status (NULL when valid) from the shared rules, in table order, into the 'status' scratch table.

        Stored in scan order, one row per source row, so each chunk pairs it with the
        source by POSITIONAL JOIN: a hash join would reorder the chunk and sorting it
        back costs ~1.2 s of CPU per million rows.
        """
        checked = exp.select("s.rowid AS rid", f"{_STATUS_SLOT} AS v").from_(self.source.table(alias="s"))
        text = exp.Create(this=self._scratch("status").table(), kind="TABLE", expression=checked, replace=True).sql("duckdb")
        return text.replace(_STATUS_SLOT, _status_sql(self.request), 1)

    def create_scratch(self, what: str, columns: list[str]) -> str:
        schema = exp.Schema(
            this=self._scratch(what).table(),
            expressions=[
                exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=exp.DataType.build(kind, dialect="duckdb"))
                for name, kind in (c.split(" ", 1) for c in columns)
            ],
        )
        return exp.Create(this=schema, kind="TABLE", replace=True).sql("duckdb")

    def insert_lists(self, what: str, types: list[str]) -> str:
        """INSERT of Python lists bound as array parameters: one statement per batch, no row loop."""
        select = exp.select(*[
            sql_fragment(f"UNNEST(CAST(${i + 1} AS {t}[]))") for i, t in enumerate(types)
        ])
        return exp.insert(select, self._scratch(what).table()).sql("duckdb")

    def clear_scratch(self, what: str) -> str:
        return exp.delete(self._scratch(what).table()).sql("duckdb")

    def drop_scratch(self) -> list[str]:
        return [exp.Drop(tables=[t.table()], kind="TABLE", exists=True).sql("duckdb") for t in self.scratch]

    # -- per-chunk queries --------------------------------------------------------------

    def _rows(self, failure_rate: float) -> tuple[exp.Select, exp.Expression]:
        """The chunk's rows ($1 <= rowid < $2) with their status, hashes and injected-failure draw.

        __bqb_v: NULL or the Vertex status text; __bqb_j: the request of valid rows
        only, so no JSON function ever sees garbage.
        """
        request = exp.column(self.request, quoted=True)
        chunk = "rowid >= $1 AND rowid < $2"
        source = exp.select("*", "rowid AS __bqb_rid").from_(self.source.table()).where(chunk, dialect="duckdb")
        status = exp.select("rid", "v").from_(self._scratch("status").table()).where(
            chunk.replace("rowid", "rid"), dialect="duckdb")
        rows = exp.select(
            "s.*",
            # Positional pairing is only right while both sides hold the same rows in
            # the same order; a mismatch stops the job instead of mislabelling rows.
            sql_fragment("CASE WHEN i.rid IS DISTINCT FROM s.__bqb_rid THEN ERROR(MSG) ELSE i.v END",
                         MSG=exp.Literal.string("bqbatch local predictor: status rows out of step with the "
                                                "request rows (was preserve_insertion_order turned off?)")).as_("__bqb_v"),
            sql_fragment("HASH(R)", R=request).as_("__bqb_h"),
            sql_fragment("HASH(R, s.__bqb_rid)", R=request).as_("__bqb_fh"),
            sql_fragment("CASE WHEN i.v IS NULL THEN R END", R=request).as_("__bqb_j"),
        ).from_(source.subquery("s"))
        rows.append("joins", exp.Join(this=status.subquery("i"), method="POSITIONAL"))
        failed, status = failure_sql(exp.column("__bqb_fh"), failure_rate)
        return exp.select("l1.*", failed.as_("__bqb_fail")).from_(rows.subquery("l1")), status

    def function_inputs(self, failure_rate: float) -> str:
        rows, _ = self._rows(failure_rate)
        query = exp.select("__bqb_rid", "CAST(__bqb_j AS TEXT)").from_(rows.subquery("l2")).where(
            "__bqb_v IS NULL AND NOT __bqb_fail", dialect="duckdb"
        )
        return query.sql("duckdb")

    def chunk_insert(self, version: str, failure_rate: float, *, templates: str | None, function: bool) -> str:
        """INSERT INTO destination SELECT ...: one output row per source row of the chunk.

        Parameters: $1, $2 the rowid range, $3 processed_time; with templates="lists"
        also $4, $5, $6 (see _Templates).
        """
        rows, failure_status = self._rows(failure_rate)
        if function:
            answered = exp.select("l2.*", "f.response AS __bqb_out", "f.error AS __bqb_err").from_(
                rows.subquery("l2")).join(self._scratch("fn").table(alias="f"), on="f.rid = l2.__bqb_rid", join_type="left")
            response = sql_fragment("CAST(__bqb_out AS JSON)")
            missing = exp.Literal.string(function_error_status("?", "no result was recorded for this row"))
            error = sql_fragment("COALESCE(__bqb_err, CASE WHEN __bqb_out IS NULL THEN M END)", M=missing)
        else:
            e = exp.column("__bqb_e")
            tag = exp.column("__bqb_tag")
            prompt = _setting(e, "prompt")
            parsed = exp.select(
                "l2.*",
                sql_fragment(f"__bqb_j ->> {_path_list(_PATHS if templates else _TEXT_PATHS)}").as_("__bqb_e"),
                # 8 hex digits of the request's hash: names the request in the text and
                # varies a schema's free strings per row (same width as HASH_MARKER).
                sql_fragment("LPAD(HEX(__bqb_h >> 32), 8, '0')").as_("__bqb_tag"),
            ).from_(rows.subquery("l2"))
            default_text = default_text_sql(prompt, tag)
            key = _settings_key(exp.column("__bqb_e", table="l3"))
            if templates == "lists":
                # $4, $5, $6: the settings' keys, candidate texts and error statuses.
                looked_up = exp.select("l3.*", sql_fragment("LIST_POSITION(CAST($4 AS TEXT[]), K)", K=key).as_("__bqb_ti")
                                       ).from_(parsed.subquery("l3"))
                template = sql_fragment("CAST($5 AS TEXT[])[__bqb_ti]")
                error_of = sql_fragment("CAST($6 AS TEXT[])[__bqb_ti]")
                source = looked_up.subquery("l3b")
                joined = exp.select("l3b.*").from_(source)
            elif templates == "table":
                template, error_of = sql_fragment("m.template"), sql_fragment("m.error")
                joined = exp.select("l3.*").from_(parsed.subquery("l3")).join(
                    self._scratch("templates").table(alias="m"), on=sql_fragment("m.key = K", K=key), join_type="left")
            if templates:
                text = sql_fragment("CASE WHEN T IS NOT NULL THEN REPLACE(T, MARK, TAG) ELSE D END",
                                    T=template, MARK=exp.Literal.string(HASH_MARKER), TAG=tag, D=default_text)
                answered = joined.select(text.as_("__bqb_text"), error_of.as_("__bqb_err"))
            else:
                answered = exp.select("l3.*", default_text.as_("__bqb_text"), "NULL AS __bqb_err").from_(
                    parsed.subquery("l3"))
            # Token counts in their own layer: each is used twice in the response.
            answered = exp.select(
                "l4.*",
                token_estimate_sql(sql_fragment("STRLEN(P) + STRLEN(COALESCE(S, ''))", P=prompt,
                                                S=_setting(e, "system"))).as_("__bqb_pt"),
                token_estimate_sql(sql_fragment("STRLEN(__bqb_text)")).as_("__bqb_ct"),
            ).from_(answered.subquery("l4"))
            response = response_json_sql(exp.column("__bqb_text"), exp.column("__bqb_pt"), exp.column("__bqb_ct"), version)
            error = exp.column("__bqb_err")
        ok = sql_fragment("__bqb_v IS NULL AND NOT __bqb_fail AND ERR IS NULL", ERR=error)
        status = sql_fragment(
            "CASE WHEN __bqb_v IS NOT NULL THEN __bqb_v WHEN __bqb_fail THEN F WHEN ERR IS NOT NULL THEN ERR ELSE '' END",
            F=failure_status, ERR=error,
        )
        select = exp.select(
            *[exp.column(c, quoted=True) for c in self.columns],
            exp.Case().when(ok, response).as_("response"),
            status.as_("status"),
            sql_fragment("CAST($3 AS TIMESTAMP)").as_("processed_time"),
        ).from_(answered.subquery("l5"))
        # Keep the table's row order: the hash joins of templates and function results
        # may reorder a chunk (measured), so those paths sort it back by rowid.
        if templates == "table" or function:
            select = select.order_by("__bqb_rid")
        columns = [*self.columns, *_OUTPUT_COLUMNS]
        return exp.insert(select, self.destination.table(), columns=[exp.to_identifier(c, quoted=True) for c in columns]).sql("duckdb")

    def written_counts(self) -> str:
        """Rows written since row $1 of the destination, and how many of them failed."""
        return exp.select("COUNT(*)", "COUNT(*) FILTER (WHERE status <> '')").from_(self.destination.table()).where(
            "rowid >= $1", dialect="duckdb").sql("duckdb")

    def distinct_output_settings(self) -> str:
        """The distinct structured-output settings of the source (a few, usually), as text keys."""
        request = exp.column(self.request, table="s", quoted=True)
        extracted = exp.select(
            sql_fragment(f"(CASE WHEN JSON_VALID(R) THEN R END) ->> {_path_list(_PATHS)}", R=request).as_("__bqb_e")
        ).from_(self.source.table(alias="s")).where(
            sql_fragment("CONTAINS(CAST(R AS TEXT), HINT)", R=request, HINT=exp.Literal.string(_SETTINGS_HINT)))
        keys = exp.select(_settings_key(exp.column("__bqb_e")).as_("k")).from_(extracted.subquery("x"))
        return exp.select("k").distinct().from_(keys.subquery("y")).where("k IS NOT NULL").sql("duckdb")


# The shared rules render to ~100 KB of SQL, which costs sqlglot ~0.1-0.2 s to build
# and render: rendered once per request column name and spliced into the statement
# sqlglot rendered around this slot.
_STATUS_SLOT = "__bqbatch_status_slot__"


@functools.lru_cache(maxsize=8)
def _status_sql(request_column: str) -> str:
    from bqbatch_sql.validate import request_status_sql

    return request_status_sql(exp.column(request_column, table="s", quoted=True), "duckdb").sql("duckdb")


def _catalog_query(what: str, relation: Relation, column: str) -> tuple[str, list[Any]]:
    where = "table_schema = $1 AND table_name = $2" + (" AND table_catalog = $3" if relation.database else "")
    params = [relation.schema, relation.name] + ([relation.database] if relation.database else [])
    order = " ORDER BY ordinal_position" if what == "columns" else ""
    return f"SELECT {column} FROM information_schema.{what} WHERE {where}{order}", params


def _relation_kind(cursor: duckdb.DuckDBPyConnection, relation: Relation) -> str | None:
    rows = cursor.execute(*_catalog_query("tables", relation, "table_type")).fetchall()
    if not rows:
        return None
    return "VIEW" if rows[0][0] == "VIEW" else "TABLE"
