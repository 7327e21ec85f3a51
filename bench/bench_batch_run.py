"""1,000,000 request rows through `bqbatch build` on the embedded target, next to the DuckDB floor.

    python bench/bench_batch_run.py [--rows 1000000] [--repeat 5]

The run: seed (CSV) -> batch_prediction model (gemini_request) -> request table ->
validation -> local predictor -> output table -> parsed view, then a query that reads
the parsed columns of every row. Wall time and peak RSS of the bqbatch process.

The floor is the issue's definition, "building the request JSON and extracting the
parsed columns in plain DuckDB SQL", done on the same data in the same kind of
database (a DuckDB file, as bqbatch writes; an in-memory table skips the write and
the compression, ~2x cheaper): the request table built by the statement the model
compiles to, then the same parsed columns read from an output table. A second floor
adds the rest of what a run must write, for context: loading the CSV and writing the
output table (the request columns and a response each). The floor's answers are
shorter than the local predictor's ('ok <id>'); its extraction is also run on the
answers bqbatch wrote, for context.

Runs and floors alternate (this VM's speed drifts by 20-30% within minutes): the best
of each is reported, and the ratio of each run to the floor measured right after it.

The bqbatch process runs as on a user's machine: Python writes .pyc files (this
sandbox sets PYTHONDONTWRITEBYTECODE=1, which is removed from the child's environment;
without .pyc each run compiles the package's own modules again, ~0.3 s), and one
warm-up build, not counted, comes first so that the .pyc exist and the CSV is in the
page cache.
"""

from __future__ import annotations

import argparse
import os
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
# What the model above compiles to on DuckDB (keys sorted as BigQuery's JSON keeps them).
REQUESTS_SQL = """create table requests as select id, category, json_object('contents', json_array(json_object('parts',
  json_array(json_object('text', 'Summarize this review: ' || body)), 'role', 'user')), 'generationConfig',
  json('{"temperature":0.2}'), 'systemInstruction', json_object('parts', json_array(json_object('text', 'Be brief.'))))
  as request from reviews"""
# An output table of the predictor's shape: every request column, a response, a status, a time.
OUTPUT_SQL = """create table output as select *, cast(concat('{"candidates":[{"content":{"role":"model","parts":[{"text":',
  to_json('ok ' || id), '}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,',
  '"totalTokenCount":15},"modelVersion":"gemini-2.5-flash"}') as json) as response, '' as status,
  now()::timestamp as processed_time from requests"""
EXTRACT_SQL = """select count(*), sum(length(text)), count(fr), sum(p), sum(t) from (select
  response->>'$.candidates[0].content.parts[0].text' as text, response->>'$.candidates[0].finishReason' as fr,
  (response->>'$.usageMetadata.promptTokenCount')::bigint as p, (response->>'$.usageMetadata.totalTokenCount')::bigint as t
  from {table})"""
READ_SQL = ("select count(*), sum(length(text)), count(finish_reason), sum(prompt_tokens), sum(total_tokens) "
            "from summaries__parsed")


def write_project(root: Path, rows: int, model: str = MODEL) -> None:
    """A project of one seed, `reviews` (rows of id, category, body), and one model, `summaries`."""
    import duckdb

    (root / "models").mkdir(parents=True)
    (root / "seeds").mkdir()
    (root / "bqbatch_project.yml").write_text("name: bench\n")
    (root / "models" / "summaries.sql").write_text(model)
    duckdb.sql(
        f"copy (select i as id, ['kettle','toaster','blender'][1 + i % 3] as category, "
        f"'Review ' || i || ': it \"works\" — mostly. 😀 ' || repeat('x', i % 50) as body "
        f"from range({rows}) t(i)) to '{root / 'seeds' / 'reviews.csv'}' (header)"
    )


def timed(con, sql: str) -> float:
    start = time.perf_counter()
    con.execute(sql).fetchall()
    return time.perf_counter() - start


def floors(csv: Path, work: Path) -> dict[str, float]:
    import duckdb

    path = work / "floor.duckdb"
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    load = timed(con, f"create table reviews as select * from read_csv('{csv}')")
    build = timed(con, REQUESTS_SQL)
    output = timed(con, OUTPUT_SQL)
    timed(con, "checkpoint")
    extract = timed(con, EXTRACT_SQL.format(table="output"))
    con.close()
    return {"load": load, "build": build, "output": output, "extract": extract}


# A user's Python writes .pyc files; this sandbox's environment forbids it (see the docstring).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_once(root: Path) -> tuple[float, float, float, str]:
    import duckdb

    target = root / "target"
    if target.exists():
        import shutil

        shutil.rmtree(target)
    bqbatch = str(Path(sys.executable).parent / "bqbatch")
    start = time.perf_counter()
    proc = subprocess.run([bqbatch, "build", "--project-dir", str(root)], capture_output=True, text=True,
                          env=CHILD_ENV)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    con = duckdb.connect(str(target / "bqbatch.duckdb"), read_only=True)
    read = timed(con, READ_SQL)
    # The floor's extraction on the answers this run wrote (longer texts than the floor's own)
    by_hand = timed(con, EXTRACT_SQL.format(table="summaries"))
    con.close()
    return wall, read, by_hand, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the best is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        write_project(root, args.rows)
        run_once(root)  # warm-up, not counted: .pyc written, CSV in the page cache
        # Interleaved, a run then a floor: the machine's mood (a shared VM) touches both alike.
        runs, fl = [], []
        for _ in range(args.repeat):
            runs.append(run_once(root))
            fl.append(floors(root / "seeds" / "reviews.csv", Path(tmp)))
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    wall = min(r[0] for r in runs)
    read = min(r[1] for r in runs)
    by_hand = min(r[2] for r in runs)
    best = {k: min(f[k] for f in fl) for k in fl[0]}
    floor = best["build"] + best["extract"]
    full_floor = floor + best["load"] + best["output"]
    paired = sorted((r[0] + r[1]) / (f["build"] + f["extract"]) for r, f in zip(runs, fl))
    print(runs[0][3][-1500:])
    print(f"rows: {args.rows:,}; best of {args.repeat}; cpus {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    print("| step | seconds |\n|---|---:|")
    print(f"| `bqbatch build` (seed, request table, validation, local predictor, output table, parsed view) | {wall:.2f} |")
    print(f"| reading the parsed columns of every row | {read:.2f} |")
    print(f"| floor: build the request table | {best['build']:.2f} |")
    print(f"| floor: extract the parsed columns | {best['extract']:.2f} |")
    print(f"| floor (the issue's: build + extract) | {floor:.2f} |")
    print(f"| ... plus loading the CSV | {best['load']:.2f} |")
    print(f"| ... plus writing the output table | {best['output']:.2f} |")
    print(f"| full floor (every table bqbatch writes, written by hand) | {full_floor:.2f} |")
    print(f"| (the floor's extraction run on the answers bqbatch wrote) | {by_hand:.2f} |")
    print(f"\n(build + read) / floor: {(wall + read) / floor:.1f}x (best of each); run by run "
          f"{paired[0]:.1f}-{paired[-1]:.1f}x, median {paired[len(paired) // 2]:.1f}x; "
          f"/ full floor: {(wall + read) / full_floor:.1f}x; peak RSS of bqbatch: {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
