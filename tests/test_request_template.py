"""Templates of compiled request expressions: which models have one, which rows it fits,
and that validating with one gives every row exactly the full checks' status."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from bqbatch_sql import validate_duckdb as vd
from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.request_template import RequestTemplate, template_of
from bqbatch_sql.validate import materialize_statuses, validate_relation
from tests.test_validate import _mutations, full_statuses, load

# What gemini_request compiles to on DuckDB (keys sorted), around `{prompt}`.
MODEL = ("SELECT id, JSON_OBJECT('contents', JSON_ARRAY(JSON_OBJECT('parts', JSON_ARRAY(JSON_OBJECT('text', {prompt})), "
         "'role', 'user')), 'generationConfig', JSON('{config}'), 'systemInstruction', JSON_OBJECT('parts', "
         "JSON_ARRAY(JSON_OBJECT('text', {system})))) AS request FROM reviews")
PROMPT = "'Résume cet avis : ' || body"
SYSTEM = "'簡潔に。'"


@pytest.fixture(scope="module")
def adapter():
    a = DuckDBAdapter()
    yield a
    a.close()


def template(adapter, sql: str) -> RequestTemplate | None:
    return template_of(sqlglot.parse_one(sql, read="duckdb"), adapter.cursor())


def model(prompt: str = PROMPT, system: str = SYSTEM, config: str = '{"temperature":0.2}') -> str:
    return MODEL.format(prompt=prompt, system=system, config=config)


def test_a_prompt_from_data_gives_a_template(adapter):
    t = template(adapter, model())
    assert t == RequestTemplate((
        '{"contents":[{"parts":[{"text":',
        '}],"role":"user"}],"generationConfig":{"temperature":0.2},"systemInstruction":{"parts":[{"text":"簡潔に。"}]}}'))
    # the system text may be the varying one instead, or as well
    assert template(adapter, model(prompt="'Summarize.'", system="persona")).pieces[0].endswith(
        '"systemInstruction":{"parts":[{"text":')
    assert template(adapter, model(system="persona")).pieces[1] == '}],"role":"user"}],"generationConfig":{"temperature":0.2},"systemInstruction":{"parts":[{"text":'


def test_texts_of_several_turns_give_a_template(adapter):
    turns = ("SELECT JSON_OBJECT('contents', JSON_ARRAY(JSON_OBJECT('role', 'user', 'parts', JSON_ARRAY(JSON_OBJECT("
             "'text', q))), JSON_OBJECT('role', 'model', 'parts', JSON_ARRAY(JSON_OBJECT('text', a))), JSON_OBJECT("
             "'role', 'user', 'parts', JSON_ARRAY(JSON_OBJECT('text', 'And then?'), JSON_OBJECT('text', f))))) AS request "
             "FROM t")
    assert len(template(adapter, turns).pieces) == 4


@pytest.mark.parametrize("sql", [
    model(prompt="'x'", system="'y'"),  # none
    model(config="{}").replace("'role', 'user'", "'role', speaker"),  # a role from data: its value matters
    model().replace("JSON('{\"temperature\":0.2}')", "JSON_OBJECT('temperature', t)").replace(PROMPT, "'x'"),
    model().replace("'generationConfig'", "'labels', JSON_OBJECT('team', team), 'generationConfig'").replace(
        PROMPT, "'x'"),  # a label value from data: labels have rules on their values
    "SELECT id, PARSE_JSON(raw) AS request FROM reviews",  # built outside SQL
    "SELECT id, JSON_OBJECT(k, 'x') AS request FROM reviews",  # a key from data
    "SELECT 1 AS id, JSON_OBJECT('contents', 'x') AS request UNION ALL SELECT 2, JSON_OBJECT('contents', 'y')",
    "SELECT id FROM reviews",
    model(system="persona").replace("'role', 'user'", "'role', 'user', 'x', a, 'y', b, 'z', c"),  # too many
], ids=["constant", "role", "config", "labels", "parse-json", "key", "union", "no-request", "many"])
def test_other_requests_have_no_template(adapter, sql):
    assert template(adapter, sql) is None


def fits(adapter, t: RequestTemplate, texts: list[str]) -> list[bool]:
    rows = exp.select(exp.Coalesce(this=t.fits_sql(exp.column("raw")), expressions=[exp.false()])).from_(
        exp.select(exp.Unnest(expressions=[exp.Placeholder(this="1")]).as_("raw")).subquery("r"))
    return [r[0] for r in adapter.cursor().execute(rows.sql("duckdb"), [texts]).fetchall()]


def test_fits_only_the_template_around_one_nonempty_string(adapter):
    t = template(adapter, model())
    around = lambda middle: t.pieces[0] + middle + t.pieces[1]  # noqa: E731
    cases = {
        around('"avis 😀 👩‍👩‍👧 — très \\"bien\\""'): True,  # non-ASCII, a ZWJ sequence, escaped quotes
        around('"ends with a backslash \\\\"'): True,
        around('"\\u00e9\\n\\t"'): True,
        around('""'): False,  # the empty text is refused by the API
        around("null"): False,  # what a NULL prompt gives
        around("42"): False,
        around('"a"},{"text":"b"'): False,  # two parts where the template has one
        around('"a"}],"role":"model"},{"parts":[{"text":"b"'): False,  # a turn more
        around('"unterminated \\"'): False,
        around('"raw\ncontrol"'): False,  # a raw newline is not JSON
        around('"\\ud800"'): False,  # a lone surrogate
        around('"x"') + " ": False,
        t.pieces[0].replace("parts", "PARTS") + '"x"' + t.pieces[1]: False,
    }
    assert fits(adapter, t, list(cases)) == list(cases.values())


BASES = [
    model(),
    # structured output: the rows share the instance's tail, checked once
    model(config='{"responseMimeType":"application/json","responseSchema":{"type":"OBJECT","properties":'
                 '{"label":{"type":"STRING","enum":["a","b"]}}},"temperature":0}'),
    model(prompt="'Summarize.'", system="persona"),
    model(system="persona"),
]


@pytest.mark.parametrize("b", range(len(BASES)))
def test_statuses_with_a_template_equal_the_full_checks_on_mutations(adapter, b):
    """Every small change of a row the template fits, and the row itself: validated with the
    template, each gets exactly the full checks' status; most unchanged rows fit."""
    t = template(adapter, BASES[b])
    assert t is not None
    row = '"Résume: \\"bien\\" 😀"'.join(t.pieces)
    variants = [row] * 20 + _mutations(row)
    rel = load(adapter, f"template_mutations_{b}", variants)
    assert sum(fits(adapter, t, variants)) > 100  # the template is what judges these rows
    target = rel.with_name(rel.name + "_statuses")
    materialize_statuses(adapter, rel, target, keep_columns=True, template=t)
    with_template = [r[0] for r in adapter.fetchall(exp.select("status").from_(target.table()).order_by("id"))]
    full = full_statuses(adapter, rel)
    assert full.count(None) > 20 and len(full) - full.count(None) > 100  # both kinds are exercised
    wrong = [(variants[i], w, f) for i, (w, f) in enumerate(zip(with_template, full)) if w != f]
    assert wrong == []


def test_rows_the_template_fits_skip_the_full_checks(adapter):
    t = template(adapter, model())
    rows = [f'"avis {i}"'.join(t.pieces) for i in range(50)] + ["null".join(t.pieces)]
    rel = load(adapter, "template_fast", rows, "JSON")
    con = adapter.cursor()
    try:
        _, classified = vd.run(con, rel, "request", template=t)
        assert (classified.total, classified.checked_rows) == (51, 1)  # the NULL prompt alone
    finally:
        for sql in vd.drop_scratch_sql():
            con.execute(sql)
    report = validate_relation(adapter, rel, model="m", path="models/m.sql", key_columns=["id"], template=t)
    assert (report.total, report.invalid) == (51, 1)
    assert report.samples[0].keys == {"id": 50}


def test_fits_texts_split_at_the_pieces_between_them(adapter):
    t = template(adapter, model(system="persona"))
    separator = t.pieces[1]
    row = lambda a, b: t.pieces[0] + a + separator + b + t.pieces[2]  # noqa: E731
    escaped = separator.replace('"', '\\"')
    cases = {
        row('"q 😀"', '"persona"'): True,
        row(f'"a{escaped}b"', '"p"'): True,  # the piece in a text, as a text holds it
        row('"q"', '""'): False,
        row('""', '"p"'): False,
        row('"q"', "null"): False,
        row(f'"a"{separator}"b"', '"p"'): False,  # a part more where the template has one
        row('"q"', f'"p"{separator}"r"'): False,
    }
    assert fits(adapter, t, list(cases)) == list(cases.values())
