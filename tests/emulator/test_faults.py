"""Fault injection: the failures of the real services, as the real clients see them."""

from __future__ import annotations

import time

import pytest
import requests
from google.api_core import exceptions
from google.genai import errors as genai_errors
from google.genai import types

DATASET_PATH = r"/datasets/d$"


@pytest.fixture
def d(bq):
    bq.create_dataset("d")


def test_nth_call_answers_503_and_the_bigquery_client_retries_through_it(emulator, bq, d, fast_retry):
    fault = emulator.faults.fail_call(503, nth=2, method="GET", path=DATASET_PATH)
    bq.get_dataset("d", retry=fast_retry())  # call 1: fine
    assert bq.get_dataset("d", retry=fast_retry()).dataset_id == "d"  # call 2 fails, the retry (call 3) succeeds
    assert (fault.seen, fault.acted) == (3, 1)


@pytest.mark.parametrize(
    "status, error, reason",
    [
        (429, exceptions.TooManyRequests, "rateLimitExceeded"),
        (500, exceptions.InternalServerError, "backendError"),
        (503, exceptions.ServiceUnavailable, "backendError"),
    ],
)
def test_injected_status_reaches_a_client_without_retry_in_bigquerys_error_format(emulator, bq, d, status, error, reason):
    emulator.faults.fail_call(status, api="bigquery")
    with pytest.raises(error) as raised:
        bq.get_dataset("d", retry=None)
    assert raised.value.errors[0]["reason"] == reason
    assert "injected by the bqbatch emulator" in raised.value.message
    assert bq.get_dataset("d", retry=None).dataset_id == "d"  # `times` defaulted to one call


def test_a_fraction_of_calls_fail_and_retries_absorb_them(emulator, bq, d, fast_retry):
    fault = emulator.faults.fail_call(500, fraction=0.4, method="GET", path=DATASET_PATH)
    for _ in range(20):
        assert bq.get_dataset("d", retry=fast_retry(10)).dataset_id == "d"
    assert fault.seen == 20 + fault.acted  # every failure cost one retried call
    assert 3 <= fault.acted <= 20


def test_slow_responses_delay_and_time_out_the_client(emulator, bq, d):
    emulator.faults.slow(0.4, method="GET", path=DATASET_PATH, times=2)
    started = time.monotonic()
    bq.get_dataset("d", retry=None)
    assert time.monotonic() - started >= 0.4
    with pytest.raises(requests.exceptions.Timeout):
        bq.get_dataset("d", retry=None, timeout=0.1)
    started = time.monotonic()
    bq.get_dataset("d", retry=None)
    assert time.monotonic() - started < 0.4  # both slow answers were used


def test_vertex_create_retried_through_503_makes_exactly_one_job(emulator, bq, make_genai):
    emulator.faults.fail_call(503, api="vertex", method="POST", nth=1)
    genai = make_genai(emulator.url, attempts=3)
    job = genai.batches.create(model="gemini-2.5-flash", src="bq://emu-project.nowhere.t",
                               config=types.CreateBatchJobConfig(dest="bq://emu-project.nowhere.out"))
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert [j.name for j in genai.batches.list()] == [job.name]


@pytest.mark.parametrize("status, error, name", [(429, genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
                                                 (503, genai_errors.ServerError, "UNAVAILABLE")])
def test_vertex_errors_reach_google_genai_in_the_google_api_format(emulator, make_genai, status, error, name):
    emulator.faults.fail_call(status, api="vertex")
    genai = make_genai(emulator.url)
    with pytest.raises(error) as raised:
        genai.batches.get(name="123")
    assert raised.value.code == status and raised.value.status == name


def test_faults_only_touch_the_api_they_name(emulator, bq, d, make_genai):
    genai = make_genai(emulator.url)
    emulator.faults.fail_call(503, api="vertex", times=100)
    assert bq.get_dataset("d", retry=None).dataset_id == "d"
    with pytest.raises(genai_errors.ServerError):
        genai.batches.list()
    emulator.faults.clear()
    assert list(genai.batches.list()) == []
