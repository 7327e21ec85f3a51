"""1,000,000 request rows through `bqbatch build` on the embedded target, next to the DuckDB floor.

    python bench/bench_batch_run.py [--rows 1000000]

The run: seed (CSV) -> batch_prediction model (gemini_request) -> request table ->
validation -> local predictor -> output table -> parsed view, then a query that reads
every parsed row. Wall time and peak RSS of the bqbatch process are reported.
The floor: the same request JSON built, and the same columns extracted from responses,
in plain DuckDB SQL on the same machine, with no bqbatch in between.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = """
{{ config(materialized='batch_prediction', model='gemini-2.5-flash') }}
select id, category, {{ gemini_request(prompt="'Summarize this review: ' || body", system_instruction='Be brief.', temperature=0.2) }} as request
from {{ ref('reviews') }}
"""


def write_project(root: Path, rows: int) -> None:
    import duckdb

    (root / "models").mkdir(parents=True)
    (root / "seeds").mkdir()
    (root / "bqbatch_project.yml").write_text("name: bench\n")
    (root / "models" / "summaries.sql").write_text(MODEL)
    duckdb.sql(
        f"copy (select i as id, ['kettle','toaster','blender'][1 + i % 3] as category, "
        f"'Review ' || i || ': it \"works\" — mostly. 😀 ' || repeat('x', i % 50) as body "
        f"from range({rows}) t(i)) to '{root / 'seeds' / 'reviews.csv'}' (header)"
    )


def duckdb_floor(rows: int) -> tuple[float, float]:
    import duckdb

    con = duckdb.connect()
    con.execute(f"create table reviews as select i as id, 'Review ' || i || ' ' || repeat('x', i % 50) as body from range({rows}) t(i)")
    start = time.perf_counter()
    con.execute(
        "create table req as select id, json_object('contents', json_array(json_object('role', 'user', 'parts', "
        "json_array(json_object('text', 'Summarize this review: ' || body)))), 'systemInstruction', "
        "json_object('parts', json_array(json_object('text', 'Be brief.'))), 'generationConfig', "
        "json_object('temperature', 0.2)) as request from reviews"
    )
    build = time.perf_counter() - start
    con.execute(
        "create table out as select id, request, json_object('candidates', json_array(json_object('content', "
        "json_object('role', 'model', 'parts', json_array(json_object('text', 'ok ' || id))), 'finishReason', 'STOP')), "
        "'usageMetadata', json_object('promptTokenCount', 10, 'candidatesTokenCount', 5, 'totalTokenCount', 15)) "
        "as response from req"
    )
    start = time.perf_counter()
    con.execute(
        "select count(*), sum(length(text)), sum(p) from (select id, response->>'$.candidates[0].content.parts[0].text' as text, "
        "response->>'$.candidates[0].finishReason' as fr, (response->>'$.usageMetadata.promptTokenCount')::bigint as p, "
        "(response->>'$.usageMetadata.totalTokenCount')::bigint as t from out)"
    ).fetchall()
    extract = time.perf_counter() - start
    return build, extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    bqbatch = str(Path(sys.executable).parent / "bqbatch")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        write_project(root, args.rows)
        start = time.perf_counter()
        proc = subprocess.run([bqbatch, "build", "--project-dir", str(root)], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        start = time.perf_counter()
        import duckdb

        con = duckdb.connect(str(root / "target" / "bqbatch.duckdb"), read_only=True)
        n, text_len = con.execute("select count(*), sum(length(text)) from summaries__parsed").fetchone()
        read = time.perf_counter() - start
        assert n == args.rows, n
    build, extract = duckdb_floor(args.rows)
    floor = build + extract
    print(proc.stdout)
    print(f"rows: {args.rows:,}")
    print(f"| step | seconds |\n|---|---:|")
    print(f"| bqbatch build (seed + request table + validation + local predictor + output + parsed view) | {wall:.2f} |")
    print(f"| reading every parsed row afterwards | {read:.2f} |")
    print(f"| DuckDB floor: build 1M request JSONs | {build:.2f} |")
    print(f"| DuckDB floor: extract 1M responses into columns | {extract:.2f} |")
    print(f"| DuckDB floor total | {floor:.2f} |")
    print(f"\nratio (build + read) / floor: {(wall + read) / floor:.1f}x; peak RSS of bqbatch: {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
