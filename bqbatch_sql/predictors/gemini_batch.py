"""Predict stage, `gemini_batch`: the Gemini Developer API's batch mode, for users without Vertex AI.

The job, in a background thread (submit returns PENDING at once, as Vertex does):
1. export: the pending requests stream out of the warehouse in bounded batches into
   JSONL files, one `{"key": ..., "request": {...}}` a line, cut so that no file
   passes the Files API's 2 GB (`max_file_bytes`) or `max_file_rows`; requests the
   shared rules refuse are answered at once with Vertex's status and never sent;
2. each file is uploaded (Files API, resumable) and submitted as one batch
   (`client.batches.create(src="files/...")`) as soon as it is cut;
3. the batches are polled; each result file is downloaded to disk and streamed back
   into the progress table (`progress.ProgressStore`), a batch of rows at a time;
4. the output table is built in the warehouse: every request row with its
   `response` or `status`, exactly one row per request.

Works with DuckDB and BigQuery targets alike. Answers loaded before a failure stay
in the progress table, so a rerun submits only the requests still unanswered.
Uploaded and result files are deleted once loaded (the API would drop them after
48 hours anyway); a result file that is gone before it was loaded is an error that
says so.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import orjson

from bqbatch_sql.errors import BqbatchError, PredictorError
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState
from bqbatch_sql.predictors.online import read_api_key
from bqbatch_sql.predictors import gemini_batch_state as state_log
from bqbatch_sql.predictors.gemini_batch_state import Shard
from bqbatch_sql.predictors.inprocess import JobRegistry, Run
from bqbatch_sql.predictors.progress import ProgressStore, RowResult
from bqbatch_sql.predictors.streaming import CallError, spec_fingerprint

FILE_BYTES_LIMIT = 2 * 1024**3  # the Files API's limit per file
READ_BATCH_ROWS = 5_000  # requests read from the warehouse, and answers written to it, per batch
_RETENTION_HINT = "the Files API keeps files for 48 hours"
UNKNOWN_JOB = ("The gemini_batch predictor finds no job '{job_name}' (no batches recorded for it). Run the model "
               "again: answers already loaded are kept and only the rest is submitted.")


@dataclasses.dataclass
class _Run(Run):
    job_id: str = ""
    shards: list[Shard] = dataclasses.field(default_factory=list)


class GeminiBatchPredictor:
    """Gemini API batch mode over JSONL files (implements `Predictor`)."""

    name: ClassVar[str] = "gemini_batch"

    def __init__(
        self,
        adapter: Any,
        *,
        api_key_env: str = "GEMINI_API_KEY",
        base_url: str | None = None,
        poll_initial_seconds: float = 10.0,
        poll_max_seconds: float = 300.0,
        poll_multiplier: float = 1.5,
        max_file_bytes: int = FILE_BYTES_LIMIT,
        max_file_rows: int | None = None,
        work_dir: str | None = None,
        keep_files: bool = False,
        timeout_seconds: float = 600.0,
    ):
        if not 0 < max_file_bytes <= FILE_BYTES_LIMIT:
            raise PredictorError(f"Predictor 'gemini_batch': max_file_bytes must be 1..{FILE_BYTES_LIMIT} "
                                 f"(the Files API's limit), got {max_file_bytes!r}.")
        self.adapter = adapter
        self.api_key_env, self.base_url = api_key_env, base_url
        self.poll_initial_seconds, self.poll_max_seconds = poll_initial_seconds, poll_max_seconds
        self.poll_multiplier = poll_multiplier
        self.max_file_bytes, self.max_file_rows = max_file_bytes, max_file_rows
        self.work_dir, self.keep_files = work_dir, keep_files
        self.timeout_seconds = timeout_seconds
        self._client = None
        self._jobs: JobRegistry[_Run] = JobRegistry(UNKNOWN_JOB)

    @classmethod
    def from_context(cls, context: Any, **options: Any) -> "GeminiBatchPredictor":
        return cls(context.adapter, **options)

    def client(self) -> Any:
        if self._client is None:
            from google import genai
            from google.genai import types

            http = types.HttpOptions(base_url=self.base_url, api_version="v1beta",
                                     timeout=int(self.timeout_seconds * 1000))
            self._client = genai.Client(api_key=read_api_key(self.api_key_env, self.name), http_options=http)
        return self._client

    # -- the Predictor protocol -----------------------------------------------------------

    def submit(self, spec: BatchJobSpec) -> BatchJob:
        self.client()  # a missing API key fails here, before any work
        job_id = uuid.uuid4().hex[:16]
        job = BatchJob(name=state_log.job_name(job_id, spec.destination), state=JobState.PENDING,
                       create_time=datetime.now(timezone.utc))
        run = _Run(job, spec, job_id=job_id)
        return self._jobs.start(run, self._work, thread_name=f"bqbatch-{job.name}")

    def get(self, job_name: str) -> BatchJob:
        """The job's state; a job submitted by another process is re-attached from the warehouse's log."""
        job = self._jobs.snapshot(job_name)
        return job if job is not None else self._reattach(job_name)

    def detach(self, job_name: str) -> None:
        """Stop following the job in this process and leave its batches running (as a crash would)."""
        run = self._jobs.pop(job_name)
        if run is not None:
            run.cancel.set()
            if run.thread is not None:
                run.thread.join()

    def _reattach(self, job_name: str) -> BatchJob:
        parsed = state_log.parse_job_name(job_name)
        found = None
        if parsed is not None:
            job_id, destination = parsed
            found = state_log.read_job(ProgressStore.open(self.adapter, None, destination, ""), job_id)
        if found is None:
            raise self._jobs.not_found(job_name)
        model, source, shards = found
        spec = BatchJobSpec(model_id=model, source=source, destination=destination, display_name=job_name)
        job = BatchJob(name=job_name, state=JobState.RUNNING, create_time=datetime.now(timezone.utc))
        run = _Run(job, spec, job_id=job_id, shards=shards)
        # Should another thread re-attach first, its run is the one answered and followed.
        return self._jobs.start(run, self._work, thread_name=f"bqbatch-{job_id}")

    def cancel(self, job_name: str) -> None:
        """Cancel the batches submitted so far; answers already loaded stay."""
        self.get(job_name)
        run = self._jobs.cancel(job_name)
        if run is None:  # it has ended
            return
        with self._jobs.lock:  # the job thread appends shards as it submits them
            names = [s.batch_name for s in run.shards if s.batch_name and not s.loaded]
        for name in names:
            try:
                self.client().batches.cancel(name=name)
            except Exception as e:  # the job still ends CANCELLED; the failure is on record
                self._jobs.update(run, error=f"cancelling {name} failed: {e}")

    def wait(self, job_name: str, timeout: float | None = None) -> BatchJob:
        self._jobs.join(job_name, timeout)
        return self.get(job_name)

    # -- the job ---------------------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="bqbatch-gemini-", dir=self.work_dir))
        try:
            spec = run.spec
            store = ProgressStore.open(self.adapter, spec.source, spec.destination,
                                       spec_fingerprint(self.name, spec.model_id, self.base_url))
            total, done, failed = store.prepare()
            self._jobs.update(run, state=JobState.RUNNING, start_time=datetime.now(timezone.utc), total=total,
                         succeeded=done, failed=failed)
            store.ensure_table(state_log.log_relation(spec.destination), state_log.LOG_COLUMNS)
            if run.shards:  # re-attached: first the batches another process submitted
                self._collect(run, store, workdir)
            self._export(run, store, workdir)
            self._collect(run, store, workdir)
            if run.cancel.is_set():
                self._jobs.finish(run, JobState.CANCELLED)
                return
            missing = store.missing()
            if missing:
                raise PredictorError(f"{missing:,} requests got no line in the batch result files; run the model again "
                                     f"to submit them anew.")
            store.finish()
            store.drop(state_log.log_relation(spec.destination))
            self._jobs.finish(run, JobState.SUCCEEDED)
        except _Ended as e:
            self._jobs.finish(run, e.state, str(e))
        except BqbatchError as e:
            self._jobs.finish(run, JobState.FAILED, str(e))
        except Exception as e:  # an API or a bug of ours must still end the job, with its cause on record
            self._jobs.finish(run, JobState.FAILED, f"{type(e).__name__}: {e}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _export(self, run: _Run, store: ProgressStore, workdir: Path) -> None:
        """Pending requests -> JSONL files under the size limits, each uploaded and submitted when cut."""
        out, path, size, rows = None, None, 0, 0
        for batch in store.pending(READ_BATCH_ROWS):
            refused: list[RowResult] = []
            for row in batch:
                if run.cancel.is_set():
                    break
                if row.invalid is not None:
                    refused.append(RowResult(row.key, None, row.invalid))
                    continue
                line = b'{"key":' + orjson.dumps(row.key) + b',"request":' + row.request.encode() + b"}\n"
                if len(line) > self.max_file_bytes:
                    refused.append(RowResult(row.key, None, CallError(
                        400, f"The request is {len(line):,} bytes in JSONL, over the input file limit of "
                             f"{self.max_file_bytes:,} bytes; shorten it (or send large media as file URIs).").text))
                    continue
                if out is not None and (size + len(line) > self.max_file_bytes
                                        or (self.max_file_rows and rows >= self.max_file_rows)):
                    out.close()
                    self._submit_shard(run, store, path, rows)
                    out = None
                if out is None:
                    path = workdir / f"requests-{len(run.shards):04d}.jsonl"
                    out, size, rows = open(path, "wb"), 0, 0
                out.write(line)
                size, rows = size + len(line), rows + 1
            self._write(run, store, refused)
            if run.cancel.is_set():
                break
        if out is not None:
            out.close()
            if not run.cancel.is_set():
                self._submit_shard(run, store, path, rows)

    def _submit_shard(self, run: _Run, store: ProgressStore, path: Path, rows: int) -> None:
        from google.genai import errors

        client = self.client()
        shard = Shard(index=len(run.shards), rows=rows)
        label = f"{run.spec.display_name}-{shard.index}"[:120]
        size = path.stat().st_size
        try:
            uploaded = client.files.upload(file=str(path), config={"mime_type": "application/jsonl",
                                                                   "display_name": label})
        except errors.APIError as e:
            raise PredictorError(
                f"The Files API refused input file {shard.index + 1} ({rows:,} requests, {size:,} bytes): {e.message or e}. "
                f"It takes at most 2 GB per file and 20 GB per project; lower max_file_bytes to cut smaller files, "
                f"or delete old files."
            ) from e
        shard.file_name = uploaded.name
        try:
            batch = client.batches.create(model=run.spec.model_id, src=uploaded.name, config={"display_name": label})
        except errors.APIError as e:
            raise PredictorError(f"Gemini batch mode refused the batch over {uploaded.name} "
                                 f"({rows:,} requests): {e.message or e}.") from e
        shard.batch_name, shard.state = batch.name, _state(batch.state)
        state_log.record_submitted(store, run.job_id, shard, run.spec.model_id, run.spec.source)
        with self._jobs.lock:
            run.shards.append(shard)
        path.unlink()

    def _collect(self, run: _Run, store: ProgressStore, workdir: Path) -> None:
        """Poll the batches until each has ended; load each result file as soon as it is there.

        A batch that fails does not stop the others: every answer that can be had is
        loaded, so the rerun resubmits only the failed batch's requests.
        """
        delay = self.poll_initial_seconds
        client = self.client()
        ended: list[Shard] = []
        while not run.cancel.is_set():
            open_shards = [s for s in run.shards if not s.loaded and s not in ended]
            for shard in open_shards:
                batch = client.batches.get(name=shard.batch_name)
                shard.state = _state(batch.state)
                if shard.state == JobState.SUCCEEDED.value:
                    self._load(run, store, shard, batch, workdir)
                elif shard.state in (JobState.FAILED.value, JobState.CANCELLED.value, JobState.EXPIRED.value):
                    ended.append(shard)
            if all(s.loaded or s in ended for s in run.shards):
                break
            if run.cancel.wait(delay):
                return
            delay = min(delay * self.poll_multiplier, self.poll_max_seconds)
        if ended and not run.cancel.is_set():
            shard = ended[0]
            state = JobState(shard.state)
            why = " (batches that do not finish within 48 hours expire)" if state == JobState.EXPIRED else ""
            raise _Ended(JobState.EXPIRED if state == JobState.EXPIRED else JobState.FAILED,
                         f"Gemini batch {shard.batch_name} (input file {shard.index + 1} of {len(run.shards)}, "
                         f"{shard.rows:,} requests) ended {state.short}{why}; {len(ended)} of {len(run.shards)} "
                         f"batches failed. Answers of the others are kept: run the model again to submit only "
                         f"the unanswered requests.")

    def _load(self, run: _Run, store: ProgressStore, shard: Shard, batch: Any, workdir: Path) -> None:
        client = self.client()
        name = batch.dest.file_name if batch.dest is not None else None
        if not name:
            raise PredictorError(f"Gemini batch {shard.batch_name} succeeded without a result file.")
        path = workdir / f"results-{shard.index:04d}.jsonl"
        try:
            client.files.download(file=name, destination=str(path))
        except Exception as e:
            raise PredictorError(
                f"Cannot download {name}, the results of Gemini batch {shard.batch_name}: {e}. If the batch ended "
                f"more than 48 hours ago the file is gone ({_RETENTION_HINT}); run the model again to resubmit."
            ) from e
        results: list[RowResult] = []
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    results.append(_result(line, name, number))
                if len(results) >= READ_BATCH_ROWS:
                    self._write(run, store, results)
                    results = []
        self._write(run, store, results)
        path.unlink()
        shard.loaded = True
        state_log.record_loaded(store, run.job_id, shard)
        if not self.keep_files:
            for file_name in (shard.file_name, name):
                try:
                    client.files.delete(name=file_name)
                except Exception:  # noqa: S110 - a file left behind expires after 48 h; the answers are safe
                    pass

    def _write(self, run: _Run, store: ProgressStore, results: list[RowResult]) -> None:
        if not results:
            return
        store.write(results)
        ok = sum(1 for r in results if r.ok)
        self._jobs.count(run, ok, len(results) - ok)


class _Ended(Exception):
    def __init__(self, state: JobState, message: str):
        super().__init__(message)
        self.state = state


def _state(state: Any) -> str:
    value = getattr(state, "value", state)
    return str(value or JobState.UNSPECIFIED.value)


def _result(line: bytes, file_name: str, number: int) -> RowResult:
    """One result line: {"key", "response"} or {"key", "error" | "status"}."""
    try:
        item = orjson.loads(line)
        key = item["key"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise PredictorError(f"Line {number} of the batch result file {file_name} is not a keyed result: {e}.") from e
    if item.get("response") is not None:
        return RowResult(str(key), orjson.dumps(item["response"]).decode(), "")
    error = item.get("error") or item.get("status") or {}
    code = int(error.get("code") or 500) if isinstance(error, dict) else 500
    message = str(error.get("message") or error) if isinstance(error, dict) else str(error)
    failure = CallError(code, message, error.get("status") if isinstance(error, dict) else None)
    return RowResult(str(key), None, failure.text, retryable=failure.retryable)
