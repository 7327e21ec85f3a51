"""Incremental predictions and `bqbatch retry`, through the CLI: local target (DuckDB) and the emulator (BigQuery + Vertex)."""

from __future__ import annotations

import json
import textwrap

import duckdb
import pytest

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


def _db(root):
    return duckdb.connect(str(root / "target" / "bqbatch.duckdb"), read_only=True)


def _rows(root, sql):
    with _db(root) as db:
        return db.execute(sql).fetchall()


def _jobs(root) -> list[tuple]:
    """Jobs submitted so far: one (job, kind, rows) each, in order."""
    return _rows(root, "select job_name, any_value(kind), max(total) from main.bqbatch_jobs "
                       "where shard is null group by job_name order by min(recorded_at)")


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _edit_seed(root, old, new):
    path = root / "seeds" / "reviews.csv"
    path.write_text(path.read_text().replace(old, new))


# -- incremental, local target -----------------------------------------------------------


def test_unchanged_input_submits_nothing_and_one_changed_row_submits_one(make_project, cli):
    root = _project(make_project, "incremental=true, unique_key='review_id', on_invalid='fail'")  # validates
    first = _ok(cli("build", "--project-dir", root))
    assert "submitted projects/local" in first.output
    before = dict(_rows(root, "select review_id, processed_time from main.sentiment"))
    assert len(_jobs(root)) == 1

    again = _ok(cli("run", "--project-dir", root))
    assert "up to date: 0 of 4 rows new, changed or failed; 4 kept; nothing was submitted" in again.output
    assert "submitted projects/" not in again.output and len(_jobs(root)) == 1
    assert dict(_rows(root, "select review_id, processed_time from main.sentiment")) == before

    _edit_seed(root, "bad lid", "broken lid")
    _ok(cli("seed", "--project-dir", root))
    changed = _ok(cli("run", "--project-dir", root))
    assert "1 of 4 rows new, changed or failed; 3 kept" in changed.output
    assert "predicted 1 of 4 rows (incremental)" in changed.output
    jobs = _jobs(root)
    assert len(jobs) == 2 and jobs[1][1:] == ("incremental", 1)
    out = {r[0]: r[1:] for r in _rows(root, "select review_id, review_text, processed_time, "
                                             "json_extract_string(response, '$.candidates[0].content.parts[0].text') "
                                             "from main.sentiment")}
    assert sorted(out) == [1, 2, 3, 4]  # one row per request row
    assert out[2][0] == "broken lid" and "broken lid" in out[2][2] and out[2][1] > before[2]
    assert all(out[i][1] == before[i] for i in (1, 3, 4))  # the others kept their answers
    # The parsed view follows the merged output.
    assert _rows(root, "select count(*) from main.sentiment__parsed") == [(4,)]
    # Work tables of the incremental job are gone.
    tables = [t for (t,) in _rows(root, "select table_name from information_schema.tables")]
    assert not [t for t in tables if "delta" in t or "__bqbatch_" in t]


def test_rows_added_and_removed(make_project, cli):
    root = _project(make_project)
    _ok(cli("build", "--project-dir", root))
    _edit_seed(root, "4,loud fan\n", "5,new toaster\n")
    _ok(cli("seed", "--project-dir", root))
    result = _ok(cli("run", "--project-dir", root))
    assert "1 of 4 rows new, changed or failed; 3 kept" in result.output
    assert [r[0] for r in _rows(root, "select review_id from main.sentiment order by 1")] == [1, 2, 3, 5]

    # A row removed, nothing new: the output follows without a job.
    _edit_seed(root, "5,new toaster\n", "")
    _ok(cli("seed", "--project-dir", root))
    result = _ok(cli("run", "--project-dir", root))
    assert "nothing was submitted" in result.output and len(_jobs(root)) == 2
    assert [r[0] for r in _rows(root, "select review_id from main.sentiment order by 1")] == [1, 2, 3]


def test_full_refresh_predicts_everything_again(make_project, cli):
    root = _project(make_project)
    _ok(cli("build", "--project-dir", root))
    result = _ok(cli("run", "--project-dir", root, "--full-refresh"))
    assert "submitted" in result.output
    assert _jobs(root)[-1][1:] == ("full", 4)


def test_without_a_unique_key_the_request_identifies_rows_and_duplicates_are_sent_once(make_project, cli):
    reviews = REVIEWS + "5,great kettle\n6,great kettle\n"
    root = _project(make_project, "incremental=true", reviews)
    _ok(cli("build", "--project-dir", root))
    reviews_path = root / "seeds" / "reviews.csv"
    reviews_path.write_text(reviews_path.read_text() + "7,great kettle\n8,brand new text\n9,brand new text\n")
    _ok(cli("seed", "--project-dir", root))
    result = _ok(cli("run", "--project-dir", root))
    # Rows 7-9 are new rows, but only one request is new: it is sent once and answers rows 8 and 9.
    assert "1 of 9 rows new, changed or failed (one row per distinct request)" in result.output
    assert _jobs(root)[-1][1:] == ("incremental", 1)
    out = _rows(root, "select review_id, status, response is not null from main.sentiment order by 1")
    assert [r[0] for r in out] == list(range(1, 10)) and all(r[1] == "" and r[2] for r in out)


def test_a_key_that_is_not_unique_is_refused_with_the_rows(make_project, cli):
    root = _project(make_project, reviews=REVIEWS + "2,another text\n")
    result = cli("build", "--project-dir", root)  # checked on the first run already: nothing is submitted
    assert result.exit_code == 1 and "submitted projects/" not in result.output
    assert "unique_key review_id does not identify one row" in result.output
    assert "2 (2 rows)" in result.output and "QUALIFY ROW_NUMBER()" in result.output


def test_an_unknown_unique_key_gets_the_closest_column(make_project, cli):
    root = _project(make_project, "incremental=true, unique_key='review'")
    result = cli("build", "--project-dir", root)
    assert result.exit_code == 1
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
    _ok(cli("build", "--project-dir", root, "--vars", "{rate: 1.0}"))  # every row fails
    failed = _rows(root, "select review_id, status from main.sentiment order by 1")
    assert all(status for _, status in failed)
    assert "Please use a valid role" in failed[3][1]

    result = _ok(cli("run", "--project-dir", root))
    assert "3 of 4 rows new, changed or failed; 1 kept" in result.output
    out = _rows(root, "select review_id, status from main.sentiment order by 1")
    assert [s for _, s in out[:3]] == ["", "", ""] and "valid role" in out[3][1]
    assert "nothing was submitted" in _ok(cli("run", "--project-dir", root)).output


def test_a_ledger_from_before_incremental_runs_gets_the_new_columns(make_project, cli):
    root = _project(make_project)
    _ok(cli("seed", "--project-dir", root))
    # The first ledger layout, with one finished job of the model in it.
    with duckdb.connect(str(root / "target" / "bqbatch.duckdb")) as db:
        db.execute("create table main.bqbatch_jobs (model_unique_id varchar, fingerprint varchar, data_checksum "
                   "varchar, backend varchar, job_name varchar, state varchar, total bigint, succeeded bigint, "
                   "failed bigint, incomplete bigint, source varchar, destination varchar, recorded_at timestamptz)")
        db.execute("insert into main.bqbatch_jobs values ('model.sentiment', 'old', '4:1', 'local', 'job-1', "
                   "'JOB_STATE_SUCCEEDED', 4, 4, 0, 0, 'main.sentiment__requests', 'main.sentiment', now())")
    _ok(cli("run", "--project-dir", root))
    columns = [c for (c,) in _rows(root, "select column_name from information_schema.columns "
                                         "where table_name = 'bqbatch_jobs' order by ordinal_position")]
    assert columns[-7:] == ["kind", "shard", "shard_count", "group_id", "prompt_tokens", "output_tokens", "cost_usd"]
    assert _rows(root, "select job_name, kind from main.bqbatch_jobs order by recorded_at")[0] == ("job-1", None)
    assert [j[1] for j in _jobs(root)] == [None, "full"]  # the old job, then this run's


# -- bqbatch retry, local target ---------------------------------------------------------------


def test_retry_resubmits_only_failed_rows_until_they_succeed(make_project, cli):
    # A non-incremental model: retry works on whatever the last run left.
    reviews = "review_id,review_text\n" + "".join(f"{i},review number {i}\n" for i in range(1, 41))
    root = _project(make_project, "predictor_options={'failure_rate': var('rate', 0.0)}, max_retries=5",
                    reviews)
    _ok(cli("build", "--project-dir", root, "--vars", "{rate: 0.5}"))
    failed = {r[0] for r in _rows(root, "select review_id from main.sentiment where status != ''")}
    answered = dict(_rows(root, "select review_id, processed_time from main.sentiment where status = ''"))
    assert 5 < len(failed) < 35

    result = _ok(cli("retry", "--project-dir", root, "-s", "sentiment"))
    assert f"resubmitting {len(failed):,} row(s) without an answer" in result.output
    assert f"{len(failed)} of {len(failed)} row(s) without an answer got one; 0 still fail" in result.output
    out = _rows(root, "select review_id, status, processed_time from main.sentiment order by 1")
    assert [r[0] for r in out] == list(range(1, 41)) and all(r[1] == "" for r in out)
    # Rows that had an answer were not sent again.
    assert all(answered[i] == t for i, _, t in out if i in answered)
    retries = [j for j in _jobs(root) if j[1] == "retry"]
    assert retries[0][2] == len(failed)
    results = json.loads((root / "target" / "run_results.json").read_text())
    assert results["args"]["command"] == "retry"
    assert results["results"][0]["batch"]["submitted_rows"] == len(failed)

    # Nothing left: a second retry sends nothing.
    again = _ok(cli("retry", "--project-dir", root))
    assert "nothing to retry: every row has an answer" in again.output
    assert len(_jobs(root)) == 1 + len(retries)


def test_retry_stops_when_an_attempt_makes_no_progress(make_project, cli):
    root = _project(make_project, "predictor_options={'failure_rate': 1.0}, max_retries=4")
    _ok(cli("build", "--project-dir", root))
    result = cli("retry", "--project-dir", root, "-s", "sentiment")
    assert result.exit_code == 2, result.output  # rows still fail: the output is in place, with their errors
    assert "1 attempt(s): 0 of 4 row(s) without an answer got one; 4 still fail " \
           "(stopped: attempt 1 made no progress)" in result.output
    assert len([j for j in _jobs(root) if j[1] == "retry"]) == 1
    assert _rows(root, "select count(*) from main.sentiment") == [(4,)]


def test_retry_needs_a_previous_run(make_project, cli):
    root = _project(make_project)
    _ok(cli("seed", "--project-dir", root))
    result = cli("retry", "--project-dir", root)
    assert result.exit_code == 1
    assert "there is no output to retry yet" in result.output and "bqbatch run -s sentiment" in result.output


# -- the emulator: BigQuery tables, Vertex jobs ----------------------------------------------------

PROJECT, REGION = "emu-project", "us-central1"


@pytest.fixture(scope="module")
def emulator():
    from bqbatch_sql.emulator import Emulator

    # The emulated Vertex runs the local predictor: spared the validation pass of requests valid by construction.
    with Emulator(vertex_options={"pending_seconds": 0.02, "predictor_options": {"assume_valid": True}}) as emu:
        yield emu


@pytest.fixture
def cloud_project(emulator, make_project):
    """A project whose profile targets BigQuery + Vertex on the emulator, in a dataset of its own."""
    import uuid

    def make(config: str, reviews: str = REVIEWS):
        dataset = f"inc_{uuid.uuid4().hex[:8]}"
        root = _project(make_project, config, reviews)
        (root / "bqbatch_project.yml").write_text("name: demo\nprofile: demo\n")
        (root / "profiles.yml").write_text(textwrap.dedent(f"""
            demo:
              target: prod
              outputs:
                prod:
                  type: bigquery
                  method: emulator
                  project: {PROJECT}
                  dataset: {dataset}
                  location: {REGION}
                  api_endpoint: {emulator.url}
                  retry_initial_seconds: 0.01
                  predictor:
                    type: vertex
                    base_url: {emulator.url}
                    poll_initial_seconds: 0.02
                    poll_max_seconds: 0.1
                    retry_initial_seconds: 0.01
        """))
        return root, dataset

    return make


def _bq(emulator):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": emulator.url})


def _vertex_jobs(emulator, dataset: str) -> list:
    """The Vertex jobs writing into `dataset`, oldest first, as google-genai lists them."""
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    client = genai.Client(vertexai=True, project=PROJECT, location=REGION,
                          credentials=google.oauth2.credentials.Credentials(token="test"),
                          http_options=types.HttpOptions(base_url=emulator.url, api_version="v1"))
    found = client.batches.list(config=types.ListBatchJobsConfig(filter='labels.bqbatch_model="sentiment"',
                                                                 page_size=100))
    return sorted((j for j in found if f".{dataset}." in j.dest.bigquery_uri), key=lambda j: j.create_time)


def test_incremental_on_bigquery_and_vertex(emulator, cloud_project, cli):
    root, dataset = cloud_project("incremental=true, unique_key='review_id'")
    args = ("--project-dir", root, "--profiles-dir", root)
    _ok(cli("build", *args))
    assert len(_vertex_jobs(emulator, dataset)) == 1

    again = _ok(cli("run", *args))
    assert "nothing was submitted" in again.output
    assert len(_vertex_jobs(emulator, dataset)) == 1  # no create call at all

    _edit_seed(root, "ok blender", "good blender")
    _ok(cli("seed", *args))
    changed = _ok(cli("run", *args))
    assert "1 of 4 rows new, changed or failed; 3 kept" in changed.output
    jobs = _vertex_jobs(emulator, dataset)
    assert len(jobs) == 2 and jobs[-1].src.bigquery_uri.endswith("sentiment__requests_delta")
    bq = _bq(emulator)
    out = [tuple(r.values()) for r in bq.query_and_wait(
        f"select review_id, review_text, status from {dataset}.sentiment order by 1")]
    assert out == [(1, "great kettle", ""), (2, "bad lid", ""), (3, "good blender", ""), (4, "loud fan", "")]
    status = _ok(cli("status", *args))
    assert "SUCCEEDED" in status.output and "$0.0000" in status.output


def test_retry_on_bigquery_and_vertex(emulator, cloud_project, cli):
    reviews = "review_id,review_text\n" + "".join(f"{i},review number {i}\n" for i in range(1, 21))
    root, dataset = cloud_project("max_retries=3", reviews)
    args = ("--project-dir", root, "--profiles-dir", root)
    _ok(cli("seed", *args))
    emulator.faults.job_outcome("PARTIALLY_SUCCEEDED", failed_fraction=0.5)
    first = cli("run", *args)
    assert first.exit_code == 2, first.output
    bq = _bq(emulator)
    (failed,) = [r[0] for r in bq.query_and_wait(f"select countif(status != '') from {dataset}.sentiment")]
    assert failed > 0

    result = _ok(cli("retry", *args, "-s", "sentiment"))
    assert f"{failed} of {failed} row(s) without an answer got one; 0 still fail" in result.output
    rows = [tuple(r.values()) for r in bq.query_and_wait(
        f"select count(*), countif(status = ''), count(distinct review_id) from {dataset}.sentiment")]
    assert rows == [(20, 20, 20)]
    retry_job = _vertex_jobs(emulator, dataset)[-1]
    assert retry_job.src.bigquery_uri.endswith("sentiment__requests_retry")


def test_an_incremental_job_left_with_no_wait_is_merged_by_wait(emulator, cloud_project, cli):
    root, dataset = cloud_project("incremental=true, unique_key='review_id'")
    args = ("--project-dir", root, "--profiles-dir", root)
    _ok(cli("build", *args))
    _edit_seed(root, "loud fan", "quiet fan")
    _ok(cli("seed", *args))
    submitted = _ok(cli("run", *args, "--no-wait"))
    assert "1 of 4 rows new, changed or failed" in submitted.output and "(--no-wait)" in submitted.output

    done = _ok(cli("wait", *args))
    assert "re-attached to live job" in done.output
    assert "predicted 1 of 4 rows (incremental); the other 3 kept their answers" in done.output
    out = [tuple(r.values()) for r in _bq(emulator).query_and_wait(
        f"select review_id, review_text, status from {dataset}.sentiment order by 1")]
    assert out == [(1, "great kettle", ""), (2, "bad lid", ""), (3, "ok blender", ""), (4, "quiet fan", "")]
    assert len(_vertex_jobs(emulator, dataset)) == 2
