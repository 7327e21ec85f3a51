"""Compile stage: parse errors users see, and BigQuery -> DuckDB answers checked in DuckDB.

Golden cases live in tests/fixtures/transpile/<name>.sql:

    -- what BigQuery does (the documented behaviour the case pins down)
    -- setup: optional DuckDB statements run first
    <BigQuery SQL>
    -- duckdb:
    <the exact DuckDB SQL bqbatch emits>
    -- result: <rows as JSON; DATE/TIMESTAMP as ISO text, NUMERIC as text, JSON as its text>
      (or)  -- runtime error: <text DuckDB must fail with, as BigQuery does>
      (or)  -- compile error: <text the CompileError must contain; no duckdb section>

Running the DuckDB SQL and comparing with BigQuery's documented result is the point:
a sqlglot or DuckDB upgrade that changes an answer fails here, loudly. After an
upgrade that only changes the spelling, BQBATCH_UPDATE_GOLDEN=1 rewrites the
`-- duckdb:` sections (the results are still checked); review the diff.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from sqlglot import exp

from bqbatch_sql.compile import (
    apply_duckdb_settings,
    parse_model_sql,
    parse_statement,
    to_dialect,
    transpile,
)
from bqbatch_sql.errors import CompileError

FIXTURES = Path(__file__).parent / "fixtures" / "transpile"
_SECTION = re.compile(r"^-- (duckdb|result|runtime error|compile error|setup):[ ]?(.*)$")


@dataclass
class Case:
    name: str
    bigquery: str
    duckdb: str | None = None
    result: list | None = None
    runtime_error: str | None = None
    compile_error: str | None = None
    setup: str | None = None


def _load(path: Path) -> Case:
    case = Case(name=path.stem, bigquery="")
    section, lines = "bigquery", {"bigquery": [], "duckdb": []}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _SECTION.match(line)
        if m:
            key, rest = m.groups()
            if key in ("duckdb",):
                section = key
            elif key == "result":
                case.result = json.loads(rest)
            elif key == "runtime error":
                case.runtime_error = rest
            elif key == "compile error":
                case.compile_error = rest
            elif key == "setup":
                case.setup = rest
            continue
        if section == "bigquery" and line.startswith("-- ") and not lines["bigquery"]:
            continue  # the description
        lines[section].append(line)
    case.bigquery = "\n".join(lines["bigquery"]).strip()
    case.duckdb = "\n".join(lines["duckdb"]).strip() or None
    return case


CASES = sorted((_load(p) for p in FIXTURES.glob("*.sql")), key=lambda c: c.name)


def _plain(value):
    """DuckDB's Python values in the fixtures' JSON spelling."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


@pytest.fixture
def duck():
    con = duckdb.connect()
    apply_duckdb_settings(con)
    yield con
    con.close()


def test_fixture_set_covers_the_known_traps():
    names = {c.name for c in CASES}
    for required in ("format_printf", "json_subscript_parse_json", "safe_prefix", "json_value",
                     "unnest_json_query_array", "to_json_string", "json_type", "countif_empty",
                     "safe_cast_int64_text", "safe_cast_int64_digits", "cast_string_to_int64_hex",
                     "json_query_array_non_array", "json_value_array_non_array", "json_query_array_malformed"):
        assert required in names
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_transpiled_sql_gives_bigquery_answer(case: Case, duck):
    if case.compile_error:
        with pytest.raises(CompileError) as err:
            transpile(case.bigquery, "duckdb", path=f"models/{case.name}.sql", model=case.name)
        message = str(err.value)
        assert case.compile_error in message
        assert f"Model '{case.name}' (models/{case.name}.sql)" in message
        assert "Fix:" in message
        return
    sql = transpile(case.bigquery, "duckdb", path=f"models/{case.name}.sql", model=case.name)
    if os.environ.get("BQBATCH_UPDATE_GOLDEN") and sql != case.duckdb:
        _update_golden(case, sql)
    else:
        assert sql == case.duckdb, f"golden DuckDB SQL changed for {case.name}"
    if case.setup:
        duck.execute(case.setup)
    if case.runtime_error:
        with pytest.raises(duckdb.Error, match=re.escape(case.runtime_error)):
            duck.execute(sql).fetchall()
        return
    assert _plain(duck.execute(sql).fetchall()) == case.result


def _update_golden(case: Case, sql: str) -> None:
    path = FIXTURES / f"{case.name}.sql"
    text = path.read_text(encoding="utf-8")
    head, rest = text.split("-- duckdb:\n", 1)
    tail = rest[rest.index("\n-- ", len(case.duckdb or "")) + 1 :]
    path.write_text(f"{head}-- duckdb:\n{sql}\n{tail}", encoding="utf-8")


# --- parse errors ------------------------------------------------------------------------


def test_syntax_error_names_model_line_column_with_caret():
    sql = "select\n  a,\n  b c d\nfrom t"
    with pytest.raises(CompileError) as err:
        parse_model_sql(sql, path="models/x.sql", model="x")
    lines = str(err.value).splitlines()
    assert lines[0].startswith("Model 'x' (models/x.sql): SQL syntax error at line 3, column 7 (near 'd')")
    assert lines[1] == "   3 |   b c d"
    assert lines[2].index("^") == len("   3 | ") + 6  # under column 7
    assert lines[3].startswith("Fix: ")


def test_unclosed_parenthesis_hint():
    with pytest.raises(CompileError) as err:
        parse_model_sql("select (1 + 2 from t", path="models/p.sql", model="p")
    message = str(err.value)
    assert "line 1, column 15" in message and "parenthesis" in message


def test_unterminated_string_points_at_its_start():
    with pytest.raises(CompileError) as err:
        parse_model_sql("select 1,\n  'abc\nfrom t", path="models/s.sql", model="s")
    lines = str(err.value).splitlines()
    assert "line 2, column 3" in lines[0]
    assert lines[1] == "   2 |   'abc"
    assert lines[2].index("^") == len("   2 | ") + 2
    assert "not closed" in str(err.value)


def test_sqlglot_internals_do_not_leak_into_messages():
    with pytest.raises(CompileError) as err:
        parse_model_sql("select 1 from", path="models/e.sql", model="e")
    message = str(err.value)
    assert "<Token" not in message and "<class" not in message
    assert "end of the SQL" in message


def test_leftover_jinja_is_reported():
    with pytest.raises(CompileError) as err:
        parse_model_sql("select {{ ref('a') }} from t", path="models/j.sql", model="j")
    assert "Jinja" in str(err.value) and "line 1, column 8" in str(err.value)


def test_jinja_like_text_inside_a_string_is_fine():
    assert parse_model_sql("select '{{ not jinja }}' as s", path="m.sql", model="m")


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("", "is empty"),
        ("  -- only a comment\n", "is empty"),
        ("select 1; select 2", "contains 2 statements"),
        ("create table x as select 1", "is a CREATE statement, not a query"),
        ("insert into t values (1)", "is a INSERT statement, not a query"),
    ],
)
def test_model_must_be_one_query(sql, expected):
    with pytest.raises(CompileError, match=re.escape(expected)):
        parse_model_sql(sql, path="models/m.sql", model="m")


@pytest.mark.parametrize(
    "sql",
    ["select 1", "select 1;", "with a as (select 1 x) select * from a", "select 1 union all select 2", "(select 1)"],
)
def test_model_queries_accepted(sql):
    assert isinstance(parse_model_sql(sql, path="models/m.sql", model="m"), exp.Query)


def test_parse_statement_takes_any_one_statement_and_names_hook():
    assert isinstance(parse_statement("delete from t where true"), exp.Delete)
    with pytest.raises(CompileError, match=r"SQL in models/a\.sql post_hook #1 contains 2 statements"):
        parse_statement("select 1; select 2", path="models/a.sql post_hook #1")


# --- API contract ------------------------------------------------------------------------


def test_to_dialect_returns_a_copy_and_leaves_input_alone():
    tree = parse_model_sql("select FORMAT('%d', 1) as f, PARSE_JSON(r).a[0] as j from t", path="m.sql", model="m")
    before = tree.sql("bigquery")
    out = to_dialect(tree, "duckdb", path="m.sql", model="m")
    assert out is not tree
    assert tree.sql("bigquery") == before
    assert "PRINTF" in out.sql("duckdb")
    assert to_dialect(tree, "bigquery").sql("bigquery") == before


def test_to_dialect_in_place_when_caller_owns_the_tree():
    tree = parse_model_sql("select COUNTIF(x) as c from t", path="m.sql", model="m")
    out = to_dialect(tree, "duckdb", copy=False)
    assert out.sql("duckdb") == "SELECT COUNT(CASE WHEN x THEN 1 END) AS c FROM t"


def test_unknown_dialect_suggests():
    with pytest.raises(CompileError, match="Did you mean 'duckdb'"):
        transpile("select 1", "duckbd")


def test_bigquery_target_is_untouched():
    sql = "SELECT FORMAT('%d', 1), PARSE_JSON(r).a[0] FROM `p.d.t`"
    assert transpile(sql, "bigquery") == sql


def test_rejection_names_model_file_and_line():
    sql = "select\n  1 as a,\n  FARM_FINGERPRINT(name) as h\nfrom t"
    with pytest.raises(CompileError) as err:
        to_dialect(parse_model_sql(sql, path="models/f.sql", model="f"), "duckdb", path="models/f.sql", model="f")
    assert str(err.value).startswith("Model 'f' (models/f.sql), line 3: FARM_FINGERPRINT")


def test_statements_for_hooks_and_emulator_run_on_duckdb(duck):
    duck.execute("CREATE SCHEMA ds")
    steps = [
        "CREATE OR REPLACE TABLE ds.t (id INT64, amount NUMERIC, tags ARRAY<STRING>, meta JSON, ts TIMESTAMP)"
        " PARTITION BY DATE(ts) CLUSTER BY id OPTIONS(description='storage hints, no effect on answers')",
        "INSERT INTO ds.t (id, amount, tags, meta) VALUES (1, NUMERIC '1.123456789', ['a'], JSON '{\"k\": 1}')",
        "INSERT INTO ds.t (id, amount, tags, meta) VALUES (2, 2.5, [], NULL)",
        "UPDATE ds.t SET amount = amount * 2 WHERE id = 2",
        "DELETE FROM ds.t WHERE id = 3",
        "MERGE ds.t T USING (SELECT 2 AS id) S ON T.id = S.id WHEN MATCHED THEN UPDATE SET tags = ['m']"
        " WHEN NOT MATCHED THEN INSERT (id) VALUES (S.id)",
        "CREATE TABLE ds.t_copy COPY ds.t",
        "CREATE TEMP TABLE scratch AS SELECT 1 AS x",
        "CREATE OR REPLACE TABLE ds.o AS SELECT id, CAST(amount AS STRING) AS amount, tags[SAFE_OFFSET(0)] AS tag,"
        " INT64(meta.k) AS k FROM ds.t_copy",
    ]
    for sql in steps:
        duck.execute(transpile(sql, "duckdb"))
    rows = duck.execute("SELECT * FROM ds.o ORDER BY id").fetchall()
    assert rows == [(1, "1.123456789", "a", 1), (2, "5", "m", None)]


def test_settings_reach_cursors_the_adapter_opens(duck):
    # The rewrites rely on these two; a cursor is a new session, so they must be GLOBAL.
    cursor = duck.cursor()
    assert cursor.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"
    with pytest.raises(duckdb.Error, match="Division by zero"):
        cursor.execute("SELECT 1.5 / 0").fetchall()


# --- STRING -> INT64, text by text -----------------------------------------------------------

BAD = "Bad int64 value"
# BigQuery's CAST(<STRING> AS INT64): the number, None for NULL, or BAD for the error
# 'Bad int64 value: <text>' (SAFE_CAST gives NULL for those). ASCII digits only is the
# common text (token counts read from JSON) and has a path of its own in the rewrite;
# the others check that only it takes that path.
INT64_OF_TEXT = [
    ("", BAD), ("0", 0), ("007", 7), ("123", 123), (" 123", 123), ("\t123\n", 123), ("+5", 5), ("-5", -5),
    ("0x1F", 31), (" 0x1F ", 31), ("-0x1F", -31), ("1.5", BAD), ("1e3", BAD), ("1_000", BAD), ("0b11", BAD),
    ("9223372036854775807", 2**63 - 1), ("9223372036854775808", BAD), ("-9223372036854775808", -(2**63)),
    ("-9223372036854775809", BAD), ("99999999999999999999", BAD), ("\u0661\u0662\u0663", BAD),  # Arabic-Indic 123
    ("\uff11\uff12", BAD),  # fullwidth 12
    ("12a", BAD), ("1 2", BAD), ("[1]", BAD), ("*", BAD), (None, None),
]
# The operand's two shapes: a column of unknown type (the parsed view's token columns:
# the rewrite asks typeof()) and a STRING expression (JSON_VALUE, known at compile time).
OPERANDS = {"column": ("s", "t"), "json_value": ("JSON_VALUE(j, '$.a')", "d")}


def _texts(duck, texts):
    duck.execute("CREATE TABLE t (id INTEGER, s VARCHAR)")
    duck.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(texts)))
    duck.execute("CREATE TABLE d AS SELECT id, CAST(json_object('a', s) AS VARCHAR) AS j FROM t")


@pytest.mark.parametrize("operand", OPERANDS)
def test_safe_cast_of_text_to_int64_gives_bigquerys_answers(duck, operand):
    _texts(duck, [text for text, _ in INT64_OF_TEXT])
    value, table = OPERANDS[operand]
    sql = transpile(f"SELECT id, SAFE_CAST({value} AS INT64) FROM {table} ORDER BY id", "duckdb")
    got = {text: n for (_, n), (text, _) in zip(duck.execute(sql).fetchall(), INT64_OF_TEXT)}
    assert got == {text: None if expected == BAD else expected for text, expected in INT64_OF_TEXT}


@pytest.mark.parametrize("operand", OPERANDS)
@pytest.mark.parametrize(("text", "expected"), INT64_OF_TEXT, ids=repr)
def test_cast_of_text_to_int64_gives_bigquerys_answer_or_error(duck, operand, text, expected):
    _texts(duck, [text])
    value, table = OPERANDS[operand]
    sql = transpile(f"SELECT CAST({value} AS INT64) FROM {table}", "duckdb")
    if expected == BAD:
        with pytest.raises(duckdb.Error, match=re.escape(f"{BAD}: {text}")):
            duck.execute(sql).fetchall()
    else:
        assert duck.execute(sql).fetchall() == [(expected,)]


@pytest.mark.parametrize(("text", "expected"), [c for c in INT64_OF_TEXT if c[0] is not None], ids=repr)
def test_cast_of_string_literal_to_int64_is_decided_at_compile_time(duck, text, expected):
    for query in ("SELECT SAFE_CAST('' AS INT64) AS n", "SELECT CAST('' AS INT64) AS n"):
        tree = parse_model_sql(query, path="models/m.sql", model="m")
        tree.find(exp.Literal).replace(exp.Literal.string(text))
        if expected == BAD and query.startswith("SELECT CAST"):
            with pytest.raises(CompileError, match=re.escape(f"fails with '{BAD}")):
                to_dialect(tree, "duckdb", path="models/m.sql", model="m")
            continue
        sql = to_dialect(tree, "duckdb", path="models/m.sql", model="m").sql(dialect="duckdb")
        assert duck.execute(sql).fetchall() == [(None if expected == BAD else expected,)]
