"""Built-in macros (macros/*.sql): golden SQL in both dialects, and answers checked in DuckDB.

Golden cases live in tests/fixtures/macros/<name>.sql:

    -- call:
    <a model using the macros, as a user writes it>
    -- bigquery:
    <the exact BigQuery SQL the macros render>
    -- duckdb:
    <the exact DuckDB SQL bqbatch.compile makes of it>
    -- result:
    <one JSON line per row the DuckDB SQL returns over the tables built below>

BQBATCH_UPDATE_GOLDEN=1 pytest tests/test_macros.py rewrites the three generated
sections after a deliberate change; review the diff before committing it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from bqbatch_sql import macro_helpers as mh
from bqbatch_sql.compile import DUCKDB_SETTINGS, transpile
from bqbatch_sql.errors import RenderError
from bqbatch_sql.project import builtin_macro_dir
from bqbatch_sql.render import Renderer, TargetInfo

FIXTURES = Path(__file__).parent / "fixtures" / "macros"
UPDATE = os.environ.get("BQBATCH_UPDATE_GOLDEN") == "1"
SEED_STATUS = (
    'Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
    '"status": "INVALID_ARGUMENT"}}'
)

# Texts that break naive quoting somewhere: SQL quotes, JSON quotes, escapes that
# BigQuery and DuckDB read differently, line breaks, non-BMP characters, Jinja markers.
TRICKY = [
    "plain",
    "it's \"quoted\"",
    "back\\slash \\n is not a newline \\\\ \\'",
    "line\nbreak\ttab\rreturn",
    "unicode: é ü ß 中文 العربية",
    "emoji: 😀 👍🏽 👩‍👩‍👧",
    "sql: '); DROP TABLE recipes; --",
    "jinja: {{ ref('x') }} {% if %}",
    "json: {\"a\": [1, \"\\u0041\"]}",
    "ctrl:\x01\x1f and \u2028 sep",
    "",
    "x" * 20000,
]

RECIPES = [
    # recipe_id, dish, history (JSON text), uri, mime, persona
    (1, "banana bread", '[{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "hello"}]}, {"role": "user", "parts": [{"text": "bread?"}]}]',
     "gs://bucket/bread.pdf", "application/pdf", "You are a baker."),
    (2, None, '[{"role": "user", "parts": [{"text": "soup?"}]}]', None, None, None),
    (3, "crème brûlée \"extra\" \\ 😀\nnew line", '[{"role": "user", "parts": [{"text": "x"}]}]',
     "https://example.com/img.png", "image/png", "Ты повар."),
]


def _response(*parts: dict, finish: str = "STOP", usage: tuple[int, int, int] | None = (8, 396, 404)) -> str:
    body: dict = {"candidates": [{"content": {"role": "model", "parts": list(parts)}, "finishReason": finish}]}
    if usage:
        body["usageMetadata"] = dict(zip(("promptTokenCount", "candidatesTokenCount", "totalTokenCount"), usage))
    return json.dumps(body)


PREDICTIONS = [
    # recipe_id, response, status
    (1, _response({"text": "In a medium bowl, whisk together the flour."}), ""),
    (2, None, SEED_STATUS),
    (3, _response({"text": "thinking about it", "thought": True}, {"text": '{"name": "Crème", "minutes": 45,'},
                  {"text": ' "vegan": false, "price": 4.5, "tags": ["a", "b"], "steps": {"n": 2}, "text": "t",'},
                  {"text": ' "serves people": 4}'}), None),
    (4, _response({"text": "not json {"}, finish="MAX_TOKENS", usage=(3, 100, 103)), ""),
    (5, None, "Internal error occurred."),
    (6, json.dumps({"candidates": [{"finishReason": "SAFETY"}], "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}), None),
    (7, _response({"text": "plan", "thought": True}, {"text": '{"name": "Tea", "minutes": 4.5, "vegan": "yes"}'}), None),
    # Past the parts read one by one: the general path, order kept, thoughts and non-text parts skipped.
    (8, _response({"text": "  {\"name\": "}, {"text": "x", "thought": True}, {"functionCall": {"name": "f"}}, {"text": '"Long"'},
                  {"text": ", \"minutes\": 1"}, {"text": "}"}), ""),
]

SCHEMA = {
    "type": "OBJECT",
    "properties": {
        "name": {"type": "STRING"},
        "minutes": {"type": "INTEGER"},
        "vegan": {"type": "BOOLEAN"},
        "price": {"type": "number"},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
        "steps": {"type": "OBJECT"},
        "text": {"type": "STRING"},
        "serves people": {"type": "INTEGER"},
    },
}


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    macro_files = sorted(builtin_macro_dir().glob("*.sql"))
    target = TargetInfo(name="dev", type="duckdb", schema="main", database=None, dialect="duckdb")
    return Renderer(macro_files, builtin_macro_dir().parent, target, {}, {})


@pytest.fixture(scope="module")
def render(renderer):
    counter = iter(range(1_000_000))

    def render(template: str, **extra) -> str:
        # A fresh name per snippet: the renderer caches templates by name.
        name = f"test_macros_{next(counter)}.sql"
        return renderer.render_snippet(name, template, "Test snippet", None, extra=extra).strip()

    return render


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, value in DUCKDB_SETTINGS.items():
        con.execute(f"SET {name} = '{value}'")
    con.execute(
        "CREATE TABLE recipes (recipe_id INTEGER, dish VARCHAR, history VARCHAR, uri VARCHAR, mime VARCHAR, persona VARCHAR)"
    )
    con.executemany("INSERT INTO recipes VALUES (?, ?, ?, ?, ?, ?)", RECIPES)
    con.execute(
        "CREATE TABLE predictions (recipe_id INTEGER, request JSON, response JSON, status VARCHAR, "
        "processed_time TIMESTAMP)"
    )
    con.executemany(
        "INSERT INTO predictions VALUES (?, NULL, ?, ?, TIMESTAMP '2026-11-21 12:00:00')", PREDICTIONS
    )
    # The same output with response as STRING, as a STRING request column yields.
    con.execute("CREATE TABLE predictions_text AS SELECT recipe_id, request, CAST(response AS VARCHAR) AS response, "
                "status, processed_time FROM predictions")
    return con


@pytest.fixture(scope="module")
def shared_duck():
    con = _connect()
    yield con
    con.close()


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[list]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    types = [str(d[1]) for d in cur.description]
    rows = []
    for row in cur.fetchall():
        out = []
        for value, kind in zip(row, types):
            if kind == "JSON" and value is not None:
                value = json.loads(value)
            elif isinstance(value, (dt.datetime, dt.date)):
                value = value.isoformat()
            out.append(value)
        rows.append(out)
    return names, rows


# --- golden files ------------------------------------------------------------------------

_SECTION = re.compile(r"^-- (call|bigquery|duckdb|result):\s*$")


def _load(path: Path) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _SECTION.match(line)
        if m:
            current = m.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {k: "\n".join(v).strip() for k, v in sections.items()}


def _write(path: Path, call: str, bigquery: str, duckdb_sql: str, result: list[str]) -> None:
    text = f"-- call:\n{call}\n-- bigquery:\n{bigquery}\n-- duckdb:\n{duckdb_sql}\n-- result:\n" + "\n".join(result) + "\n"
    path.write_text(text, encoding="utf-8")


GOLDEN = sorted(FIXTURES.glob("*.sql"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden(path, render, shared_duck):
    case = _load(path)
    bigquery = render(case["call"])
    duckdb_sql = transpile(bigquery, "duckdb")
    names, rows = _rows(shared_duck, duckdb_sql)
    result = [json.dumps(dict(zip(names, row)), ensure_ascii=False, sort_keys=False) for row in rows]
    if UPDATE:
        _write(path, case["call"], bigquery, duckdb_sql, result)
        return
    assert bigquery == case["bigquery"]
    assert duckdb_sql == case["duckdb"]
    assert result == case["result"].splitlines()


def test_golden_set_covers_the_macros():
    names = {p.stem for p in GOLDEN}
    assert {"request_basic", "request_all_options", "request_multi_turn", "request_contents_sql",
            "request_file", "view_plain", "view_schema"} <= names


# --- gemini_request: any text survives, in both dialects -----------------------------------


def test_prompt_column_round_trips_any_text(render):
    sql = transpile(render("""select id, {{ gemini_request(prompt="'Q: ' || body") }} as request from texts"""), "duckdb")
    con = _connect()
    con.execute("CREATE TABLE texts (id INTEGER, body VARCHAR)")
    con.executemany("INSERT INTO texts VALUES (?, ?)", list(enumerate(TRICKY)))
    got = dict(con.execute(sql).fetchall())
    assert len(got) == len(TRICKY)
    for i, text in enumerate(TRICKY):
        request = json.loads(got[i])
        assert request == {"contents": [{"role": "user", "parts": [{"text": "Q: " + text}]}]}


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_constant_system_instruction_round_trips_in_both_dialects(render, text):
    bigquery = render("{{ gemini_request(prompt=\"'hi'\", system_instruction=si, labels={'k': si[:60]}) }}", si=text)
    # BigQuery side: sqlglot's BigQuery reader sees exactly our text in the literal.
    literals = [lit.this for lit in sqlglot.parse_one(bigquery, read="bigquery").find_all(exp.Literal) if lit.is_string]
    assert text in literals
    # DuckDB side: the request parses back to the exact text.
    con = _connect()
    request = json.loads(con.execute(transpile(f"SELECT {bigquery}", "duckdb")).fetchone()[0])
    assert request["systemInstruction"] == {"parts": [{"text": text}]}
    assert request["labels"] == {"k": text[:60]}


def test_null_prompt_keeps_the_row_with_a_null_text(render):
    # The row is not dropped and the query does not fail: the batch gives the row a
    # failed status (validation), the other rows go through.
    sql = transpile(render("""select recipe_id, {{ gemini_request(prompt="dish") }} as request from recipes"""), "duckdb")
    rows = dict(_connect().execute(sql).fetchall())
    assert len(rows) == 3
    assert json.loads(rows[2]) == {"contents": [{"role": "user", "parts": [{"text": None}]}]}


def test_null_prompt_row_fails_validation_with_a_clear_status(render):
    validate = pytest.importorskip("bqbatch_sql.validate", reason="validate.py has not landed yet")
    sql = transpile(render("""select recipe_id, {{ gemini_request(prompt="dish") }} as request from recipes"""), "duckdb")
    con = _connect()
    con.execute(f"CREATE TABLE requests AS {sql}")
    status = validate.request_status_sql(exp.column("request"), "duckdb").sql("duckdb")
    statuses = dict(con.execute(f"SELECT recipe_id, {status} FROM requests").fetchall())
    assert statuses[1] is None and statuses[3] is None
    assert statuses[2].startswith("Bad Request: ") and "text" in statuses[2]


def test_generation_options_land_in_camel_case(render, shared_duck):
    call = """{{ gemini_request(prompt="dish", temperature=0, top_p=0.95, top_k=40, max_output_tokens=256,
        candidate_count=1, seed=7, stop_sequences=['END'], response_mime_type='text/plain',
        generation_config={'thinkingConfig': {'thinkingBudget': 0}}) }}"""
    request = json.loads(shared_duck.execute(transpile(f"SELECT {render(call)} FROM recipes WHERE recipe_id = 1", "duckdb")).fetchone()[0])
    assert request["generationConfig"] == {
        "temperature": 0, "topP": 0.95, "topK": 40, "maxOutputTokens": 256, "candidateCount": 1, "seed": 7,
        "stopSequences": ["END"], "responseMimeType": "text/plain", "thinkingConfig": {"thinkingBudget": 0},
    }


def test_schema_as_dict_or_json_string_is_the_same_and_implies_json_output(render):
    as_dict = render("{{ gemini_request(prompt='dish', response_schema={'type': 'OBJECT', 'properties': {'a': {'type': 'STRING'}}}) }}")
    as_text = render("""{{ gemini_request(prompt='dish', response_schema='{"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}') }}""")
    assert as_dict == as_text
    assert '"responseMimeType":"application/json"' in as_dict


def test_multi_turn_pairs_then_prompt_make_alternating_turns(render, shared_duck):
    call = """{{ gemini_request(contents=[('user', "'Hi, I am ' || persona"), ('model', "'Hello!'")],
                                prompt="'Cook ' || dish", system_instruction_sql="persona") }}"""
    request = json.loads(shared_duck.execute(transpile(f"SELECT {render(call)} FROM recipes WHERE recipe_id = 1", "duckdb")).fetchone()[0])
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "Hi, I am You are a baker."}]},
        {"role": "model", "parts": [{"text": "Hello!"}]},
        {"role": "user", "parts": [{"text": "Cook banana bread"}]},
    ]
    assert request["systemInstruction"] == {"parts": [{"text": "You are a baker."}]}


def test_scalar_subquery_is_a_valid_prompt(render):
    assert "JSON_OBJECT('text', (SELECT MAX(dish) FROM recipes))" in render('{{ gemini_request(prompt="(SELECT MAX(dish) FROM recipes)") }}')


def test_file_part_comes_before_the_text(render, shared_duck):
    call = """{{ gemini_request(prompt="'Describe it'", file_uri="uri", mime_type_sql="mime") }}"""
    rows = shared_duck.execute(transpile(f"SELECT recipe_id, {render(call)} FROM recipes ORDER BY 1", "duckdb")).fetchall()
    parts = {rid: json.loads(r)["contents"][0]["parts"] for rid, r in rows}
    assert parts[1] == [{"fileData": {"fileUri": "gs://bucket/bread.pdf", "mimeType": "application/pdf"}}, {"text": "Describe it"}]
    assert parts[3][0] == {"fileData": {"fileUri": "https://example.com/img.png", "mimeType": "image/png"}}


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("gemini_request()", "nothing to send; pass prompt="),
        ("gemini_request(prompt='Summarize this')",
         "prompt is not a SQL expression (it reads as a column with an alias): 'Summarize this'. prompt is SQL "
         "evaluated per row; for a constant text, quote it inside: prompt=\"'Summarize this'\"."),
        ("gemini_request(prompt=\"What's new?\")", "prompt is not a SQL expression"),
        ("gemini_request(prompt='SELECT body FROM t')", "a query must be in parentheses"),
        ("gemini_request(prompt='x', system_instruction_sql='Be brief, please')", "system_instruction_sql is not a SQL expression"),
        ("gemini_request(contents=[('user', 'Hello there friend')])", "contents[0].text is not a SQL expression"),
        ("gemini_request(prompt=5)", "prompt must be a SQL expression in a string, got 5"),
        ("gemini_request(prompt='x', temperature='hot')", "temperature must be a number constant, got 'hot'"),
        ("gemini_request(prompt='x', temperature=true)", "temperature must be a number constant"),
        ("gemini_request(prompt='x', temperature=3)", "temperature=3 is out of range [0, 2]"),
        ("gemini_request(prompt='x', max_output_tokens=1.5)", "max_output_tokens must be an integer constant"),
        ("gemini_request(contents=[('usr', 'x')])", "contents[0] has role 'usr'; Gemini accepts only 'user' or 'model'. Did you mean 'user'?"),
        ("gemini_request(contents=[{'role': 'user', 'txt': 'x'}])", "contents[0] has unknown key 'txt'. Did you mean 'text'?"),
        ("gemini_request(contents='history', prompt='x')", "contents is a SQL expression, so it must hold every turn"),
        ("gemini_request(prompt='x', file_uri='uri')", "file_uri needs mime_type"),
        ("gemini_request(prompt='x', mime_type='image/png')", "pass file_uri= too"),
        ("gemini_request(prompt='x', system_instruction='a', system_instruction_sql='b')", "not both"),
        ("gemini_request(prompt='x', response_schema='{not json')", "response_schema is a string but not valid JSON"),
        ("gemini_request(prompt='x', response_schema={'type': 'OBJECT'}, response_mime_type='text/plain')",
         "response_schema needs response_mime_type='application/json'"),
        ("gemini_request(prompt='x', labels={'team': 1})", "labels must be a dict of strings to strings"),
        ("gemini_request(prompt='x', safety_settings=[{'category': 'HARM_CATEGORY_HATE_SPEECH'}])",
         "safety_settings[0] must be a dict with 'category' and 'threshold'"),
        ("gemini_request(prompt='x', temperature=0.5, generation_config={'temperature': 1})",
         "temperature set both as an argument and in generation_config"),
    ],
)
def test_bad_arguments_fail_at_render_time_naming_the_argument(render, call, expected):
    with pytest.raises(RenderError) as info:
        render("{{ " + call + " }}")
    assert expected in str(info.value)


# --- parsed_response_view -------------------------------------------------------------------


def _view(render, con, table="predictions", schema=None, passthrough=("recipe_id", "request", "response", "status", "processed_time")):
    sql = render("{{ parsed_response_view(relation, passthrough, schema) }}",
                 relation=f"`{table}`", passthrough=list(passthrough), schema=schema)
    names, rows = _rows(con, transpile(sql, "duckdb") + " ORDER BY recipe_id")
    return [dict(zip(names, row)) for row in rows]


@pytest.mark.parametrize("table", ["predictions", "predictions_text"])
def test_view_reads_text_tokens_and_errors(render, shared_duck, table):
    rows = {r["recipe_id"]: r for r in _view(render, shared_duck, table)}
    assert list(rows[1]) == ["recipe_id", "text", "finish_reason", "prompt_tokens", "output_tokens", "total_tokens",
                             "error_code", "error_message"]
    assert rows[1]["text"] == "In a medium bowl, whisk together the flour."
    assert (rows[1]["finish_reason"], rows[1]["prompt_tokens"], rows[1]["output_tokens"], rows[1]["total_tokens"]) == ("STOP", 8, 396, 404)
    assert rows[1]["error_code"] is None and rows[1]["error_message"] is None
    # The seeds' failure example: code and message out of the status text.
    assert (rows[2]["error_code"], rows[2]["error_message"]) == (400, "Please use a valid role: user, model.")
    assert rows[2]["text"] is None and rows[2]["total_tokens"] is None
    # Four parts, the first a thought: the answer is the other three, in order.
    assert rows[3]["text"] == ('{"name": "Crème", "minutes": 45, "vegan": false, "price": 4.5, "tags": ["a", "b"], '
                               '"steps": {"n": 2}, "text": "t", "serves people": 4}')
    assert rows[4]["finish_reason"] == "MAX_TOKENS"
    # A status with no JSON in it is still shown whole.
    assert (rows[5]["error_code"], rows[5]["error_message"]) == (None, "Internal error occurred.")
    assert (rows[6]["text"], rows[6]["finish_reason"], rows[6]["output_tokens"], rows[6]["total_tokens"]) == (None, "SAFETY", None, 5)
    assert rows[7]["text"] == '{"name": "Tea", "minutes": 4.5, "vegan": "yes"}'
    assert rows[8]["text"] == '  {"name": "Long", "minutes": 1}'


def test_view_types_schema_properties_and_never_fails_on_bad_json(render, shared_duck):
    rows = {r["recipe_id"]: r for r in _view(render, shared_duck, schema=SCHEMA)}
    assert list(rows[3])[8:] == ["name", "minutes", "vegan", "price", "tags", "steps", "output_text", "serves people"]
    assert {k: rows[3][k] for k in list(rows[3])[8:]} == {
        "name": "Crème", "minutes": 45, "vegan": False, "price": 4.5, "tags": ["a", "b"], "steps": {"n": 2},
        "output_text": "t", "serves people": 4,
    }
    # Not JSON, no text at all, or values of the wrong type: NULLs, not an error.
    for rid in (1, 2, 4, 5, 6):
        assert all(rows[rid][k] is None for k in list(rows[rid])[8:]), rid
    assert (rows[7]["name"], rows[7]["minutes"], rows[7]["vegan"]) == ("Tea", None, None)
    assert (rows[8]["name"], rows[8]["minutes"]) == ("Long", 1)


def test_view_column_types(render, shared_duck):
    sql = render("{{ parsed_response_view('`predictions`', ['recipe_id', 'response', 'status'], schema) }}", schema=SCHEMA)
    cur = shared_duck.execute(transpile(sql, "duckdb"))
    types = {d[0]: str(d[1]) for d in cur.description}
    assert types == {
        "recipe_id": "INTEGER", "text": "VARCHAR", "finish_reason": "VARCHAR", "prompt_tokens": "BIGINT",
        "output_tokens": "BIGINT", "total_tokens": "BIGINT", "error_code": "BIGINT", "error_message": "VARCHAR",
        "name": "VARCHAR", "minutes": "BIGINT", "vegan": "BOOLEAN", "price": "DOUBLE", "tags": "JSON",
        "steps": "JSON", "output_text": "VARCHAR", "serves people": "BIGINT",
    }


def test_view_refuses_a_passthrough_column_named_like_a_parsed_one(render):
    with pytest.raises(RenderError) as info:
        render("{{ parsed_response_view('`t`', ['id', 'Text'], none) }}")
    assert "pass-through column 'Text' has the name of a parsed column" in str(info.value)
    assert "Text as input_Text" in str(info.value)


# --- helpers ---------------------------------------------------------------------------------


def test_sql_string_is_a_bigquery_literal_read_back_exactly():
    for text in TRICKY:
        literal = mh.sql_string(text)
        assert sqlglot.parse_one(literal, read="bigquery").this == text
    assert mh.sql_string("it's") == "'it\\'s'"


def test_sql_json_rejects_values_that_are_not_json():
    with pytest.raises(RenderError, match="cannot be written as JSON"):
        mh.sql_json({"x": float("nan")})
    assert mh.sql_json({"b": [1, "é"]}) == """PARSE_JSON('{"b":[1,"é"]}')"""


def test_schema_columns_follow_property_ordering_and_type_spellings():
    schema = {"type": "object", "propertyOrdering": ["b", "a"],
              "properties": {"a": {"type": ["integer", "null"]}, "b": {"anyOf": []}, "c": {"type": "boolean"}}}
    assert mh.response_schema_columns(schema) == [
        {"name": "b", "type": "JSON", "path": "'$.b'"},
        {"name": "a", "type": "INT64", "path": "'$.a'"},
        {"name": "c", "type": "BOOL", "path": "'$.c'"},
    ]
    assert mh.response_schema_columns(None) == [] and mh.response_schema_columns({"type": "STRING"}) == []


def test_schema_property_with_a_quote_cannot_be_addressed():
    with pytest.raises(RenderError, match="contains a quote or backslash"):
        mh.response_schema_columns({"type": "OBJECT", "properties": {'say "hi"': {"type": "STRING"}}})
