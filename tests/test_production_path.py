"""The production path through the CLI: BigQuery + Vertex AI profile, served by the project's emulator.

Real google-cloud-bigquery and google-genai clients talk HTTP to the emulator on
127.0.0.1; bqbatch runs in-process (CliRunner) or, where a run must be interrupted
or killed, as a subprocess. Each test works in a dataset of its own.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import projects
import pytest
from click.testing import CliRunner
from projects import PROJECT, REGION, bigquery_rows, ok

from bqbatch_sql.cli import main
from bqbatch_sql.emulator import Emulator

REPO = Path(__file__).resolve().parent.parent
SEEDS_STATUS = (
    'Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
    '"status": "INVALID_ARGUMENT"}}'
)
_datasets = itertools.count(1)


@pytest.fixture(scope="module")
def emulator():
    with Emulator(vertex_options={"pending_seconds": 0.05}) as emu:
        yield emu


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    for name in ("models", "seeds", "macros"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "bqbatch_project.yml", root)
    return root


@pytest.fixture
def bq(emulator):
    return projects.bigquery(emulator)


@pytest.fixture
def vertex_jobs(emulator):
    """vertex_jobs(dataset, label=value) -> the Vertex jobs writing into `dataset` with that label (google-genai)."""
    return functools.partial(projects.vertex_jobs, emulator)


@pytest.fixture
def target(emulator, tmp_path, monkeypatch):
    """target(**overrides) -> a BigQuery + Vertex target (profiles dir, dataset) in a fresh dataset."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BQBATCH_PROFILES_DIR", raising=False)
    yield _make_target(emulator, tmp_path)
    emulator.faults.clear()


def _make_target(emulator, tmp_path):
    def make(location=REGION, predictor_location=None, **predictor):
        dataset = f"prod_{next(_datasets)}"
        options = {"poll_initial_seconds": 0.05, "poll_max_seconds": 0.2, "retry_initial_seconds": 0.01,
                   "retry_max_seconds": 0.05, **predictor}
        if predictor_location:
            options["location"] = predictor_location
        directory = tmp_path / dataset
        directory.mkdir()
        (directory / "profiles.yml").write_text(projects.emulator_profiles(
            emulator, dataset, profile="bqbatch_example", location=location, job_labels={"team": "data"},
            retry_deadline_seconds=5, predictor=options))
        return Target(directory, dataset)

    return make


@dataclass
class Target:
    profiles_dir: Path
    dataset: str


def bqbatch(project_dir, target, *args):
    return CliRunner().invoke(main, [*args, "--project-dir", str(project_dir), "--profiles-dir",
                                     str(target.profiles_dir)], catch_exceptions=False)


# -- the whole example project ------------------------------------------------------------


def test_the_example_project_runs_on_bigquery_and_vertex(project_dir, target, bq, vertex_jobs):
    profiles = target()
    ds = profiles.dataset
    result = bqbatch(project_dir, profiles, "build")
    assert result.exit_code == 0, result.output
    for line in (f"OK    seed {PROJECT}.{ds}.reviews", f"OK    view {PROJECT}.{ds}.stg_reviews",
                 f"OK    batch_prediction {PROJECT}.{ds}.review_sentiment [6 rows",
                 f"OK    batch_prediction {PROJECT}.{ds}.support_replies [3 rows",
                 f"OK    table {PROJECT}.{ds}.review_report", "9 ok, 0 error, 0 skipped"):
        assert line in result.output

    # One row per request, the seeds' status word for word on the invalid role.
    out = bigquery_rows(bq, f"select thread_id, status, response is null from {ds}.support_replies order by thread_id")
    assert [r[0] for r in out] == [1, 2, 3]
    assert out[0][1] in (None, "") and out[0][2] is False
    assert out[2] == (3, SEEDS_STATUS, True)
    parsed = bigquery_rows(bq, f"select error_code, error_message from {ds}.support_replies__parsed "
                               "where thread_id = 3")
    assert parsed == [(400, "Please use a valid role: user, model.")]
    assert bigquery_rows(bq, f"select count(*) from {ds}.review_report") == [(3,)]
    typed = {f.name: f.field_type for f in bq.get_table(f"{ds}.review_sentiment__parsed").schema}
    assert typed["sentiment"] == "STRING" and typed["needs_follow_up"] == "BOOLEAN"

    # Each job carries the model, fingerprint and run labels; the ledger has its final state.
    jobs = vertex_jobs(profiles.dataset, bqbatch_model="support_replies")
    assert len(jobs) == 1 and jobs[0].dest.bigquery_uri == f"bq://{PROJECT}.{ds}.support_replies"
    assert jobs[0].display_name == "bqbatch-bqbatch_example-support_replies"
    ledger = bigquery_rows(bq, f"select model_unique_id, state from {ds}.bqbatch_jobs "
                               "qualify row_number() over (partition by model_unique_id order by recorded_at desc) = 1 "
                               "order by 1")
    assert ledger == [(f"model.{m}", "JOB_STATE_SUCCEEDED") for m in ("recipe_answers", "review_sentiment",
                                                                      "support_replies")]
    labelled = [j for j in bq.list_jobs(max_results=200) if (j.labels or {}).get("team") == "data"]
    assert labelled, "queries carry the target's job_labels"

    # A rerun over the same rows submits nothing; status shows the jobs with their console links.
    again = bqbatch(project_dir, profiles, "run", "-s", "support_replies")
    assert again.exit_code == 0 and "up to date" in again.output and "submitted" not in again.output
    assert len(vertex_jobs(profiles.dataset, bqbatch_model="support_replies")) == 1
    status = bqbatch(project_dir, profiles, "status")
    assert status.exit_code == 0
    assert status.output.count("SUCCEEDED") == 3
    assert "https://console.cloud.google.com/vertex-ai/batch-predictions/locations/us-central1/" in status.output

    validate = bqbatch(project_dir, profiles, "compile", "--validate")
    assert validate.exit_code == 0, validate.output
    assert "OK    review_report: would process" in validate.output

    debug = bqbatch(project_dir, profiles, "debug")
    assert debug.exit_code == 0, debug.output
    assert f"dataset {PROJECT}.{ds}: OK, location us-central1" in debug.output
    assert "Vertex API: OK" in debug.output


# -- a run that is interrupted or killed ---------------------------------------------------------


def _start(project_dir, profiles, *args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "bqbatch_sql", *args, "--project-dir", str(project_dir),
               "--profiles-dir", str(profiles.profiles_dir)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def _read_until(proc, text, timeout=60):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"'{text}' never appeared:\n{''.join(seen)}")


def test_a_killed_run_is_reattached_and_never_submitted_twice(project_dir, target, emulator, bq, vertex_jobs):
    profiles = target()
    ds = profiles.dataset
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    emulator.faults.hold_pending()  # the job waits for capacity until the test releases it

    # Ctrl-C while waiting: the job keeps running, and the user is told how to find it again.
    run = _start(project_dir, profiles, "run", "-s", "support_replies")
    _read_until(run, "submitted projects/")
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 130, out
    assert "keeps running" in out and "bqbatch wait -s support_replies" in out
    assert "bqbatch cancel -s support_replies" in out
    (job,) = vertex_jobs(profiles.dataset, bqbatch_model="support_replies")
    assert job.state.value == "JOB_STATE_PENDING"

    # Run again, and kill it hard while it waits: it re-attached, it did not submit.
    run = _start(project_dir, profiles, "run", "-s", "support_replies")
    _read_until(run, "re-attached to live job")
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    status = bqbatch(project_dir, profiles, "status", "-s", "support_replies")
    assert "PENDING" in status.output and job.name.rsplit("/", 1)[-1] in status.output

    emulator.faults.clear()
    done = bqbatch(project_dir, profiles, "wait", "-s", "support_replies")
    assert done.exit_code == 0, done.output
    assert "re-attached to live job" in done.output and "submitted" not in done.output
    jobs = vertex_jobs(profiles.dataset, bqbatch_model="support_replies")
    assert [j.name for j in jobs] == [job.name]  # exactly one create call, over three runs
    answered = bigquery_rows(bq, f"select count(*), countif(status = '{SEEDS_STATUS}') from {ds}.support_replies")
    assert answered == [(3, 1)]


def test_cancel_on_interrupt_cancels_the_job(project_dir, target, emulator, vertex_jobs):
    profiles = target()
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    emulator.faults.hold_pending()
    run = _start(project_dir, profiles, "run", "-s", "support_replies", "--cancel-on-interrupt")
    _read_until(run, "submitted projects/")
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 130 and "--cancel-on-interrupt" in out, out
    (job,) = vertex_jobs(profiles.dataset, bqbatch_model="support_replies")
    assert job.state.value in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")


def test_no_wait_then_status_then_cancel(project_dir, target, emulator, vertex_jobs):
    profiles = target()
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    emulator.faults.hold_pending()
    submitted = bqbatch(project_dir, profiles, "run", "-s", "support_replies", "--no-wait")
    assert submitted.exit_code == 0, submitted.output
    assert "--no-wait" in submitted.output and "bqbatch wait -s support_replies" in submitted.output
    assert "PENDING" in bqbatch(project_dir, profiles, "status").output

    cancelled = bqbatch(project_dir, profiles, "cancel", "-s", "support_replies")
    assert "support_replies: cancel requested for projects/" in cancelled.output
    (job,) = vertex_jobs(profiles.dataset, bqbatch_model="support_replies")
    assert job.state.value in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")
    assert "no live job" in bqbatch(project_dir, profiles, "cancel", "-s", "support_replies").output


# -- faults: each has its documented outcome, and no row is lost ----------------------------------


def test_429_and_503_are_retried_and_the_run_succeeds(project_dir, target, emulator, bq, vertex_jobs):
    profiles = target()
    ds = profiles.dataset
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    emulator.faults.fail_call(429, api="vertex", method="POST", times=2)  # the create call, twice
    emulator.faults.fail_call(503, api="vertex", method="GET", times=3)  # polls
    emulator.faults.fail_call(503, api="bigquery", nth=3)
    result = bqbatch(project_dir, profiles, "run", "-s", "support_replies")
    assert result.exit_code == 0, result.output
    jobs = vertex_jobs(profiles.dataset, bqbatch_model="support_replies")
    assert len(jobs) == 1
    assert bigquery_rows(bq, f"select count(*) from {ds}.support_replies") == [(3,)]


def test_a_vertex_that_keeps_failing_ends_the_node_with_the_cause(project_dir, target, emulator):
    profiles = target(retry_attempts=3)
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    emulator.faults.fail_call(503, api="vertex", fraction=1.0)
    result = bqbatch(project_dir, profiles, "run", "-s", "support_replies")
    assert result.exit_code == 1
    assert "still answering 503" in result.output and "after 3 attempts" in result.output


def test_a_failed_job_keeps_the_previous_output(project_dir, target, emulator, bq):
    profiles = target()
    ds = profiles.dataset
    ok(bqbatch(project_dir, profiles, "build", "-s", "+support_replies"))
    before = bigquery_rows(bq, f"select thread_id, status from {ds}.support_replies order by 1")

    emulator.faults.job_outcome("FAILED", message="Quota exhausted for gemini-2.5-flash.")
    result = bqbatch(project_dir, profiles, "run", "-s", "support_replies", "--full-refresh")
    assert result.exit_code == 1
    assert "ended FAILED: Quota exhausted for gemini-2.5-flash." in result.output
    assert "A rerun submits a new job" in result.output
    assert bigquery_rows(bq, f"select thread_id, status from {ds}.support_replies order by 1") == before
    assert "FAILED" in bqbatch(project_dir, profiles, "status", "-s", "support_replies").output

    # The next run submits anew, writes under a fresh name and swaps the result in.
    again = bqbatch(project_dir, profiles, "run", "-s", "support_replies", "--full-refresh")
    assert again.exit_code == 0, again.output
    assert bigquery_rows(bq, f"select count(*) from {ds}.support_replies") == [(3,)]
    assert [t.table_id for t in bq.list_tables(ds) if "__bqbatch_" in t.table_id] == []


def test_partially_succeeded_keeps_every_row_and_exits_2(project_dir, target, emulator, bq):
    profiles = target()
    ds = profiles.dataset
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    emulator.faults.job_outcome("PARTIALLY_SUCCEEDED", failed_fraction=0.99)
    result = bqbatch(project_dir, profiles, "run", "-s", "support_replies")
    assert result.exit_code == 2, result.output
    assert "PARTIALLY_SUCCEEDED" in result.output and "carry their error" in result.output
    counts = bigquery_rows(bq, f"select count(*), countif(response is null and status != '') from {ds}.support_replies")
    assert counts[0][0] == 3 and counts[0][1] >= 2


def test_a_job_region_other_than_the_datasets_is_refused_before_submitting(project_dir, target, vertex_jobs):
    profiles = target(predictor_location="europe-west4")
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    result = bqbatch(project_dir, profiles, "run", "-s", "support_replies")
    assert result.exit_code == 1
    assert "would run in europe-west4" in result.output and "is in us-central1" in result.output
    assert "same region as the job" in result.output
    assert vertex_jobs(profiles.dataset, bqbatch_model="support_replies") == []  # refused before any create call


def test_a_multi_region_dataset_is_refused_with_the_rule(project_dir, target, vertex_jobs):
    profiles = target(location="US", predictor_location="us-central1")
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    result = bqbatch(project_dir, profiles, "run", "-s", "support_replies")
    assert result.exit_code == 1
    assert "multi-region location US" in result.output
    assert "multi-region datasets (US, EU) are not supported" in result.output
    assert vertex_jobs(profiles.dataset, bqbatch_model="support_replies") == []  # refused before any create call
    debug = bqbatch(project_dir, profiles, "debug")
    assert debug.exit_code == 1 and "is in the multi-region location US" in debug.output


def test_permission_denied_shows_the_grant_command(project_dir, target, emulator):
    profiles = target()
    ok(bqbatch(project_dir, profiles, "build", "-s", "support_threads"))
    emulator.faults.fail_call(403, api="vertex", fraction=1.0)
    result = bqbatch(project_dir, profiles, "run", "-s", "support_replies")
    assert result.exit_code == 1
    assert "Vertex AI denied permission" in result.output
    assert f"gcloud projects add-iam-policy-binding {PROJECT}" in result.output
    assert '--role="roles/bigquery.user"' in result.output
