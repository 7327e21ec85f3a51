"""Predict stage, request-at-a-time backends: the job that streams a request table through a backend.

`StreamingPredictor` implements the `Predictor` protocol for `online` and
`openai_compatible`: submit() returns a PENDING job at once and background threads
do the work (see `streaming` for the policy):

    reader (job thread) --work queue--> N workers --result queue--> writer
    progress table <-----------------------------------------------/

Jobs live in the process that submitted them. A rerun after a crash finds no job
under the ledger's name, submits again, and the progress table makes it send only
what was not answered yet.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import atexit
import dataclasses
import queue
import threading
import time
import uuid
import weakref
from datetime import datetime, timezone
from typing import Any, ClassVar

import orjson

from bqbatch_sql.errors import BqbatchError, PredictorError
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState
from bqbatch_sql.predictors.inprocess import JobRegistry, Run
from bqbatch_sql.predictors.progress import PendingRow, ProgressStore, RowResult
from bqbatch_sql.predictors.streaming import Backend, CallError, Limits, RateLimiter, backoff_seconds

# How long interpreter exit waits for a job to flush what it has (in-flight calls included).
EXIT_GRACE_SECONDS = 20.0


@dataclasses.dataclass
class _Run(Run):
    backend: Backend
    fingerprint: str
    writer_error: BaseException | None = None


class StreamingPredictor(ABC):
    """Base of the predictors that answer one request per call; subclasses make the backend."""

    name: ClassVar[str] = "streaming"
    poll_initial_seconds: ClassVar[float] = 0.05
    poll_max_seconds: ClassVar[float] = 2.0
    poll_multiplier: ClassVar[float] = 1.5

    def __init__(self, adapter: Any, limits: Limits):
        self.adapter = adapter
        self.limits = limits
        # One limiter per predictor: the limits are the API key's, shared by every job of the run.
        self.limiter = RateLimiter(limits.requests_per_minute, limits.tokens_per_minute)
        self._jobs: JobRegistry[_Run] = JobRegistry(
            f"The {self.name} predictor knows no job '{{job_name}}': its jobs live in the process that submitted "
            f"them. Run the model again: answers already written are kept and not asked for again."
        )
        _LIVE.add(self)

    @classmethod
    def from_context(cls, context: Any, **options: Any) -> "StreamingPredictor":
        return cls(context.adapter, **options)

    # -- what a subclass provides ---------------------------------------------------------

    @abstractmethod
    def make_backend(self, spec: BatchJobSpec) -> tuple[Backend, str]:
        """The backend for this job and a fingerprint of what its answers depend on (model, server)."""
        ...

    # -- the Predictor protocol -----------------------------------------------------------

    def submit(self, spec: BatchJobSpec) -> BatchJob:
        """Start the job in the background; a missing API key or bad option fails here, at once."""
        backend, fingerprint = self.make_backend(spec)
        job = BatchJob(name=f"{self.name}/{uuid.uuid4().hex[:16]}", state=JobState.PENDING,
                       create_time=datetime.now(timezone.utc))
        run = _Run(job, spec, backend=backend, fingerprint=fingerprint)
        return self._jobs.start(run, self._work, thread_name=f"bqbatch-{job.name}")

    def get(self, job_name: str) -> BatchJob:
        return self._jobs.get(job_name)

    def cancel(self, job_name: str) -> None:
        """Stop sending; calls in flight finish and their answers are written (they are paid for)."""
        # Only a RUNNING job shows CANCELLING: a PENDING one has sent nothing and ends CANCELLED before it sends.
        self._jobs.cancel(job_name, only_while_running=True)

    def wait(self, job_name: str, timeout: float | None = None) -> BatchJob:
        self._jobs.join(job_name, timeout)
        return self.get(job_name)

    def stop_all(self, timeout: float = EXIT_GRACE_SECONDS) -> None:
        """Cancel every running job and wait for its answers to be flushed (interpreter exit)."""
        runs = self._jobs.live()
        for run in runs:
            run.cancel.set()
        deadline = time.monotonic() + timeout
        for run in runs:
            if run.thread is not None:
                run.thread.join(max(0.0, deadline - time.monotonic()))

    # -- the job ---------------------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        try:
            store = ProgressStore.open(self.adapter, run.spec.source, run.spec.destination, run.fingerprint)
            total, done, failed = store.prepare()
            self._jobs.update(run, state=JobState.RUNNING, start_time=datetime.now(timezone.utc), total=total,
                         succeeded=done, failed=failed)
            self._pump(run, store)
            if run.writer_error is not None:
                raise run.writer_error
            if run.cancel.is_set():
                self._jobs.finish(run, JobState.CANCELLED)
                return
            missing = store.missing()
            if missing:
                raise PredictorError(f"{missing:,} requests of {run.spec.source} have no answer; run the model again.")
            store.finish()
            self._jobs.finish(run, JobState.SUCCEEDED)
        except BqbatchError as e:
            self._jobs.finish(run, JobState.FAILED, str(e))
        except Exception as e:  # a bug of ours must still end the job, with its cause on record
            self._jobs.finish(run, JobState.FAILED, f"{type(e).__name__}: {e}")

    def _pump(self, run: _Run, store: ProgressStore) -> None:
        limits = self.limits
        work: queue.Queue[PendingRow | None] = queue.Queue(maxsize=limits.concurrency * 4)
        results: queue.Queue[RowResult | None] = queue.Queue()
        workers = [threading.Thread(target=self._worker, args=(run, work, results), daemon=True,
                                    name=f"bqbatch-{run.job.name}-w{i}") for i in range(limits.concurrency)]
        writer = threading.Thread(target=self._writer, args=(run, store, results), daemon=True,
                                  name=f"bqbatch-{run.job.name}-writer")
        for thread in (*workers, writer):
            thread.start()
        try:
            for batch in store.pending(limits.read_batch_rows):
                for row in batch:
                    if run.cancel.is_set():
                        break
                    if row.invalid is not None:  # the shared validation rules: answered without a call
                        results.put(RowResult(row.key, None, row.invalid))
                    else:
                        _put(work, row, run.cancel)
                if run.cancel.is_set():
                    break
        finally:
            for _ in workers:
                work.put(None)  # workers drain the queue (skipping rows once cancelled), so this never blocks for long
            for thread in workers:
                thread.join()
            results.put(None)
            writer.join()

    def _worker(self, run: _Run, work: queue.Queue, results: queue.Queue) -> None:
        while (row := work.get()) is not None:
            if run.cancel.is_set():
                continue  # not sent: it stays pending in the warehouse for the next run
            result = self._answer(run, row)
            if result is not None:
                results.put(result)

    def _answer(self, run: _Run, row: PendingRow) -> RowResult | None:
        limits = self.limits
        try:
            request = orjson.loads(row.request)
            if not isinstance(request, dict):
                raise ValueError("the request is not a JSON object")
        except ValueError as e:
            return RowResult(row.key, None, CallError(400, f"Invalid JSON payload received. {e}").text)
        estimate = run.backend.estimate_tokens(request)
        for attempt in range(1, limits.max_attempts + 1):
            reservation = self.limiter.acquire(estimate, run.cancel)
            if reservation is None:
                return None  # cancelled while waiting for a slot: never sent
            try:
                response, tokens = run.backend.call(request)
            except CallError as e:
                self.limiter.settle(reservation, 0.0)
                if not e.retryable or attempt == limits.max_attempts:
                    return RowResult(row.key, None, e.text, retryable=e.retryable)
                delay = backoff_seconds(attempt, limits, e.retry_after)
                if e.code == 429:
                    self.limiter.pause(delay)
                if run.cancel.wait(delay):
                    return RowResult(row.key, None, e.text, retryable=True)
                continue
            except Exception as e:  # a translation bug must not kill the worker: the row records it
                self.limiter.settle(reservation, 0.0)
                return RowResult(row.key, None, CallError(500, f"bqbatch {self.name}: {type(e).__name__}: {e}").text,
                                 retryable=True)
            self.limiter.settle(reservation, tokens)
            return RowResult(row.key, response, "")
        raise AssertionError("unreachable: the last attempt returns")

    def _writer(self, run: _Run, store: ProgressStore, results: queue.Queue) -> None:
        limits = self.limits
        buffer: list[RowResult] = []
        last_flush = time.monotonic()
        while True:
            try:
                item = results.get(timeout=limits.flush_seconds)
            except queue.Empty:
                item = _TICK
            if item is None:
                break
            if item is not _TICK:
                buffer.append(item)
            if buffer and (len(buffer) >= limits.write_batch_rows or time.monotonic() - last_flush >= limits.flush_seconds):
                buffer = self._flush(run, store, buffer)
                last_flush = time.monotonic()
        self._flush(run, store, buffer)

    def _flush(self, run: _Run, store: ProgressStore, buffer: list[RowResult]) -> list[RowResult]:
        if not buffer or run.writer_error is not None:
            return []
        try:
            store.write(buffer)
        except Exception as e:  # the job fails with the cause; workers stop sending
            run.writer_error = e if isinstance(e, BqbatchError) else PredictorError(
                f"Writing answers to {store.progress} failed: {type(e).__name__}: {e}")
            run.cancel.set()
            return []
        ok = sum(1 for r in buffer if r.ok)
        self._jobs.count(run, ok, len(buffer) - ok)
        return []


_TICK = object()


def _put(work: queue.Queue, row: PendingRow, cancel: threading.Event) -> None:
    while not cancel.is_set():
        try:
            work.put(row, timeout=0.1)
            return
        except queue.Full:
            continue


_LIVE: "weakref.WeakSet[StreamingPredictor]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # Ctrl-C ends the main thread; before the interpreter drops the daemon threads,
    # running jobs stop sending and write what they received.
    for predictor in list(_LIVE):
        predictor.stop_all()
