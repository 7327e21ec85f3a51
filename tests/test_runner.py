"""Run stage on the embedded DuckDB target: materializations, hooks, failures, artifacts."""

from __future__ import annotations

import json

import duckdb

FILES = {
    "seeds/dishes.csv": "id,dish,price\n1,banana bread,3.5\n2,\"pasta, fresh\",7\n",
    "models/stg_dishes.sql": "select id, upper(dish) as dish, price from {{ ref('dishes') }}",
    "models/dish_stats.sql": """
        {{ config(materialized='table', post_hook="insert into {{ this }} values (99, 0.0)") }}
        select count(*) as n, sum(price) as total from {{ ref('stg_dishes') }}
    """,
    "models/broken.sql": "select * from {{ ref('stg_dishes') }} where no_such_column = 1",
    "models/after_broken.sql": "select * from {{ ref('broken') }}",
    "models/independent.sql": "{{ config(materialized='table') }} select 42 as answer",
}


def _db(root):
    return duckdb.connect(str(root / "target" / "bqbatch.duckdb"), read_only=True)


def test_build_materializes_and_a_failure_skips_only_descendants(make_project, cli):
    root = make_project(FILES)
    result = cli("build", "--project-dir", root, "--threads", "2")
    assert result.exit_code == 1
    out = result.output
    assert "OK    seed main.dishes [2 rows" in out
    assert "OK    table main.dish_stats [1 rows" in out
    assert "ERROR view main.broken" in out and "no_such_column" in out
    assert "SKIP  view main.after_broken" in out and "skipped because 'broken' did not succeed" in out
    assert "4 ok, 1 error, 1 skipped" in out
    with _db(root) as db:
        assert db.execute('select dish from main.stg_dishes order by id').fetchall() == [("BANANA BREAD",), ("PASTA, FRESH",)]
        # the post-hook ran after the table was built, with `this` resolved
        assert db.execute("select n, total from main.dish_stats order by n").fetchall() == [(2, 10.5), (99, 0.0)]
        assert db.execute("select answer from main.independent").fetchall() == [(42,)]
        types = dict(db.execute("select column_name, data_type from information_schema.columns where table_name='dishes'").fetchall())
        assert types == {"id": "BIGINT", "dish": "VARCHAR", "price": "DOUBLE"}

    results = json.loads((root / "target" / "run_results.json").read_text())
    assert results["metadata"]["schema_version"].endswith("/run-results/v1.json")
    by_name = {r["name"]: r for r in results["results"]}
    assert by_name["broken"]["status"] == "error" and "no_such_column" in by_name["broken"]["message"]
    assert by_name["after_broken"]["status"] == "skipped"
    assert by_name["dish_stats"]["rows_affected"] == 1 and by_name["dish_stats"]["execution_time"] >= 0


def test_run_exits_zero_when_every_selected_node_succeeds(make_project, cli):
    root = make_project(FILES)
    assert cli("seed", "--project-dir", root).exit_code == 0
    result = cli("run", "--project-dir", root, "--select", "+dish_stats", "--exclude", "dishes")
    assert result.exit_code == 0, result.output
    assert "2 ok, 0 error, 0 skipped" in result.output


def test_table_replaces_a_view_of_the_same_name(make_project, cli):
    root = make_project({"models/m.sql": "select 1 as x"})
    assert cli("run", "--project-dir", root).exit_code == 0
    (root / "models" / "m.sql").write_text("{{ config(materialized='table') }} select 2 as x")
    assert cli("run", "--project-dir", root).exit_code == 0
    with _db(root) as db:
        assert db.execute("select table_type from information_schema.tables where table_name='m'").fetchall() == [("BASE TABLE",)]


def test_compile_writes_compiled_sql_and_manifest(make_project, cli):
    root = make_project(FILES)
    result = cli("compile", "--project-dir", root)
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "target" / "manifest.json").read_text())
    node = manifest["nodes"]["model.dish_stats"]
    assert node["depends_on"]["nodes"] == ["model.stg_dishes"]
    assert node["config"]["materialized"] == "table"
    assert node["compiled_path"] == "target/compiled/demo/models/dish_stats.sql"
    assert len(node["checksum"]["checksum"]) == 64
    assert manifest["metadata"]["schema_version"].endswith("/manifest/v1.json")
    assert (root / node["compiled_path"]).read_text().startswith("select count(*) as n")


def test_sql_syntax_error_names_model_line_and_column(make_project, cli):
    root = make_project({"models/m.sql": "select 1 as x,\n  from t where"})
    result = cli("compile", "--project-dir", root)
    assert result.exit_code == 1
    assert "Model 'm' (models/m.sql)" in result.output and "line 2" in result.output


def test_a_warm_compile_still_catches_an_edited_model(make_project, cli):
    root = make_project({"models/m.sql": "select 1 as x"})
    assert cli("compile", "--project-dir", root).exit_code == 0
    assert (root / "target" / "cache" / "compiled.txt").read_text().strip()
    (root / "models" / "m.sql").write_text("select 1 as x,\n  from t where")
    result = cli("compile", "--project-dir", root)
    assert result.exit_code == 1 and "Model 'm' (models/m.sql)" in result.output
