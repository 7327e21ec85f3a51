"""The local predictor on a real DuckDB: what a user sees in the output table and in the job."""

from __future__ import annotations

import json
import math
import re
import time

import local_predictor_functions as fns
import pytest

from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.errors import JobNotFoundError, PredictorError, ProfileError
from bqbatch_sql.predictors import make_predictor
from bqbatch_sql.predictors.base import BatchJobSpec, JobState
from bqbatch_sql.predictors.local import LocalPredictor, load_response_function
from bqbatch_sql.predictors.responses import EMULATED_TAG

SEED_STATUS = (
    'Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
    '"status": "INVALID_ARGUMENT"}}'
)
SEED_BAD_REQUEST = '{"contents":[{"parts":{"text":"Explain how AI works in a few words."},"role":"tester"}]}'
TRANSIENT = re.compile(
    r'^(Too Many Requests|Internal Server Error|Service Unavailable): \{"error": \{"code": (429|500|503), '
    r'"message": "[^"]+", "status": "(RESOURCE_EXHAUSTED|INTERNAL|UNAVAILABLE)"\}\}$'
)


def req(prompt: str, **extra) -> str:
    body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}], **extra}
    return json.dumps(body)


@pytest.fixture
def adapter():
    a = DuckDBAdapter()
    yield a
    a.close()


def load(adapter, rows: list[tuple], columns: str = "id INTEGER, request VARCHAR", name: str = "reqs") -> None:
    adapter.execute(f"CREATE OR REPLACE TABLE {name} ({columns})")
    marks = ", ".join("?" for _ in rows[0]) if rows else ""
    if rows:
        adapter.connection.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)


def spec(adapter, source="reqs", destination="out", model="publishers/google/models/gemini-2.5-flash", **options):
    return BatchJobSpec(model, adapter.relation(source), adapter.relation(destination), "test", options=options)


def run(adapter, predictor=None, **spec_kw):
    predictor = predictor or LocalPredictor(adapter)
    job = predictor.wait(predictor.submit(spec(adapter, **spec_kw)).name, timeout=60)
    assert job.done, job
    return job


def output(adapter, table="out") -> list[dict]:
    cur = adapter.connection.cursor()
    result = cur.execute(f"SELECT * FROM {table} ORDER BY id")
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def text_of(row: dict) -> str:
    return json.loads(row["response"])["candidates"][0]["content"]["parts"][0]["text"]


# -- one mixed job: validation, shapes, structured output -------------------------------------

LONG_PROMPT = "word " * 100
ODD_PROMPT = 'quotes " and \\ backslash\nnewline é 🙂'
SYSTEM = {"parts": [{"text": "You are a very detailed and long-winded chef. " * 5}]}
SCHEMAS = {
    "scalars": {"type": "OBJECT", "properties": {
        "name": {"type": "STRING"}, "count": {"type": "INTEGER"}, "score": {"type": "NUMBER"},
        "ok": {"type": "BOOLEAN"}}, "required": ["name", "count", "score", "ok"]},
    "enum_nested": {"type": "OBJECT", "properties": {
        "sentiment": {"type": "STRING", "enum": ["positive", "negative", "neutral"]},
        "author": {"type": "OBJECT", "properties": {"first": {"type": "STRING"}, "born": {"type": "INTEGER"}},
                   "required": ["first"]},
        "items": {"type": "ARRAY", "minItems": 3, "items": {
            "type": "OBJECT", "properties": {"sku": {"type": "STRING"}, "tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
            "required": ["sku", "tags"]}}}, "required": ["sentiment", "author", "items"]},
    "lowercase_snake": {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"},
                                                                  "min_items": 2, "max_items": 2}},
                        "required": ["tags"], "property_ordering": ["tags"]},
    "formats_bounds": {"type": "OBJECT", "nullable": True, "properties": {
        "day": {"type": "STRING", "format": "date"}, "at": {"type": "STRING", "format": "date-time"},
        "short": {"type": "STRING", "maxLength": 5}, "long": {"type": "STRING", "minLength": 40},
        "pct": {"type": "NUMBER", "minimum": 10, "maximum": 20}, "n": {"type": "INTEGER", "minimum": 5},
        "maybe": {"type": "STRING", "nullable": True}}, "required": ["day", "at", "pct", "n"]},
    "top_array": {"type": "ARRAY", "items": {"type": "INTEGER", "minimum": 5, "maximum": 9}, "maxItems": 4},
    "ordering": {"type": "OBJECT", "properties": {"b": {"type": "STRING"}, "a": {"type": "STRING"}, "c": {"type": "BOOLEAN"}},
                 "propertyOrdering": ["c", "a", "b"]},
}


def check(value, schema, defs=None, path="$") -> list[str]:
    """Violations of `schema` by `value`: the test's own reading of the schema rules."""
    defs = defs if defs is not None else {**schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        return check(value, defs[schema["$ref"].rsplit("/", 1)[-1]], defs, path)
    if "anyOf" in schema:
        return [] if any(not check(value, s, defs, path) for s in schema["anyOf"]) else [f"{path}: matches no anyOf"]
    kinds = schema.get("type")
    kinds = [k.lower() for k in (kinds if isinstance(kinds, list) else [kinds])] if kinds else []
    if value is None:
        return [] if schema.get("nullable") or "null" in kinds else [f"{path}: null"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in enum"]
    python = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}
    kind = next((k for k in kinds if k != "null"), None)
    if kind and (not isinstance(value, python[kind]) or (kind in ("integer", "number") and isinstance(value, bool))):
        return [f"{path}: {value!r} is not {kind}"]
    errors = []
    get = lambda *keys: next((schema[k] for k in keys if k in schema), None)  # noqa: E731
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            errors.append(f"{path}: not a date")
        if fmt == "date-time" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", value):
            errors.append(f"{path}: not a date-time")
        if get("maxLength", "max_length") is not None and len(value) > get("maxLength", "max_length"):
            errors.append(f"{path}: too long")
        if get("minLength", "min_length") is not None and len(value) < get("minLength", "min_length"):
            errors.append(f"{path}: too short")
    if kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} out of bounds")
    if kind == "array":
        low, high = get("minItems", "min_items"), get("maxItems", "max_items")
        if low is not None and len(value) < low or high is not None and len(value) > high:
            errors.append(f"{path}: {len(value)} items")
        for i, item in enumerate(value):
            errors += check(item, schema.get("items", {}), defs, f"{path}[{i}]")
    if kind == "object":
        props = schema.get("properties", {})
        errors += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        errors += [f"{path}.{k}: unknown" for k in value if k not in props]
        for key, sub in props.items():
            if key in value:
                errors += check(value[key], sub, defs, f"{path}.{key}")
    return errors


def structured(schema: dict, key: str = "responseSchema", config: str = "generationConfig",
               mime: str = "application/json") -> dict:
    return {config: {"responseMimeType": mime, key: schema}}


JSON_SCHEMA = {
    "type": "object",
    "$defs": {"step": {"type": "object", "properties": {"order": {"type": "integer"}, "what": {"type": ["string", "null"]}},
                       "required": ["order", "what"]}},
    "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 2},
                   "kind": {"anyOf": [{"type": "null"}, {"type": "string", "enum": ["soup", "cake"]}]}},
    "required": ["steps", "kind"],
}
SNAKE = {"type": "OBJECT", "properties": {"answer": {"type": "BOOLEAN"}}, "required": ["answer"]}

MIXED = {
    "banana": req("Give me a recipe for banana bread."),
    "tester": SEED_BAD_REQUEST,
    "null": None,
    "garbage": "not json at all",
    "array": "[1, 2]",
    "empty": "{}",
    "long": req(LONG_PROMPT),
    "odd": req(ODD_PROMPT),
    "soup": req("Soup?"),
    "soup_system": req("Soup?", systemInstruction=SYSTEM),
    "soup_system_snake": req("Soup?", system_instruction=SYSTEM),
    **{f"schema_{name}": req(f"prompt {name}", **structured(schema)) for name, schema in SCHEMAS.items()},
    "json_schema": req("a", **structured(JSON_SCHEMA, key="responseJsonSchema")),
    "snake_config": req("b", generation_config={"response_mime_type": "application/json", "response_schema": SNAKE}),
    "enum_mime": req("c", **structured({"type": "STRING", "enum": ["yes", "no"]}, mime="text/x.enum")),
    "json_no_schema": req("d", generationConfig={"responseMimeType": "application/json"}),
    **{f"review_{i}": req(f"review {i}", **structured(SCHEMAS["enum_nested"])) for i in range(4)},
    **{f"question_{i}": req(f"question {i % 3}") for i in range(6)},
}
INVALID = {"tester", "null", "garbage", "array", "empty"}


@pytest.fixture(scope="module")
def mixed():
    """One job over rows of every kind; the tests below each read their rows of its output."""
    adapter = DuckDBAdapter()
    load(adapter, [(i, name, request) for i, (name, request) in enumerate(MIXED.items())],
         "id INTEGER, name VARCHAR, request VARCHAR")
    job = run(adapter)
    rows = output(adapter)
    yield adapter, job, {row["name"]: row for row in rows}, rows
    adapter.close()


def test_seed_tester_row_gets_the_seed_status_and_valid_rows_a_response(mixed):
    _, job, by_name, _ = mixed
    assert (job.state, job.total, job.failed, job.incomplete) == (JobState.SUCCEEDED, len(MIXED), len(INVALID), 0)
    assert job.succeeded == len(MIXED) - len(INVALID)
    bad, good = by_name["tester"], by_name["banana"]
    assert bad["status"] == SEED_STATUS and bad["response"] is None
    assert good["status"] == ""
    response = json.loads(good["response"])
    candidate = response["candidates"][0]
    assert candidate["content"]["role"] == "model"
    assert candidate["finishReason"] == "STOP"
    text = candidate["content"]["parts"][0]["text"]
    # Says it is emulated and names the request (8 hex digits of its hash).
    assert re.fullmatch(re.escape(EMULATED_TAG) + r" request [0-9A-F]{8}", text)
    usage = response["usageMetadata"]
    # About four bytes a token, of the prompt and of the answer.
    assert usage["promptTokenCount"] == math.ceil(len("Give me a recipe for banana bread.") / 4)
    assert usage["candidatesTokenCount"] == math.ceil(len(text.encode()) / 4)
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert response["modelVersion"] == "gemini-2.5-flash"


def test_output_keeps_every_row_and_column_in_order_even_null_and_garbage(mixed):
    adapter, _, _, rows = mixed
    assert [c.name for c in adapter.columns(adapter.relation("out"))] == [
        "id", "name", "request", "response", "status", "processed_time"]
    assert [(r["id"], r["name"], r["request"]) for r in rows] == [
        (i, name, request) for i, (name, request) in enumerate(MIXED.items())]
    cur = adapter.connection.cursor()
    assert [r[0] for r in cur.execute("SELECT id FROM out").fetchall()] == list(range(len(MIXED)))  # table order kept
    for row in rows:
        failed = row["name"] in INVALID
        assert (row["response"] is None) == failed and bool(row["status"]) == failed, row
        assert row["processed_time"] is not None
    assert all(by.startswith("Bad Request: {") for by in (r["status"] for r in rows if r["name"] in INVALID))


def test_long_and_odd_prompts_are_answered_and_counted(mixed):
    _, _, by_name, _ = mixed
    for name, prompt in (("long", LONG_PROMPT), ("odd", ODD_PROMPT)):
        response = json.loads(by_name[name]["response"])
        assert text_of(by_name[name]).startswith(EMULATED_TAG)
        assert response["usageMetadata"]["promptTokenCount"] == math.ceil(len(prompt.encode()) / 4)


def test_json_typed_request_column(adapter):
    load(adapter, [(1, req(ODD_PROMPT)), (2, SEED_BAD_REQUEST)], "id INTEGER, request JSON")
    job = run(adapter)
    assert (job.succeeded, job.failed) == (1, 1)
    first, second = output(adapter)
    prompt_tokens = json.loads(first["response"])["usageMetadata"]["promptTokenCount"]
    assert prompt_tokens == math.ceil(len(ODD_PROMPT.encode()) / 4) and second["status"] == SEED_STATUS


def test_responses_are_deterministic_and_differ_per_request(mixed):
    adapter, _, by_name, rows = mixed
    run(adapter, destination="again")
    assert [r["response"] for r in rows] == [r["response"] for r in output(adapter, "again")]
    texts = [text_of(by_name[f"question_{i}"]) for i in range(6)]
    assert texts[0] == texts[3] and len(set(texts)) == 3


def test_system_instruction_counts_toward_prompt_tokens(mixed):
    _, _, by_name, _ = mixed
    counts = [json.loads(by_name[name]["response"])["usageMetadata"]["promptTokenCount"]
              for name in ("soup", "soup_system", "soup_system_snake")]
    assert counts[0] < counts[1] == counts[2]


def test_responses_conform_to_each_schema_of_a_catalog(mixed):
    _, _, by_name, _ = mixed
    for name, schema in SCHEMAS.items():
        value = json.loads(text_of(by_name[f"schema_{name}"]))
        assert check(value, schema) == [], (name, value)
    assert list(json.loads(text_of(by_name["schema_ordering"]))) == ["c", "a", "b"]
    assert text_of(by_name["soup"]).startswith(EMULATED_TAG)


def test_json_schema_snake_case_config_and_enum_mime(mixed):
    _, _, by_name, _ = mixed
    assert check(json.loads(text_of(by_name["json_schema"])), JSON_SCHEMA) == []
    assert json.loads(text_of(by_name["snake_config"])) == {"answer": True}
    assert text_of(by_name["enum_mime"]) == "yes"
    assert EMULATED_TAG in json.loads(text_of(by_name["json_no_schema"]))["response"]


def test_schema_strings_vary_per_row_but_structure_and_enums_do_not(mixed):
    _, _, by_name, _ = mixed
    values = [json.loads(text_of(by_name[f"review_{i}"])) for i in range(4)]
    assert len({v["author"]["first"] for v in values}) == 4
    assert {v["sentiment"] for v in values} == {"positive"}
    assert all(check(v, SCHEMAS["enum_nested"]) == [] for v in values)


def test_many_distinct_schemas_take_the_table_path_and_keep_order(adapter):
    from bqbatch_sql.predictors.local import MAX_LISTED_TEMPLATES

    count = MAX_LISTED_TEMPLATES + 6
    schemas = [{"type": "OBJECT", "properties": {"label": {"type": "STRING", "enum": [f"label-{i}"]},
                                                 "note": {"type": "STRING"}}, "required": ["label"]}
               for i in range(count)]
    load(adapter, [(i, req(f"row {i}", **structured(schema))) for i, schema in enumerate(schemas)] + [(count, SEED_BAD_REQUEST)])
    job = run(adapter)
    assert (job.succeeded, job.failed) == (count, 1)
    cur = adapter.connection.cursor()
    rows = cur.execute("SELECT id, response FROM out").fetchall()
    assert [r[0] for r in rows] == list(range(count + 1))
    for (i, response), schema in zip(rows, schemas):
        value = json.loads(json.loads(response)["candidates"][0]["content"]["parts"][0]["text"])
        assert value["label"] == f"label-{i}" and check(value, schema) == []


# -- the job ----------------------------------------------------------------------------------


def test_states_move_pending_running_succeeded_with_progress(adapter):
    fns.GATE.clear(), fns.REACHED.clear()
    load(adapter, [(i, req("wait" if i == 15 else f"row {i}")) for i in range(30)] + [(30, SEED_BAD_REQUEST)])
    predictor = LocalPredictor(adapter, response_function=f"{fns.__name__}:gated", latency_seconds=0.2, chunk_rows=10)
    job = predictor.submit(spec(adapter))
    assert job.state == JobState.PENDING and job.create_time is not None and job.start_time is None
    assert fns.REACHED.wait(30)
    mid = predictor.get(job.name)
    assert mid.state == JobState.RUNNING and mid.total == 31
    assert (mid.succeeded, mid.failed) == (10, 0)  # the first chunk is written, the second is in flight
    fns.GATE.set()
    done = predictor.wait(job.name, timeout=60)
    assert (done.state, done.succeeded, done.failed, done.incomplete) == (JobState.SUCCEEDED, 30, 1, 0)
    assert done.create_time <= done.start_time <= done.end_time and done.error is None


def big_job(adapter, rows: int):
    """A prevalidated job over `rows` generated requests, long enough to watch: (predictor, job)."""
    adapter.execute("CREATE TABLE reqs AS SELECT i AS id, json_object('contents', json_array(json_object("
                    "'role', 'user', 'parts', json_array(json_object('text', 'prompt ' || i))))) AS request "
                    f"FROM range({int(rows)}) t(i)")
    predictor = LocalPredictor(adapter)
    return predictor, predictor.submit(BatchJobSpec("gemini-2.5-flash", adapter.relation("reqs"),
                                                    adapter.relation("out"), "t", prevalidated=True))


def test_progress_of_the_one_statement_never_goes_back(adapter):
    # Answers emulated in SQL are one statement; rows done come from DuckDB's progress,
    # which drops to -1 when the scan ends and the write goes on.
    predictor, job = big_job(adapter, 300_000)
    seen = []
    while not (snapshot := predictor.get(job.name)).done:
        seen.append(snapshot.succeeded)
        time.sleep(0.005)
    assert seen == sorted(seen) and (snapshot.succeeded, snapshot.failed) == (300_000, 0)


def test_cancel_while_running_keeps_written_rows_and_counts_the_rest_incomplete(adapter):
    fns.GATE.clear(), fns.REACHED.clear()
    load(adapter, [(i, req("wait" if i == 25 else f"row {i}")) for i in range(40)])
    predictor = LocalPredictor(adapter, response_function=f"{fns.__name__}:gated", chunk_rows=10)
    job = predictor.submit(spec(adapter))
    assert fns.REACHED.wait(30)
    predictor.cancel(job.name)
    assert predictor.get(job.name).state in (JobState.CANCELLING, JobState.CANCELLED)
    fns.GATE.set()
    done = predictor.wait(job.name, timeout=60)
    assert (done.state, done.succeeded, done.incomplete) == (JobState.CANCELLED, 20, 20)
    assert len(output(adapter)) == 20
    predictor.cancel(job.name)  # cancelling an ended job changes nothing
    assert predictor.get(job.name).state == JobState.CANCELLED


def test_cancel_during_the_one_statement_leaves_an_empty_output_of_the_usual_columns(adapter):
    # Emulated answers are one statement in one transaction, with two tally columns added
    # and dropped inside it: a cancel rolls all of it back.
    predictor, job = big_job(adapter, 500_000)
    while predictor.get(job.name).succeeded == 0:  # DuckDB reports progress: the statement is under way
        time.sleep(0.002)
    predictor.cancel(job.name)
    done = predictor.wait(job.name, timeout=60)
    assert (done.state, done.succeeded, done.incomplete) == (JobState.CANCELLED, 0, 500_000)
    assert [c.name for c in adapter.columns(adapter.relation("out"))] == [
        "id", "request", "response", "status", "processed_time"]
    assert adapter.fetchall("SELECT COUNT(*) FROM out") == [(0,)]
    assert predictor.written_usage(adapter.relation("out")) is None


def test_cancel_while_pending(adapter):
    load(adapter, [(1, req("x"))])
    predictor = LocalPredictor(adapter, latency_seconds=30)
    job = predictor.submit(spec(adapter))
    predictor.cancel(job.name)
    done = predictor.wait(job.name, timeout=10)
    assert done.state == JobState.CANCELLED and done.start_time is None


def test_empty_table_view_source_and_existing_destination(adapter):
    load(adapter, [], "id INTEGER, request VARCHAR")
    job = run(adapter)
    assert (job.state, job.total, job.succeeded) == (JobState.SUCCEEDED, 0, 0)
    assert output(adapter) == []
    load(adapter, [(1, req("from a view")), (2, SEED_BAD_REQUEST)], name="base")
    adapter.execute("CREATE VIEW v AS SELECT * FROM base")
    adapter.execute("CREATE OR REPLACE TABLE out AS SELECT 'stale' AS junk")
    job = run(adapter, source="v")
    assert (job.succeeded, job.failed) == (1, 1)
    assert [r["id"] for r in output(adapter)] == [1, 2]


@pytest.mark.parametrize("columns, rows, message", [
    ("id INTEGER, prompt VARCHAR", [(1, "x")], "has no column named 'request'"),
    ("id INTEGER, request VARCHAR, status VARCHAR", [(1, "{}", "x")], "status"),
])
def test_broken_request_table_fails_the_job_with_the_fix(adapter, columns, rows, message):
    load(adapter, rows, columns)
    job = run(adapter)
    assert job.state == JobState.FAILED and message in job.error and "reqs" in job.error


def test_missing_source_fails_and_unknown_job_is_reported(adapter):
    job = run(adapter, source="nowhere")
    assert job.state == JobState.FAILED and "nowhere" in job.error
    with pytest.raises(JobNotFoundError):
        LocalPredictor(adapter).get("projects/local/locations/local/batchPredictionJobs/1")


def test_assume_valid_skips_the_rules_but_not_garbage(adapter):
    load(adapter, [(1, req("fine")), (2, None), (3, "not json"), (4, SEED_BAD_REQUEST)])
    job = run(adapter, assume_valid=True)
    fine, null, garbage, tester = output(adapter)
    assert (job.succeeded, job.failed) == (2, 2)
    assert null["status"].startswith("Bad Request: ") and garbage["status"].startswith("Bad Request: ")
    assert text_of(fine).startswith(EMULATED_TAG)
    assert tester["status"] == ""  # trusted: the caller's own pre-flight check would have caught it



def test_prevalidated_job_answers_exactly_as_a_job_that_validates(adapter):
    # bqbatch validates every row before it submits (on_invalid fail/skip): the job then
    # checks none, and must still write the same answers, statuses and failure draws.
    load(adapter, [(i, req(f"prompt {i}", generationConfig={"temperature": 0.1})) for i in range(300)])
    predictor = LocalPredictor(adapter, failure_rate=0.1, chunk_rows=70)
    checked = run(adapter, predictor)
    trusted = predictor.wait(predictor.submit(BatchJobSpec(
        "gemini-2.5-flash", adapter.relation("reqs"), adapter.relation("trusted"), "test", prevalidated=True)).name, 60)
    assert (trusted.succeeded, trusted.failed) == (checked.succeeded, checked.failed) and checked.failed > 0
    assert predictor.timings(trusted.name)["validate"] < predictor.timings(checked.name)["validate"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "processed_time"} for r in rows]  # noqa: E731
    assert strip(output(adapter, "trusted")) == strip(output(adapter))


def test_a_request_template_hint_changes_no_status(adapter):
    # on_invalid='submit': the job checks its rows itself, helped by the model's template;
    # rows it does not fit (a NULL prompt, a bad role, garbage) get the statuses they always had.
    from bqbatch_sql.request_template import RequestTemplate

    template = RequestTemplate(('{"contents":[{"parts":[{"text":', '}],"role":"user"}]}'))
    rows = [(i, f'"prompt {i} — 😀"'.join(template.pieces)) for i in range(200)]
    rows += [(200, "null".join(template.pieces)), (201, SEED_BAD_REQUEST), (202, "not json"), (203, None)]
    load(adapter, rows)
    predictor = LocalPredictor(adapter)
    plain = run(adapter, predictor)
    hinted = predictor.wait(predictor.submit(BatchJobSpec(
        "gemini-2.5-flash", adapter.relation("reqs"), adapter.relation("hinted"), "test",
        request_template=template)).name, 60)
    assert (hinted.succeeded, hinted.failed) == (plain.succeeded, plain.failed) == (200, 4)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "processed_time"} for r in rows]  # noqa: E731
    assert strip(output(adapter, "hinted")) == strip(output(adapter))


# -- failure_rate ------------------------------------------------------------------------------


def test_failure_rate_fails_a_deterministic_fraction_of_valid_rows(adapter):
    rows = [(i, req("same prompt")) for i in range(2000)] + [(2000, SEED_BAD_REQUEST)]
    load(adapter, rows)
    predictor = LocalPredictor(adapter, failure_rate=0.25, chunk_rows=700)
    job = run(adapter, predictor)
    out = output(adapter)
    injected = [r for r in out if r["id"] < 2000 and r["status"]]
    assert 0.2 < len(injected) / 2000 < 0.3
    assert job.failed == len(injected) + 1 and job.succeeded == 2000 - len(injected)
    assert all(TRANSIENT.match(r["status"]) and r["response"] is None for r in injected)
    assert "failure_rate=0.25" in injected[0]["status"]
    assert {r["status"].split(":")[0] for r in injected} == {"Too Many Requests", "Internal Server Error",
                                                            "Service Unavailable"}
    assert out[-1]["status"] == SEED_STATUS
    run(adapter, predictor, destination="again")
    assert [r["status"] for r in output(adapter, "again")] == [r["status"] for r in out]


def test_failure_rate_bounds_and_per_model_override(adapter):
    load(adapter, [(i, req(f"p{i}")) for i in range(50)])
    assert run(adapter, LocalPredictor(adapter, failure_rate=1.0)).failed == 50
    assert run(adapter, LocalPredictor(adapter, failure_rate=1.0), failure_rate=0.0).failed == 0
    with pytest.raises(PredictorError, match="failure_rate"):
        LocalPredictor(adapter, failure_rate=1.5)


# -- token tallies ------------------------------------------------------------------------------


def usage_read(adapter, table="out") -> tuple[int, int, int, int]:
    """(rows with a response, prompt, output and largest prompt tokens), read from every response."""
    metas = [json.loads(r["response"])["usageMetadata"] for r in output(adapter, table) if r["response"] is not None]
    assert all(m["totalTokenCount"] == m["promptTokenCount"] + m["candidatesTokenCount"] for m in metas)
    return (len(metas), sum(m["promptTokenCount"] for m in metas), sum(m["candidatesTokenCount"] for m in metas),
            max(m["promptTokenCount"] for m in metas))


def test_a_job_tallies_exactly_the_tokens_its_responses_print(adapter):
    # Every kind of row: invalid ones, structured output, system instructions, long and
    # odd prompts; and injected failures, whose rows have no response.
    load(adapter, [(i, name, request) for i, (name, request) in enumerate(MIXED.items())],
         "id INTEGER, name VARCHAR, request VARCHAR")
    predictor = LocalPredictor(adapter, failure_rate=0.3)
    job = run(adapter, predictor)
    written = predictor.written_usage(adapter.relation("out"))
    assert (written.answered, written.prompt_tokens, written.output_tokens, written.max_prompt_tokens) == \
        usage_read(adapter)
    assert written.answered == job.succeeded < len(MIXED) - len(INVALID)  # some rows drew a failure
    # The tally columns lived inside the job's transaction only.
    assert [c.name for c in adapter.columns(adapter.relation("out"))] == [
        "id", "name", "request", "response", "status", "processed_time"]
    assert predictor.written_usage(adapter.relation("out")) is None  # answered once per job


def test_tallies_are_withheld_once_the_table_holds_other_answers(adapter):
    load(adapter, [(i, req(f"prompt {i}")) for i in range(5)])
    out = adapter.relation("out")
    predictor = LocalPredictor(adapter)
    run(adapter, predictor)
    adapter.execute("INSERT INTO out SELECT * FROM out LIMIT 1")  # one more answer
    assert predictor.written_usage(out) is None
    run(adapter, predictor)
    adapter.execute("CREATE OR REPLACE TABLE out AS SELECT * FROM out")  # the same rows, another table
    assert predictor.written_usage(out) is None
    run(adapter, predictor)
    # A row without an answer, as on_invalid='skip' appends the invalid rows: the totals still hold.
    adapter.execute("INSERT INTO out VALUES (9, '{}', NULL, 'Bad Request: ...', NULL)")
    written = predictor.written_usage(out)
    assert (written.answered, written.prompt_tokens, written.output_tokens) == usage_read(adapter)[:3]
    run(adapter, predictor)
    run(adapter, predictor, response_function=f"{fns.__name__}:echo")  # the same table, answered by a function
    assert predictor.written_usage(out) is None  # a response function's answers are its own, never tallied


# -- response_function -------------------------------------------------------------------------


def test_response_function_text_is_wrapped_and_invalid_rows_never_reach_it(adapter):
    fns.CALLS.clear()
    load(adapter, [(1, req("hello")), (2, SEED_BAD_REQUEST), (3, req("world"))])
    job = run(adapter, LocalPredictor(adapter, response_function=f"{fns.__name__}:echo"))
    assert (job.succeeded, job.failed) == (2, 1)
    out = output(adapter)
    assert [text_of(r) for r in (out[0], out[2])] == ["echo: hello", "echo: world"]
    assert json.loads(out[0]["response"])["modelVersion"] == "gemini-2.5-flash"
    assert out[1]["status"] == SEED_STATUS
    assert [fns.prompt_of(c) for c in fns.CALLS] == ["hello", "world"]
    assert load_response_function(f"{fns.__name__}.echo") is fns.echo  # the dotted form names the same function


def test_response_function_dicts_errors_and_wrong_types_fail_rows_not_the_job(adapter):
    load(adapter, [(1, req("dict please")), (2, req("boom here")), (3, req("number")), (4, req("text"))])
    job = run(adapter, LocalPredictor(adapter, response_function=f"{fns.__name__}:varied"))
    assert (job.state, job.succeeded, job.failed) == (JobState.SUCCEEDED, 2, 2)
    as_dict, boom, number, text = output(adapter)
    response = json.loads(as_dict["response"])
    assert response["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert response["usageMetadata"]["totalTokenCount"] == 10
    assert boom["status"].startswith("Internal Server Error: ") and "ValueError: cannot answer 'boom here'" in boom["status"]
    assert boom["response"] is None
    assert "returned int" in number["status"]
    assert text_of(text) == "fine"


def test_bad_response_function_path_is_a_clear_error(adapter):
    with pytest.raises(PredictorError, match="'no_such_module_x:f'.*cannot import"):
        LocalPredictor(adapter, response_function="no_such_module_x:f")
    with pytest.raises(PredictorError, match="has no attribute 'eco'. Did you mean 'echo'"):
        LocalPredictor(adapter, response_function=f"{fns.__name__}:eco")
    with pytest.raises(PredictorError, match="names no module"):
        LocalPredictor(adapter, response_function="justaname")


# -- the registry --------------------------------------------------------------------------------


def test_registry_builds_the_local_predictor_and_suggests_on_typos(adapter):
    from bqbatch_sql.config import LocalPredictorConfig

    class Context:
        pass

    ctx = Context()
    ctx.adapter = adapter
    predictor = make_predictor(LocalPredictorConfig(failure_rate=0.5), ctx)
    assert isinstance(predictor, LocalPredictor) and predictor.defaults.failure_rate == 0.5
    assert isinstance(make_predictor("local", adapter, chunk_rows=5), LocalPredictor)
    with pytest.raises(ProfileError, match="Did you mean 'local'"):
        make_predictor("locl", adapter)
    with pytest.raises(ProfileError, match="no option 'failure_rat'. Did you mean 'failure_rate'"):
        make_predictor("local", adapter, failure_rat=0.1)


def test_submit_returns_at_once(adapter):
    load(adapter, [(i, req(f"p{i}")) for i in range(10)])
    predictor = LocalPredictor(adapter, latency_seconds=0.5)
    started = time.perf_counter()
    job = predictor.submit(spec(adapter))
    assert time.perf_counter() - started < 0.3 and job.state == JobState.PENDING
    assert predictor.wait(job.name, timeout=30).state == JobState.SUCCEEDED
