"""Benchmark: validating 1,000,000 batch requests (1% invalid) on the local target.

In the warehouse: `validate_relation` on a DuckDB table (counts per kind + first
offending rows), the way `bqbatch run`/`bqbatch validate` call it. Next to it, the
Python path: every row through google-genai's pydantic types (types.Content,
types.GenerationConfig), timed on a sample and reported as rows/s and the time it
would take for all rows.

    /work/venv/bin/python bench/bench_validate.py [--rows 1000000] [--python-sample 50000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import duckdb
import orjson

from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.nodes import Relation
from bqbatch_sql.validate import validate_relation

# One invalid row in a hundred, of several kinds (row id % 100 picks the kind).
BUILD = """
CREATE OR REPLACE TABLE main.bench_requests AS
SELECT
  i AS id,
  'dish ' || i::VARCHAR AS dish,
  CASE i % 100
    WHEN 13 THEN json_object('contents', json_array(json_object('role', 'tester', 'parts',
                 json_array(json_object('text', 'Give me a recipe for dish ' || i::VARCHAR)))))
    WHEN 37 THEN json_object('contents', json_array(json_object('role', 'user', 'parts',
                 json_array(json_object('text', 'Give me a recipe for dish ' || i::VARCHAR)))),
                 'generationConfig', json_object('temperature', 3.5))
    WHEN 61 THEN json_object('contents', json_array(json_object('role', 'user', 'parts',
                 json_array(json_object('text', 'Give me a recipe for dish ' || i::VARCHAR)))),
                 'generationConfig', json_object('max_tokens', 256))
    WHEN 89 THEN json_object('contents', json_array(json_object('role', 'user', 'parts',
                 json_array(json_object('text', i)))))
    ELSE json_object(
      'contents', json_array(json_object('role', 'user', 'parts',
                   json_array(json_object('text', 'Give me a recipe for dish number ' || i::VARCHAR
                                                  || ', with the steps numbered and a list of ingredients.')))),
      'systemInstruction', json_object('parts', json_array(json_object('text', 'You are a chef.'))),
      'generationConfig', json_object('temperature', 0.2, 'maxOutputTokens', 1024))
  END AS request
FROM range({rows}) AS t(i)
WHERE i % 100 NOT IN (13, 37, 61, 89) OR i % 400 < 100
"""


def python_validate(request: str) -> str | None:
    """What a Python pipeline would do per row: parse, then the SDK's pydantic types."""
    from google.genai import types

    try:
        d = orjson.loads(request)
        unknown = set(d) - {"contents", "systemInstruction", "system_instruction", "generationConfig",
                            "generation_config", "safetySettings", "safety_settings", "tools", "toolConfig",
                            "tool_config", "labels", "cachedContent", "cached_content"}
        if unknown:
            return f"unknown field {sorted(unknown)[0]}"
        contents = [types.Content.model_validate(c) for c in d["contents"]]
        if not contents or any(c.role not in (None, "user", "model") for c in contents):
            return "invalid contents"
        system = d.get("systemInstruction") or d.get("system_instruction")
        if system is not None:
            types.Content.model_validate(system)
        config = d.get("generationConfig") or d.get("generation_config")
        if config is not None:
            types.GenerationConfig.model_validate(config)
    except Exception as e:  # a failing row is a result here, not an error of the benchmark
        return type(e).__name__
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--python-sample", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    adapter = DuckDBAdapter()
    t = time.perf_counter()
    adapter.execute(BUILD.format(rows=int(args.rows / 0.97) + 1))
    adapter.execute(f"DELETE FROM main.bench_requests WHERE id >= (SELECT id FROM main.bench_requests "
                    f"ORDER BY id LIMIT 1 OFFSET {args.rows})")
    build = time.perf_counter() - t
    rel = Relation(None, "main", "bench_requests")
    rows = adapter.row_count(rel)

    t = time.perf_counter()
    adapter.fetchall("SELECT count(*) FILTER (WHERE json_valid(request)) FROM main.bench_requests")
    floor = time.perf_counter() - t

    times, cpus = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        report = validate_relation(adapter, rel, model="bench", path="bench/bench_validate.py", key_columns=["id"])
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)  # all DuckDB threads: what the checks cost, whatever else runs
    sql_seconds, sql_cpu = min(times), min(cpus)

    sample = [r[0] for r in adapter.connection.execute(
        f"SELECT request::VARCHAR FROM main.bench_requests ORDER BY id LIMIT {args.python_sample}").fetchall()]
    python_validate(sample[0])  # import google.genai outside the timing
    t, c = time.perf_counter(), time.process_time()
    py_invalid = sum(python_validate(r) is not None for r in sample)
    py_sample_seconds = time.perf_counter() - t
    py_cpu = (time.process_time() - c) / len(sample) * rows
    py_rate = len(sample) / py_sample_seconds
    py_seconds = rows / py_rate

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, DuckDB {duckdb.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"rows: {rows:,} ({report.invalid:,} invalid: {report.counts}); built in {build:.2f} s")
    print(f"DuckDB floor (json_valid over all rows): {floor:.2f} s")
    print(f"in the warehouse (validate_relation, best of {args.repeat}): {sql_seconds:.2f} s wall, {sql_cpu:.2f} s CPU "
          f"({rows / sql_seconds:,.0f} rows/s); all runs: {', '.join(f'{x:.2f}' for x in times)}")
    print(f"Python + google-genai pydantic types: {py_rate:,.0f} rows/s on {len(sample):,} rows "
          f"({py_invalid} invalid) -> {py_seconds:.1f} s wall, {py_cpu:.1f} s CPU for {rows:,} rows")
    print(f"speed-up: {py_seconds / sql_seconds:.1f}x wall, {py_cpu / sql_cpu:.1f}x CPU")
    print(report.render())


if __name__ == "__main__":
    main()
