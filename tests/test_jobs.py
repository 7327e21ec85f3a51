"""Job outcomes and the job commands on the embedded target (DuckDB + local predictor), through the CLI."""

from __future__ import annotations

import pytest

from bqbatch_sql.jobs import exit_code, format_status, StatusRow
from bqbatch_sql.reporting import NodeResult

PROJECT = {
    "seeds/questions.csv": """
        qid,question
        1,What is a batch job?
        2,Why keep a ledger?
    """,
    "models/answers.sql": """
        {{ config(materialized='batch_prediction') }}
        select qid, {{ gemini_request(prompt="question") }} as request
        from {{ ref('questions') }}
    """,
}


def _result(status="success", state=None, **flags):
    batch = {"state": state, **flags} if state else None
    return NodeResult("model.m", "m", "batch_prediction", status, batch=batch)


@pytest.mark.parametrize(("results", "interrupted", "code"), [
    ([_result()], False, 0),
    ([_result(state="JOB_STATE_SUCCEEDED")], False, 0),
    ([_result(state="JOB_STATE_PARTIALLY_SUCCEEDED")], False, 2),
    ([_result("error", "JOB_STATE_PAUSED"), _result(state="JOB_STATE_PARTIALLY_SUCCEEDED")], False, 3),
    ([_result("error", "JOB_STATE_FAILED"), _result("error", "JOB_STATE_PAUSED")], False, 1),
    ([_result("skipped", "JOB_STATE_PENDING", submitted=True)], False, 0),  # --no-wait
    ([_result("error", "JOB_STATE_RUNNING", interrupted=True), _result("error")], False, 130),
    ([_result()], True, 130),
])
def test_exit_codes_say_how_the_jobs_ended(results, interrupted, code):
    assert exit_code(results, interrupted) == code


def test_status_lines_keep_ids_and_links_whole():
    link = "https://console.cloud.google.com/vertex-ai/batch-predictions/locations/us-central1/batch-predictions/1"
    lines = format_status([
        StatusRow("a_rather_long_model_name", "projects/p/locations/us-central1/batchPredictionJobs/1234567890123",
                  "RUNNING", 1200, 3, None, "4m", link),
        StatusRow("b", "-", "never submitted", None, None, None, "-", ""),
    ])
    assert lines[0].split() == ["model", "job", "state", "succeeded", "failed", "total", "age", "console"]
    assert lines[1].split() == ["a_rather_long_model_name", "1234567890123", "RUNNING", "1,200", "3", "-", "4m", link]
    assert lines[2].split()[:4] == ["b", "-", "never", "submitted"]


def test_job_commands_on_the_local_target(make_project, cli):
    root = make_project(PROJECT)
    assert "never submitted" in cli("status", "--project-dir", root).output

    built = cli("build", "--project-dir", root)
    assert built.exit_code == 0, built.output
    status = cli("status", "--project-dir", root).output.splitlines()
    assert status[1].split()[:6] == ["answers", status[1].split()[1], "SUCCEEDED", "2", "0", "2"]

    waited = cli("wait", "--project-dir", root)
    assert waited.exit_code == 0 and "no live job to wait for" in waited.output and "is SUCCEEDED" in waited.output
    assert "answers: no live job (last job projects/local/" in cli("cancel", "--project-dir", root).output

    # The local predictor's jobs run inside bqbatch and end with it: --no-wait waits, and says why.
    waited = cli("run", "--project-dir", root, "--full-refresh", "--no-wait")
    assert waited.exit_code == 0, waited.output
    assert "--no-wait has no effect with predictor 'local'" in waited.output
    assert "OK    batch_prediction main.answers [2 rows" in waited.output


def test_compile_validate_plans_every_model_on_duckdb(make_project, cli):
    root = make_project({**PROJECT, "models/broken.sql": "select missing_column from {{ ref('questions') }}"})
    assert cli("seed", "--project-dir", root).exit_code == 0
    result = cli("compile", "--project-dir", root, "--validate")
    assert result.exit_code == 1
    assert "OK    answers: planned by duckdb" in result.output
    assert "ERROR broken (models/broken.sql):" in result.output and "missing_column" in result.output
