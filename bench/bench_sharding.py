"""Spending only what is needed, at the real size: 450,000 rows past Vertex's 200,000-request job limit.

    python bench/bench_sharding.py [--rows 450000] [--limit 200000] [--retry]

On the embedded target (DuckDB + local predictor), in-process, one project:
  1. first run of an incremental model: the request table is cut into shards of at
     most --limit rows, one job each (at most 4 at once), unioned into one output;
  2. the same model, same rows, one job with no limit (what the shards cost extra);
  3. a rerun with unchanged input: the anti-join finds nothing to send;
  4. one row changed: one row sent, its answer merged into the 450,000-row output;
  5. (--retry) 1% of rows failed, then `bqbatch retry` sends only those.
Each step prints its wall time and where it went (bqbatch phases, timed in-process).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

MODEL = """
{{ config(materialized='batch_prediction', model='gemini-2.5-flash', incremental=true, unique_key='id',
          max_requests_per_job=var('limit', none), max_concurrent_jobs=4,
          predictor_options={'failure_rate': var('failure_rate', 0.0)}) }}
select id, category, {{ gemini_request(prompt="'Summarize this review: ' || body", system_instruction='Be brief.',
                                       temperature=0.2) }} as request
from {{ ref('reviews') }}
"""

PHASES = {
    "bqbatch_sql.batch": ["_data_checksum", "_parsed_view", "_summary"],
    "bqbatch_sql.incremental": ["plan", "merge", "select_rows"],
    "bqbatch_sql.sharding": ["new_group", "run_group", "union_outputs"],
    "bqbatch_sql.validate": ["validate_relation", "check_request_table"],
    "bqbatch_sql.cost": ["usage", "estimate"],
}


def timed_phases() -> dict[str, float]:
    """Wrap the stages of a batch run so each step can say where its time went."""
    import importlib

    spent: dict[str, float] = defaultdict(float)
    for module_name, names in PHASES.items():
        module = importlib.import_module(module_name)
        for name in names:
            original = getattr(module, name)

            @functools.wraps(original)
            def wrapper(*args, __original=original, __name=f"{module_name.rsplit('.', 1)[-1]}.{name}", **kwargs):
                start = time.perf_counter()
                try:
                    return __original(*args, **kwargs)
                finally:
                    spent[__name] += time.perf_counter() - start

            setattr(module, name, wrapper)
    # batch.py imported validate's functions by name inside the function: patched at their module, seen there.
    return spent


def write_project(root: Path, rows: int) -> None:
    # The rows of bench_batch_run (quotes and emoji in the text), with this bench's model.
    from bench_batch_run import write_project as write_reviews

    write_reviews(root, rows, MODEL)


def run(root: Path, spent: dict[str, float], label: str, *args: str) -> dict:
    from click.testing import CliRunner

    from bqbatch_sql.cli import main

    spent.clear()
    start = time.perf_counter()
    result = CliRunner().invoke(main, [*args, "--project-dir", str(root)], catch_exceptions=False)
    wall = time.perf_counter() - start
    out = result.output
    lines = [line.strip() for line in out.splitlines()
             if any(k in line for k in ("rows new", "predicted", "attempt", "up to date", "got one", "rows:"))]
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.01)
    print(f"\n## {label}\nwall {wall:.2f}s, exit {result.exit_code}; {phases}")
    for line in lines[:4]:
        print(f"  {line}")
    return {"wall": wall, "exit": result.exit_code, "output": out, "phases": dict(spent)}


def ledger(root: Path, sql: str) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(root / "target" / "bqbatch.duckdb"), read_only=True) as db:
        return db.execute(sql).fetchall()


def change_rows(root: Path, sql: str) -> None:
    import duckdb

    with duckdb.connect(str(root / "target" / "bqbatch.duckdb")) as db:
        db.execute(sql)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=450_000)
    parser.add_argument("--limit", type=int, default=200_000)
    parser.add_argument("--retry", action="store_true", help="also measure a run with 1%% failures and a retry")
    args = parser.parse_args()
    print(f"# bench_sharding: {args.rows:,} rows, limit {args.limit:,} requests per job, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    spent = timed_phases()
    limit = f"{{limit: {args.limit}}}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        write_project(root, args.rows)
        run(root, spent, "seed", "seed")

        first = run(root, spent, f"1. first run, sharded (limit {args.limit:,})", "run", "--vars", limit)
        shards = ledger(root, "select shard, max(total) from main.bqbatch_jobs where shard is not null "
                              "group by shard order by shard")
        print(f"  shard jobs: {len(shards)} ({', '.join(f'{n:,}' for _, n in shards)} rows)")
        assert first["exit"] == 0, first["output"]
        assert ledger(root, "select count(*), count(distinct id) from main.summaries") == [(args.rows, args.rows)]

        single = run(root, spent, "2. the same rows in one job (no limit, --full-refresh)", "run", "--full-refresh")
        assert single["exit"] == 0, single["output"]

        unchanged = run(root, spent, "3. rerun, input unchanged", "run", "--vars", limit)
        assert "nothing was submitted" in unchanged["output"], unchanged["output"]

        change_rows(root, f"update main.reviews set body = body || ' (edited)' where id = {args.rows // 2}")
        one = run(root, spent, "4. one row changed", "run", "--vars", limit)
        assert f"predicted 1 of {args.rows:,} rows" in one["output"], one["output"]
        assert ledger(root, "select count(*), count(distinct id) from main.summaries") == [(args.rows, args.rows)]

        if args.retry:
            failing = run(root, spent, "5a. --full-refresh with 1% of rows failing", "run", "--full-refresh",
                          "--vars", f"{{limit: {args.limit}, failure_rate: 0.01}}")
            failed = ledger(root, "select count(*) from main.summaries where status != ''")[0][0]
            print(f"  failed rows: {failed:,}")
            retried = run(root, spent, "5b. bqbatch retry", "retry", "--vars", limit)
            assert retried["exit"] == 0, retried["output"]
            assert ledger(root, "select count(*) from main.summaries where status != ''") == [(0,)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
