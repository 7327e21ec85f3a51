"""End to end: the repo's example project through the CLI, in-process, on the embedded target."""

from __future__ import annotations

import json
import re
import shutil

import duckdb
import pytest

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SEEDS_STATUS = (
    'Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
    '"status": "INVALID_ARGUMENT"}}'
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from click.testing import CliRunner

    from bqbatch_sql.cli import main

    root = tmp_path_factory.mktemp("example")
    for name in ("models", "seeds", "macros"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "bqbatch_project.yml", root)
    result = CliRunner().invoke(main, ["build", "--project-dir", str(root)], catch_exceptions=False)
    return root, result


def _db(root):
    return duckdb.connect(str(root / "target" / "bqbatch.duckdb"), read_only=True)


def test_build_succeeds_and_reports_each_node(built):
    root, result = built
    assert result.exit_code == 0, result.output
    for line in ("OK    seed main.reviews", "OK    view main.stg_reviews",
                 "OK    batch_prediction main.review_sentiment [6 rows",
                 "OK    batch_prediction main.support_replies [3 rows", "OK    table main.review_report"):
        assert line in result.output
    assert "9 ok, 0 error, 0 skipped" in result.output


def test_every_request_row_ends_in_the_output_with_a_response_or_a_status(built):
    root, _ = built
    with _db(root) as db:
        rows = db.execute(
            "select thread_id, status, response is null from main.support_replies order by thread_id"
        ).fetchall()
        columns = [r[0] for r in db.execute("describe main.support_replies").fetchall()]
    assert columns == ["thread_id", "request", "response", "status", "processed_time"]
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1] in (None, "") and rows[0][2] is False
    assert rows[2] == (3, SEEDS_STATUS, True)  # the seeds' invalid role, word for word


def test_parsed_views_have_text_tokens_errors_and_typed_schema_columns(built):
    root, _ = built
    with _db(root) as db:
        recipe = db.execute(
            "select text, finish_reason, prompt_tokens, output_tokens, total_tokens from main.recipe_answers__parsed "
            "where dish = 'banana bread'").fetchone()
        error = db.execute("select error_code, error_message from main.support_replies__parsed where thread_id = 3").fetchone()
        typed = dict(db.execute(
            "select column_name, data_type from information_schema.columns where table_name = 'review_sentiment__parsed'"
        ).fetchall())
        sentiments = db.execute("select distinct sentiment from main.review_sentiment__parsed").fetchall()
        report = db.execute("select product, reviews, failed from main.review_report order by product").fetchall()
    assert re.fullmatch(r"\[bqbatch emulated\] request [0-9A-F]{8}", recipe[0])
    assert recipe[1] == "STOP" and recipe[2] > 0 and recipe[4] == recipe[2] + recipe[3]
    assert error == (400, "Please use a valid role: user, model.")
    assert typed["sentiment"] == "VARCHAR" and typed["score"] == "DOUBLE" and typed["needs_follow_up"] == "BOOLEAN"
    assert all(s[0] in ("positive", "neutral", "negative") for s in sentiments)
    assert report == [("blender", 2, 0), ("kettle", 2, 0), ("toaster", 2, 0)]


def test_run_results_record_the_batch_jobs(built):
    root, _ = built
    results = {r["name"]: r for r in json.loads((root / "target" / "run_results.json").read_text())["results"]}
    batch = results["support_replies"]["batch"]
    assert batch["state"] == "JOB_STATE_SUCCEEDED" and batch["job_name"].startswith("projects/")
    assert (batch["rows"], batch["succeeded"], batch["failed"]) == (3, 2, 1)
    assert batch["total_tokens"] == batch["prompt_tokens"] + batch["output_tokens"] > 0


def test_a_rerun_over_unchanged_rows_submits_nothing(built):
    from click.testing import CliRunner

    from bqbatch_sql.cli import main

    root, _ = built
    result = CliRunner().invoke(main, ["run", "--project-dir", str(root), "-s", "recipe_answers"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "submitted" not in result.output
    run = json.loads((root / "target" / "run_results.json").read_text())["results"][0]
    assert run["batch"]["reused"] is True and "up to date" in run["message"]
