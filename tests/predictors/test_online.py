"""The `online` predictor: generateContent per row through the real google-genai client, against the emulator."""

from __future__ import annotations

import json
import time

import pytest
from request_tables import TESTER_STATUS, make_requests

from bqbatch_sql.errors import JobNotFoundError, ProfileError
from bqbatch_sql.predictors import make_predictor
from bqbatch_sql.predictors.base import BatchJobSpec, JobState
from bqbatch_sql.predictors.streaming import RateLimiter

GENERATE = ":generateContent"


def online(adapter, emu, **options):
    settings = dict(base_url=emu.url, requests_per_minute=None, concurrency=4, initial_backoff_seconds=0.01,
                    max_backoff_seconds=0.05, flush_seconds=0.05)
    settings.update(options)
    return make_predictor("online", adapter, **settings)


def generate_calls(api) -> int:
    return sum(1 for c in api.calls if c.endswith(GENERATE))


def output(adapter):
    return adapter.fetchall("SELECT id, CAST(response AS VARCHAR), status FROM main.out ORDER BY id, status")


def test_every_row_gets_an_answer_and_an_invalid_row_the_vertex_status_without_a_call(adapter, emu, gemini):
    spec = make_requests(adapter, 8, tester=(3,))
    predictor = online(adapter, emu)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert (job.total, job.succeeded, job.failed, job.incomplete) == (8, 7, 1, 0)
    rows = output(adapter)
    assert [r[0] for r in rows] == list(range(8))
    assert rows[3] == (3, None, TESTER_STATUS)
    for id_, response, status in rows[:3] + rows[4:]:
        answer = json.loads(response)
        assert status == ""
        assert answer["candidates"][0]["content"]["parts"][0]["text"].endswith(f"question {id_}")
        assert answer["usageMetadata"]["totalTokenCount"] > 0
    assert generate_calls(gemini) == 7  # the refused row was never sent
    assert [c.name for c in adapter.columns(spec.destination)] == ["id", "request", "response", "status", "processed_time"]
    assert not adapter.table_exists(adapter.relation("out__progress"))


def test_429_and_503_are_retried_with_backoff(adapter, emu, gemini):
    spec = make_requests(adapter, 4)
    too_many = emu.faults.fail_call(429, nth=1, path=GENERATE)
    unavailable = emu.faults.fail_call(503, nth=2, path=GENERATE)
    predictor = online(adapter, emu, concurrency=1)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED and (job.succeeded, job.failed) == (4, 0)
    assert (too_many.acted, unavailable.acted) == (1, 1)
    assert generate_calls(gemini) == 4  # the two refused calls went again and were answered
    assert all(status == "" for _, _, status in output(adapter))


def test_a_row_failing_every_attempt_keeps_the_error_as_its_status(adapter, emu, gemini):
    spec = make_requests(adapter, 3)
    fault = emu.faults.fail_call(503, times=2, path=GENERATE)
    predictor = online(adapter, emu, concurrency=1, max_attempts=2)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED and (job.succeeded, job.failed) == (2, 1)
    failed = [r for r in output(adapter) if r[2]]
    assert len(failed) == 1 and failed[0][1] is None
    assert failed[0][2].startswith('Service Unavailable: {"error": {"code": 503')
    assert fault.acted == 2 and generate_calls(gemini) == 2


def test_an_interrupted_job_resumes_without_asking_any_request_twice(adapter, emu, gemini):
    spec = make_requests(adapter, 12, duplicate_of_first=1)
    first = online(adapter, emu, concurrency=2, requests_per_minute=600)  # 0.1 s apart: time to interrupt
    job = first.submit(spec)
    deadline = time.monotonic() + 30
    while first.get(job.name).succeeded < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.stop_all()  # what Ctrl-C does at interpreter exit: stop sending, flush what arrived
    stopped = first.get(job.name)
    assert stopped.state == JobState.CANCELLED
    assert not adapter.table_exists(spec.destination)
    saved = adapter.fetchall("SELECT COUNT(*) FROM main.out__progress")[0][0]
    assert 4 <= saved < 13
    assert generate_calls(gemini) == saved  # whatever was sent was kept

    second = online(adapter, emu)  # a new process: it knows nothing of the first job
    job = second.wait(second.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED and job.succeeded == 13
    assert generate_calls(gemini) == 13  # the rerun sent only the rest
    rows = output(adapter)
    assert len(rows) == 13 and all(r[2] == "" for r in rows)
    assert [r[0] for r in rows].count(0) == 2  # both identical rows are in the output


def test_cancel_stops_sending_and_keeps_the_answers_already_received(adapter, emu, gemini):
    spec = make_requests(adapter, 12)
    predictor = online(adapter, emu, concurrency=2, requests_per_minute=600)  # 0.1 s apart: time to cancel
    job = predictor.submit(spec)
    deadline = time.monotonic() + 30
    while predictor.get(job.name).succeeded < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    predictor.cancel(job.name)
    assert predictor.get(job.name).state in (JobState.CANCELLING, JobState.CANCELLED)
    done = predictor.wait(job.name, 60)
    assert done.state == JobState.CANCELLED
    assert 2 <= done.succeeded < 12 and done.incomplete == 12 - done.succeeded
    assert not adapter.table_exists(spec.destination)
    assert adapter.fetchall("SELECT COUNT(*) FROM main.out__progress")[0][0] == generate_calls(gemini) == done.succeeded
    predictor.cancel(job.name)  # cancelling an ended job changes nothing
    assert predictor.get(job.name) == done


def test_a_job_of_another_process_is_unknown_and_the_error_says_to_run_again(adapter, emu):
    predictor = online(adapter, emu)
    for ask in (predictor.get, predictor.cancel, predictor.wait):
        with pytest.raises(JobNotFoundError, match="knows no job 'online/0123'.*Run the model again"):
            ask("online/0123")


def test_requests_are_spaced_by_the_requests_per_minute_limit(adapter, emu, gemini):
    spec = make_requests(adapter, 6)
    predictor = online(adapter, emu, requests_per_minute=600, concurrency=4)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED
    times = gemini.limits.accepted
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) == 6 and min(gaps) > 0.08  # 60 s / 600 = 0.1 s, less the server's clock jitter


def test_tokens_per_minute_holds_calls_until_the_window_has_room():
    limiter = RateLimiter(None, tokens_per_minute=100)
    import threading

    cancel = threading.Event()
    first = limiter.acquire(80, cancel)
    limiter.settle(first, 30)  # the call used fewer tokens than estimated: room for the next
    start = time.monotonic()
    assert limiter.acquire(60, cancel) is not None
    assert time.monotonic() - start < 0.5
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    assert limiter.acquire(60, cancel) is None  # 90 + 60 > 100: waits for the window, until cancelled
    timer.join()


def test_vertex_generate_content_through_the_same_predictor(adapter, emu, gemini):
    spec = make_requests(adapter, 3)
    predictor = online(adapter, emu, api="vertex", project="emu-project", location="us-central1")
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert any("/publishers/google/models/gemini-2.5-flash:generateContent" in c for c in gemini.calls)
    assert all(r[2] == "" for r in output(adapter))


def test_structured_output_settings_reach_the_model(adapter, emu, gemini):
    schema = {"type": "OBJECT", "properties": {"sentiment": {"type": "STRING", "enum": ["positive", "negative"]}},
              "required": ["sentiment"]}
    request = {"contents": [{"role": "user", "parts": [{"text": "great"}]}],
               "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}}
    adapter.execute("CREATE TABLE main.req AS SELECT 1 AS id, CAST($1 AS JSON) AS request", [json.dumps(request)])
    spec = BatchJobSpec("gemini-2.5-flash", adapter.relation("req"), adapter.relation("out"), "test")
    predictor = online(adapter, emu)
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED, job.error
    answer = json.loads(output(adapter)[0][1])
    assert json.loads(answer["candidates"][0]["content"]["parts"][0]["text"]) == {"sentiment": "positive"}


def test_a_missing_api_key_fails_at_submit_naming_the_variable(adapter, emu, monkeypatch):
    spec = make_requests(adapter, 1)
    monkeypatch.delenv("GEMINI_API_KEY")
    predictor = online(adapter, emu, api_key_env="GEMINI_API_KEY")
    with pytest.raises(ProfileError, match="environment variable GEMINI_API_KEY is not set"):
        predictor.submit(spec)


def test_profiles_name_the_key_variable_never_the_key():
    from pydantic import ValidationError

    from bqbatch_sql.config import DuckDBTarget, describe_validation_error

    with pytest.raises(ValidationError) as caught:
        DuckDBTarget(predictor={"type": "online", "api_key_env": "AIzaSyD-not-a-variable-name"})
    message = describe_validation_error(caught.value, "profiles.yml")
    assert "NAME of an environment variable" in message and "AIzaSyD" not in message
    with pytest.raises(ValidationError) as caught:
        DuckDBTarget(predictor={"type": "online", "requests_per_minut": 10})
    assert "Did you mean 'requests_per_minute'" in describe_validation_error(caught.value, "profiles.yml")
