"""Reading `<model>__parsed` over 1,000,000 output rows on DuckDB, next to plain DuckDB.

    python bench/bench_parsed_view.py [--rows 1000000] [--repeat 3] [--threads N]

Builds an output table of the predictor's shape in a DuckDB file (the parsed view
reads a table bqbatch wrote): responses shaped like Gemini's, mixed as a batch comes
back — one text part (most), a thought and a text, 3-5 parts with a function call,
SAFETY stops without content, failed rows with a status (JSON inside, or plain text).
Texts vary in length and carry quotes, line breaks and non-ASCII text. Then it
creates the view the default post-hook creates (the parsed_response_view macro,
rendered and compiled as bqbatch does) and times reading it:

- every column of every row, and the query of the issue (text, prompt tokens,
  finish reason, error message);
- one column at a time (what a query that needs only one pays);
- the same view over structured output (JSON texts, a response_schema of 5 typed
  properties);
- the floor: plain DuckDB extracting the first part's text and token counts with
  `->>` (the issue's query: text and prompt tokens; bench_batch_run's: also the
  finish reason and total tokens), no thought filter, no errors: less than the view
  computes. Each `->>` parses the response again, so the second floor is higher.

Best of --repeat runs, wall and process CPU seconds; prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from bqbatch_sql.compile import apply_duckdb_settings, parse_model_sql, to_dialect
from bqbatch_sql.project import builtin_macro_dir
from bqbatch_sql.render import Renderer, TargetInfo

SCHEMA = {
    "type": "OBJECT",
    "properties": {
        "title": {"type": "STRING"},
        "stars": {"type": "INTEGER"},
        "score": {"type": "NUMBER"},
        "recommend": {"type": "BOOLEAN"},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
    },
}

# One row of the output table per id. `kind` picks the response shape (percent of rows):
# 0-79 one text part, 80-89 thought + text, 90-92 3-5 parts with a function call,
# 93-94 SAFETY without content, 95-97 failed with JSON in the status, 98-99 plain status.
OUTPUT_SQL = """
create table {table} as
with base as (
  select i as id, ['kettle', 'toaster', 'blender', 'grill'][1 + i % 4] as category, hash(i) % 100 as kind,
    {text} as body
  from range({rows}) t(i)
), shaped as (
  select id, category, kind, body,
    case
      when kind < 80 then json_array(json_object('text', body))
      when kind < 90 then json_array(json_object('text', 'Thinking about review ' || id, 'thought', true), json_object('text', body))
      when kind < 93 then json_array(json_object('text', 'Looking it up.'), json_object('functionCall', json_object('name', 'lookup', 'args', json_object('id', id))),
                                     json_object('text', body), json_object('text', ' (' || id || ')'))
    end as parts
  from base
)
select id, category, NULL::JSON as request,
  case
    when kind < 93 then json_object('candidates', json_array(json_object('content', json_object('role', 'model', 'parts', parts),
        'finishReason', 'STOP', 'avgLogprobs', -0.25)),
      'usageMetadata', json_object('promptTokenCount', 12 + id % 50, 'candidatesTokenCount', 20 + id % 300,
        'totalTokenCount', 32 + id % 50 + id % 300, 'trafficType', 'ON_DEMAND'),
      'modelVersion', 'gemini-2.5-flash', 'createTime', '2026-11-21T12:00:00.000000Z', 'responseId', md5(id::varchar)[:22])
    when kind < 95 then json_object('candidates', json_array(json_object('finishReason', 'SAFETY')),
      'usageMetadata', json_object('promptTokenCount', 12, 'totalTokenCount', 12), 'modelVersion', 'gemini-2.5-flash')
  end as response,
  case
    when kind between 95 and 97 then 'Bad Request: {{"error": {{"code": 400, "message": "Please use a valid role: user, model.", "status": "INVALID_ARGUMENT"}}}}'
    when kind >= 98 then 'Internal error occurred.'
    else ''
  end as status,
  timestamp '2026-11-21 12:00:00' as processed_time
from shaped
"""
PROSE = """'Review ' || id || ': the ' || ['kettle', 'toaster', 'blender', 'grill'][1 + id % 4] || ' is \"fine\" — mostly. '
  || repeat('It heats quickly, the lid sticks, and the cord is short. ', 1 + id % 4) || E'\\nVerdict: ' || ['good', 'meh', 'bad'][1 + id % 3] || ' ✓'"""
# Structured output: the text is a JSON object matching SCHEMA.
STRUCTURED = """json_object('title', 'Review ' || id, 'stars', id % 5 + 1, 'score', (id % 100) / 10.0,
  'recommend', id % 3 = 0, 'tags', json_array('heat', 'lid'))::varchar"""

READ_ALL = ("select count(*), sum(length(text)), count(finish_reason), sum(prompt_tokens), sum(output_tokens), "
            "sum(total_tokens), count(error_code), count(error_message), count(id), count(category) from {view}")
READ_ISSUE = ("select count(*), sum(length(text)), sum(prompt_tokens), count(finish_reason), count(error_message) "
              "from {view}")
READ_TYPED = "select count(title), sum(stars), sum(score), count_if(recommend), count(tags) from {view}"
FLOOR_ISSUE = """select count(*), sum(length(text)), sum(p) from (select
  response->>'$.candidates[0].content.parts[0].text' as text, (response->>'$.usageMetadata.promptTokenCount')::bigint as p
  from {table})"""
FLOOR = """select count(*), sum(length(text)), count(fr), sum(p), sum(t) from (select
  response->>'$.candidates[0].content.parts[0].text' as text, response->>'$.candidates[0].finishReason' as fr,
  (response->>'$.usageMetadata.promptTokenCount')::bigint as p, (response->>'$.usageMetadata.totalTokenCount')::bigint as t
  from {table})"""


def view_sql(table: str, schema: dict | None) -> str:
    """The view's DuckDB SQL, made as batch.py's parsed-view post-hook makes it."""
    target = TargetInfo(name="bench", type="duckdb", schema="main", database=None, dialect="duckdb")
    renderer = Renderer(sorted(builtin_macro_dir().glob("*.sql")), builtin_macro_dir().parent, target, {}, {})
    sql = renderer.render_snippet(
        f"bench_{table}.sql", "{{ parsed_response_view(relation, passthrough, response_schema) }}", "bench parsed view",
        None, extra={"relation": f"`{table}`", "response_schema": schema,
                     "passthrough": ["id", "category", "request", "response", "status", "processed_time"]},
    )
    return to_dialect(parse_model_sql(sql, path="bench", model=table), "duckdb", model=table).sql(dialect="duckdb")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_of(con: duckdb.DuckDBPyConnection, sql: str, repeat: int) -> tuple[float, float, tuple]:
    wall = cpu = float("inf")
    row: tuple = ()
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        row = con.execute(sql).fetchone()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, cpu_seconds() - c0)
    return wall, cpu, row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: DuckDB's, one per core)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        apply_duckdb_settings(con)
        if args.threads:
            con.execute(f"SET threads = {args.threads}")
        t0 = time.perf_counter()
        con.execute(OUTPUT_SQL.format(table="summaries", rows=args.rows, text=PROSE))
        con.execute(OUTPUT_SQL.format(table="structured", rows=args.rows, text=STRUCTURED))
        built = time.perf_counter() - t0
        con.execute("create view summaries__parsed as " + view_sql("summaries", None))
        con.execute("create view structured__parsed as " + view_sql("structured", SCHEMA))
        size = con.execute("select avg(length(response)) from summaries").fetchone()[0]

        cases = [
            ("floor of the issue: `->>` text and prompt tokens", FLOOR_ISSUE.format(table="summaries")),
            ("floor: `->>` text, finish reason, 2 token counts", FLOOR.format(table="summaries")),
            ("view: every column", READ_ALL.format(view="summaries__parsed")),
            ("view: the issue's query (text, prompt tokens, finish reason, error message)", READ_ISSUE.format(view="summaries__parsed")),
            ("view: count(id) only", "select count(id) from summaries__parsed"),
            ("view: count(text) only", "select count(text) from summaries__parsed"),
            ("view: sum(prompt_tokens) only", "select sum(prompt_tokens) from summaries__parsed"),
            ("view: count(error_message) only", "select count(error_message) from summaries__parsed"),
            ("structured output view: every column", READ_ALL.format(view="structured__parsed")),
            ("structured output view: the 5 typed columns", READ_TYPED.format(view="structured__parsed")),
        ]
        load = os.getloadavg()[0]
        results = [(label, *best_of(con, sql, args.repeat)) for label, sql in cases]
        con.close()

    print(f"rows: {args.rows:,} (avg response {size:.0f} bytes, built in {built:.1f} s); best of {args.repeat}; "
          f"cpus {os.cpu_count()}; threads {args.threads or 'default'}; load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at the end; duckdb {duckdb.__version__}")
    print()
    print("| read | wall s | CPU s | result |")
    print("|---|---:|---:|---|")
    for label, wall, cpu, row in results:
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {', '.join(str(v) for v in row)} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
