"""Benchmark: 1M request rows through build, local predictor, output table and parsed columns.

    /work/venv/bin/python bench/bench_local_predictor.py [--rows 1000000] [--chunk-rows 100000]
        [--invalid 0.01] [--schema] [--failure-rate 0.0] [--assume-valid] [--db PATH]

Prints, next to the DuckDB floor measured in the same process (plain DuckDB building
the request JSONs; plain DuckDB extracting the responses into columns): the time of
each stage of a bqbatch run on the local target, the predictor's progress as get()
reported it, and the peak RSS of the process (and during the predictor alone).
The warehouse is a DuckDB file, as on the local target.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.predictors.base import BatchJobSpec
from bqbatch_sql.predictors.local import LocalPredictor

SCHEMA = (
    '{"type":"OBJECT","properties":{"dish":{"type":"STRING"},"minutes":{"type":"INTEGER"},'
    '"difficulty":{"type":"STRING","enum":["easy","medium","hard"]},'
    '"ingredients":{"type":"ARRAY","items":{"type":"STRING"},"minItems":3}},"required":["dish","minutes"]}'
)


def build_sql(table: str, rows: int, invalid: float, schema: bool) -> str:
    """The request table as the gemini_request macro builds it (JSON built in SQL)."""
    role = f"CASE WHEN i % {max(1, round(1 / invalid))} = 7 THEN 'tester' ELSE 'user' END" if invalid else "'user'"
    config = "json_object('temperature', 0.2)"
    if schema:
        config = f"json_object('temperature', 0.2, 'responseMimeType', 'application/json', 'responseSchema', json('{SCHEMA}'))"
    return f"""
        CREATE OR REPLACE TABLE {table} AS
        SELECT i AS recipe_id, 'dish ' || i AS dish,
          json_object(
            'contents', json_array(json_object('role', {role},
                'parts', json_array(json_object('text', 'Give me a recipe for dish number ' || i)))),
            'systemInstruction', json_object('parts', json_array(json_object('text', 'You are a chef.'))),
            'generationConfig', {config}) AS request
        FROM range({rows}) AS t(i)"""


# The parsed view's columns, as plain SQL: the extraction half of the floor.
PARSE_SQL = """
    CREATE OR REPLACE TABLE {target} AS
    SELECT recipe_id, dish,
      response ->> '$.candidates[0].content.parts[0].text' AS text,
      response ->> '$.candidates[0].finishReason' AS finish_reason,
      CAST(response ->> '$.usageMetadata.promptTokenCount' AS BIGINT) AS prompt_tokens,
      CAST(response ->> '$.usageMetadata.candidatesTokenCount' AS BIGINT) AS output_tokens,
      CAST(response ->> '$.usageMetadata.totalTokenCount' AS BIGINT) AS total_tokens,
      status
    FROM {source}"""


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CPU: dict[str, float] = {}  # process CPU seconds per stage (all DuckDB threads): steadier than wall time on a busy machine


def timed(label: str, results: dict, fn):
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    results[label] = time.perf_counter() - start
    CPU[label] = time.process_time() - cpu
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--invalid", type=float, default=0.01, help="fraction of rows with role 'tester'")
    parser.add_argument("--schema", action="store_true", help="every request asks for a responseSchema")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--assume-valid", action="store_true",
                        help="as the runner submits after its own pre-flight validation")
    parser.add_argument("--db", type=Path, default=None, help="DuckDB file (default: a temp dir)")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="bqbatch-bench-")
    db = args.db or Path(tmp.name) / "bench.duckdb"
    adapter = DuckDBAdapter(db)
    con = adapter.connection
    t: dict[str, float] = {}

    # -- the floor: plain DuckDB ------------------------------------------------------
    timed("floor: build request JSONs", t, lambda: con.execute(build_sql("floor_requests", args.rows, args.invalid, args.schema)))

    # -- a bqbatch run -----------------------------------------------------------------------
    timed("bqbatch: build request table", t, lambda: con.execute(build_sql("recipes__requests", args.rows, args.invalid, args.schema)))
    predictor = LocalPredictor(adapter, chunk_rows=args.chunk_rows, failure_rate=args.failure_rate)
    rss_before = rss_mib()
    samples: list[tuple[float, str, int, float]] = []
    stop = threading.Event()
    rss_peak = [rss_before]

    def watch_rss() -> None:
        while not stop.wait(0.02):
            rss_peak[0] = max(rss_peak[0], rss_mib())

    watcher = threading.Thread(target=watch_rss, daemon=True)
    watcher.start()
    start, cpu = time.perf_counter(), time.process_time()
    job = predictor.submit(BatchJobSpec("gemini-2.5-flash", adapter.relation("recipes__requests"),
                                        adapter.relation("recipes"), "bench",
                                        options={"assume_valid": args.assume_valid}))
    while True:
        job = predictor.get(job.name)
        samples.append((time.perf_counter() - start, job.state.short, job.succeeded + job.failed, rss_mib()))
        if job.done:
            break
        time.sleep(0.1)
    t["bqbatch: local predictor"] = time.perf_counter() - start
    CPU["bqbatch: local predictor"] = time.process_time() - cpu
    phases = predictor.timings(job.name)
    stop.set()
    watcher.join()
    if job.state.short != "SUCCEEDED":
        raise SystemExit(f"job ended {job.state.short}: {job.error}")
    timed("bqbatch: parsed columns", t, lambda: con.execute(PARSE_SQL.format(target="recipes__parsed", source="recipes")))
    timed("floor: extract responses", t, lambda: con.execute(PARSE_SQL.format(target="floor_parsed", source="recipes")))

    rows_out = con.execute("SELECT COUNT(*), COUNT(*) FILTER (WHERE status <> '') FROM recipes").fetchone()
    floor = t["floor: build request JSONs"] + t["floor: extract responses"]
    run = t["bqbatch: build request table"] + t["bqbatch: local predictor"] + t["bqbatch: parsed columns"]

    print(f"rows {args.rows:,}  chunk_rows {args.chunk_rows:,}  invalid {args.invalid:g}  schema {args.schema}  "
          f"failure_rate {args.failure_rate:g}  assume_valid {args.assume_valid}  cpus {os.cpu_count()}  load {os.getloadavg()[0]:.2f}")
    for label, seconds in t.items():
        print(f"  {label:32s} {seconds:7.2f} s wall {CPU[label]:7.2f} s CPU")
    for phase, seconds in phases.items():
        print(f"    predictor phase {phase:16s} {seconds:7.2f} s wall")
    floor_cpu = CPU["floor: build request JSONs"] + CPU["floor: extract responses"]
    run_cpu = CPU["bqbatch: build request table"] + CPU["bqbatch: local predictor"] + CPU["bqbatch: parsed columns"]
    print(f"  {'floor total':32s} {floor:7.2f} s wall {floor_cpu:7.2f} s CPU")
    print(f"  {'bqbatch run total':32s} {run:7.2f} s wall {run_cpu:7.2f} s CPU   "
          f"({run / floor:.2f}x the floor in wall time, {run_cpu / floor_cpu:.2f}x in CPU)")
    print(f"  output rows {rows_out[0]:,}, failed {rows_out[1]:,}; job: succeeded {job.succeeded:,} failed {job.failed:,} "
          f"incomplete {job.incomplete:,}")
    print(f"  peak RSS: process {peak_mib():.0f} MiB; during the predictor {rss_peak[0]:.0f} MiB "
          f"(from {rss_before:.0f} MiB before submit)")
    progress = [(round(s, 1), state, n) for s, state, n, _ in samples]
    print(f"  progress (s, state, rows done): {progress[:: max(1, len(progress) // 12)]}")
    adapter.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
