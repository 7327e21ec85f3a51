"""The emulated BigQuery v2 API, driven only through google-cloud-bigquery."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from google.api_core import exceptions
from google.cloud import bigquery

from bqbatch_sql.emulator import Emulator

UTC = dt.timezone.utc


# -- datasets ---------------------------------------------------------------------


def test_dataset_lifecycle_keeps_location_labels_and_refuses_duplicates(bq):
    ds = bigquery.Dataset(f"{bq.project}.sales")
    ds.location = "europe-west4"
    ds.labels = {"team": "data"}
    ds.description = "sales marts"
    created = bq.create_dataset(ds)
    assert created.location == "europe-west4"

    got = bq.get_dataset("sales")
    assert (got.location, got.labels, got.description) == ("europe-west4", {"team": "data"}, "sales marts")
    assert got.created is not None

    with pytest.raises(exceptions.Conflict, match="Already Exists: Dataset emu-project:sales"):
        bq.create_dataset("sales")
    assert bq.create_dataset("sales", exists_ok=True).location == "europe-west4"

    bq.create_dataset("other")
    assert [d.dataset_id for d in bq.list_datasets()] == ["other", "sales"]
    assert [d.dataset_id for d in bq.list_datasets(filter="labels.team:data")] == ["sales"]

    got.labels = {"team": "ml"}
    assert bq.update_dataset(got, ["labels"]).labels == {"team": "ml"}


def test_dataset_with_tables_is_deleted_only_with_its_contents(bq):
    bq.create_dataset("d")
    bq.query_and_wait("create table d.t as select 1 as x")
    with pytest.raises(exceptions.BadRequest, match="still in use"):
        bq.delete_dataset("d")
    bq.delete_dataset("d", delete_contents=True)
    with pytest.raises(exceptions.NotFound):
        bq.get_dataset("d")
    with pytest.raises(exceptions.NotFound):
        bq.get_table("d.t")
    bq.delete_dataset("d", not_found_ok=True)


def test_query_results_dataset_is_hidden_from_listing(bq):
    bq.create_dataset("d")
    bq.query("select 1").result()
    assert [d.dataset_id for d in bq.list_datasets()] == ["d"]


def test_default_location_is_us_and_create_schema_option_sets_it(bq):
    assert bq.create_dataset("plain").location == "US"
    bq.query_and_wait("CREATE SCHEMA `emu-project.regional` OPTIONS(location='us-central1')")
    assert bq.get_dataset("regional").location == "us-central1"
    bq.query_and_wait("CREATE SCHEMA IF NOT EXISTS regional")
    with pytest.raises(exceptions.Conflict):
        bq.query_and_wait("CREATE SCHEMA regional")
    bq.query_and_wait("DROP SCHEMA regional")
    with pytest.raises(exceptions.NotFound):
        bq.get_dataset("regional")


# -- tables and types -------------------------------------------------------------

ALL_TYPES = [
    bigquery.SchemaField("i", "INT64", mode="REQUIRED"),
    bigquery.SchemaField("f", "FLOAT64"),
    bigquery.SchemaField("n", "NUMERIC"),
    bigquery.SchemaField("b", "BOOL"),
    bigquery.SchemaField("s", "STRING"),
    bigquery.SchemaField("by", "BYTES"),
    bigquery.SchemaField("d", "DATE"),
    bigquery.SchemaField("ts", "TIMESTAMP"),
    bigquery.SchemaField("dtm", "DATETIME"),
    bigquery.SchemaField("j", "JSON"),
    bigquery.SchemaField("tags", "STRING", mode="REPEATED"),
    bigquery.SchemaField("rec", "RECORD", fields=[bigquery.SchemaField("x", "INT64"), bigquery.SchemaField("y", "STRING")]),
]

ROW = {
    "i": 7,
    "f": 2.5,
    "n": decimal.Decimal("12345.123456789"),
    "b": True,
    "s": "héllo, 'world'",
    "by": b"\x00\xffbytes",
    "d": dt.date(2024, 2, 29),
    "ts": dt.datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC),
    "dtm": dt.datetime(2024, 3, 1, 8, 0, 0),
    "j": {"k": [1, 2, {"z": None}], "s": "x"},
    "tags": ["a", "b"],
    "rec": {"x": 1, "y": "why"},
}


def test_table_schema_round_trips_through_tables_insert_and_get(bq):
    bq.create_dataset("d")
    table = bq.create_table(bigquery.Table(f"{bq.project}.d.all_types", schema=ALL_TYPES))
    got = bq.get_table("d.all_types")
    assert [(f.name, f.field_type, f.mode) for f in got.schema] == [
        ("i", "INTEGER", "REQUIRED"),
        ("f", "FLOAT", "NULLABLE"),
        ("n", "NUMERIC", "NULLABLE"),
        ("b", "BOOLEAN", "NULLABLE"),
        ("s", "STRING", "NULLABLE"),
        ("by", "BYTES", "NULLABLE"),
        ("d", "DATE", "NULLABLE"),
        ("ts", "TIMESTAMP", "NULLABLE"),
        ("dtm", "DATETIME", "NULLABLE"),
        ("j", "JSON", "NULLABLE"),
        ("tags", "STRING", "REPEATED"),
        ("rec", "RECORD", "NULLABLE"),
    ]
    assert [f.name for f in got.schema[-1].fields] == ["x", "y"]
    assert got.num_rows == 0 and got.table_type == "TABLE" and got.location == "US"
    with pytest.raises(exceptions.Conflict, match="Already Exists: Table emu-project:d.all_types"):
        bq.create_table(table)
    assert [t.table_id for t in bq.list_tables("d")] == ["all_types"]
    bq.delete_table("d.all_types")
    with pytest.raises(exceptions.NotFound):
        bq.get_table("d.all_types")
    bq.delete_table("d.all_types", not_found_ok=True)


def test_every_type_round_trips_through_insert_rows_list_rows_and_query(bq):
    bq.create_dataset("d")
    table = bq.create_table(bigquery.Table(f"{bq.project}.d.all_types", schema=ALL_TYPES))
    assert bq.insert_rows(table, [ROW, {"i": 8}]) == []

    listed = sorted((dict(r) for r in bq.list_rows(table)), key=lambda r: r["i"])
    assert listed[0] == ROW
    assert listed[1] == {**{k: None for k in ROW}, "i": 8, "tags": []}

    queried = [dict(r) for r in bq.query("select * from d.all_types where i = 7").result()]
    assert queried == [ROW]
    assert bq.get_table(table).num_rows == 2


def test_query_parameters_bind_every_type_as_data_not_sql(bq):
    params = [
        bigquery.ScalarQueryParameter("i", "INT64", 7),
        bigquery.ScalarQueryParameter("f", "FLOAT64", 2.5),
        bigquery.ScalarQueryParameter("n", "NUMERIC", decimal.Decimal("1.5")),
        bigquery.ScalarQueryParameter("b", "BOOL", False),
        bigquery.ScalarQueryParameter("s", "STRING", "x'); drop table t; --"),
        bigquery.ScalarQueryParameter("by", "BYTES", b"\x01\x02"),
        bigquery.ScalarQueryParameter("d", "DATE", dt.date(2024, 1, 2)),
        bigquery.ScalarQueryParameter("ts", "TIMESTAMP", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        bigquery.ScalarQueryParameter("j", "JSON", {"a": 1}),
        bigquery.ScalarQueryParameter("missing", "STRING", None),
        bigquery.ArrayQueryParameter("arr", "INT64", [1, 2, 3]),
    ]
    sql = "select @i + 1 as i, @f * 2 as f, @n as n, not @b as b, @s as s, @by as by, @d as d, @ts as ts, " \
          "JSON_VALUE(@j, '$.a') as ja, @missing is null as m, ARRAY_LENGTH(@arr) as al"
    row = dict(list(bq.query_and_wait(sql, job_config=bigquery.QueryJobConfig(query_parameters=params)))[0])
    assert row == {
        "i": 8, "f": 5.0, "n": decimal.Decimal("1.5"), "b": True, "s": "x'); drop table t; --", "by": b"\x01\x02",
        "d": dt.date(2024, 1, 2), "ts": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "ja": "1", "m": True, "al": 3,
    }

    positional = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(None, "INT64", 2), bigquery.ScalarQueryParameter(None, "STRING", "b")]
    )
    assert list(bq.query("select ? * 10 as x, ? as y", job_config=positional).result())[0].values() == (20, "b")

    with pytest.raises(exceptions.BadRequest, match="Query parameter 'nope' not found"):
        bq.query_and_wait("select @nope")


def test_insert_rows_reports_bad_rows_and_writes_nothing(bq):
    bq.create_dataset("d")
    table = bq.create_table(bigquery.Table(f"{bq.project}.d.t", schema=[bigquery.SchemaField("x", "INT64", mode="REQUIRED")]))
    errors = bq.insert_rows_json(table, [{"x": 1}, {"x": 2, "nope": 3}, {}])
    by_index = {e["index"]: e["errors"][0]["reason"] for e in errors}
    assert by_index == {0: "stopped", 1: "invalid", 2: "invalid"}
    assert "no such field: nope" in errors[1]["errors"][0]["message"]
    assert bq.get_table(table).num_rows == 0

    assert bq.insert_rows_json(table, [{"x": 1}, {"x": 2, "nope": 3}], ignore_unknown_values=True) == []
    assert sorted(r["x"] for r in bq.list_rows(table)) == [1, 2]


# -- queries --------------------------------------------------------------------------------


def test_query_results_page_through_every_row_in_order(bq):
    bq.create_dataset("d")
    bq.query_and_wait("create table d.nums as select x from unnest(generate_array(1, 2500)) as x order by x")
    job = bq.query("select x, x * 2 as y from d.nums order by x")
    result = job.result(page_size=1000)
    pages = [[r["x"] for r in page] for page in result.pages]
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert [x for p in pages for x in p] == list(range(1, 2501))
    assert result.total_rows == 2500

    listed = list(bq.list_rows("d.nums", max_results=10, start_index=100))
    assert [r["x"] for r in listed] == list(range(101, 111))
    rows = bq.query_and_wait("select x from d.nums order by x", page_size=300)
    assert len(list(rows)) == 2500


def test_ddl_and_dml_statements_report_what_they_did(bq):
    bq.create_dataset("d")
    job = bq.query("create table d.t (id INT64, name STRING)")
    job.result()
    assert (job.statement_type, job.ddl_operation_performed) == ("CREATE_TABLE", "CREATE")
    assert job.ddl_target_table.table_id == "t"

    job = bq.query("insert into d.t (id, name) values (1, 'a'), (2, 'b'), (3, 'c')")
    job.result()
    assert (job.statement_type, job.num_dml_affected_rows) == ("INSERT", 3)
    job = bq.query("update d.t set name = upper(name) where id >= 2")
    job.result()
    assert job.num_dml_affected_rows == 2
    assert bq.query_and_wait("delete from d.t where id = 1").num_dml_affected_rows == 1

    bq.query_and_wait("create table d.src as select 3 as id, 'z' as name union all select 4, 'w'")
    merged = bq.query_and_wait(
        "merge d.t as t using d.src as s on t.id = s.id "
        "when matched then update set name = s.name when not matched then insert (id, name) values (s.id, s.name)"
    )
    assert merged.num_dml_affected_rows == 2
    assert [tuple(r) for r in bq.query_and_wait("select id, name from d.t order by id")] == [(2, "B"), (3, "z"), (4, "w")]

    job = bq.query("create or replace table d.t as select 1 as only_col")
    job.result()
    assert (job.statement_type, job.ddl_operation_performed) == ("CREATE_TABLE_AS_SELECT", "REPLACE")
    assert [f.name for f in bq.get_table("d.t").schema] == ["only_col"]
    job = bq.query("create table if not exists d.t as select 2 as other")
    job.result()
    assert job.ddl_operation_performed == "SKIP"
    with pytest.raises(exceptions.Conflict):
        bq.query_and_wait("create table d.t as select 1 as x")
    bq.query_and_wait("drop table d.t")
    with pytest.raises(exceptions.NotFound):
        bq.query_and_wait("drop table d.t")
    bq.query_and_wait("drop table if exists d.t")


def test_destination_table_follows_write_disposition(bq):
    bq.create_dataset("d")
    dest = f"{bq.project}.d.out"

    def run(sql, disposition=None):
        config = bigquery.QueryJobConfig(destination=dest)
        if disposition:
            config.write_disposition = disposition
        return bq.query(sql, job_config=config).result()

    run("select 1 as x")
    with pytest.raises(exceptions.Conflict):
        run("select 2 as x")  # WRITE_EMPTY on a table with rows
    run("select 2 as x", bigquery.WriteDisposition.WRITE_APPEND)
    assert sorted(r["x"] for r in bq.list_rows(dest)) == [1, 2]
    run("select 3 as x", bigquery.WriteDisposition.WRITE_TRUNCATE)
    assert [r["x"] for r in bq.list_rows(dest)] == [3]


def test_errors_come_back_as_the_clients_usual_exceptions(bq):
    bq.create_dataset("d")
    with pytest.raises(exceptions.NotFound, match="Table emu-project:d.missing was not found"):
        bq.query("select * from d.missing").result()
    with pytest.raises(exceptions.NotFound, match="Dataset emu-project:nope"):
        bq.query_and_wait("select * from nope.t")
    with pytest.raises(exceptions.BadRequest, match="line 1, column"):
        bq.query_and_wait("selec 1")
    with pytest.raises(exceptions.BadRequest, match="must be qualified with a dataset"):
        bq.query_and_wait("select * from t")
    with pytest.raises(exceptions.BadRequest, match="nocol"):
        bq.query_and_wait("select nocol from (select 1 as a)")
    with pytest.raises(exceptions.BadRequest, match="(?i)division by zero"):
        bq.query_and_wait("select 1 / 0")  # BigQuery errors where DuckDB's default would say Infinity


def test_unqualified_tables_resolve_in_the_default_dataset_and_ctes_stay_local(bq):
    bq.create_dataset("d")
    bq.query_and_wait("create table d.t as select 41 as x")
    config = bigquery.QueryJobConfig(default_dataset=f"{bq.project}.d")
    rows = bq.query_and_wait("with t2 as (select x + 1 as x from t) select x from t2", job_config=config)
    assert [r["x"] for r in rows] == [42]
    other = "other-project"
    bq.query_and_wait(f"create schema `{other}.d2`")
    bq.query_and_wait(f"create table `{other}.d2.t` as select 'there' as w")
    assert [r["w"] for r in bq.query_and_wait(f"select w from `{other}.d2.t`")] == ["there"]


def test_views_from_sql_and_from_tables_insert(bq):
    bq.create_dataset("d")
    bq.query_and_wait("create table d.t as select 1 as x union all select 2")
    bq.query_and_wait("create view d.v as select x * 10 as y from d.t")
    view = bigquery.Table(f"{bq.project}.d.v2")
    view.view_query = "select y + 1 as z from d.v"
    bq.create_table(view)
    got = bq.get_table("d.v2")
    assert got.table_type == "VIEW" and "d.v" in got.view_query
    assert sorted(r["z"] for r in bq.query_and_wait("select z from d.v2")) == [11, 21]
    with pytest.raises(exceptions.BadRequest, match="VIEW"):
        list(bq.list_rows(got, selected_fields=got.schema))


def test_job_labels_are_kept_on_the_job_for_both_query_methods(bq):
    config = bigquery.QueryJobConfig(labels={"team": "data"})
    job = bq.query("select 1", job_config=config)
    job.result()
    assert bq.get_job(job.job_id).labels == {"team": "data"}
    rows = bq.query_and_wait("select 2", job_config=config)
    assert bq.get_job(rows.job_id).labels == {"team": "data"}


def test_jobs_can_be_fetched_listed_and_cancelled(bq):
    job = bq.query("select 1 as x", job_id="my-job-1", job_retry=None)
    job.result()
    fetched = bq.get_job("my-job-1")
    assert fetched.state == "DONE" and fetched.query == "select 1 as x"
    assert "my-job-1" in [j.job_id for j in bq.list_jobs()]
    assert bq.cancel_job("my-job-1").state == "DONE"
    with pytest.raises(exceptions.NotFound):
        bq.get_job("no-such-job")
    with pytest.raises(exceptions.Conflict):
        bq.query("select 2", job_id="my-job-1", job_retry=None).result()


def test_data_path_keeps_datasets_and_tables_across_restarts(tmp_path, make_bq):
    path = tmp_path / "emu" / "bq.duckdb"
    with Emulator(data_path=path) as emu:
        client = make_bq(emu.url)
        ds = bigquery.Dataset(f"{client.project}.kept")
        ds.location = "us-central1"
        client.create_dataset(ds)
        client.query_and_wait("create table kept.t as select 'still here' as s")
    with Emulator(data_path=path) as emu:
        client = make_bq(emu.url)
        assert client.get_dataset("kept").location == "us-central1"
        assert [r["s"] for r in client.list_rows("kept.t")] == ["still here"]


def test_positional_parameters_follow_the_text_order_even_around_a_with_clause(bq):
    params = [bigquery.ScalarQueryParameter(None, "INT64", 1), bigquery.ScalarQueryParameter(None, "STRING", "two"),
              bigquery.ScalarQueryParameter(None, "INT64", 1)]
    rows = bq.query_and_wait("with a as (select ? as v) select ? as w, v from a where v = ? -- a ? in a comment",
                             job_config=bigquery.QueryJobConfig(query_parameters=params))
    assert [tuple(r) for r in rows] == [("two", 1)]
    with pytest.raises(exceptions.BadRequest, match="2 positional parameters"):
        bq.query_and_wait("select ?, ?", job_config=bigquery.QueryJobConfig(query_parameters=params[:1]))


def test_dry_run_checks_and_describes_without_running(bq):
    bq.create_dataset("d")
    bq.query_and_wait("create table d.t as select x from unnest(generate_array(1, 100)) as x")
    config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
    job = bq.query("select x, x * 2.5 from d.t", job_config=config)
    assert [(f.name, f.field_type) for f in job.schema] == [("x", "INTEGER"), ("f0_", "FLOAT")]
    assert job.total_bytes_processed > 0 and job.statement_type == "SELECT"
    assert [t.table_id for t in job.referenced_tables] == ["t"]
    bq.query("delete from d.t where true", job_config=config)
    assert bq.get_table("d.t").num_rows == 100  # nothing ran
    with pytest.raises(exceptions.BadRequest, match="nope"):
        bq.query("select nope from d.t", job_config=config)
    with pytest.raises(exceptions.NotFound):
        bq.query("select * from d.missing", job_config=config)


def test_create_table_like_copies_the_schema_and_scripting_is_refused_clearly(bq):
    bq.create_dataset("d")
    bq.query_and_wait("create table d.src as select 1 as a, 'x' as b")
    bq.query_and_wait("create table d.copy like d.src")
    copied = bq.get_table("d.copy")
    assert ([f.name for f in copied.schema], copied.num_rows) == (["a", "b"], 0)
    with pytest.raises(exceptions.BadRequest, match="scripting, variables"):
        bq.query_and_wait("declare x int64 default 1")


def test_load_jobs_are_refused_with_the_way_around(bq):
    bq.create_dataset("d")
    config = bigquery.LoadJobConfig(schema=[bigquery.SchemaField("a", "INT64")])
    with pytest.raises(exceptions.MethodNotImplemented, match="insert_rows"):
        bq.load_table_from_json([{"a": 1}], "d.t", job_config=config).result()


def test_alter_table_rename_moves_the_table(bq):
    bq.create_dataset("d")
    bq.query_and_wait("create table d.old_name as select 1 as x")
    bq.query_and_wait("alter table d.old_name rename to new_name")
    assert [t.table_id for t in bq.list_tables("d")] == ["new_name"]
    assert [r["x"] for r in bq.list_rows("d.new_name")] == [1]
