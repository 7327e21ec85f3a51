"""Emulated answer shapes: status texts, wrapped function results, schema-conforming values."""

from __future__ import annotations

import json

import pytest

from bqbatch_sql.predictors.responses import (
    HASH_MARKER,
    SchemaValueError,
    coerce_function_result,
    model_version,
    schema_value,
    status_text,
    structured_text,
)


def test_status_text_is_spelled_as_vertex_writes_it():
    assert status_text(400, "Please use a valid role: user, model.", "INVALID_ARGUMENT") == (
        'Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
        '"status": "INVALID_ARGUMENT"}}'
    )
    assert status_text(429, "slow down", "RESOURCE_EXHAUSTED").startswith("Too Many Requests: ")


@pytest.mark.parametrize("model_id, version", [
    ("gemini-2.5-flash", "gemini-2.5-flash"),
    ("publishers/google/models/gemini-2.0-flash-001", "gemini-2.0-flash-001"),
    ("projects/p/locations/us-central1/models/123", "123"),
])
def test_model_version_is_the_last_path_segment(model_id, version):
    assert model_version(model_id) == version


def test_function_results_are_wrapped_or_completed():
    request = {"contents": [{"role": "user", "parts": [{"text": "twelve chars"}]}]}
    wrapped = coerce_function_result("an answer", request, "m")
    assert wrapped["candidates"][0]["content"] == {"role": "model", "parts": [{"text": "an answer"}]}
    assert wrapped["usageMetadata"] == {"promptTokenCount": 3, "candidatesTokenCount": 3, "totalTokenCount": 6}
    assert coerce_function_result({"candidates": []}, request, "m") == {"candidates": [], "modelVersion": "m"}
    with pytest.raises(TypeError, match="returned list"):
        coerce_function_result([], request, "m")


def test_schema_values_respect_bounds_formats_and_ordering():
    value = schema_value({
        "type": "OBJECT",
        "properties": {
            "z": {"type": "INTEGER", "minimum": 10, "maximum": 12},
            "a": {"type": "NUMBER", "exclusiveMaximum": 0},
            "when": {"type": "STRING", "format": "date-time"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["x", "y"]}, "minItems": 2, "maxItems": 3},
            "code": {"type": "STRING", "minLength": 12, "maxLength": 12},
        },
        "propertyOrdering": ["tags", "z"],
    })
    assert list(value) == ["tags", "z", "a", "when", "code"]
    assert value["z"] == 10 and value["a"] < 0 and value["when"] == "2024-01-15T12:00:00Z"
    assert value["tags"] == ["x", "x"]
    assert len(value["code"]) == 12


def test_free_strings_carry_the_row_marker_and_enums_do_not():
    text = structured_text("application/json", {"type": "OBJECT", "properties": {
        "summary": {"type": "STRING"}, "mood": {"type": "STRING", "enum": ["calm"]}}}, None)
    value = json.loads(text)
    assert HASH_MARKER in value["summary"] and value["mood"] == "calm"


def test_json_schema_refs_nullable_types_and_recursion():
    tree = {"$defs": {"node": {"type": "object", "properties": {"name": {"type": "string"},
                                                              "child": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
                               "required": ["name"]}},
            "$ref": "#/$defs/node"}
    value, depth = schema_value(tree), 0
    while value is not None:  # a finite chain of nodes, ended by a null child
        assert isinstance(value["name"], str)
        value, depth = value.get("child"), depth + 1
    assert 1 < depth < 30
    assert schema_value({"type": ["integer", "null"], "minimum": 3}) == 3
    with pytest.raises(SchemaValueError, match="deeper than"):  # no way out: every node needs a child
        schema_value({"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}, "required": ["c"]}},
                      "$ref": "#/$defs/n"})


@pytest.mark.parametrize("schema, message", [
    ({"type": "WHATEVER"}, "unknown type"),
    ({"$ref": "#/$defs/missing"}, "names no definition"),
    ({"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 3, "maxItems": 1}, "minItems 3 is above maxItems 1"),
    ("not a schema", "must be an object"),
])
def test_unusable_schemas_say_why(schema, message):
    with pytest.raises(SchemaValueError, match=message):
        schema_value(schema)


def test_enum_mime_needs_an_enum():
    assert structured_text("text/x.enum", {"type": "STRING", "enum": ["a", "b"]}, None) == "a"
    with pytest.raises(SchemaValueError, match="text/x.enum"):
        structured_text("text/x.enum", {"type": "STRING"}, None)
    assert structured_text("text/plain", None, None) is None
