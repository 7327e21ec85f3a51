"""parsed_response_view on DuckDB against a reading of each response in Python.

test_macros.py pins the macro's SQL (golden files) and a handful of rows. Here a few
hundred responses of every shape the view must survive — any number of parts,
thoughts, function calls, JSON null parts, texts that are objects or look like them,
counts that are not numbers, failed rows with and without JSON in the status — are
read by the view and by `_expected`, which follows the macro's documented columns
(BigQuery's JSON_VALUE / SAFE_CAST rules) directly on the parsed JSON.
"""

from __future__ import annotations

import json
import random
import re

import duckdb
import pytest

from bqbatch_sql.compile import DUCKDB_SETTINGS, transpile
from bqbatch_sql.project import builtin_macro_dir
from bqbatch_sql.render import Renderer, TargetInfo

TEXTS = ["Hello.", "", "it's \"quoted\"", "line\nbreak\ttab", "back\\slash \\n", "émoji 😀 中文", "[a link](x)",
         "[shaped like an array]", "[1, 2]", "{\"a\": 1}", "{}", "[]", "the word null", "null", "true", "x" * 300]
STATUSES = ["", None, 'Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
            '"status": "INVALID_ARGUMENT"}}', "Internal error occurred.", 'x {"error": {"code": "429", "message": {"o": 1}}} y',
            "{not json}", '{"error": {}}', '{"error": {"code": 12.5, "message": "half"}}']
COUNTS = [12, 0, -3, "12", " 0x1F", "1.5", 1.5, {"n": 1}, [4], "abc", None, "missing"]


def _part(rng: random.Random):
    text = rng.choice(TEXTS)
    return rng.choice([
        {"text": text}, {"text": text}, {"text": text}, {"text": text, "thought": True}, {"thought": "true", "text": text},
        {"text": text, "thought": False}, {"functionCall": {"name": "f", "args": {"q": text}}}, None,
        {"text": {"nested": text}}, {"text": [text]}, {"text": 7}, {"text": True}, {"text": None},
    ])


def _response(rng: random.Random) -> dict | None:
    shape = rng.random()
    if shape < 0.08:
        return None
    body: dict = {"modelVersion": "gemini-2.5-flash"}
    if shape < 0.12:
        body["candidates"] = rng.choice([[], [{}], [{"content": {}}], [{"content": {"parts": {"text": "an object"}}}], "odd"])
    else:
        parts = [_part(rng) for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3, 4, 6]))]
        candidate = {"content": {"role": "model", "parts": parts}}
        finish = rng.choice(["STOP", "MAX_TOKENS", {"why": 1}, ["SAFETY"], "[SAFETY]", 3, None, "missing"])
        if finish != "missing":
            candidate["finishReason"] = finish
        body["candidates"] = [candidate, {"content": {"parts": [{"text": "second candidate"}]}}]
    usage = {}
    for key in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount"):
        value = rng.choice(COUNTS)
        if value != "missing":
            usage[key] = value
    if rng.random() < 0.9:
        body["usageMetadata"] = usage
    return body


# --- the documented reading -----------------------------------------------------------


def _at(value, *path):
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and step < len(value) else None
        else:
            value = value.get(step) if isinstance(value, dict) else None
    return value


def _json_value(value) -> str | None:
    """BigQuery JSON_VALUE of a parsed JSON value: scalars as text, NULL otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)  # the floats generated here (1.5, 4.5, 12.5) are spelled alike everywhere
    return None


def _int64(text: str | None) -> int | None:
    """SAFE_CAST(text AS INT64): decimal or 0x hex digits with a sign and spaces, else NULL."""
    if text is None or not re.fullmatch(r"\s*[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)\s*", text):
        return None
    digits = text.strip()
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    return sign * int(digits, 16 if digits[:2].lower() == "0x" else 10)


def _count(usage, key) -> int | None:
    return _int64(_json_value(_at(usage, key)))


def _expected(response: dict | None, status: str | None) -> dict:
    parts = _at(response, "candidates", 0, "content", "parts")
    texts = [_json_value(_at(p, "text")) for p in parts if _json_value(_at(p, "thought")) != "true"] if isinstance(parts, list) else []
    error = None
    if status:
        found = re.search(r"(?s)\{.*\}", status)
        try:
            error = json.loads(found.group(0)) if found else None
        except ValueError:
            error = None
    code = _at(error, "error", "code")
    return {
        "text": "".join(t for t in texts if t is not None) or None,
        "finish_reason": _json_value(_at(response, "candidates", 0, "finishReason")),
        "prompt_tokens": _count(_at(response, "usageMetadata"), "promptTokenCount"),
        "output_tokens": _count(_at(response, "usageMetadata"), "candidatesTokenCount"),
        "total_tokens": _count(_at(response, "usageMetadata"), "totalTokenCount"),
        "error_code": _int64(_json_value(code)),
        "error_message": _json_value(_at(error, "error", "message")) or (status or None),
    }


# --- the view --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def render():
    target = TargetInfo(name="dev", type="duckdb", schema="main", database=None, dialect="duckdb")
    renderer = Renderer(sorted(builtin_macro_dir().glob("*.sql")), builtin_macro_dir().parent, target, {}, {})
    names = iter(range(1_000_000))

    def render(**extra) -> str:
        return renderer.render_snippet(f"parsed_view_{next(names)}.sql",
                                       "{{ parsed_response_view(relation, passthrough, schema) }}", "Test", None, extra=extra)

    return render


def _table(rows: list[tuple[int, dict | None, str | None]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, value in DUCKDB_SETTINGS.items():
        con.execute(f"SET {name} = '{value}'")
    con.execute("CREATE TABLE out_json (id INTEGER, request JSON, response JSON, status VARCHAR, processed_time TIMESTAMP)")
    con.executemany("INSERT INTO out_json VALUES (?, NULL, ?, ?, NULL)",
                    [(i, None if r is None else json.dumps(r, ensure_ascii=False), s) for i, r, s in rows])
    con.execute("CREATE TABLE out_text AS SELECT id, request, CAST(response AS VARCHAR) AS response, status, processed_time FROM out_json")
    return con


def _read(con, render, table: str, schema=None) -> dict[int, dict]:
    sql = render(relation=f"`{table}`", passthrough=["id", "request", "response", "status", "processed_time"], schema=schema)
    cur = con.execute(transpile(sql, "duckdb"))
    names = [d[0] for d in cur.description]
    return {row[0]: dict(zip(names[1:], row[1:])) for row in cur.fetchall()}


def _cases(seed: int, n: int) -> list[tuple[int, dict | None, str | None]]:
    rng = random.Random(seed)
    return [(i, _response(rng), rng.choice(STATUSES)) for i in range(n)]


@pytest.mark.parametrize("table", ["out_json", "out_text"])
def test_view_reads_every_shape_of_response_as_documented(render, table):
    cases = _cases(seed=7, n=600)
    got = _read(_table(cases), render, table)
    assert len(got) == len(cases)
    shapes = {"parts past the direct ones": 0, "thought skipped": 0, "error from status JSON": 0}
    for i, response, status in cases:
        expected = _expected(response, status)
        assert got[i] == expected, (i, response, status)
        parts = _at(response, "candidates", 0, "content", "parts")
        shapes["parts past the direct ones"] += isinstance(parts, list) and len(parts) > 2 and expected["text"] is not None
        shapes["thought skipped"] += isinstance(parts, list) and any(_json_value(_at(p, "thought")) == "true" for p in parts)
        shapes["error from status JSON"] += expected["error_code"] is not None
    assert min(shapes.values()) >= 10, shapes  # the generator really made each kind


def test_view_keeps_a_json_null_part_past_the_direct_ones(render):
    parts = [{"text": "a"}, {"text": "b"}, None, {"text": "c"}]
    response = {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}
    got = _read(_table([(1, response, "")]), render, "out_json")
    assert got[1]["text"] == "abc"


SCHEMA = {"type": "OBJECT", "properties": {
    "title": {"type": "STRING"}, "stars": {"type": "INTEGER"}, "score": {"type": "NUMBER"},
    "ok": {"type": "BOOLEAN"}, "tags": {"type": "ARRAY"}, "meta": {"type": "OBJECT"}}}
OUTPUTS = [
    {"title": "Tea", "stars": 4, "score": 4.5, "ok": True, "tags": ["a"], "meta": {"n": 1}},
    {"title": "[looks like an array]", "stars": "5", "score": "3", "ok": "false", "tags": [], "meta": None},
    {"title": {"not": "text"}, "stars": 4.5, "score": "high", "ok": "yes", "tags": "a,b", "meta": [1]},
    {"title": "{\"a\": 1}", "stars": " 0x10", "score": 2, "ok": False},
    {},
]


def _typed(text: str | None) -> dict:
    output = None
    if text is not None and re.match(r"[ \t\n]*\{", text):
        try:
            output = json.loads(text)
        except ValueError:
            output = None
    if not isinstance(output, dict):
        output = {} if output is None else {"__not_an_object": True}
    score = _json_value(output.get("score"))
    score_value = float(score) if score is not None and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", score) else None
    ok = _json_value(output.get("ok"))
    return {
        "title": _json_value(output.get("title")), "stars": _int64(_json_value(output.get("stars"))), "score": score_value,
        "ok": {"true": True, "false": False}.get(ok), "tags": output.get("tags"), "meta": output.get("meta"),
    }


def test_typed_columns_read_the_joined_text_as_documented(render):
    rng = random.Random(11)
    cases = []
    for i in range(120):
        text = json.dumps(rng.choice(OUTPUTS), ensure_ascii=False)
        text = rng.choice([text, "  " + text, text[:-1], "[" + text + "]", "prose, not JSON"])
        cut = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.choice([0, 1, 2, 4]))))
        pieces = [text[a:b] for a, b in zip([0, *cut], [*cut, len(text)])]
        parts = [{"text": p} for p in pieces]
        if rng.random() < 0.5:
            parts.insert(rng.randrange(len(parts) + 1), {"text": "plan: {", "thought": True})
        cases.append((i, {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}, ""))
    got = _read(_table(cases), render, "out_json", schema=SCHEMA)
    typed_names = ["title", "stars", "score", "ok", "tags", "meta"]
    for i, response, _ in cases:
        row = got[i]
        expected = _typed(row["text"])
        assert row["text"] == _expected(response, "")["text"]
        actual = {k: json.loads(row[k]) if k in ("tags", "meta") and row[k] is not None else row[k] for k in typed_names}
        assert actual == expected, (i, row["text"])


def test_view_reads_each_response_in_one_parse_without_a_join(render):
    # What makes it fast on DuckDB (see the macro's comment): one json_extract_string per
    # row for every value, and rows with more parts read by list functions, not a join
    # over all rows. A plan with a join or a second full read would cost seconds per 1M rows.
    con = _table(_cases(seed=3, n=20))
    sql = transpile(render(relation="`out_json`", passthrough=["id", "request", "response", "status", "processed_time"],
                           schema=None), "duckdb")
    plan = "\n".join(row[1] for row in con.execute("EXPLAIN " + sql).fetchall())
    assert "JOIN" not in plan.upper()
    assert len(re.findall(r"json_extract_string\(response, \[", plan)) == 1, plan
