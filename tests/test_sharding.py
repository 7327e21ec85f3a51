"""Sharding past the per-job limit, through the CLI: local target (DuckDB) and the emulator (BigQuery + Vertex).

450 rows with a configured limit of 200 stand for 450,000 rows past Vertex's 200,000
(bench/bench_sharding.py runs the real size).
"""

from __future__ import annotations

import uuid

import pytest
from projects import (bigquery, bigquery_rows, emulator_for_valid_requests, fails, local_rows, ok, on_emulator,
                      vertex_jobs)

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


def _shard_jobs(root):
    """(shard, job, rows, state) of each shard job, from the ledger."""
    return local_rows(root, "select shard, job_name, max(total), arg_max(state, recorded_at) "
                            "from main.bqbatch_jobs where shard is not null group by shard, job_name "
                            "order by min(recorded_at)")


def test_450_rows_over_a_limit_of_200_become_three_jobs_and_one_output(make_project, cli):
    root = _project(make_project, "max_requests_per_job=200, max_concurrent_jobs=2")
    result = ok(cli("build", "--project-dir", root))
    for i in (1, 2, 3):
        assert f"submitted shard {i} of 3 (summaries__requests__s{i - 1})" in result.output
    jobs = _shard_jobs(root)
    assert [(s, n, state) for s, _, n, state in jobs] == [(0, 150, "JOB_STATE_SUCCEEDED"),
                                                          (1, 150, "JOB_STATE_SUCCEEDED"),
                                                          (2, 150, "JOB_STATE_SUCCEEDED")]
    assert len({job for _, job, _, _ in jobs}) == 3
    # At most two ran at once: the third was submitted (its first ledger row) after one of the first two ended.
    events = local_rows(root, "select shard, state, recorded_at from main.bqbatch_jobs where shard is not null "
                              "order by recorded_at")
    submitted = {}
    ended = {}
    for shard, state, at in events:
        submitted.setdefault(shard, at)
        if state == "JOB_STATE_SUCCEEDED":
            ended.setdefault(shard, at)
    assert submitted[2] >= min(ended[0], ended[1])
    # One output: every request row exactly once, all answered.
    assert local_rows(root, "select count(*), count(distinct id), count(*) filter (where status = '') "
                            "from main.summaries") == [(450, 450, 450)]
    assert local_rows(root, "select count(*) from main.summaries__parsed") == [(450,)]
    # The shard tables are gone; the group's summary row holds the run's tokens and cost.
    tables = [t for (t,) in local_rows(root, "select table_name from information_schema.tables")]
    assert not [t for t in tables if "__s" in t.replace("__summaries", "") or "__bqbatch_" in t]
    ((shard_count, state, total, tokens, cost),) = local_rows(
        root, "select shard_count, state, total, prompt_tokens, cost_usd from main.bqbatch_jobs "
              "where shard is null and group_id is not null")
    assert (shard_count, state, total) == (3, "JOB_STATE_SUCCEEDED", 450) and tokens > 0 and cost > 0
    status = ok(cli("status", "--project-dir", root)).output
    assert "3 jobs" in status and "SUCCEEDED" in status

    # Unchanged input: the rerun keeps the output, nothing submitted.
    again = ok(cli("run", "--project-dir", root))
    assert "up to date" in again.output and "submitted" not in again.output


def test_an_incremental_delta_past_the_limit_is_sharded_and_merged(make_project, cli):
    root = _project(make_project, "incremental=true, unique_key='id', max_requests_per_job=var('limit', 200)")
    ok(cli("build", "--project-dir", root, "--vars", "{limit: 1000}"))  # one job
    before = dict(local_rows(root, "select id, processed_time from main.summaries"))
    changed = ROWS.replace("note number 1", "changed note 1")  # ids 1, 10-19, 100-199: 111 rows
    (root / "seeds" / "notes.csv").write_text(changed + "".join(f"{i},added {i}\n" for i in range(451, 551)))
    ok(cli("seed", "--project-dir", root))
    result = ok(cli("run", "--project-dir", root))
    assert "211 of 550 rows new, changed or failed; 339 kept" in result.output
    assert "submitted shard 2 of 2" in result.output
    out = dict(local_rows(root, "select id, processed_time from main.summaries"))
    assert len(out) == 550
    kept = [i for i in before if not str(i).startswith("1")]
    assert all(out[i] == before[i] for i in kept) and all(out[i] > before[i] for i in (1, 10, 199))


# -- the emulator: re-attach shard by shard ------------------------------------------------------


@pytest.fixture(scope="module")
def emulator():
    with emulator_for_valid_requests() as emu:
        yield emu


@pytest.fixture
def cloud(emulator, make_project):
    def make(config: str = "max_requests_per_job=200"):
        dataset = f"shard_{uuid.uuid4().hex[:8]}"
        root = _project(make_project, config)
        return root, dataset, on_emulator(root, emulator, dataset)

    yield make
    emulator.faults.clear()


def _vertex_jobs(emulator, dataset):
    return vertex_jobs(emulator, dataset, bqbatch_model="summaries")


def _count(emulator, sql):
    return bigquery_rows(bigquery(emulator), sql)


def test_no_wait_then_wait_reattaches_shard_by_shard(emulator, cloud, cli):
    root, dataset, args = cloud("max_requests_per_job=200, max_concurrent_jobs=2")
    ok(cli("seed", *args))
    emulator.faults.hold_pending(jobs=None)
    submitted = ok(cli("run", *args, "--no-wait"))
    assert "submitted 2 of 3 shard jobs and returned (--no-wait)" in submitted.output
    assert len(_vertex_jobs(emulator, dataset)) == 2
    status = ok(cli("status", *args)).output
    assert "3 shard jobs" in status and "2 of 3 shards submitted" in status

    emulator.faults.clear()
    done = ok(cli("wait", *args))
    assert "re-attached to sharded submission" in done.output and "(0 of 3 shards done)" in done.output
    assert "submitted shard 3 of 3" in done.output
    assert "submitted shard 1 of 3" not in done.output and "submitted shard 2 of 3" not in done.output
    jobs = _vertex_jobs(emulator, dataset)
    assert len(jobs) == 3 and {j.display_name[-8:] for j in jobs} == {"-shard-0", "-shard-1", "-shard-2"}
    assert _count(emulator, f"select count(*), count(distinct id) from {dataset}.summaries") == [(450, 450)]


def test_a_failed_shard_is_all_a_rerun_submits(emulator, cloud, cli):
    root, dataset, args = cloud()
    ok(cli("seed", *args))
    emulator.faults.job_outcome("FAILED", message="Quota exhausted.", display_name=r"-shard-1$")
    failed = fails(cli("run", *args))
    assert "1 of 3 shard jobs did not succeed" in failed.output
    assert "shard 2: job projects/" in failed.output and "ended FAILED: Quota exhausted." in failed.output
    assert "2 shard(s) succeeded and are kept" in failed.output
    assert len(_vertex_jobs(emulator, dataset)) == 3

    again = ok(cli("run", *args))
    assert "re-attached" not in again.output
    assert "submitted shard 2 of 3" in again.output
    assert "submitted shard 1 of 3" not in again.output and "submitted shard 3 of 3" not in again.output
    jobs = _vertex_jobs(emulator, dataset)
    assert len(jobs) == 4 and jobs[-1].display_name.endswith("-shard-1")
    assert _count(emulator, f"select count(*), count(distinct id), countif(status = '') "
                            f"from {dataset}.summaries") == [(450, 450, 450)]
