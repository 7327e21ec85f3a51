"""The Vertex predictor against the project's emulator, through the real google-genai client."""

from __future__ import annotations

import time

import pytest
import sqlglot
from pydantic import ValidationError

from bqbatch_sql.adapters.bigquery import BigQueryAdapter
from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.config import BigQueryTarget, VertexPredictorConfig
from bqbatch_sql.emulator import Emulator
from bqbatch_sql.errors import JobNotFoundError, PredictorError, ProfileError
from bqbatch_sql.predictors import make_predictor
from bqbatch_sql.predictors.base import BatchJobSpec, JobState
from bqbatch_sql.predictors.vertex import VertexPredictor

REQUEST = '{"contents": [{"role": "user", "parts": [{"text": "Give me a recipe for banana bread."}]}]}'
TESTER = '{"contents": [{"parts": {"text": "Explain how AI works in a few words."}, "role": "tester"}]}'
SEEDS_STATUS = (
    'Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
    '"status": "INVALID_ARGUMENT"}}'
)


@pytest.fixture(scope="module")
def emulator():
    with Emulator(vertex_options={"pending_seconds": 0.05}) as emu:
        yield emu


@pytest.fixture
def warehouse(emulator, request):
    """A dataset of the test's own holding a two-row request table `req`."""
    dataset = request.node.name.removeprefix("test_")[:40]
    adapter = BigQueryAdapter(BigQueryTarget(project="emu-project", dataset=dataset, location="us-central1",
                                             method="emulator", api_endpoint=emulator.url,
                                             retry_initial_seconds=0.01, retry_deadline_seconds=3))
    adapter.create_schema(dataset)
    adapter.create_table_as(adapter.relation("req"), sqlglot.parse_one(
        f"SELECT 1 AS id, PARSE_JSON('{REQUEST}') AS request UNION ALL SELECT 2, PARSE_JSON('{TESTER}')",
        dialect="bigquery"))
    yield adapter
    emulator.faults.clear()
    adapter.close()


def predictor(adapter, emulator, **options) -> VertexPredictor:
    settings = dict(base_url=emulator.url, retry_initial_seconds=0.01, retry_max_seconds=0.05, retry_attempts=4)
    return VertexPredictor(adapter, **{**settings, **options})


def spec(adapter, out="out", fingerprint="f" * 32, **labels) -> BatchJobSpec:
    return BatchJobSpec(model_id="gemini-2.5-flash", source=adapter.relation("req"), destination=adapter.relation(out),
                        display_name="bqbatch-demo-recipes",
                        labels={"bqbatch_model": "recipes", "bqbatch_fingerprint": fingerprint, **labels})


def wait(vertex, job, timeout=60):
    deadline = time.monotonic() + timeout
    while not job.done and time.monotonic() < deadline:
        time.sleep(0.05)
        job = vertex.get(job.name)
    return job


def listed(vertex, **labels):
    from google.genai import types

    flt = " AND ".join(f'labels.{k}="{v}"' for k, v in labels.items())
    return list(vertex.client().batches.list(config=types.ListBatchJobsConfig(filter=flt)))


def test_a_job_runs_from_the_request_table_to_the_output_table(warehouse, emulator):
    vertex = predictor(warehouse, emulator)
    job = vertex.submit(spec(warehouse))
    assert job.state == JobState.PENDING
    assert job.name.startswith("projects/emu-project/locations/us-central1/batchPredictionJobs/")

    done = wait(vertex, job)
    assert (done.state, done.total, done.succeeded, done.failed) == (JobState.SUCCEEDED, 2, 1, 1)
    out = warehouse.fetchall(f"SELECT id, status FROM {warehouse.relation('out').sql('bigquery')} ORDER BY id")
    assert out[0][0] == 1 and out[0][1] in (None, "")
    assert out[1] == (2, SEEDS_STATUS)

    (sent,) = listed(vertex, bqbatch_fingerprint="f" * 32, bqbatch_run_id=vertex.run_id)
    assert sent.display_name == "bqbatch-demo-recipes"
    assert sent.model == "publishers/google/models/gemini-2.5-flash"
    assert sent.src.bigquery_uri.endswith(".req") and sent.dest.bigquery_uri.endswith(".out")
    assert vertex.console_url(job.name) == (
        "https://console.cloud.google.com/vertex-ai/batch-predictions/locations/us-central1/batch-predictions/"
        f"{job.name.rsplit('/', 1)[-1]}?project=emu-project")


def test_a_live_job_with_the_same_fingerprint_is_adopted_not_created_again(warehouse, emulator):
    emulator.faults.hold_pending()
    vertex = predictor(warehouse, emulator)
    first = vertex.submit(spec(warehouse, fingerprint="a" * 32))
    second = predictor(warehouse, emulator).submit(spec(warehouse, fingerprint="a" * 32))
    assert second.name == first.name
    assert len(listed(vertex, bqbatch_fingerprint="a" * 32)) == 1
    vertex.cancel(first.name)
    assert wait(vertex, vertex.get(first.name)).state == JobState.CANCELLED


def test_a_create_whose_answer_is_lost_is_adopted_on_retry(warehouse, emulator):
    # The create call outlives the client's timeout, yet the job is created: the retry must not pay twice.
    emulator.faults.hold_pending()  # the first job stays live, whatever its rows would give
    emulator.faults.slow(0.6, api="vertex", method="POST", path="batchPredictionJobs$", times=1)
    vertex = predictor(warehouse, emulator, timeout_seconds=0.3, retry_initial_seconds=1.5, retry_max_seconds=2)
    job = vertex.submit(spec(warehouse, fingerprint="b" * 32))
    assert [j.name for j in listed(vertex, bqbatch_fingerprint="b" * 32)] == [job.name]


def test_429_and_503_are_retried_then_reported(warehouse, emulator):
    vertex = predictor(warehouse, emulator)
    emulator.faults.fail_call(429, api="vertex", method="POST", times=2)
    emulator.faults.fail_call(503, api="vertex", method="GET", times=2)
    job = vertex.submit(spec(warehouse, fingerprint="c" * 32))
    assert wait(vertex, job).state == JobState.SUCCEEDED

    emulator.faults.fail_call(503, api="vertex", fraction=1.0)
    with pytest.raises(PredictorError, match=r"still answering 503 UNAVAILABLE.* after 4 attempts"):
        vertex.get(job.name)


def test_preflight_refuses_what_vertex_would_refuse_after_queueing(warehouse, emulator):
    warehouse.create_table_as(warehouse.relation("taken"), sqlglot.parse_one("SELECT 1 AS x"))
    fp = "d" * 32
    with pytest.raises(PredictorError, match="output table .*taken already exists.*--full-refresh"):
        predictor(warehouse, emulator).submit(spec(warehouse, out="taken", fingerprint=fp))
    with pytest.raises(PredictorError, match="would run in europe-west4 but the input dataset .* is in us-central1"):
        predictor(warehouse, emulator, location="europe-west4").submit(spec(warehouse, fingerprint=fp))
    with pytest.raises(PredictorError, match="runs in a region, not in the multi-region EU"):
        predictor(warehouse, emulator, location="EU").submit(spec(warehouse, fingerprint=fp))
    assert listed(predictor(warehouse, emulator), bqbatch_fingerprint=fp) == []  # no job was created


def test_unknown_jobs_and_bad_labels(warehouse, emulator):
    vertex = predictor(warehouse, emulator)
    with pytest.raises(JobNotFoundError, match="no batch job"):
        vertex.get("projects/emu-project/locations/us-central1/batchPredictionJobs/123")
    with pytest.raises(JobNotFoundError, match="is not a Vertex AI batch job name"):
        vertex.get("projects/local/jobs/1")
    with pytest.raises(PredictorError, match="not a valid Vertex AI label.*config\\(labels=...\\)"):
        vertex.submit(spec(warehouse, Team="Data Science"))


def test_cloud_storage_output_is_configurable_and_named_per_model(warehouse, emulator):
    with pytest.raises(ValidationError, match="not a Cloud Storage prefix"):
        VertexPredictorConfig(gcs_destination="s3://bucket/out")
    vertex = predictor(warehouse, emulator, gcs_destination="gs://my-bucket/predictions/")
    assert not vertex.writes_table
    # The emulator runs BigQuery jobs only, and says so: the request reached it with the gs:// destination.
    with pytest.raises(PredictorError, match="Cloud Storage .* is not emulated"):
        vertex.submit(spec(warehouse, out="recipes"))


def test_vertex_needs_a_bigquery_target():
    with pytest.raises(ProfileError, match="use it on a `type: bigquery` target"):
        make_predictor("vertex", DuckDBAdapter(":memory:"))
