"""Where a batch job writes, and the per-key row check of its output, on a real DuckDB warehouse."""

from __future__ import annotations

import sqlglot

from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.output_check import (
    choose_destination,
    describe_count_mismatch,
    row_differences,
    staging_relation,
    swap_in,
)


def _warehouse() -> DuckDBAdapter:
    db = DuckDBAdapter(":memory:")
    db.execute("CREATE TABLE main.req AS SELECT * FROM (VALUES (1, 'a', '{\"x\": 1}'::JSON), (2, 'b', NULL), "
               "(3, 'c', '[]'::JSON)) AS t(id, name, request)")
    return db


def test_lost_and_doubled_rows_are_listed_by_key():
    db = _warehouse()
    db.execute("CREATE TABLE main.out AS SELECT * FROM main.req WHERE id <> 2 UNION ALL SELECT * FROM main.req "
               "WHERE id = 3")
    req, out = db.relation("req"), db.relation("out")
    by_key = row_differences(db, req, out, ["id"])
    assert [d.describe() for d in by_key] == [
        '{"id":2}: missing from the output (1 request row(s), 0 output row(s))',
        '{"id":3}: doubled in the output (1 request row(s), 2 output row(s))',
    ]
    # Without key_columns, every pass-through column is the key.
    assert [d.key for d in row_differences(db, req, out)] == ['{"id":2,"name":"b"}', '{"id":3,"name":"c"}']
    message = describe_count_mismatch("m", out, out, "projects/p/locations/l/batchPredictionJobs/9", 3, 3, by_key)
    assert "has 3 rows for 3 requests" in message and '{"id":2}: missing from the output' in message


def test_matching_tables_have_no_difference():
    db = _warehouse()
    db.execute("CREATE TABLE main.out AS SELECT * FROM main.req")
    assert row_differences(db, db.relation("req"), db.relation("out")) == []


def test_a_new_job_writes_beside_an_existing_output_which_is_swapped_once_checked():
    db = _warehouse()
    output = db.relation("answers")
    assert choose_destination(db, output, "0123456789abcdef") == output  # nothing there yet: write in place

    db.create_table_as(output, sqlglot.parse_one("SELECT 1 AS old_row", read="duckdb"))
    staged = choose_destination(db, output, "0123456789abcdef")
    assert staged == staging_relation(output, "0123456789abcdef") and staged.name == "answers__bqbatch_0123456789ab"
    assert db.fetchall("SELECT * FROM main.answers") == [(1,)]  # the old output stays readable meanwhile

    db.create_table_as(staged, sqlglot.parse_one("SELECT 2 AS new_row UNION ALL SELECT 3", read="duckdb"))
    assert choose_destination(db, output, "0123456789abcdef") == staged  # a leftover staging table is dropped
    assert not db.table_exists(staged)

    db.create_table_as(staged, sqlglot.parse_one("SELECT 2 AS new_row UNION ALL SELECT 3", read="duckdb"))
    db.create_view(db.relation("answers__parsed"), sqlglot.parse_one("SELECT * FROM main.answers", read="duckdb"))
    swap_in(db, staged, output)
    assert db.fetchall("SELECT * FROM main.answers ORDER BY 1") == [(2,), (3,)]
    assert db.fetchall("SELECT * FROM main.answers__parsed ORDER BY 1") == [(2,), (3,)]  # views over it follow
    assert not db.table_exists(staged)
