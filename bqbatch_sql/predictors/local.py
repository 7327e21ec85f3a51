"""Predict stage, embedded target: a batch prediction job run inside DuckDB.

`LocalPredictor` behaves as Vertex AI batch prediction does, seen from the user's
side: submit returns a PENDING job at once, a background thread moves it to RUNNING
and SUCCEEDED (or FAILED / CANCELLED) while the completion stats advance, and the
output table holds every request column plus `response`, `status` and
`processed_time`, exactly one row per request row.

Rows stay in the warehouse. One pass validates every request with the shared rules
of `bqbatch_sql.validate`; then one INSERT ... SELECT injects the asked-for fraction
of transient failures and builds the emulated GenerateContentResponse of every row
(statements: `local_sql.py`, answer shapes: `responses.py`), tallying the tokens it
writes so that the run's totals need no second reading of the answers. Structured
output costs one Python call per distinct schema. Only a user's response function
pulls requests into Python, one bounded batch (a rowid range) at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, ClassVar

import duckdb
import orjson

from bqbatch_sql.errors import BqbatchError, PredictorError
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState
from bqbatch_sql.predictors.inprocess import JobRegistry, Run
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.local_sql import JobPlan, written_state
from bqbatch_sql.predictors.responses import (
    SchemaValueError,
    coerce_function_result,
    function_error_status,
    model_version,
    schema_error_status,
    structured_text,
)

# Rows handed to a response function per fetch, and results written back per insert:
# what bounds the Python side's memory whatever the table size.
FUNCTION_BATCH_ROWS = 2_000
FUNCTION_WRITE_ROWS = 20_000

UNKNOWN_JOB = ("The local predictor knows no job '{job_name}'. Local jobs live in the process that submitted "
               "them; run the model again to submit a new job.")

# Up to this many distinct structured-output settings are looked up from list
# parameters (a linear search per row); more go through a join and a sort.
MAX_LISTED_TEMPLATES = 64


@dataclasses.dataclass
class _Templates:
    kind: str = "lists"  # or "table": the 'templates' scratch table
    keys: list[int] = dataclasses.field(default_factory=list)  # hashes of the settings (see local_sql._settings_key)
    texts: list[str | None] = dataclasses.field(default_factory=list)
    errors: list[str | None] = dataclasses.field(default_factory=list)

    def params(self) -> list[list]:
        return [self.keys, self.texts, self.errors] if self.kind == "lists" else []


@dataclasses.dataclass(frozen=True)
class WrittenUsage:
    """The token counts of the emulated answers one job wrote: the sums of the values its
    responses print in usageMetadata, tallied by the statement that wrote them."""

    table_oid: int
    answered: int  # rows with a response
    prompt_tokens: int
    output_tokens: int  # candidatesTokenCount; emulated answers have no thoughts
    max_prompt_tokens: int  # of one row: whether any row is past a long-context price threshold


class JobCancelled(Exception):
    """Raised inside the worker when cancel() was asked for."""


@dataclasses.dataclass
class _Run(Run):
    settings: "_Settings"
    cursors: list[duckdb.DuckDBPyConnection] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per phase
    progress: duckdb.DuckDBPyConnection | None = None  # the cursor running the whole-table statement
    estimated: int = 0  # the most rows done DuckDB has reported for that statement

    def snapshot(self) -> BatchJob:
        """The job as a get() call sees it: while the one statement runs, its rows done are
        DuckDB's progress estimate (counted as succeeded; the failures are known at the end).
        The estimate never goes back: DuckDB answers -1 again once the scan is over, while
        the statement still writes."""
        job = dataclasses.replace(self.job)
        if self.progress is not None and job.state == JobState.RUNNING and job.total:
            percent = self.progress.query_progress()
            if percent > 0:
                self.estimated = max(self.estimated, min(job.total, int(job.total * percent / 100)))
            job.succeeded = max(job.succeeded, self.estimated)
        return job


@dataclasses.dataclass(frozen=True)
class _Settings:
    response_function: str | None
    function: Callable[[dict], Any] | None
    failure_rate: float
    latency_seconds: float
    chunk_rows: int


class LocalPredictor:
    """Emulated Gemini batch prediction in the DuckDB warehouse (implements `Predictor`).

    adapter: the DuckDB adapter of the target (the job opens its own cursors on it).
    response_function: "package.module:function" (or "package.module.function") called
        with each valid request as a dict; returns a GenerateContentResponse dict or a
        str of text. Without it, answers are emulated in SQL.
    failure_rate: the fraction of valid rows that end with a transient Vertex error
        (429/500/503 status, NULL response), chosen by a hash: the same rows every run.
    latency_seconds: how long a job stays PENDING before it runs.
    chunk_rows: rows handed to a response function per step (rounded to whole DuckDB row
        groups when large); answers emulated in SQL are written by one statement.
    """

    name: ClassVar[str] = "local"
    # The runner polls with these (seconds): a local job finishes fast, so poll briskly.
    poll_initial_seconds: ClassVar[float] = 0.05
    # A build waits on average half this after its job has ended (at 1.0 s, ~0.5 s for a 1M-row
    # build); a get() during the job's statement costs ~0.1 ms (DuckDB's progress included).
    poll_max_seconds: ClassVar[float] = 0.05
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
        self._jobs: JobRegistry[_Run] = JobRegistry(UNKNOWN_JOB)
        self._written: dict[Relation, WrittenUsage] = {}  # by destination, until written_usage() takes it

    @classmethod
    def from_context(cls, context: Any, **options: Any) -> "LocalPredictor":
        """The registry's constructor: the target's DuckDB adapter plus the profile's options."""
        return cls(context.adapter, **options)

    # -- the Predictor protocol ---------------------------------------------------

    def submit(self, spec: BatchJobSpec) -> BatchJob:
        """Start the job in a background thread; returns at once with state PENDING.

        A model's `predictor_options` (spec.options) may override response_function,
        failure_rate, latency_seconds and chunk_rows for that model alone. The runner
        sets `spec.prevalidated` when it has just validated every row with the same
        rules: the job then checks none. The `assume_valid` option skips the rules
        too, except for rows that are not JSON objects (for tables valid by construction).
        """
        overrides = {k: spec.options[k] for k in _OPTION_NAMES if k in spec.options}
        settings = self.defaults if not overrides else _settings(**{**_as_kwargs(self.defaults), **overrides})
        now = _utcnow()
        job = BatchJob(
            name=f"projects/local/locations/local/batchPredictionJobs/{uuid.uuid4().int % 10**19:019d}",
            state=JobState.PENDING,
            create_time=now,
        )
        run = _Run(job, spec, settings=settings)
        # The job as it starts: PENDING, as Vertex answers a create call.
        return self._jobs.start(run, self._work, thread_name=f"bqbatch-local-{job.name[-6:]}")

    def get(self, job_name: str) -> BatchJob:
        """A snapshot of the job: state, counts (total, succeeded, failed, incomplete), times, error."""
        return self._jobs.get(job_name)

    def cancel(self, job_name: str) -> None:
        """Ask the job to stop; rows already written stay, the rest count as incomplete."""
        run = self._jobs.cancel(job_name)
        if run is None:  # it has ended
            return
        with self._jobs.lock:
            cursors = list(run.cursors)
        for cursor in cursors:
            cursor.interrupt()  # stops the chunk statement in flight; DuckDB rolls it back

    def timings(self, job_name: str) -> dict[str, float]:
        """Where the job's time went, in seconds per phase (validate, templates, chunks, ...)."""
        run = self._jobs.find(job_name)
        with self._jobs.lock:
            return dict(run.timings)

    def written_usage(self, relation: Relation) -> WrittenUsage | None:
        """The token totals of the emulated answers a finished job wrote into `relation`, or None.

        cost.usage asks this before it reads every response's usageMetadata (1M rows:
        ~0.4 s). Answered once per job, and only while the table is the one the job
        wrote, with as many responses (rows appended since without one, as on_invalid='skip'
        appends them, change no total); None for a response function's answers.
        """
        with self._jobs.lock:
            written = self._written.pop(relation, None)
        if written is None:
            return None
        cursor = self.adapter.connection.cursor()
        try:
            oid, answered = cursor.execute(*written_state(relation)).fetchone()
        finally:
            cursor.close()
        return written if (oid, answered) == (written.table_oid, written.answered) else None

    def wait(self, job_name: str, timeout: float | None = None) -> BatchJob:
        """Block until the job ends (or `timeout` seconds pass); the emulator and tests use this."""
        self._jobs.join(job_name, timeout)
        return self.get(job_name)

    # -- the worker ------------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        cursor = None
        try:
            if run.settings.latency_seconds and run.cancel.wait(run.settings.latency_seconds):
                raise JobCancelled()
            with self._jobs.lock:  # a cancel() racing this sees either PENDING or RUNNING, never a step back
                if run.cancel.is_set():
                    raise JobCancelled()
                run.job.state, run.job.start_time = JobState.RUNNING, _utcnow()
            # A DuckDB connection is not to be shared across threads: the job has its own.
            cursor = self.adapter.connection.cursor()
            with self._jobs.lock:
                run.cursors.append(cursor)
            self._predict(run, cursor)
            self._jobs.finish(run, JobState.SUCCEEDED)
        except JobCancelled:
            self._jobs.finish(run, JobState.CANCELLED)
        except duckdb.InterruptException:
            self._jobs.finish(run, JobState.CANCELLED if run.cancel.is_set() else JobState.FAILED, "interrupted")
        except BqbatchError as e:
            self._jobs.finish(run, JobState.FAILED, str(e))
        except duckdb.Error as e:
            self._jobs.finish(run, JobState.FAILED, f"DuckDB refused a statement of the local predictor: {e}")
        except Exception as e:  # a bug of ours must still end the job, with its cause on record
            self._jobs.finish(run, JobState.FAILED, f"{type(e).__name__}: {e}")
        finally:
            with self._jobs.lock:
                cursors, run.cursors = run.cursors, []
            for c in cursors:
                c.close()

    def _predict(self, run: _Run, cursor: duckdb.DuckDBPyConnection) -> None:
        spec, settings = run.spec, run.settings
        plan = JobPlan.inspect(cursor, spec.source, spec.destination, run.job.name.rsplit("/", 1)[-1][-12:])
        self._jobs.update(run, total=plan.total)
        with self._jobs.lock:  # the job replaces the table: what an earlier job wrote there is gone
            self._written.pop(spec.destination, None)
        try:
            for statement in plan.create_destination():
                cursor.execute(statement)
            # One validation pass over the whole table: the shared rules are a large
            # expression that DuckDB takes ~0.5 s to plan, too much to pay per chunk.
            with _phase(run, "validate"):
                if spec.prevalidated:  # bqbatch has just checked every row: all of them are valid
                    plan.statuses = False
                elif bool(spec.options.get("assume_valid")):
                    for statement in plan.validate_all():
                        cursor.execute(statement)
                else:  # every row's status, in table order (rid, v): the validator's fast path
                    from bqbatch_sql.validate import materialize_statuses

                    materialize_statuses(cursor, plan.source, plan._scratch("status"), status_column="v",
                                         template=spec.request_template)
            using_function = settings.function is not None
            templates: _Templates | None = None
            if using_function:
                cursor.execute(plan.create_scratch("fn", ["rid BIGINT", "response TEXT", "error TEXT"]))
            elif plan.total:
                with _phase(run, "templates"):
                    templates = self._load_templates(run, cursor, plan)
            version = model_version(spec.model_id)
            if using_function:
                self._write_function_answers(run, cursor, plan, version)
            else:
                self._write_emulated(run, cursor, plan, version, templates)
        finally:
            with self._jobs.lock:
                run.progress = None
            for statement in plan.drop_scratch():
                cursor.execute(statement)

    def _write_emulated(self, run: _Run, cursor: duckdb.DuckDBPyConnection, plan: JobPlan, version: str,
                        templates: "_Templates | None") -> None:
        """Every emulated answer in one statement, its progress read from DuckDB as it runs.

        Chunks would cost more than they show: one row group each runs on one core, and
        several each leave row groups that the next checkpoint rewrites (1M rows: chunks
        2.3-2.4 s + up to 1.7 s at checkpoint, one statement 1.6 s + 0 s). The statement
        also tallies the answers' tokens, in one transaction with the tally columns it
        writes them to (local_sql: token tallies).
        """
        statement = plan.chunk_insert(version, run.settings.failure_rate, templates=templates.kind if templates else None,
                                      function=False, tallies=True)
        cursor.execute("SET enable_progress_bar = true")
        cursor.execute("SET enable_progress_bar_print = false")
        if run.cancel.is_set():
            raise JobCancelled()
        cursor.execute("BEGIN TRANSACTION")
        try:
            for alter in plan.add_tallies():
                cursor.execute(alter)
            with self._jobs.lock:
                run.progress = cursor
            with _phase(run, "chunks"):
                cursor.execute(statement, [plan.low, plan.high + 1, _utcnow().replace(tzinfo=None),
                                           *(templates.params() if templates else [])])
            done, failed = cursor.execute(plan.written_counts(), [0]).fetchone()
            answered, prompt, output, largest = cursor.execute(plan.tallies()).fetchone()
            for alter in plan.drop_tallies():
                cursor.execute(alter)
            oid, _ = cursor.execute(*written_state(plan.destination)).fetchone()
            cursor.execute("COMMIT")
        except BaseException:
            _rollback(cursor)
            raise
        with self._jobs.lock:
            self._written[plan.destination] = WrittenUsage(oid, answered, prompt, output, largest or 0)
        self._count(run, done, failed)

    def _write_function_answers(self, run: _Run, cursor: duckdb.DuckDBPyConnection, plan: JobPlan,
                                version: str) -> None:
        """The response function is fed chunk by chunk: bounded memory, progress per chunk."""
        statement = plan.chunk_insert(version, run.settings.failure_rate, templates=None, function=True)
        counts = plan.written_counts()
        written = 0
        for low, high in plan.chunks(run.settings.chunk_rows):
            if run.cancel.is_set():
                raise JobCancelled()
            with _phase(run, "response_function"):
                self._call_function(run, cursor, plan, low, high)
            if run.cancel.is_set():  # asked while the function ran: the chunk is dropped whole
                raise JobCancelled()
            with _phase(run, "chunks"):
                cursor.execute(statement, [low, high, _utcnow().replace(tzinfo=None)])
                done, failed = cursor.execute(counts, [written]).fetchone()
            written += done
            self._count(run, done, failed)

    def _count(self, run: _Run, done: int, failed: int) -> None:
        with self._jobs.lock:
            run.progress = None
            run.job.succeeded += done - failed
            run.job.failed += failed

    def _load_templates(self, run: _Run, cursor: duckdb.DuckDBPyConnection, plan: "JobPlan") -> "_Templates | None":
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
            for key, mime, schema, json_schema in batch:
                if key is None:
                    continue
                text, error = _template_for(mime, schema, json_schema)
                templates.keys.append(key), templates.texts.append(text), templates.errors.append(error)
            if templates.kind == "table" or len(templates.keys) > MAX_LISTED_TEMPLATES:
                if templates.kind != "table":
                    cursor.execute(plan.create_scratch("templates", ["key UBIGINT", "template TEXT", "error TEXT"]))
                    templates.kind = "table"
                cursor.execute(plan.insert_lists("templates", ["UBIGINT", "TEXT", "TEXT"]),
                               [templates.keys, templates.texts, templates.errors])
                templates.keys, templates.texts, templates.errors = [], [], []
        return templates if templates.kind == "table" or templates.keys else None

    def _call_function(self, run: _Run, cursor: duckdb.DuckDBPyConnection, plan: "JobPlan", low: int, high: int) -> None:
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
        with self._jobs.lock:
            if len(run.cursors) < 2:
                run.cursors.append(self.adapter.connection.cursor())
            return run.cursors[1]


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


def _template_for(mime: str | None, schema: str | None, json_schema: str | None) -> tuple[str | None, str | None]:
    """The candidate text (or the status of an unusable schema) for one structured-output setting."""
    try:
        schema = orjson.loads(schema) if schema is not None else None
        json_schema = orjson.loads(json_schema) if json_schema is not None else None
        return structured_text(mime, schema, json_schema), None
    except (SchemaValueError, orjson.JSONDecodeError, ValueError, TypeError) as e:
        return None, schema_error_status(e)


def _rollback(cursor: duckdb.DuckDBPyConnection) -> None:
    """End the job's transaction after an error: a failed or interrupted statement leaves it
    open (aborted); a failed COMMIT has ended it already, which is no error of its own."""
    try:
        cursor.execute("ROLLBACK")
    except duckdb.TransactionException as e:
        if "no transaction is active" not in str(e):
            raise


@contextlib.contextmanager
def _phase(run: _Run, name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        run.timings[name] = run.timings.get(name, 0.0) + time.perf_counter() - start


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)
