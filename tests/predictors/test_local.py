"""The local predictor on a real DuckDB: what a user sees in the output table and in the job."""

from __future__ import annotations

import json
import re
import time

import local_predictor_functions as fns
import pytest

from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.errors import JobNotFoundError, PredictorError, ProfileError
from bqbatch_sql.predictors import make_predictor
from bqbatch_sql.predictors.base import BatchJobSpec, JobState
from bqbatch_sql.predictors.local import LocalPredictor
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


# -- validation and the shape of answers ------------------------------------------------


def test_seed_tester_row_gets_the_seed_status_and_valid_rows_a_response(adapter):
    load(adapter, [(1, req("Give me a recipe for banana bread.")), (2, SEED_BAD_REQUEST)])
    job = run(adapter)
    assert (job.state, job.total, job.succeeded, job.failed, job.incomplete) == (JobState.SUCCEEDED, 2, 1, 1, 0)
    good, bad = output(adapter)
    assert bad["status"] == SEED_STATUS and bad["response"] is None
    assert good["status"] == ""
    response = json.loads(good["response"])
    candidate = response["candidates"][0]
    assert candidate["content"]["role"] == "model"
    assert candidate["finishReason"] == "STOP"
    text = candidate["content"]["parts"][0]["text"]
    assert text.startswith(EMULATED_TAG) and "Give me a recipe for banana bread." in text
    usage = response["usageMetadata"]
    assert usage["promptTokenCount"] >= 1 and usage["candidatesTokenCount"] >= 1
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert response["modelVersion"] == "gemini-2.5-flash"


def test_output_keeps_every_row_and_column_in_order_even_null_and_garbage(adapter):
    rows = [(1, req("ok")), (2, None), (3, "not json at all"), (4, "[1, 2]"), (5, "{}"), (6, req("also ok"))]
    load(adapter, [(i, f"k{i}", r) for i, r in rows], "id INTEGER, key VARCHAR, request VARCHAR")
    job = run(adapter)
    out = output(adapter)
    assert [c.name for c in adapter.columns(adapter.relation("out"))] == [
        "id", "key", "request", "response", "status", "processed_time"]
    assert [(r["id"], r["key"], r["request"]) for r in out] == [(i, f"k{i}", r) for i, r in rows]
    assert (job.succeeded, job.failed) == (2, 4)
    for row in out:
        failed = row["id"] in (2, 3, 4, 5)
        assert (row["response"] is None) == failed
        assert bool(row["status"]) == failed
        assert row["processed_time"] is not None


def test_json_typed_request_column_and_long_prompts(adapter):
    long_prompt = "word " * 100
    load(adapter, [(1, req(long_prompt)), (2, req('quotes " and \\ backslash\nnewline é 🙂'))],
         "id INTEGER, request JSON")
    run(adapter)
    first, second = output(adapter)
    assert text_of(first).endswith('..."') and len(text_of(first)) < len(long_prompt)
    assert 'quotes " and \\ backslash\nnewline é 🙂' in text_of(second)


def test_responses_are_deterministic_and_differ_per_request(adapter):
    load(adapter, [(i, req(f"question {i % 3}")) for i in range(6)])
    run(adapter)
    first = output(adapter)
    run(adapter, destination="again")
    assert [r["response"] for r in first] == [r["response"] for r in output(adapter, "again")]
    texts = [text_of(r) for r in first]
    assert texts[0] == texts[3] and len(set(texts)) == 3


def test_system_instruction_counts_toward_prompt_tokens(adapter):
    system = {"parts": [{"text": "You are a very detailed and long-winded chef. " * 5}]}
    load(adapter, [(1, req("Soup?")), (2, req("Soup?", systemInstruction=system)),
                   (3, req("Soup?", system_instruction=system))])
    run(adapter)
    counts = [json.loads(r["response"])["usageMetadata"]["promptTokenCount"] for r in output(adapter)]
    assert counts[0] < counts[1] == counts[2]


# -- structured output ---------------------------------------------------------------------

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


def test_responses_conform_to_each_schema_of_a_catalog(adapter):
    names = list(SCHEMAS)
    rows = [(i, req(f"prompt {i}", **structured(SCHEMAS[name]))) for i, name in enumerate(names)]
    rows.append((len(names), req("plain one")))
    load(adapter, rows)
    job = run(adapter)
    assert job.failed == 0
    out = output(adapter)
    for name, row in zip(names, out):
        value = json.loads(text_of(row))
        assert check(value, SCHEMAS[name]) == [], (name, value)
    assert list(json.loads(text_of(out[names.index("ordering")]))) == ["c", "a", "b"]
    assert text_of(out[-1]).startswith(EMULATED_TAG)


def test_json_schema_snake_case_config_and_enum_mime(adapter):
    json_schema = {
        "type": "object",
        "$defs": {"step": {"type": "object", "properties": {"order": {"type": "integer"}, "what": {"type": ["string", "null"]}},
                           "required": ["order", "what"]}},
        "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 2},
                       "kind": {"anyOf": [{"type": "null"}, {"type": "string", "enum": ["soup", "cake"]}]}},
        "required": ["steps", "kind"],
    }
    snake = {"type": "OBJECT", "properties": {"answer": {"type": "BOOLEAN"}}, "required": ["answer"]}
    enum = {"type": "STRING", "enum": ["yes", "no"]}
    load(adapter, [
        (1, req("a", **structured(json_schema, key="responseJsonSchema"))),
        (2, req("b", generation_config={"response_mime_type": "application/json", "response_schema": snake})),
        (3, req("c", **structured(enum, mime="text/x.enum"))),
        (4, req("d", generationConfig={"responseMimeType": "application/json"})),
    ])
    run(adapter)
    first, second, third, fourth = output(adapter)
    assert check(json.loads(text_of(first)), json_schema) == []
    assert json.loads(text_of(second)) == {"answer": True}
    assert text_of(third) == "yes"
    assert EMULATED_TAG in json.loads(text_of(fourth))["response"]


def test_schema_strings_vary_per_row_but_structure_and_enums_do_not(adapter):
    schema = SCHEMAS["enum_nested"]
    load(adapter, [(i, req(f"review {i}", **structured(schema))) for i in range(4)])
    run(adapter)
    values = [json.loads(text_of(r)) for r in output(adapter)]
    assert len({v["author"]["first"] for v in values}) == 4
    assert {v["sentiment"] for v in values} == {"positive"}
    assert all(check(v, schema) == [] for v in values)


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
    assert run(adapter, LocalPredictor(adapter), failure_rate=1.0).failed == 50
    assert run(adapter, LocalPredictor(adapter, failure_rate=0.0)).failed == 0
    with pytest.raises(PredictorError, match="failure_rate"):
        LocalPredictor(adapter, failure_rate=1.5)


# -- response_function -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"{fns.__name__}:echo", f"{fns.__name__}.echo"])
def test_response_function_text_is_wrapped_and_invalid_rows_never_reach_it(adapter, path):
    fns.CALLS.clear()
    load(adapter, [(1, req("hello")), (2, SEED_BAD_REQUEST), (3, req("world"))])
    job = run(adapter, LocalPredictor(adapter, response_function=path))
    assert (job.succeeded, job.failed) == (2, 1)
    out = output(adapter)
    assert [text_of(r) for r in (out[0], out[2])] == ["echo: hello", "echo: world"]
    assert json.loads(out[0]["response"])["modelVersion"] == "gemini-2.5-flash"
    assert out[1]["status"] == SEED_STATUS
    assert [fns.prompt_of(c) for c in fns.CALLS] == ["hello", "world"]


def test_response_function_dicts_errors_and_wrong_types(adapter):
    load(adapter, [(1, req("fine")), (2, req("boom here"))])
    run(adapter, LocalPredictor(adapter, response_function=f"{fns.__name__}:full"))
    response = json.loads(output(adapter)[0]["response"])
    assert response["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert response["usageMetadata"]["totalTokenCount"] == 10

    job = run(adapter, LocalPredictor(adapter, response_function=f"{fns.__name__}:flaky"))
    assert (job.state, job.succeeded, job.failed) == (JobState.SUCCEEDED, 1, 1)
    status = output(adapter)[1]["status"]
    assert status.startswith("Internal Server Error: ") and "ValueError: cannot answer 'boom here'" in status

    job = run(adapter, LocalPredictor(adapter, response_function=f"{fns.__name__}:wrong_type"))
    assert job.failed == 2 and "returned int" in output(adapter)[0]["status"]


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
