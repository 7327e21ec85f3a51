"""The `gemini_batch` predictor: JSONL files through the Files API and batch mode, via the real google-genai client."""

from __future__ import annotations

import json
import time

import pytest
from request_tables import TESTER_STATUS, make_requests

from bqbatch_sql.errors import JobNotFoundError, ProfileError
from bqbatch_sql.predictors import make_predictor
from bqbatch_sql.predictors.base import JobState


def batch_predictor(adapter, emu, **options):
    return make_predictor("gemini_batch", adapter, base_url=emu.url, poll_initial_seconds=0.02,
                          poll_max_seconds=0.1, **options)


def calls(api, what: str) -> list[str]:
    return [c for c in api.calls if what in c]


def requests_sent(api, batch_calls_before: int = 0) -> int:
    """Requests in the input files of the batches created after the first `batch_calls_before`."""
    batches = list(api.batches.values())[batch_calls_before:]
    return sum(int(b["metadata"].get("batchStats", {}).get("requestCount", 0)) for b in batches)


def test_requests_go_out_in_files_and_every_row_comes_back(adapter, emu, gemini):
    spec = make_requests(adapter, 10, tester=(3,))
    predictor = batch_predictor(adapter, emu, max_file_rows=4)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert (job.total, job.succeeded, job.failed) == (10, 9, 1)
    rows = adapter.fetchall("SELECT id, CAST(response AS VARCHAR), status FROM main.out ORDER BY id")
    assert [r[0] for r in rows] == list(range(10))
    assert rows[3] == (3, None, TESTER_STATUS)  # refused by the shared rules before export
    for id_, response, status in rows[:3] + rows[4:]:
        assert status == ""
        assert json.loads(response)["candidates"][0]["content"]["parts"][0]["text"].endswith(f"question {id_}")
    # 9 valid requests, at most 4 a file: 3 files, 3 batches, and nothing left behind in the Files API
    assert len(calls(gemini, "POST /upload/v1beta/files")) == 3
    assert len(calls(gemini, ":batchGenerateContent")) == 3
    assert requests_sent(gemini) == 9
    assert gemini.files == {}
    assert not adapter.table_exists(adapter.relation("out__progress"))


def test_files_are_cut_under_the_byte_limit_and_an_oversized_request_gets_a_status(adapter, emu, gemini):
    spec = make_requests(adapter, 6)
    adapter.execute("INSERT INTO main.req SELECT 99, json_object('contents', json_array(json_object('role', 'user', "
                    "'parts', json_array(json_object('text', repeat('x', 2000))))))")
    predictor = batch_predictor(adapter, emu, max_file_bytes=300, keep_files=True)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED, job.error
    uploaded = [f for f in gemini.files.values() if f["source"] == "UPLOADED"]
    assert len(uploaded) >= 2 and all(int(f["sizeBytes"]) <= 300 for f in uploaded)
    assert sum(len(gemini.blobs[f["name"][6:]].splitlines()) for f in uploaded) == 6
    status = adapter.fetchall("SELECT status FROM main.out WHERE id = 99")[0][0]
    assert status.startswith('Bad Request: {"error": {"code": 400') and "over the input file limit of 300 bytes" in status
    for name in list(gemini.files):
        gemini.expire_file(name)


def test_a_failed_batch_keeps_the_other_answers_and_the_rerun_sends_only_the_rest(adapter, emu, gemini):
    spec = make_requests(adapter, 7)
    gemini.outcomes.extend([None, "BATCH_STATE_FAILED", None])
    predictor = batch_predictor(adapter, emu, max_file_rows=3)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.FAILED
    assert "ended FAILED" in job.error and "1 of 3 batches failed" in job.error
    assert job.succeeded == 4  # files 1 and 3 were loaded
    assert not adapter.table_exists(spec.destination)

    before = len(gemini.batches)
    again = batch_predictor(adapter, emu)  # a new process
    job = again.wait(again.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert requests_sent(gemini, before) == 3  # only the failed file's requests went again
    rows = adapter.fetchall("SELECT id, status FROM main.out ORDER BY id")
    assert rows == [(i, "") for i in range(7)]


def test_a_job_left_by_a_dead_process_is_taken_over_without_submitting_again(adapter, emu, gemini):
    spec = make_requests(adapter, 6, tester=(5,))
    gemini.running.clear()  # the batches wait in PENDING
    first = batch_predictor(adapter, emu, max_file_rows=3)
    job = first.submit(spec)
    deadline = time.monotonic() + 30
    while len(calls(gemini, ":batchGenerateContent")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.detach(job.name)  # the process is gone; its two batches are not
    uploads, batches = len(calls(gemini, "POST /upload")), len(calls(gemini, ":batchGenerateContent"))
    assert (uploads, batches) == (2, 2)

    second = batch_predictor(adapter, emu)  # a new process, given the job name by the ledger
    attached = second.get(job.name)
    assert attached.state == JobState.RUNNING
    gemini.running.set()
    done = second.wait(job.name, 60)
    assert done.state == JobState.SUCCEEDED, done.error
    assert (done.total, done.succeeded, done.failed) == (6, 5, 1)
    assert (len(calls(gemini, "POST /upload")), len(calls(gemini, ":batchGenerateContent"))) == (2, 2)
    assert adapter.fetchall("SELECT COUNT(*), COUNT(response) FROM main.out")[0] == (6, 5)
    assert not adapter.table_exists(adapter.relation("out__batches"))


def test_cancel_cancels_the_batches_submitted_so_far(adapter, emu, gemini):
    spec = make_requests(adapter, 6)
    gemini.running.clear()  # the batches wait in PENDING
    before = len(gemini.batches)
    predictor = batch_predictor(adapter, emu, max_file_rows=3)
    job = predictor.submit(spec)
    deadline = time.monotonic() + 30
    while not calls(gemini, "GET /v1beta/batches/") and time.monotonic() < deadline:  # both submitted, now polled
        time.sleep(0.02)
    predictor.cancel(job.name)
    assert predictor.get(job.name).state in (JobState.CANCELLING, JobState.CANCELLED)
    done = predictor.wait(job.name, 60)
    assert done.state == JobState.CANCELLED and done.error is None
    assert (done.total, done.succeeded, done.incomplete) == (6, 0, 6)
    assert len(calls(gemini, ":cancel")) == 2
    ours = list(gemini.batches.values())[before:]
    assert [b["metadata"]["state"] for b in ours] == ["BATCH_STATE_CANCELLED"] * 2
    assert not adapter.table_exists(spec.destination)
    predictor.cancel(job.name)  # cancelling an ended job changes nothing
    assert len(calls(gemini, ":cancel")) == 2 and predictor.get(job.name) == done


def test_a_job_name_with_no_batches_on_record_is_unknown(adapter, emu, gemini):
    predictor = batch_predictor(adapter, emu)
    with pytest.raises(JobNotFoundError, match="finds no job 'nonsense'.*Run the model again"):
        predictor.get("nonsense")


def test_a_result_file_gone_before_download_says_why(adapter, emu, gemini):
    spec = make_requests(adapter, 2)
    gemini.outcomes.append("RESULTS_GONE")
    predictor = batch_predictor(adapter, emu)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.FAILED
    assert "the Files API keeps files for 48 hours" in job.error and "run the model again" in job.error


def test_an_expired_batch_ends_the_job_expired(adapter, emu, gemini):
    spec = make_requests(adapter, 2)
    gemini.outcomes.append("BATCH_STATE_EXPIRED")
    predictor = batch_predictor(adapter, emu)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.EXPIRED and "48 hours" in job.error


def test_the_api_refusing_a_file_is_an_error_with_the_limit(adapter, emu, gemini):
    spec = make_requests(adapter, 4)
    gemini.max_file_bytes = 100
    try:
        predictor = batch_predictor(adapter, emu)
        job = predictor.wait(predictor.submit(spec).name, 60)
    finally:
        gemini.max_file_bytes = 2 * 1024**3
    assert job.state == JobState.FAILED
    assert "The Files API refused input file 1" in job.error and "lower max_file_bytes" in job.error


def test_a_missing_api_key_fails_at_submit(adapter, emu, monkeypatch):
    spec = make_requests(adapter, 1)
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(ProfileError, match="GEMINI_API_KEY is not set"):
        batch_predictor(adapter, emu).submit(spec)
