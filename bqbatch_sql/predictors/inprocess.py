"""Predict stage, shared by the predictors whose jobs run in this process (local, online,
openai_compatible, gemini_batch): the registry of their jobs.

Each job is a `Run` worked by one daemon thread. The registry keeps the runs by job
name under one lock, so that get() reads a consistent snapshot while the thread moves
the job along. What differs per predictor stays in the predictor: the words of its
JobNotFoundError, re-attaching a job another process submitted (gemini_batch), what
else cancel() stops, progress estimates (local).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from bqbatch_sql.errors import JobNotFoundError
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState, TERMINAL_STATES


@dataclasses.dataclass
class Run:
    """One job in this process: its public state (`job`) and what its thread works from."""

    job: BatchJob
    spec: BatchJobSpec
    _: dataclasses.KW_ONLY
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def snapshot(self) -> BatchJob:
        """The job as get() answers it: a copy, read under the registry's lock."""
        return dataclasses.replace(self.job)


R = TypeVar("R", bound=Run)


class JobRegistry(Generic[R]):
    """The runs of one predictor, by job name.

    unknown_job: what JobNotFoundError says of a name this process runs no job for,
        `{job_name}` standing for the name.
    """

    def __init__(self, unknown_job: str) -> None:
        self.unknown_job = unknown_job
        self._runs: dict[str, R] = {}
        # Guards the registry and every field of its runs' jobs: job threads write them, get() reads.
        self.lock = threading.Lock()

    def start(self, run: R, work: Callable[[R], None], thread_name: str) -> BatchJob:
        """Register the run and start `work(run)` in a daemon thread; returns the job as it starts.

        A run already registered under the same name wins and is not started twice
        (two threads re-attaching one job).
        """
        with self.lock:
            known = self._runs.get(run.job.name)
            if known is not None:
                return known.snapshot()
            run.thread = threading.Thread(target=work, args=(run,), name=thread_name, daemon=True)
            self._runs[run.job.name] = run
            snapshot = run.snapshot()
        run.thread.start()
        return snapshot

    def not_found(self, job_name: str) -> JobNotFoundError:
        return JobNotFoundError(self.unknown_job.format(job_name=job_name))

    def find(self, job_name: str) -> R:
        with self.lock:
            run = self._runs.get(job_name)
        if run is None:
            raise self.not_found(job_name)
        return run

    def get(self, job_name: str) -> BatchJob:
        """The job as the predictor's get() answers it."""
        job = self.snapshot(job_name)
        if job is None:
            raise self.not_found(job_name)
        return job

    def snapshot(self, job_name: str) -> BatchJob | None:
        """The job's snapshot; None when this process runs no job of that name."""
        with self.lock:
            run = self._runs.get(job_name)
            return run.snapshot() if run is not None else None

    def cancel(self, job_name: str, *, only_while_running: bool = False) -> R | None:
        """Ask the run to stop and show CANCELLING; the run, or None when it has ended already.

        only_while_running: a PENDING job is not shown CANCELLING (its thread ends it CANCELLED).
        """
        with self.lock:
            run = self._runs.get(job_name)
            if run is None:
                raise self.not_found(job_name)
            if run.job.state in TERMINAL_STATES:
                return None
            run.cancel.set()
            if not only_while_running or run.job.state == JobState.RUNNING:
                run.job.state = JobState.CANCELLING
            return run

    def join(self, job_name: str, timeout: float | None = None) -> None:
        """Wait for the run's thread to end (or `timeout` seconds); an unknown name returns at once."""
        with self.lock:
            run = self._runs.get(job_name)
        if run is not None and run.thread is not None:
            run.thread.join(timeout)

    def live(self) -> list[R]:
        """The runs that have not ended."""
        with self.lock:
            return [run for run in self._runs.values() if run.job.state not in TERMINAL_STATES]

    def pop(self, job_name: str) -> R | None:
        """Forget the run (its thread is the caller's to stop)."""
        with self.lock:
            return self._runs.pop(job_name, None)

    def update(self, run: R, **changes: Any) -> None:
        with self.lock:
            for key, value in changes.items():
                setattr(run.job, key, value)

    def count(self, run: R, succeeded: int, failed: int) -> None:
        """Add rows answered (`succeeded`) and rows that failed to the job's counts."""
        with self.lock:
            run.job.succeeded += succeeded
            run.job.failed += failed

    def finish(self, run: R, state: JobState, error: str | None = None) -> None:
        """The end of the job: its state, time, error and the rows left unanswered.

        An error recorded earlier (a failed remote cancel) is kept when the end brings none.
        """
        with self.lock:
            job = run.job
            job.state, job.end_time = state, datetime.now(timezone.utc)
            job.error = error or job.error
            if job.total is not None:
                job.incomplete = max(0, job.total - job.succeeded - job.failed)
