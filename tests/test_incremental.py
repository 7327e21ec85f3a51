"""Incremental predictions and `bqbatch retry`, through the CLI: local target (DuckDB) and the emulator (BigQuery + Vertex)."""

from __future__ import annotations

import json
import textwrap

import duckdb
import pytest
from projects import (bigquery, bigquery_rows, emulator_for_valid_requests, fails, local_rows, ok, on_emulator,
                      vertex_jobs)

REVIEWS = "review_id,review_text\n1,great kettle\n2,bad lid\n3,ok blender\n4,loud fan\n"


def _model(config: str) -> str:
    return (f"{{{{ config(materialized='batch_prediction', {config}) }}}}\n"
            "select review_id, review_text, {{ gemini_request(prompt=\"'Classify: ' || review_text\") }} as request\n"
            "from {{ ref('reviews') }}\n")


def _project(make_project, config: str = "incremental=true, unique_key='review_id'", reviews: str = REVIEWS):
    # on_invalid='submit' unless a test says otherwise: request validation has tests of its own, and each
    # validation pass costs about a second here.
    if "on_invalid" not in config:
        config += ", on_invalid='submit'"
        if "predictor_options" not in config:  # valid by construction: no validation pass in the local job either
            config += ", predictor_options={'assume_valid': true}"
    return make_project({"seeds/reviews.csv": reviews, "models/sentiment.sql": _model(config)})


def _jobs(root) -> list[tuple]:
    """Jobs submitted so far: one (job, kind, rows) each, in order."""
    return local_rows(root, "select job_name, any_value(kind), max(total) from main.bqbatch_jobs "
                            "where shard is null group by job_name order by min(recorded_at)")


def _edit_seed(root, old, new):
    path = root / "seeds" / "reviews.csv"
    path.write_text(path.read_text().replace(old, new))


# -- incremental, local target -----------------------------------------------------------


def test_unchanged_input_submits_nothing_and_one_changed_row_submits_one(make_project, cli):
    root = _project(make_project, "incremental=true, unique_key='review_id', on_invalid='fail'")  # validates
    first = ok(cli("build", "--project-dir", root))
    assert "submitted projects/local" in first.output
    before = dict(local_rows(root, "select review_id, processed_time from main.sentiment"))
    answer = "json_extract_string(response, '$.candidates[0].content.parts[0].text')"
    before_answers = dict(local_rows(root, f"select review_id, {answer} from main.sentiment"))
    assert len(_jobs(root)) == 1

    again = ok(cli("run", "--project-dir", root))
    assert "up to date: 0 of 4 rows new, changed or failed; 4 kept; nothing was submitted" in again.output
    assert "submitted projects/" not in again.output and len(_jobs(root)) == 1
    assert dict(local_rows(root, "select review_id, processed_time from main.sentiment")) == before

    _edit_seed(root, "bad lid", "broken lid")
    ok(cli("seed", "--project-dir", root))
    changed = ok(cli("run", "--project-dir", root))
    assert "1 of 4 rows new, changed or failed; 3 kept" in changed.output
    assert "predicted 1 of 4 rows (incremental)" in changed.output
    jobs = _jobs(root)
    assert len(jobs) == 2 and jobs[1][1:] == ("incremental", 1)
    out = {r[0]: r[1:] for r in local_rows(
        root, f"select review_id, review_text, processed_time, {answer} from main.sentiment")}
    assert sorted(out) == [1, 2, 3, 4]  # one row per request row
    # a new answer, naming the changed request
    assert out[2][0] == "broken lid" and out[2][2] != before_answers[2] and out[2][1] > before[2]
    assert all(out[i][1] == before[i] for i in (1, 3, 4))  # the others kept their answers
    # The parsed view follows the merged output.
    assert local_rows(root, "select count(*) from main.sentiment__parsed") == [(4,)]
    # Work tables of the incremental job are gone.
    tables = [t for (t,) in local_rows(root, "select table_name from information_schema.tables")]
    assert not [t for t in tables if "delta" in t or "__bqbatch_" in t]


def test_rows_added_and_removed(make_project, cli):
    root = _project(make_project)
    ok(cli("build", "--project-dir", root))
    _edit_seed(root, "4,loud fan\n", "5,new toaster\n")
    ok(cli("seed", "--project-dir", root))
    result = ok(cli("run", "--project-dir", root))
    assert "1 of 4 rows new, changed or failed; 3 kept" in result.output
    assert [r[0] for r in local_rows(root, "select review_id from main.sentiment order by 1")] == [1, 2, 3, 5]

    # A row removed, nothing new: the output follows without a job.
    _edit_seed(root, "5,new toaster\n", "")
    ok(cli("seed", "--project-dir", root))
    result = ok(cli("run", "--project-dir", root))
    assert "nothing was submitted" in result.output and len(_jobs(root)) == 2
    assert [r[0] for r in local_rows(root, "select review_id from main.sentiment order by 1")] == [1, 2, 3]


def test_full_refresh_predicts_everything_again(make_project, cli):
    root = _project(make_project)
    ok(cli("build", "--project-dir", root))
    result = ok(cli("run", "--project-dir", root, "--full-refresh"))
    assert "submitted" in result.output
    assert _jobs(root)[-1][1:] == ("full", 4)


def test_without_a_unique_key_the_request_identifies_rows_and_duplicates_are_sent_once(make_project, cli):
    reviews = REVIEWS + "5,great kettle\n6,great kettle\n"
    root = _project(make_project, "incremental=true", reviews)
    ok(cli("build", "--project-dir", root))
    reviews_path = root / "seeds" / "reviews.csv"
    reviews_path.write_text(reviews_path.read_text() + "7,great kettle\n8,brand new text\n9,brand new text\n")
    ok(cli("seed", "--project-dir", root))
    result = ok(cli("run", "--project-dir", root))
    # Rows 7-9 are new rows, but only one request is new: it is sent once and answers rows 8 and 9.
    assert "1 of 9 rows new, changed or failed (one row per distinct request)" in result.output
    assert _jobs(root)[-1][1:] == ("incremental", 1)
    out = local_rows(root, "select review_id, status, response is not null from main.sentiment order by 1")
    assert [r[0] for r in out] == list(range(1, 10)) and all(r[1] == "" and r[2] for r in out)


def test_a_key_that_is_not_unique_is_refused_with_the_rows(make_project, cli):
    root = _project(make_project, reviews=REVIEWS + "2,another text\n")
    result = fails(cli("build", "--project-dir", root))  # checked on the first run already: nothing is submitted
    assert "submitted projects/" not in result.output
    assert "unique_key review_id does not identify one row" in result.output
    assert "2 (2 rows)" in result.output and "QUALIFY ROW_NUMBER()" in result.output


def test_an_unknown_unique_key_gets_the_closest_column(make_project, cli):
    root = _project(make_project, "incremental=true, unique_key='review'")
    result = fails(cli("build", "--project-dir", root))
    assert "unique_key 'review' is not a pass-through column" in result.output
    assert "review_id" in result.output


def test_failed_rows_are_resubmitted_by_the_next_run_but_refused_ones_wait(make_project, cli):
    # Rows the predictor fails transiently (failure_rate) go again; an invalid request (400) does not.
    files = {
        "seeds/reviews.csv": REVIEWS,
        "models/sentiment.sql": textwrap.dedent("""
            {{ config(materialized='batch_prediction', incremental=true, unique_key='review_id',
                      on_invalid='submit', predictor_options={'failure_rate': var('rate', 0.0)}) }}
            select review_id,
              {{ gemini_request(contents="JSON_ARRAY(JSON_OBJECT('role', IF(review_id = 4, 'tester', 'user'),
                   'parts', JSON_ARRAY(JSON_OBJECT('text', review_text))))") }} as request
            from {{ ref('reviews') }}
        """),
    }
    root = make_project(files)
    ok(cli("build", "--project-dir", root, "--vars", "{rate: 1.0}"))  # every row fails
    failed = local_rows(root, "select review_id, status from main.sentiment order by 1")
    assert all(status for _, status in failed)
    assert "Please use a valid role" in failed[3][1]

    result = ok(cli("run", "--project-dir", root))
    assert "3 of 4 rows new, changed or failed; 1 kept" in result.output
    out = local_rows(root, "select review_id, status from main.sentiment order by 1")
    assert [s for _, s in out[:3]] == ["", "", ""] and "valid role" in out[3][1]
    assert "nothing was submitted" in ok(cli("run", "--project-dir", root)).output


def test_a_ledger_from_before_incremental_runs_gets_the_new_columns(make_project, cli):
    root = _project(make_project)
    ok(cli("seed", "--project-dir", root))
    # The first ledger layout, with one finished job of the model in it.
    with duckdb.connect(str(root / "target" / "bqbatch.duckdb")) as db:
        db.execute("create table main.bqbatch_jobs (model_unique_id varchar, fingerprint varchar, data_checksum "
                   "varchar, backend varchar, job_name varchar, state varchar, total bigint, succeeded bigint, "
                   "failed bigint, incomplete bigint, source varchar, destination varchar, recorded_at timestamptz)")
        db.execute("insert into main.bqbatch_jobs values ('model.sentiment', 'old', '4:1', 'local', 'job-1', "
                   "'JOB_STATE_SUCCEEDED', 4, 4, 0, 0, 'main.sentiment__requests', 'main.sentiment', now())")
    ok(cli("run", "--project-dir", root))
    columns = [c for (c,) in local_rows(root, "select column_name from information_schema.columns "
                                              "where table_name = 'bqbatch_jobs' order by ordinal_position")]
    assert columns[-7:] == ["kind", "shard", "shard_count", "group_id", "prompt_tokens", "output_tokens", "cost_usd"]
    assert local_rows(root, "select job_name, kind from main.bqbatch_jobs order by recorded_at")[0] == ("job-1", None)
    assert [j[1] for j in _jobs(root)] == [None, "full"]  # the old job, then this run's


# -- bqbatch retry, local target ---------------------------------------------------------------


def test_retry_resubmits_only_failed_rows_until_they_succeed(make_project, cli):
    # A non-incremental model: retry works on whatever the last run left.
    reviews = "review_id,review_text\n" + "".join(f"{i},review number {i}\n" for i in range(1, 41))
    root = _project(make_project, "predictor_options={'failure_rate': var('rate', 0.0)}, max_retries=5",
                    reviews)
    ok(cli("build", "--project-dir", root, "--vars", "{rate: 0.5}"))
    failed = {r[0] for r in local_rows(root, "select review_id from main.sentiment where status != ''")}
    answered = dict(local_rows(root, "select review_id, processed_time from main.sentiment where status = ''"))
    assert 5 < len(failed) < 35

    result = ok(cli("retry", "--project-dir", root, "-s", "sentiment"))
    assert f"resubmitting {len(failed):,} row(s) without an answer" in result.output
    assert f"{len(failed)} of {len(failed)} row(s) without an answer got one; 0 still fail" in result.output
    out = local_rows(root, "select review_id, status, processed_time from main.sentiment order by 1")
    assert [r[0] for r in out] == list(range(1, 41)) and all(r[1] == "" for r in out)
    # Rows that had an answer were not sent again.
    assert all(answered[i] == t for i, _, t in out if i in answered)
    retries = [j for j in _jobs(root) if j[1] == "retry"]
    assert retries[0][2] == len(failed)
    results = json.loads((root / "target" / "run_results.json").read_text())
    assert results["args"]["command"] == "retry"
    assert results["results"][0]["batch"]["submitted_rows"] == len(failed)

    # Nothing left: a second retry sends nothing.
    again = ok(cli("retry", "--project-dir", root))
    assert "nothing to retry: every row has an answer" in again.output
    assert len(_jobs(root)) == 1 + len(retries)


def test_retry_stops_when_an_attempt_makes_no_progress(make_project, cli):
    root = _project(make_project, "predictor_options={'failure_rate': 1.0}, max_retries=4")
    ok(cli("build", "--project-dir", root))
    # Rows still fail: exit code 2, and the output is in place, with their errors.
    result = fails(cli("retry", "--project-dir", root, "-s", "sentiment"), exit_code=2)
    assert "1 attempt(s): 0 of 4 row(s) without an answer got one; 4 still fail " \
           "(stopped: attempt 1 made no progress)" in result.output
    assert len([j for j in _jobs(root) if j[1] == "retry"]) == 1
    assert local_rows(root, "select count(*) from main.sentiment") == [(4,)]


def test_retry_needs_a_previous_run(make_project, cli):
    root = _project(make_project)
    ok(cli("seed", "--project-dir", root))
    result = fails(cli("retry", "--project-dir", root))
    assert "there is no output to retry yet" in result.output and "bqbatch run -s sentiment" in result.output


# -- the emulator: BigQuery tables, Vertex jobs ----------------------------------------------------


@pytest.fixture(scope="module")
def emulator():
    with emulator_for_valid_requests() as emu:
        yield emu


@pytest.fixture
def cloud_project(emulator, make_project):
    """A project whose profile targets BigQuery + Vertex on the emulator, in a dataset of its own."""
    import uuid

    def make(config: str, reviews: str = REVIEWS):
        dataset = f"inc_{uuid.uuid4().hex[:8]}"
        root = _project(make_project, config, reviews)
        return root, dataset, on_emulator(root, emulator, dataset)

    return make


def _vertex_jobs(emulator, dataset: str) -> list:
    return vertex_jobs(emulator, dataset, bqbatch_model="sentiment")


def test_incremental_on_bigquery_and_vertex(emulator, cloud_project, cli):
    root, dataset, args = cloud_project("incremental=true, unique_key='review_id'")
    ok(cli("build", *args))
    assert len(_vertex_jobs(emulator, dataset)) == 1

    again = ok(cli("run", *args))
    assert "nothing was submitted" in again.output
    assert len(_vertex_jobs(emulator, dataset)) == 1  # no create call at all

    _edit_seed(root, "ok blender", "good blender")
    ok(cli("seed", *args))
    changed = ok(cli("run", *args))
    assert "1 of 4 rows new, changed or failed; 3 kept" in changed.output
    jobs = _vertex_jobs(emulator, dataset)
    assert len(jobs) == 2 and jobs[-1].src.bigquery_uri.endswith("sentiment__requests_delta")
    out = bigquery_rows(bigquery(emulator), f"select review_id, review_text, status from {dataset}.sentiment "
                                            "order by 1")
    assert out == [(1, "great kettle", ""), (2, "bad lid", ""), (3, "good blender", ""), (4, "loud fan", "")]
    status = ok(cli("status", *args))
    assert "SUCCEEDED" in status.output and "$0.0000" in status.output


def test_retry_on_bigquery_and_vertex(emulator, cloud_project, cli):
    reviews = "review_id,review_text\n" + "".join(f"{i},review number {i}\n" for i in range(1, 21))
    root, dataset, args = cloud_project("max_retries=3", reviews)
    ok(cli("seed", *args))
    emulator.faults.job_outcome("PARTIALLY_SUCCEEDED", failed_fraction=0.5)
    fails(cli("run", *args), exit_code=2)
    bq = bigquery(emulator)
    ((failed,),) = bigquery_rows(bq, f"select countif(status != '') from {dataset}.sentiment")
    assert failed > 0

    result = ok(cli("retry", *args, "-s", "sentiment"))
    assert f"{failed} of {failed} row(s) without an answer got one; 0 still fail" in result.output
    rows = bigquery_rows(bq, f"select count(*), countif(status = ''), count(distinct review_id) "
                             f"from {dataset}.sentiment")
    assert rows == [(20, 20, 20)]
    retry_job = _vertex_jobs(emulator, dataset)[-1]
    assert retry_job.src.bigquery_uri.endswith("sentiment__requests_retry")


def test_an_incremental_job_left_with_no_wait_is_merged_by_wait(emulator, cloud_project, cli):
    root, dataset, args = cloud_project("incremental=true, unique_key='review_id'")
    ok(cli("build", *args))
    _edit_seed(root, "loud fan", "quiet fan")
    ok(cli("seed", *args))
    submitted = ok(cli("run", *args, "--no-wait"))
    assert "1 of 4 rows new, changed or failed" in submitted.output and "(--no-wait)" in submitted.output

    done = ok(cli("wait", *args))
    assert "re-attached to live job" in done.output
    assert "predicted 1 of 4 rows (incremental); the other 3 kept their answers" in done.output
    out = bigquery_rows(bigquery(emulator), f"select review_id, review_text, status from {dataset}.sentiment "
                                            "order by 1")
    assert out == [(1, "great kettle", ""), (2, "bad lid", ""), (3, "ok blender", ""), (4, "quiet fan", "")]
    assert len(_vertex_jobs(emulator, dataset)) == 2
