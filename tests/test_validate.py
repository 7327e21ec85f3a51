"""Request validation: the catalog of bad requests and the messages a user sees, on real DuckDB.

Each catalog entry is a request (as the text of the request column), the kind of
problem and the message Vertex-style status carries. The same rules render for
BigQuery; that rendering is checked for shape here and runs on the emulator later.
"""

from __future__ import annotations

import json

import pytest
import sqlglot
from sqlglot import exp

from bqbatch_sql import request_rules as rules
from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.errors import ConfigError, RequestTableError
from bqbatch_sql.nodes import Relation
from bqbatch_sql.validate import (
    ValidationReport, check_request_table, materialize_statuses, request_status_sql, validate_relation,
)

SEED_STATUS = ('Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
               '"status": "INVALID_ARGUMENT"}}')

TEXT = {"role": "user", "parts": [{"text": "Give me a recipe for banana bread."}]}


def req(**fields) -> str:
    body = {"contents": [TEXT]}
    body.update(fields)
    return json.dumps(body)


def cfg(**config) -> str:
    return req(generationConfig=config)


def part(p: dict) -> str:
    return json.dumps({"contents": [{"role": "user", "parts": [p]}]})


VALID = [
    req(),
    json.dumps({"contents": [{"role": "user", "parts": [{"text": "Give me a recipe for banana bread."}]}],
                "system_instruction": {"parts": [{"text": "You are a chef."}]}}),  # the seeds' input example
    req(systemInstruction={"parts": [{"text": "You are a chef."}]}, generationConfig={"temperature": 0.2, "maxOutputTokens": 256}),
    req(generation_config={"top_p": "0.5", "max_output_tokens": "12", "candidate_count": 1}),  # numbers as strings
    cfg(temperature=2, topP=1, topK=40, seed=-3, presencePenalty=-2, frequencyPenalty=1.99, responseMimeType="text/plain"),
    cfg(responseMimeType="application/json", responseSchema={"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}),
    cfg(stopSequences=["END", "STOP"], responseModalities=["TEXT"], thinkingConfig={"thinkingBudget": 0}),
    json.dumps({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Hello"}]},
                             {"role": "user", "parts": [{"text": "Recipe?"}, {"text": "Short."}]}]}),
    json.dumps({"contents": [{"parts": [{"text": "no role is fine"}]}]}),
    json.dumps({"contents": {"role": "user", "parts": {"text": "single objects for lists"}}}),
    part({"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/cat.png"}}),
    part({"file_data": {"mime_type": "application/pdf", "file_uri": "https://example.com/a.pdf"}}),
    part({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}),
    req(safetySettings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"}]),
    req(labels={"team": "recipes"}, cachedContent="projects/p/locations/l/cachedContents/c"),
    req(tools=[{"googleSearch": {}}], toolConfig={"functionCallingConfig": {"mode": "AUTO"}}),
    req(systemInstruction=None, generationConfig=None),  # JSON null means "not set"
    json.dumps({"contents": [{"role": "user", "parts": [{"text": 'He said "hi"'}]}]}),
    json.dumps({"contents": [{"role": "user", "parts": [{"text": "emoji \U0001F600 and \u00e9 and \\n newline"}]}]}),
    json.dumps({"contents": [{"role": "user", "parts": [{"text": "spaced"}]}]}, indent=2),
]

# (name, request, code, the message of the status -- exact, or ending with "..." for a prefix)
CATALOG = [
    ("seeds_tester_role", '{"contents":[{"parts":{"text":"Explain how AI works in a few words."},"role":"tester"}]}',
     "invalid_role", "Please use a valid role: user, model."),
    ("null_request", None, "request_null",
     "Invalid JSON payload received. The request is NULL: every row needs a request (a GenerateContentRequest JSON object)."),
    ("not_json", "{contents: [", "not_json", "Invalid JSON payload received. Unexpected token: the request is not valid JSON."),
    ("array_root", "[1, 2]", "not_object",
     "Invalid JSON payload received. Root element must be a message: the request is a JSON array, not an object."),
    ("string_root", '"hello"', "not_object", "Invalid JSON payload received. Root element must be a message: the request is a JSON varchar, not an object."),
    ("no_contents", "{}", "contents_empty", "Unable to submit request because at least one contents field is required. " + rules.LEARN_MORE),
    ("empty_contents", '{"contents": []}', "contents_empty", "Unable to submit request because at least one contents field is required. ..."),
    ("content_no_parts", '{"contents": [{"role": "user"}]}', "parts_empty",
     "Unable to submit request because it must include at least one parts field, which describes the prompt input "
     "(contents[0].parts is empty). " + rules.LEARN_MORE),
    ("content_empty_parts", '{"contents": [{"role": "user", "parts": []}]}', "parts_empty", "Unable to submit request because it must include ..."),
    ("second_content_role", json.dumps({"contents": [TEXT, {"role": "assistant", "parts": [{"text": "x"}]}]}),
     "invalid_role", "Please use a valid role: user, model."),
    ("role_number", json.dumps({"contents": [{"role": 1, "parts": [{"text": "x"}]}]}),
     "wrong_type", "Invalid value at 'contents[0].role' (TYPE_STRING), 1"),
    ("part_no_data", part({}), "part_no_data",
     "Unable to submit request because contents[0].parts[0] has no data: set one of text, inlineData, fileData, "
     "functionCall, functionResponse, executableCode, codeExecutionResult."),
    ("part_two_data", part({"text": "a", "fileData": {"mimeType": "image/png", "fileUri": "gs://b/o"}}), "part_multiple_data",
     "Invalid JSON payload received. Oneof field 'data' is already set at 'contents[0].parts[0]': a part holds one of "
     "text, inlineData, fileData, ... and this one sets text fileData."),
    ("text_number", json.dumps({"contents": [{"role": "user", "parts": [{"text": "ok"}, {"text": 42}]}]}),
     "wrong_type", "Invalid value at 'contents[0].parts[1].text' (TYPE_STRING), 42"),
    ("text_empty", part({"text": ""}), "empty_text",
     "Unable to submit request because Model input cannot be empty (contents[0].parts[0].text is an empty string)."),
    ("part_is_string", json.dumps({"contents": [{"role": "user", "parts": ["hello"]}]}), "wrong_type",
     "Invalid value at 'contents[0].parts[0]' (type.googleapis.com/google.cloud.aiplatform.v1.Part), \"hello\""),
    ("unknown_root_key", req(prompt="hi"), "unknown_field", 'Invalid JSON payload received. Unknown name "prompt": Cannot find field.'),
    ("unknown_config_key", cfg(max_tokens=10), "unknown_field",
     "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config': Cannot find field."),
    ("unknown_part_key", part({"text": "a", "image": "x"}), "unknown_field",
     "Invalid JSON payload received. Unknown name \"image\" at 'contents[0].parts[0]': Cannot find field."),
    ("camel_and_snake", req(generationConfig={}, generation_config={"temperature": 1}), "duplicate_field",
     'Invalid JSON payload received. Field "generationConfig" is set twice, as "generationConfig" and as '
     '"generation_config". Keep one spelling.'),
    ("camel_and_snake_in_config", cfg(maxOutputTokens=5, max_output_tokens=6), "duplicate_field",
     "Invalid JSON payload received. Field \"maxOutputTokens\" is set twice, as \"maxOutputTokens\" and as "
     "\"max_output_tokens\" at 'generation_config'. Keep one spelling."),
    ("temperature_string", cfg(temperature="hot"), "wrong_type", "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\""),
    ("temperature_bool", cfg(temperature=True), "wrong_type", "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), true"),
    ("temperature_high", cfg(temperature=3), "out_of_range",
     "Unable to submit request because it has a temperature value of 3 but the supported range is from 0 (inclusive) "
     "to 2 (inclusive). Update the value and try again."),
    ("top_p_high", cfg(topP=1.5), "out_of_range",
     "Unable to submit request because it has a topP value of 1.5 but the supported range is from 0 (inclusive) to 1 "
     "(inclusive). Update the value and try again."),
    ("top_p_negative_snake", req(generation_config={"top_p": -0.1}), "out_of_range", "Unable to submit request because it has a topP value of -0.1 ..."),
    ("penalty_upper_exclusive", cfg(presencePenalty=2), "out_of_range",
     "Unable to submit request because it has a presencePenalty value of 2 but the supported range is from -2 "
     "(inclusive) to 2 (exclusive). Update the value and try again."),
    ("max_tokens_zero", cfg(maxOutputTokens=0), "out_of_range", "Unable to submit request because it has a maxOutputTokens value of 0 ..."),
    ("max_tokens_fraction", cfg(maxOutputTokens=10.5), "wrong_type",
     "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), 10.5"),
    ("max_tokens_too_big", cfg(maxOutputTokens=3_000_000_000), "wrong_type",
     "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), 3000000000"),
    ("candidate_count_nine", cfg(candidateCount=9), "out_of_range", "Unable to submit request because it has a candidateCount value of 9 ..."),
    ("temperature_list", cfg(temperature=[0.5]), "not_repeating",
     "Invalid JSON payload received. Unknown name \"temperature\" at 'generation_config': Proto field is not repeating, "
     "cannot start list."),
    ("config_not_object", req(generationConfig="fast"), "wrong_type",
     "Invalid value at 'generation_config' (type.googleapis.com/google.cloud.aiplatform.v1.GenerationConfig), \"fast\""),
    ("contents_string", '{"contents": "hello"}', "wrong_type",
     "Invalid value at 'contents' (type.googleapis.com/google.cloud.aiplatform.v1.Content), \"hello\""),
    ("stop_sequences_six", cfg(stopSequences=list("abcdef")), "too_many_items",
     "Unable to submit request because generation_config.stop_sequences has 6 values but at most 5 are supported."),
    ("stop_sequence_number", cfg(stopSequences=["a", 3]), "wrong_type",
     "Invalid value at 'generation_config.stop_sequences[1]' (TYPE_STRING), 3"),
    ("modality_unknown", cfg(responseModalities=["TEXT", "SMELL"]), "invalid_enum",
     "Invalid value at 'generation_config.response_modalities[1]' "
     "(type.googleapis.com/google.cloud.aiplatform.v1.GenerationConfig.Modality), \"SMELL\""),
    ("mime_unsupported", cfg(responseMimeType="text/html"), "invalid_mime_type",
     "Unable to submit request because it has a response_mime_type of 'text/html', which is not supported. Use one of: "
     "text/plain, application/json, text/x.enum."),
    ("schema_without_json_mime", cfg(responseSchema={"type": "STRING"}), "schema_needs_json",
     "Unable to submit request because a response schema requires response_mime_type to be application/json or "
     "text/x.enum (generation_config.response_mime_type is '')."),
    ("schema_and_json_schema", cfg(responseMimeType="application/json", responseSchema={"type": "STRING"},
                                   responseJsonSchema={"type": "string"}), "schema_conflict",
     "Unable to submit request because generation_config sets both response_schema and response_json_schema; set only one."),
    ("thinking_budget_text", cfg(thinkingConfig={"thinkingBudget": "lots"}), "wrong_type",
     "Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32), \"lots\""),
    ("thinking_unknown_key", cfg(thinkingConfig={"budget": 1}), "unknown_field",
     "Invalid JSON payload received. Unknown name \"budget\" at 'generation_config.thinking_config': Cannot find field."),
    ("schema_sdk_type_underscore", cfg(responseMimeType="application/json", responseSchema={"type_": "OBJECT"}), "unknown_field",
     "Invalid JSON payload received. Unknown name \"type_\" at 'generation_config.response_schema': Cannot find field."),
    ("schema_nested_type_invalid", cfg(responseMimeType="application/json", responseSchema={
        "type": "OBJECT", "properties": {"steps": {"type": "ARRAY", "items": {"type": "TEXT"}}}}), "invalid_enum",
     "Invalid value at 'generation_config.response_schema.properties.steps.items.type' "
     "(type.googleapis.com/google.cloud.aiplatform.v1.Type), \"TEXT\""),
    ("schema_nested_unknown_key", cfg(responseMimeType="application/json", responseSchema={
        "type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer", "minimun": 1}]}}}),
     "unknown_field", "Invalid JSON payload received. Unknown name \"minimun\" at "
     "'generation_config.response_schema.properties.a.any_of[1]': Cannot find field."),
    ("schema_required_not_strings", cfg(responseMimeType="application/json", responseSchema={"type": "OBJECT", "required": [1]}),
     "wrong_type", "Invalid value at 'generation_config.response_schema.required[0]' (TYPE_STRING), 1"),
    ("file_uri_s3", part({"fileData": {"mimeType": "image/png", "fileUri": "s3://bucket/cat.png"}}), "invalid_file_uri",
     "Unable to submit request because contents[0].parts[0].file_data.file_uri is 's3://bucket/cat.png', which is "
     "neither a Cloud Storage URI (gs://bucket/object) nor an HTTP(S) URL."),
    ("file_uri_local_path", part({"file_data": {"mime_type": "image/png", "file_uri": "/tmp/cat.png"}}), "invalid_file_uri",
     "Unable to submit request because contents[0].parts[0].file_data.file_uri is '/tmp/cat.png', ..."),
    ("file_without_mime", part({"fileData": {"fileUri": "gs://b/o.png"}}), "missing_mime_type",
     "Unable to submit request because contents[0].parts[0].file_data has no mime_type. Add a mimeType (for example "
     "image/png) and try again."),
    ("inline_not_base64", part({"inlineData": {"mimeType": "image/png", "data": "not base64!"}}), "invalid_base64",
     "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 decoding failed."),
    ("safety_category_typo", req(safetySettings=[{"category": "HARM_CATEGORY_HATE", "threshold": "BLOCK_NONE"}]),
     "invalid_enum", "Invalid value at 'safety_settings[0].category' (type.googleapis.com/google.cloud.aiplatform.v1.HarmCategory), "
     "\"HARM_CATEGORY_HATE\""),
    ("system_empty_text", req(systemInstruction={"parts": [{"text": ""}]}), "empty_text",
     "Unable to submit request because Model input cannot be empty (system_instruction.parts[0].text is an empty string)."),
    ("system_unknown_key", req(system_instruction={"text": "You are a chef."}), "unknown_field",
     "Invalid JSON payload received. Unknown name \"text\" at 'system_instruction': Cannot find field."),
    ("tool_unknown", req(tools=[{"web": {}}]), "unknown_field",
     "Invalid JSON payload received. Unknown name \"web\" at 'tools[0]': Cannot find field."),
    ("too_large", req(labels={"pad": "x" * (rules.MAX_REQUEST_BYTES + 10)}), "request_too_large",
     "Unable to submit request because it is ..."),
]


@pytest.fixture(scope="module")
def adapter():
    a = DuckDBAdapter()
    yield a
    a.close()


def load(adapter: DuckDBAdapter, name: str, requests: list[str | None], column_type: str = "VARCHAR") -> Relation:
    con = adapter.connection
    con.execute(f'CREATE OR REPLACE TABLE main."{name}" (id INTEGER, request {column_type})')
    con.executemany(f'INSERT INTO main."{name}" VALUES (?, ?)', [[i, r] for i, r in enumerate(requests)])
    return Relation(None, "main", name)


def statuses(adapter: DuckDBAdapter, relation: Relation) -> list[str | None]:
    status = request_status_sql(exp.column("request"), "duckdb")
    query = exp.select(status).from_(relation.table()).order_by("id")
    return [row[0] for row in adapter.fetchall(query)]


@pytest.fixture(scope="module")
def catalog_results(adapter):
    """(code, message) and the status of every catalog row, from one query."""
    rel = load(adapter, "catalog", [r for _, r, _, _ in CATALOG])
    p = exp.column("p")
    inner = exp.select(exp.column("id"), rules.problem_sql(exp.column("request"), "duckdb").as_("p")).from_(rel.table())
    status = exp.Case(ifs=[exp.If(this=p.is_(exp.Null()).not_(), true=rules.status_sql(p, "duckdb"))])
    code = exp.Bracket(this=p, expressions=[exp.Literal.number(1)], offset=1)
    query = exp.select(code, rules.message_sql(p, "duckdb"), status).from_(inner.subquery("c")).order_by("id")
    rows = adapter.fetchall(query)
    return [(code, message) for code, message, _ in rows], [s for _, _, s in rows]


@pytest.mark.parametrize("i", range(len(CATALOG)), ids=[c[0] for c in CATALOG])
def test_catalog_message(catalog_results, i):
    name, _, code, message = CATALOG[i]
    got_code, got_message = catalog_results[0][i]
    assert got_code == code, got_message
    if message.endswith("..."):
        assert got_message.startswith(message[:-3])
    else:
        assert got_message == message


def test_status_is_vertex_json_with_the_message(catalog_results):
    for (_, _, code, _), (_, message), status in zip(CATALOG, catalog_results[0], catalog_results[1]):
        assert status.startswith("Bad Request: ")
        body = json.loads(status.removeprefix("Bad Request: "))
        assert body == {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


def test_seeds_failure_example_gets_exactly_the_seeds_status(adapter):
    rel = load(adapter, "seed", ['{"contents":[{"parts":{"text":"Explain how AI works in a few words."},"role":"tester"}]}'])
    assert statuses(adapter, rel) == [SEED_STATUS]


@pytest.mark.parametrize("column_type", ["VARCHAR", "JSON"])
def test_valid_requests_have_no_status(adapter, column_type):
    rel = load(adapter, f"valid_{column_type}", VALID, column_type)
    assert statuses(adapter, rel) == [None] * len(VALID)


def full_statuses(adapter: DuckDBAdapter, relation: Relation) -> list[str | None]:
    """Every row's status from the full checks alone (no fast path), in id order."""
    p = exp.column("p")
    inner = exp.select("id", rules.request_problem(exp.column("request"), "duckdb", fast=False).as_("p")).from_(relation.table())
    status = exp.Case(ifs=[exp.If(this=p.is_(exp.Null()).not_(), true=rules.status_sql(p, "duckdb"))])
    return [r[0] for r in adapter.fetchall(exp.select(status).from_(inner.subquery("c")).order_by("id"))]


def fast_statuses(adapter: DuckDBAdapter, relation: Relation) -> list[str | None]:
    """Every row's status through materialize_statuses (fast path + full checks on the rest), in id order."""
    target = relation.with_name(relation.name + "_statuses")
    materialize_statuses(adapter, relation, target, keep_columns=True)
    return [r[0] for r in adapter.fetchall(exp.select("status").from_(target.table()).order_by("id"))]


def test_scalar_fast_path_is_never_true_for_a_bad_request(adapter):
    """The DuckDB shortcut inside request_status_sql may only skip rows the full checks accept."""
    rel = load(adapter, "fast_bad", [r for _, r, _, _ in CATALOG])
    fast = rules.scalar_fast_valid(exp.column("request"))
    got = adapter.fetchall(exp.select(fast).from_(rel.table()).order_by("id"))
    assert [row[0] for row in got] == [False] * len(got)


def test_scalar_fast_path_takes_requests_of_contents_and_system_instruction(adapter):
    common = [VALID[0], VALID[1], VALID[7], VALID[8], VALID[10], VALID[11], VALID[12], VALID[17], VALID[18], VALID[19]]
    rel = load(adapter, "fast_good", common)
    fast = rules.scalar_fast_valid(exp.column("request"))
    assert [row[0] for row in adapter.fetchall(exp.select(fast).from_(rel.table()).order_by("id"))] == [True] * len(common)


_SYS = '{"parts":[{"text":"Be brief."}]}'
_TURN = '[{"role":"user","parts":[{"text":"hi"}]}]'
# Shapes aimed at the fast path's seams: a key given twice (the full checks read the
# first), the system instruction around contents in both spellings, trailing commas
# (DuckDB's JSON reader takes them), escapes, whitespace.
EDGE_CASES = [
    f'{{"systemInstruction":{_SYS},"contents":{_TURN},"system_instruction":{_SYS}}}',
    f'{{"systemInstruction":{_SYS},"contents":{_TURN},"systemInstruction":{_SYS}}}',
    f'{{"contents":{_TURN},"system_instruction":{_SYS},"systemInstruction":{_SYS}}}',
    f'{{"contents":{_TURN},"system_instruction":{_SYS},"generationConfig":{{}},"system_instruction":{_SYS}}}',
    f'{{"contents":{_TURN},"contents":[]}}',
    f'{{"contents":[],"contents":{_TURN}}}',
    f'{{"contents":{_TURN},}}',
    '{"contents":[{"role":"user","parts":[{"text":"hi"},]}]}',
    '{"contents":[{"role":"user","parts":[{"text":"hi"}],"role":"model"}]}',
    '{"contents":[{"role":"user","parts":[{"text":"hi"}],"role":"tester"}]}',
    '{"contents":[{"role":"user","role":"model","parts":[{"text":"hi"}]}]}',
    '{"contents":[{"role":"user","parts":[{"text":"hi","text":""}]}]}',
    '{"contents":[{"role":"user","parts":[{"text":"\\u0000"}]}]}',
    '{"contents":[{"role":"user","parts":[{"text":"\\ud800"}]}]}',
    '{"contents":[{"role":"\\u0075ser","parts":[{"text":"hi"}]}]}',
    '{"contents":[{"role":"user","parts":[{"fileData":{"displayName":"a","fileUri":"gs://b/o","mimeType":"image/png","displayName":"b"}}]}]}',
    '{"contents":[{"role":"user","parts":[{"fileData":{"fileUri":"gs://b/o","fileUri":"s3://b/o","mimeType":"image/png"}}]}]}',
    '{"contents":[{"role":"user","parts":[{"fileData":{"file_uri":"https://x.org/a\\/b","mime_type":"a"}}]}]}',
    '{"contents":[{"role":"user","parts":[{"inlineData":{"data":"","mimeType":"image/png"}}]}]}',
    ' \n{ "contents" : [ { "parts" : [ { "text" : "hi" } ] } ] } \n',
    '\x0c{"contents":[{"parts":[{"text":"hi"}]}]}',
    f'{{"contents":{_TURN}}}garbage',
    f'{{"contents":{_TURN}}}}}',
    f'{{"contents":{_TURN},"generationConfig":{{"temperature":1}}',
    f'{{"contents":{_TURN},"generationConfig":{{"temperature":1}},"generation_config":null}}',
    f'{{"contents":{_TURN},"generationConfig":{{"temperature":NaN}}}}',
    f'{{"contents":{_TURN},"labels":{{"contents":"x","systemInstruction":"y"}}}}',
]


def test_materialized_statuses_equal_the_full_checks_on_the_catalog(adapter):
    rel = load(adapter, "catalog_fast", VALID + [r for _, r, _, _ in CATALOG] + EDGE_CASES)
    full = full_statuses(adapter, rel)
    assert full[: len(VALID)] == [None] * len(VALID)
    assert fast_statuses(adapter, rel) == full


def test_fast_path_vouches_for_the_common_shapes(adapter):
    """Rows the gemini_request macro, the seeds and json.dumps write never pay for the full
    checks: their heads match and their tails are checked once per distinct value."""
    from bqbatch_sql import validate_duckdb as vd

    common = [r for i, r in enumerate(VALID) if i not in (9, 16)] + [
        json.dumps({"system_instruction": {"parts": [{"text": "You are a chef."}]}, "contents": [TEXT]}),
        json.dumps({"contents": [TEXT]}, separators=(",", ":")) * 1,
    ] + [MACRO_ROW] * 50 + [cfg(temperature=i / 50, seed=i, maxOutputTokens=100 + i) for i in range(100)]
    rel = load(adapter, "common", common)
    con = adapter.cursor()
    try:
        _, classified = vd.run(con, rel, "request")
        assert classified.checked_rows == 0
        assert classified.total == len(common)
        # a scalar generationConfig is checked per row: rows differing only there share a group
        assert classified.groups < 20
    finally:
        for sql in vd.drop_scratch_sql():
            con.execute(sql)


MACRO_ROW = ('{"contents":[{"role":"user","parts":[{"fileData":{"fileUri":"gs://b/menu.pdf","mimeType":"application/pdf"}},'
             '{"text":"Summarize the menu."}]}],"systemInstruction":{"parts":[{"text":"You are a chef."}]},'
             '"generationConfig":{"temperature":0.2,"maxOutputTokens":1024,"responseMimeType":"application/json",'
             '"responseSchema":{"type":"OBJECT","properties":{"dish":{"type":"STRING"}}}},'
             '"safetySettings":[{"category":"HARM_CATEGORY_HATE_SPEECH","threshold":"BLOCK_ONLY_HIGH"}],"labels":{"team":"menu"}}')

# Requests whose every small change is compared between the two paths: each stresses a
# different part of the fast path (the head pattern, the tail, the spellings, whitespace).
MUTATION_BASES = [
    VALID[2],
    VALID[1],
    MACRO_ROW,
    json.dumps({"system_instruction": {"role": "x", "parts": [{"text": "Be brief."}]},
                "contents": [{"parts": [{"inline_data": {"mime_type": "image/png", "data": "iVBO"}}], "role": "model"}]}),
    r'{"contents":[{"role":"user","parts":[{"text":"a\"b\\c\u00e9\ud83d\ude00 \/"}]}],"generation_config":{"top_p":0.5}}',
    # a generationConfig of scalars ends the request: the head pattern takes it, ranges and all
    json.dumps({"contents": [TEXT], "generationConfig": {
        "temperature": 2, "topP": 0.25, "topK": 40, "seed": -3, "presencePenalty": -2, "frequencyPenalty": 1.99,
        "candidateCount": 8, "logprobs": 20, "maxOutputTokens": 10, "responseMimeType": "text/plain",
        "thinkingConfig": {"thinkingBudget": 0, "includeThoughts": True, "thinkingLevel": "LOW"}}}),
    # what gemini_request compiles to (keys sorted): the system instruction ends the tail
    '{"contents":[{"parts":[{"text":"Summarize: it \\"works\\""}],"role":"user"}],"generationConfig":{"temperature":0.2},'
    '"systemInstruction":{"parts":[{"text":"Be brief."}],"role":"system"}}',
    '{"contents":[{"parts":[{"text":"要約して 😀"}],"role":"user"}],"generationConfig":{"topK":3},'
    '"systemInstruction":{"parts":[{"text":"簡潔に。"}]}}',
    json.dumps({"system_instruction": {"parts": [{"text": "Be brief."}]}, "contents": [TEXT], "generation_config": {
        "temperature": 0.5, "max_output_tokens": 100, "presence_penalty": -1.5, "top_p": 1.0, "response_logprobs": False,
        "thinking_config": {"thinking_budget": 12}}}, separators=(",", ":")),
]


def _mutations(base: str) -> list[str]:
    chars = ('"', "1", " ", "[", "}", ",", ":", "\\", "\x0c")
    out = {base[:i] + c + base[i + 1:] for i in range(len(base)) for c in chars}  # replace one character
    out |= {base[:i] + base[i + 1:] for i in range(len(base))}  # drop one
    out |= {base[:i] + c + base[i:] for i in range(0, len(base), 3) for c in (" ", ",", '"a":1,')}  # insert
    return sorted(out)


@pytest.mark.parametrize("b", range(len(MUTATION_BASES)))
def test_fast_path_agrees_with_full_checks_on_mutations(adapter, b):
    """Every small change of a request: the statuses through the fast path are exactly the
    full checks' (valid or not, same message)."""
    variants = _mutations(MUTATION_BASES[b])
    rel = load(adapter, f"mutations_{b}", variants)
    full = full_statuses(adapter, rel)
    assert full.count(None) > 10 and len(full) - full.count(None) > 100  # both kinds are exercised
    fast = fast_statuses(adapter, rel)
    wrong = [(variants[i], f, g) for i, (f, g) in enumerate(zip(fast, full)) if f != g]
    assert wrong == []


def test_validate_relation_counts_and_samples(adapter):
    by_name = {name: r for name, r, _, _ in CATALOG}
    rows = [VALID[0]] * 5 + [by_name["seeds_tester_role"], by_name["unknown_root_key"], by_name["seeds_tester_role"], None]
    con = adapter.connection
    con.execute('CREATE OR REPLACE TABLE main.recipes (recipe_id VARCHAR, dish VARCHAR, request JSON)')
    con.executemany("INSERT INTO main.recipes VALUES (?, ?, ?)", [[f"r{i}", f"dish {i}", r] for i, r in enumerate(rows)])
    report = validate_relation(adapter, Relation(None, "main", "recipes"), model="recipe_answers",
                               path="models/recipe_answers.sql", key_columns=["recipe_id"])
    assert (report.total, report.invalid, report.valid) == (9, 4, 5)
    assert report.counts == {"invalid_role": 2, "request_null": 1, "unknown_field": 1}
    assert [s.keys for s in report.samples] == [{"recipe_id": "r5"}, {"recipe_id": "r6"}, {"recipe_id": "r7"}, {"recipe_id": "r8"}]
    assert report.samples[0].message == "Please use a valid role: user, model."
    text = report.render()
    assert "recipe_answers (models/recipe_answers.sql): 9 requests" in text and "4 invalid" in text
    assert "recipe_id=r6: Invalid JSON payload received. Unknown name \"prompt\": Cannot find field." in text


def test_report_explains_sdk_type_underscore_trap(adapter):
    bad = cfg(responseMimeType="application/json", responseSchema={"type_": "OBJECT"})
    rel = load(adapter, "trap", [bad])
    report = validate_relation(adapter, rel, model="m", path="models/m.sql")
    assert report.samples[0].message == ("Invalid JSON payload received. Unknown name \"type_\" at "
                                          "'generation_config.response_schema': Cannot find field.")
    assert "type_ is the Python SDK's attribute name" in report.render()


def test_report_warns_above_vertex_job_limit():
    report = ValidationReport("m", "models/m.sql", "main.m__requests", total=450_000, invalid=0)
    assert report.over_job_limit
    assert "exceed Vertex's limit of 200,000 requests per batch job" in report.render()
    assert "into 3 models" in report.render()


def test_unknown_key_column_is_named(adapter):
    rel = load(adapter, "keys", [CATALOG[0][1]])
    with pytest.raises(ConfigError, match="key column 'recipe' is not a column"):
        validate_relation(adapter, rel, model="m", path="models/m.sql", key_columns=["recipe"])


@pytest.mark.parametrize(
    "ddl, message",
    [
        ("prompt VARCHAR", "has no column named 'request'"),
        ("request INTEGER", "column 'request' is INT64; Vertex needs JSON or STRING"),
        ("request JSON, status VARCHAR", "column 'status' has a name Vertex reserves"),
        ("request JSON, tags VARCHAR[]", "pass-through column 'tags' is ARRAY"),
        ("request JSON, meta STRUCT(a INT)", "pass-through column 'meta' is STRUCT"),
        ("request JSON, created TIMESTAMP", "pass-through column 'created' is DATETIME"),
    ],
)
def test_request_table_contract(adapter, ddl, message):
    adapter.connection.execute(f"CREATE OR REPLACE TABLE main.t_contract ({ddl})")
    with pytest.raises(RequestTableError, match=message) as err:
        check_request_table(adapter, Relation(None, "main", "t_contract"), model="m", path="models/m.sql")
    assert "Model 'm' (models/m.sql)" in str(err.value)


def test_request_table_contract_returns_passthrough_columns(adapter):
    adapter.connection.execute("CREATE OR REPLACE TABLE main.t_ok (id BIGINT, request JSON, created TIMESTAMPTZ, d DATE)")
    cols = check_request_table(adapter, Relation(None, "main", "t_ok"), model="m", path="models/m.sql")
    assert [c.name for c in cols] == ["id", "created", "d"]


def test_bigquery_rendering_is_valid_bigquery():
    tree = request_status_sql(exp.column("request"), "bigquery", request_type="STRING")
    sql = tree.sql("bigquery")
    assert tree.find(exp.Lambda) is None  # BigQuery has no lambdas: lists go through UNNEST
    for fragment in ("SAFE.PARSE_JSON(request)", "JSON_TYPE(", "JSON_KEYS(", "WITH OFFSET", "GENERATE_ARRAY(",
                     "Please use a valid role: user, model.", '"status": "INVALID_ARGUMENT"}}'):
        assert fragment in sql
    # the text parses as BigQuery SQL (sqlglot's parser stands in for BigQuery's here)
    assert isinstance(sqlglot.parse_one(f"SELECT {sql} AS status FROM t", read="bigquery"), exp.Select)


def test_unknown_dialect_is_refused():
    with pytest.raises(ValueError, match="no SQL rendering for the dialect 'snowflake'"):
        request_status_sql(exp.column("request"), "snowflake")


# -- on_invalid, through the CLI on the local target ---------------------------------------

REVIEWS = "review_id,review_text\n1,great kettle\n2,\n3,ok blender\n"  # row 2: no text, so no prompt
SKIP_MODEL = ("{{ config(materialized='batch_prediction', key_columns=['review_id'], on_invalid='%s') }}\n"
              "select review_id, {{ gemini_request(prompt=\"'Classify: ' || review_text\") }} as request\n"
              "from {{ ref('reviews') }}\n")


def test_on_invalid_skip_records_invalid_rows_with_their_status(make_project, cli):
    import duckdb

    root = make_project({"seeds/reviews.csv": REVIEWS, "models/sentiment.sql": SKIP_MODEL % "skip"})
    result = cli("build", "--project-dir", root)
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(root / "target" / "bqbatch.duckdb"), read_only=True) as db:
        rows = db.execute("select review_id, response is not null, status from main.sentiment order by review_id").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]  # one output row per request row
    assert rows[0][1:] == (True, "") and rows[2][1:] == (True, "")
    assert rows[1][1] is False and rows[1][2] == (
        'Bad Request: {"error": {"code": 400, "message": "Unable to submit request because contents[0].parts[0] has no '
        'data: set one of text, inlineData, fileData, functionCall, functionResponse, executableCode, '
        'codeExecutionResult.", "status": "INVALID_ARGUMENT"}}')


def test_on_invalid_fail_names_the_row_and_submits_nothing(make_project, cli):
    root = make_project({"seeds/reviews.csv": REVIEWS, "models/sentiment.sql": SKIP_MODEL % "fail"})
    result = cli("build", "--project-dir", root)
    assert result.exit_code != 0
    assert "1 of 3 requests are invalid; nothing was submitted" in result.output
    assert "review_id=2: Unable to submit request because contents[0].parts[0] has no data" in result.output
    assert "submitted projects/" not in result.output


def test_validate_relation_reads_a_view_once(adapter):
    by_name = {name: r for name, r, _, _ in CATALOG}
    rel = load(adapter, "view_source", [VALID[0], by_name["temperature_high"], VALID[2], by_name["seeds_tester_role"]])
    adapter.connection.execute(f"CREATE OR REPLACE VIEW main.view_requests AS SELECT * FROM {rel.sql('duckdb')} WHERE id > 0")
    report = validate_relation(adapter, Relation(None, "main", "view_requests"), model="m", path="models/m.sql",
                               key_columns=["id"])
    assert (report.total, report.invalid) == (3, 2)
    assert [(s.keys, s.code) for s in report.samples] == [({"id": 1}, "out_of_range"), ({"id": 3}, "invalid_role")]


def test_compiled_requests_with_a_system_instruction_need_no_full_checks(adapter):
    """Sorted keys put the system instruction after a scalar generationConfig: such rows,
    whatever their texts, are vouched for by pattern, and the full checks do not run."""
    from bqbatch_sql import validate_duckdb as vd

    # Non-ASCII prompts too (the seeds' are Japanese): the head is cut in bytes, not characters.
    prompts = ["review {i}", "このレビューを要約してください: {i}", "émoji 😀 — {i}"]
    rows = [json.dumps({"contents": [{"parts": [{"text": prompts[i % 3].format(i=i)}], "role": "user"}],
                        "generationConfig": {"temperature": i / 100},
                        "systemInstruction": {"parts": [{"text": f"簡潔に, {i}."}]}}, separators=(",", ":"),
                       ensure_ascii=False)
            for i in range(100)]
    con = adapter.cursor()
    try:
        _, classified = vd.run(con, load(adapter, "compiled", rows), "request")
        assert (classified.checked_rows, classified.to_check) == (0, 0)
    finally:
        for sql in vd.drop_scratch_sql():
            con.execute(sql)


def test_system_instruction_after_other_members_is_judged_like_the_full_checks():
    """Compiled requests sort their keys, so the system instruction comes after
    generationConfig; a second spelling split between head and tail is still refused."""
    head = '{"contents":[{"parts":[{"text":"hi"}],"role":"user"}]'
    requests = [
        head + ',"generationConfig":{"temperature":0.2},"systemInstruction":{"parts":[{"text":"Be brief."}]}}',
        head + ',"systemInstruction":{"parts":[{"text":"a"}]},"generationConfig":{},'
               '"system_instruction":{"parts":[{"text":"b"}]}}',
        head + ',"generationConfig":{"temperature":0.2},"systemInstruction":{"parts":[{"text":""}]}}',
    ]
    # the same split behind a long non-ASCII prompt: still refused
    requests.append(requests[1].replace('"hi"', '"' + "要約" * 40 + '"'))
    adapter = DuckDBAdapter()
    adapter.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1, ?::JSON), (2, ?::JSON), (3, ?::JSON), (4, ?::JSON)) "
                    "v(id, request)", requests)
    report = validate_relation(adapter, Relation(None, "main", "t"), model="m", path="p", key_columns=["id"])
    status = request_status_sql(exp.column("request", quoted=True), "duckdb").sql("duckdb")
    full = dict(adapter.fetchall(f"SELECT id, {status} FROM t"))
    assert full[1] is None and full[2] and full[3] and full[4]  # what the full checks say, row by row
    assert sorted(s.keys["id"] for s in report.samples) == [2, 3, 4]
    for sample in report.samples:
        assert sample.message in json.loads(full[sample.keys["id"]].removeprefix("Bad Request: "))["error"]["message"]
