"""The emulated Vertex AI batchPredictionJobs API, driven only through google-genai (and BigQuery's client)."""

from __future__ import annotations

import time

import pytest
from google.cloud import bigquery
from google.genai import errors as genai_errors
from google.genai import types

TESTER_STATUS = (
    'Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", "status": "INVALID_ARGUMENT"}}'
)
TERMINAL = {
    types.JobState.JOB_STATE_SUCCEEDED,
    types.JobState.JOB_STATE_FAILED,
    types.JobState.JOB_STATE_CANCELLED,
    types.JobState.JOB_STATE_PARTIALLY_SUCCEEDED,
}


def make_requests(bq, table: str, rows: int = 3, *, tester_ids=(2,)):
    """A request table: id, a pass-through column, and the GenerateContentRequest JSON."""
    bq.query_and_wait(
        f"""create table {table} as
        select id, concat('dish ', cast(id as string)) as dish,
          json_object('contents', [json_object(
            'role', if(id in unnest(@testers), 'tester', 'user'),
            'parts', [json_object('text', concat('Give me a recipe for dish ', cast(id as string)))])]) as request
        from unnest(generate_array(1, @n)) as id""",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ArrayQueryParameter("testers", "INT64", list(tester_ids)),
                bigquery.ScalarQueryParameter("n", "INT64", rows),
            ]
        ),
    )


def wait(genai, name: str, timeout: float = 60.0):
    """Poll as a user would; return (final job, every state seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        job = genai.batches.get(name=name)
        if not seen or seen[-1] != job.state:
            seen.append(job.state)
        if job.state in TERMINAL or time.monotonic() > deadline:
            return job, seen
        time.sleep(0.02)


def create(genai, src: str, dest: str, **config):
    return genai.batches.create(model="gemini-2.5-flash", src=src, config=types.CreateBatchJobConfig(dest=dest, **config))


def test_job_waits_for_capacity_then_writes_vertex_output_with_one_row_per_request(emulator, bq, dataset, make_genai):
    make_requests(bq, "analytics.requests", rows=3, tester_ids=(2,))
    genai = make_genai(emulator.url, labels={"bqbatch_fingerprint": "abc123"})
    held = emulator.faults.hold_pending()

    job = create(genai, "bq://emu-project.analytics.requests", "bq://emu-project.analytics.answers", display_name="recipes")
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert job.name.startswith("projects/emu-project/locations/us-central1/batchPredictionJobs/")
    assert job.model == "publishers/google/models/gemini-2.5-flash"
    assert job.src.bigquery_uri == "bq://emu-project.analytics.requests"
    assert job.dest.bigquery_uri == "bq://emu-project.analytics.answers"
    time.sleep(0.3)
    assert genai.batches.get(name=job.name).state == types.JobState.JOB_STATE_PENDING  # capacity never came
    emulator.faults.clear()
    assert held.applied == 1

    job, seen = wait(genai, job.name)
    assert seen[-1] == types.JobState.JOB_STATE_SUCCEEDED
    assert (job.completion_stats.successful_count, job.completion_stats.failed_count, job.completion_stats.incomplete_count) == (2, 1, 0)
    assert job.create_time <= job.start_time <= job.end_time <= job.update_time
    assert job.output_info.bigquery_output_table == "answers"

    table = bq.get_table("analytics.answers")
    assert [(f.name, f.field_type) for f in table.schema] == [
        ("id", "INTEGER"), ("dish", "STRING"), ("request", "JSON"),
        ("response", "JSON"), ("status", "STRING"), ("processed_time", "TIMESTAMP"),
    ]
    rows = {r["id"]: dict(r) for r in bq.list_rows(table)}
    assert sorted(rows) == [1, 2, 3]
    assert rows[2]["response"] is None and rows[2]["status"] == TESTER_STATUS
    answered = rows[1]["response"]["candidates"][0]["content"]["parts"][0]["text"]
    assert answered.startswith("[bqbatch emulated] request ") and not rows[1]["status"]
    assert rows[1]["processed_time"].tzinfo is not None

    # Labels (sent through HttpOptions.extra_body, as bqbatch sends its fingerprint) filter the list.
    assert [j.name for j in genai.batches.list(config={"filter": "labels.bqbatch_fingerprint=abc123"})] == [job.name]
    assert list(genai.batches.list(config={"filter": "labels.bqbatch_fingerprint=other"})) == []

    with pytest.raises(genai_errors.ClientError, match="cannot be cancelled"):
        genai.batches.cancel(name=job.name)
    assert genai.batches.delete(name=job.name).done
    with pytest.raises(genai_errors.ClientError) as missing:
        genai.batches.get(name=job.name)
    assert missing.value.code == 404


def _regional(bq, name: str, location: str):
    ds = bigquery.Dataset(f"{bq.project}.{name}")
    ds.location = location
    return bq.create_dataset(ds)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_table", "analytics.nothing_here (the job's input) was not found"),
        ("missing_request_column", "has no column named 'request'"),
        ("multi_region", "multi-region US"),
        ("other_region", "is in europe-west4 but the job runs in us-central1"),
        ("output_exists", "already exists"),
        ("struct_column", "has type STRUCT"),
    ],
)
def test_job_fails_with_the_reason_vertex_gives(case, expected, bq, dataset, genai):
    src, dest = "bq://emu-project.analytics.requests", "bq://emu-project.analytics.out"
    if case == "missing_table":
        src = "bq://emu-project.analytics.nothing_here"
    elif case == "missing_request_column":
        bq.query_and_wait("create table analytics.requests as select 1 as id, 'hi' as prompt")
    elif case == "multi_region":
        bq.create_dataset("us_multi")  # location US
        make_requests(bq, "us_multi.requests")
        src = "bq://emu-project.us_multi.requests"
    elif case == "other_region":
        _regional(bq, "eu", "europe-west4")
        make_requests(bq, "eu.requests")
        src = "bq://emu-project.eu.requests"
    elif case == "output_exists":
        make_requests(bq, "analytics.requests")
        bq.query_and_wait("create table analytics.out as select 1 as x")
    elif case == "struct_column":
        bq.query_and_wait(
            "create table analytics.requests as select struct(1 as a) as meta, "
            "json '{\"contents\": [{\"role\": \"user\", \"parts\": [{\"text\": \"hi\"}]}]}' as request"
        )
    job, seen = wait(genai, create(genai, src, dest).name)
    assert job.state == types.JobState.JOB_STATE_FAILED, seen
    assert expected in job.error.message
    assert job.error.code > 0 and job.end_time is not None
    if case != "output_exists":
        with pytest.raises(Exception):
            bq.get_table("analytics.out")


def test_pending_job_cancels_to_cancelled_and_cannot_be_deleted_while_live(emulator, bq, dataset, genai):
    make_requests(bq, "analytics.requests")
    emulator.faults.hold_pending()
    job = create(genai, "bq://emu-project.analytics.requests", "bq://emu-project.analytics.out")
    with pytest.raises(genai_errors.ClientError, match="cancel it before deleting"):
        genai.batches.delete(name=job.name)
    genai.batches.cancel(name=job.name)
    assert genai.batches.get(name=job.name).state in (types.JobState.JOB_STATE_CANCELLING, types.JobState.JOB_STATE_CANCELLED)
    job, seen = wait(genai, job.name)
    assert job.state == types.JobState.JOB_STATE_CANCELLED
    with pytest.raises(Exception):
        bq.get_table("analytics.out")


def test_injected_outcomes_failed_and_partially_succeeded(emulator, bq, dataset, genai):
    make_requests(bq, "analytics.requests", rows=40, tester_ids=())
    emulator.faults.job_outcome("FAILED", message="Quota exceeded for batch prediction (injected)")
    failed, _ = wait(genai, create(genai, "bq://emu-project.analytics.requests", "bq://emu-project.analytics.a").name)
    assert failed.state == types.JobState.JOB_STATE_FAILED
    assert failed.error.message == "Quota exceeded for batch prediction (injected)"

    emulator.faults.job_outcome("PARTIALLY_SUCCEEDED", failed_fraction=0.5)
    job, _ = wait(genai, create(genai, "bq://emu-project.analytics.requests", "bq://emu-project.analytics.b").name)
    assert job.state == types.JobState.JOB_STATE_PARTIALLY_SUCCEEDED
    stats = job.completion_stats
    assert stats.successful_count + stats.failed_count == 40 and 5 <= stats.failed_count <= 35
    statuses = [r["status"] for r in bq.list_rows("analytics.b")]
    assert sum(1 for s in statuses if s) == stats.failed_count
    assert all("RESOURCE_EXHAUSTED" in s or "INTERNAL" in s or "UNAVAILABLE" in s for s in statuses if s)


def test_list_pages_newest_first_and_filters_by_state(bq, dataset, genai):
    names = [create(genai, f"bq://emu-project.analytics.missing_{i}", f"bq://emu-project.analytics.o{i}").name for i in range(5)]
    for name in names:
        wait(genai, name)
    pager = genai.batches.list(config={"page_size": 2})
    assert len(pager.page) == 2
    listed = [j.name for j in pager]
    assert listed == list(reversed(names))
    failed = list(genai.batches.list(config={"filter": "state=JOB_STATE_FAILED"}))
    assert len(failed) == 5
    assert list(genai.batches.list(config={"filter": "state=JOB_STATE_SUCCEEDED"})) == []


def test_cloud_storage_sources_are_refused_clearly(genai):
    with pytest.raises(genai_errors.ClientError, match="Cloud Storage"):
        genai.batches.create(model="gemini-2.5-flash", src="gs://bucket/input.jsonl",
                             config=types.CreateBatchJobConfig(dest="gs://bucket/out/"))


def test_data_path_keeps_job_history_and_fails_jobs_the_stop_interrupted(tmp_path, make_bq, make_genai):
    from bqbatch_sql.emulator import Emulator

    path = tmp_path / "emu.duckdb"
    with Emulator(data_path=path, vertex_options={"pending_seconds": 0.05}) as emu:
        genai = make_genai(emu.url)
        finished, _ = wait(genai, create(genai, "bq://emu-project.nowhere.t", "bq://emu-project.nowhere.o").name)
        emu.faults.hold_pending()
        interrupted = create(genai, "bq://emu-project.nowhere.t", "bq://emu-project.nowhere.o2")
    with Emulator(data_path=path) as emu:
        genai = make_genai(emu.url)
        assert genai.batches.get(name=finished.name).error.message == finished.error.message
        again = genai.batches.get(name=interrupted.name)
        assert again.state == types.JobState.JOB_STATE_FAILED
        assert "emulator stopped while this job ran" in again.error.message


def test_running_job_cancels_through_cancelling(bq, dataset, genai):
    make_requests(bq, "analytics.requests", rows=50)
    job = create(genai, "bq://emu-project.analytics.requests", "bq://emu-project.analytics.out")
    deadline = time.monotonic() + 30
    while genai.batches.get(name=job.name).state != types.JobState.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    genai.batches.cancel(name=job.name)
    assert genai.batches.get(name=job.name).state in (types.JobState.JOB_STATE_CANCELLING, types.JobState.JOB_STATE_CANCELLED)
    job, seen = wait(genai, job.name)
    assert job.state == types.JobState.JOB_STATE_CANCELLED, seen
    assert time.monotonic() - started < 5  # the predictor's statement is interrupted, not waited for
    assert job.end_time is not None
