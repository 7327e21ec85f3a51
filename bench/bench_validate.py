"""Benchmark: validating 1,000,000 batch requests (1% invalid) on the local target.

In the warehouse: `validate_relation` on a DuckDB table (counts per kind + first
offending rows), the way `bqbatch run`/`bqbatch validate` call it -- the first call
of the process (which also builds the rules' SQL) and the best of --repeat -- and
`materialize_statuses` (every row's status in a table, what on_invalid='skip' and
the local predictor use), with where the time goes: the fast path over every row,
then the full checks on the rows it left. Next to it, the Python path: every row
through google-genai's pydantic types (types.Content, types.GenerationConfig), timed
on a sample and reported as rows/s and the time it would take for all rows.

--per-row-config gives every row its own generationConfig (a seed per row): the fast
path then has one distinct tail per row to check, its worst case.

    /work/venv/bin/python bench/bench_validate.py [--rows 1000000] [--python-sample 50000] [--per-row-config]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import duckdb
import orjson

from bqbatch_sql import validate_duckdb
from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.nodes import Relation
from bqbatch_sql.validate import materialize_statuses, validate_relation

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
      'generationConfig', json_object('temperature', 0.2, 'maxOutputTokens', 1024{seed}))
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


def timed(fn):
    """(result, wall seconds, CPU seconds of the process: every DuckDB thread counts)."""
    t, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--python-sample", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--per-row-config", action="store_true", help="a seed per row in generationConfig")
    args = ap.parse_args()

    adapter = DuckDBAdapter()
    load = os.getloadavg()[0]
    seed = ", 'seed', i" if args.per_row_config else ""
    _, build, _ = timed(lambda: adapter.execute(BUILD.format(rows=int(args.rows / 0.97) + 1, seed=seed)))
    adapter.execute(f"DELETE FROM main.bench_requests WHERE id >= (SELECT id FROM main.bench_requests "
                    f"ORDER BY id LIMIT 1 OFFSET {args.rows})")
    rel = Relation(None, "main", "bench_requests")
    rows = adapter.row_count(rel)
    _, floor, floor_cpu = timed(lambda: adapter.fetchall(
        "SELECT count(*) FILTER (WHERE json_valid(request)) FROM main.bench_requests"))

    def validate():
        return validate_relation(adapter, rel, model="bench", path="bench/bench_validate.py", key_columns=["id"])

    report, first, first_cpu = timed(validate)
    runs = [timed(validate)[1:] for _ in range(args.repeat)]
    best, best_cpu = min(runs)
    statuses = [timed(lambda: materialize_statuses(adapter, rel, rel.with_name("bench_statuses")))[1:]
                for _ in range(args.repeat)]
    st_wall, st_cpu = min(statuses)

    # Where the time goes: the same statements as validate_relation, one by one.
    con = adapter.cursor()
    phases = {
        "fast path over every row (classify)": timed(lambda: con.execute(
            validate_duckdb.classify_sql(rel, "request").sql("duckdb")))[1:],
        "rows left + one request per distinct tail": timed(lambda: con.execute(
            validate_duckdb.check_sql(rel, "request").sql("duckdb")))[1:],
    }
    classified, schema = validate_duckdb.survey(con)
    phases["full checks on those (planning included)"] = timed(
        lambda: con.execute(validate_duckdb.found_for(classified, schema)))[1:]
    groups, left = classified.groups, classified.checked_rows
    for sql in validate_duckdb.drop_scratch_sql():
        con.execute(sql)

    sample = [r[0] for r in adapter.connection.execute(
        f"SELECT request::VARCHAR FROM main.bench_requests ORDER BY id LIMIT {args.python_sample}").fetchall()]
    python_validate(sample[0])  # import google.genai outside the timing
    py_invalid, py_sample_seconds, py_sample_cpu = timed(lambda: sum(python_validate(r) is not None for r in sample))
    py_seconds = py_sample_seconds / len(sample) * rows
    py_cpu = py_sample_cpu / len(sample) * rows

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, DuckDB {duckdb.__version__}, "
          f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at the end")
    print(f"rows: {rows:,} ({report.invalid:,} invalid: {report.counts}); built in {build:.2f} s"
          + (" -- a seed per row" if args.per_row_config else ""))
    print(f"DuckDB floor (json_valid over all rows): {floor:.2f} s wall, {floor_cpu:.2f} s CPU")
    print(f"validate_relation, first call of the process: {first:.2f} s wall, {first_cpu:.2f} s CPU")
    print(f"validate_relation, best of {args.repeat}: {best:.2f} s wall, {best_cpu:.2f} s CPU "
          f"({rows / best:,.0f} rows/s); all: {', '.join(f'{w:.2f}/{c:.2f}' for w, c in runs)} (wall/CPU)")
    print(f"materialize_statuses, best of {args.repeat}: {st_wall:.2f} s wall, {st_cpu:.2f} s CPU")
    print(f"  {groups:,} distinct tails checked once each, {left:,} rows through the full checks")
    for name, (w, c) in phases.items():
        print(f"  {name}: {w:.2f} s wall, {c:.2f} s CPU")
    print(f"Python + google-genai pydantic types: {len(sample) / py_sample_seconds:,.0f} rows/s on {len(sample):,} rows "
          f"({py_invalid} invalid) -> {py_seconds:.1f} s wall, {py_cpu:.1f} s CPU for {rows:,} rows")
    print(f"speed-up of validate_relation: {py_seconds / best:.1f}x wall, {py_cpu / best_cpu:.1f}x CPU "
          f"(first call: {py_seconds / first:.1f}x wall)")
    print(report.render())


if __name__ == "__main__":
    main()
