"""Sharding past the per-job limit, through the CLI: local target (DuckDB) and the emulator (BigQuery + Vertex).

450 rows with a configured limit of 200 stand for 450,000 rows past Vertex's 200,000
(bench/bench_sharding.py runs the real size).
"""

from __future__ import annotations

import textwrap
import uuid

import duckdb
import pytest

ROWS = "id,note\n" + "".join(f"{i},note number {i}\n" for i in range(1, 451))


def _model(config: str) -> str:
    # The requests are valid by construction: assume_valid spares each local job its validation pass (about a
    # second of query planning per job, whatever its size), which would dominate these tests.
    return (f"{{{{ config(materialized='batch_prediction', on_invalid='submit', "
            f"predictor_options={{'assume_valid': true}}, {config}) }}}}\n"
            "select id, note, {{ gemini_request(prompt=\"'Summarize: ' || note\") }} as request\n"
            "from {{ ref('notes') }}\n")


def _project(make_project, config: str = "max_requests_per_job=200", rows: str = ROWS):
    return make_project({"seeds/notes.csv": rows, "models/summaries.sql": _model(config)})


def _rows(root, sql):
    with duckdb.connect(str(root / "target" / "bqbatch.duckdb"), read_only=True) as db:
        return db.execute(sql).fetchall()


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _shard_jobs(root):
    """(shard, job, rows, state) of each shard job, from the ledger."""
    return _rows(root, "select shard, job_name, max(total), arg_max(state, recorded_at) from main.bqbatch_jobs "
                       "where shard is not null group by shard, job_name order by min(recorded_at)")


def test_450_rows_over_a_limit_of_200_become_three_jobs_and_one_output(make_project, cli):
    root = _project(make_project, "max_requests_per_job=200, max_concurrent_jobs=2")
    result = _ok(cli("build", "--project-dir", root))
    for i in (1, 2, 3):
        assert f"submitted shard {i} of 3 (summaries__requests__s{i - 1})" in result.output
    jobs = _shard_jobs(root)
    assert [(s, n, state) for s, _, n, state in jobs] == [(0, 150, "JOB_STATE_SUCCEEDED"),
                                                          (1, 150, "JOB_STATE_SUCCEEDED"),
                                                          (2, 150, "JOB_STATE_SUCCEEDED")]
    assert len({job for _, job, _, _ in jobs}) == 3
    # At most two ran at once: the third was submitted (its first ledger row) after one of the first two ended.
    events = _rows(root, "select shard, state, recorded_at from main.bqbatch_jobs where shard is not null "
                         "order by recorded_at")
    submitted = {}
    ended = {}
    for shard, state, at in events:
        submitted.setdefault(shard, at)
        if state == "JOB_STATE_SUCCEEDED":
            ended.setdefault(shard, at)
    assert submitted[2] >= min(ended[0], ended[1])
    # One output: every request row exactly once, all answered.
    assert _rows(root, "select count(*), count(distinct id), count(*) filter (where status = '') "
                       "from main.summaries") == [(450, 450, 450)]
    assert _rows(root, "select count(*) from main.summaries__parsed") == [(450,)]
    # The shard tables are gone; the group's summary row holds the run's tokens and cost.
    tables = [t for (t,) in _rows(root, "select table_name from information_schema.tables")]
    assert not [t for t in tables if "__s" in t.replace("__summaries", "") or "__bqbatch_" in t]
    ((shard_count, state, total, tokens, cost),) = _rows(
        root, "select shard_count, state, total, prompt_tokens, cost_usd from main.bqbatch_jobs "
              "where shard is null and group_id is not null")
    assert (shard_count, state, total) == (3, "JOB_STATE_SUCCEEDED", 450) and tokens > 0 and cost > 0
    status = _ok(cli("status", "--project-dir", root)).output
    assert "3 jobs" in status and "SUCCEEDED" in status

    # Unchanged input: the rerun keeps the output, nothing submitted.
    again = _ok(cli("run", "--project-dir", root))
    assert "up to date" in again.output and "submitted" not in again.output


def test_an_incremental_delta_past_the_limit_is_sharded_and_merged(make_project, cli):
    root = _project(make_project, "incremental=true, unique_key='id', max_requests_per_job=var('limit', 200)")
    _ok(cli("build", "--project-dir", root, "--vars", "{limit: 1000}"))  # one job
    before = dict(_rows(root, "select id, processed_time from main.summaries"))
    changed = ROWS.replace("note number 1", "changed note 1")  # ids 1, 10-19, 100-199: 111 rows
    (root / "seeds" / "notes.csv").write_text(changed + "".join(f"{i},added {i}\n" for i in range(451, 551)))
    _ok(cli("seed", "--project-dir", root))
    result = _ok(cli("run", "--project-dir", root))
    assert "211 of 550 rows new, changed or failed; 339 kept" in result.output
    assert "submitted shard 2 of 2" in result.output
    out = dict(_rows(root, "select id, processed_time from main.summaries"))
    assert len(out) == 550
    kept = [i for i in before if not str(i).startswith("1")]
    assert all(out[i] == before[i] for i in kept) and all(out[i] > before[i] for i in (1, 10, 199))


# -- the emulator: re-attach shard by shard ------------------------------------------------------

PROJECT, REGION = "emu-project", "us-central1"


@pytest.fixture(scope="module")
def emulator():
    from bqbatch_sql.emulator import Emulator

    # The emulated Vertex runs the local predictor: it too is spared the validation pass of valid requests.
    with Emulator(vertex_options={"pending_seconds": 0.02, "predictor_options": {"assume_valid": True}}) as emu:
        yield emu


@pytest.fixture
def cloud(emulator, make_project):
    def make(config: str = "max_requests_per_job=200"):
        dataset = f"shard_{uuid.uuid4().hex[:8]}"
        root = _project(make_project, config)
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
        return root, dataset, ("--project-dir", root, "--profiles-dir", root)

    yield make
    emulator.faults.clear()


def _vertex_jobs(emulator, dataset):
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    client = genai.Client(vertexai=True, project=PROJECT, location=REGION,
                          credentials=google.oauth2.credentials.Credentials(token="test"),
                          http_options=types.HttpOptions(base_url=emulator.url, api_version="v1"))
    found = client.batches.list(config=types.ListBatchJobsConfig(filter='labels.bqbatch_model="summaries"',
                                                                 page_size=100))
    return sorted((j for j in found if f".{dataset}." in j.dest.bigquery_uri), key=lambda j: j.create_time)


def _count(emulator, sql):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                         client_options={"api_endpoint": emulator.url})
    return [tuple(r.values()) for r in bq.query_and_wait(sql)]


def test_no_wait_then_wait_reattaches_shard_by_shard(emulator, cloud, cli):
    root, dataset, args = cloud("max_requests_per_job=200, max_concurrent_jobs=2")
    _ok(cli("seed", *args))
    emulator.faults.hold_pending(jobs=None)
    submitted = _ok(cli("run", *args, "--no-wait"))
    assert "submitted 2 of 3 shard jobs and returned (--no-wait)" in submitted.output
    assert len(_vertex_jobs(emulator, dataset)) == 2
    status = _ok(cli("status", *args)).output
    assert "3 shard jobs" in status and "2 of 3 shards submitted" in status

    emulator.faults.clear()
    done = _ok(cli("wait", *args))
    assert "re-attached to sharded submission" in done.output and "(0 of 3 shards done)" in done.output
    assert "submitted shard 3 of 3" in done.output
    assert "submitted shard 1 of 3" not in done.output and "submitted shard 2 of 3" not in done.output
    jobs = _vertex_jobs(emulator, dataset)
    assert len(jobs) == 3 and {j.display_name[-8:] for j in jobs} == {"-shard-0", "-shard-1", "-shard-2"}
    assert _count(emulator, f"select count(*), count(distinct id) from {dataset}.summaries") == [(450, 450)]


def test_a_failed_shard_is_all_a_rerun_submits(emulator, cloud, cli):
    root, dataset, args = cloud()
    _ok(cli("seed", *args))
    emulator.faults.job_outcome("FAILED", message="Quota exhausted.", display_name=r"-shard-1$")
    failed = cli("run", *args)
    assert failed.exit_code == 1, failed.output
    assert "1 of 3 shard jobs did not succeed" in failed.output
    assert "shard 2: job projects/" in failed.output and "ended FAILED: Quota exhausted." in failed.output
    assert "2 shard(s) succeeded and are kept" in failed.output
    assert len(_vertex_jobs(emulator, dataset)) == 3

    again = _ok(cli("run", *args))
    assert "re-attached" not in again.output
    assert "submitted shard 2 of 3" in again.output
    assert "submitted shard 1 of 3" not in again.output and "submitted shard 3 of 3" not in again.output
    jobs = _vertex_jobs(emulator, dataset)
    assert len(jobs) == 4 and jobs[-1].display_name.endswith("-shard-1")
    assert _count(emulator, f"select count(*), count(distinct id), countif(status = '') "
                            f"from {dataset}.summaries") == [(450, 450, 450)]
