"""The in-process job registry shared by the local, online, openai_compatible and gemini_batch predictors."""

from __future__ import annotations

import threading

import pytest

from bqbatch_sql.errors import JobNotFoundError
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.base import BatchJob, BatchJobSpec, JobState
from bqbatch_sql.predictors.inprocess import JobRegistry, Run

SPEC = BatchJobSpec("gemini-2.5-flash", Relation("db", "main", "req"), Relation("db", "main", "out"), "test-job")


def new_run(name: str = "jobs/1") -> Run:
    return Run(BatchJob(name=name, state=JobState.PENDING), SPEC)


def held_work(release: threading.Event, started: list[Run]):
    def work(run: Run) -> None:
        started.append(run)
        release.wait(10)
    return work


def test_a_job_started_twice_under_one_name_runs_once():
    jobs: JobRegistry[Run] = JobRegistry("no job '{job_name}'")
    release, started = threading.Event(), []
    first, second = new_run(), new_run()
    jobs.start(first, held_work(release, started), "t1")
    jobs.update(first, state=JobState.RUNNING)
    answered = jobs.start(second, held_work(release, started), "t2")  # a second re-attach of the same job
    assert answered.state == JobState.RUNNING and second.thread is None
    release.set()
    jobs.join("jobs/1", 10)
    assert started == [first]


def test_cancel_moves_a_live_job_to_cancelling_and_leaves_an_ended_one_alone():
    jobs: JobRegistry[Run] = JobRegistry("no job '{job_name}' here")
    release, started = threading.Event(), []
    for name in ("jobs/pending", "jobs/plain", "jobs/ended"):
        jobs.start(new_run(name), held_work(release, started), name)
    assert jobs.cancel("jobs/pending", only_while_running=True) is not None
    assert jobs.get("jobs/pending").state == JobState.PENDING  # not running yet: shown as it is until it ends
    assert jobs.cancel("jobs/plain").cancel.is_set()
    assert jobs.get("jobs/plain").state == JobState.CANCELLING
    ended = jobs.find("jobs/ended")
    jobs.finish(ended, JobState.SUCCEEDED)
    assert jobs.cancel("jobs/ended") is None and not ended.cancel.is_set()
    assert jobs.get("jobs/ended").state == JobState.SUCCEEDED
    with pytest.raises(JobNotFoundError, match="no job 'jobs/other' here"):
        jobs.cancel("jobs/other")
    release.set()


def test_the_end_counts_the_unanswered_rows_and_keeps_an_earlier_error():
    jobs: JobRegistry[Run] = JobRegistry("no job '{job_name}'")
    run = new_run()
    jobs.start(run, lambda _: None, "t")
    jobs.update(run, total=10, error="cancelling batches/7 failed: 503")
    jobs.count(run, 6, 1)
    jobs.finish(run, JobState.CANCELLED)
    job = jobs.get("jobs/1")
    assert (job.state, job.succeeded, job.failed, job.incomplete) == (JobState.CANCELLED, 6, 1, 3)
    assert job.error == "cancelling batches/7 failed: 503" and job.end_time is not None
    assert jobs.snapshot("jobs/2") is None
    with pytest.raises(JobNotFoundError, match="no job 'jobs/2'"):
        jobs.get("jobs/2")
