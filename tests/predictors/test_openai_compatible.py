"""The `openai_compatible` predictor: translation both ways, and whole jobs through the real openai client."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from request_tables import TESTER_STATUS

from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.emulator.openai_fake import OpenAIFake
from bqbatch_sql.predictors import make_predictor
from bqbatch_sql.predictors.base import BatchJobSpec, JobState
from bqbatch_sql.predictors.openai_translate import (
    TranslationError,
    chat_request,
    generate_content_response,
    json_schema,
)

REPO = Path(__file__).resolve().parents[2]


# -- translation ------------------------------------------------------------------------


def test_a_request_becomes_chat_messages_and_sampling_settings():
    request = {
        "system_instruction": {"parts": [{"text": "You are a chef."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Give me a recipe"}, {"text": " for soup."}]},
            {"role": "model", "parts": [{"text": "Which soup?"}]},
            {"role": "user", "parts": [{"text": "Tomato."},
                                       {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}}]},
        ],
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 256,
                             "stopSequences": ["END"], "seed": 7, "candidateCount": 1},
        "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
    }
    kwargs = chat_request(request, "llama3.2:3b")
    assert kwargs["model"] == "llama3.2:3b"
    assert kwargs["messages"] == [
        {"role": "system", "content": "You are a chef."},
        {"role": "user", "content": "Give me a recipe for soup."},
        {"role": "assistant", "content": "Which soup?"},
        {"role": "user", "content": [{"type": "text", "text": "Tomato."},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
    ]
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["max_tokens"], kwargs["stop"], kwargs["seed"], kwargs["n"]) \
        == (0.2, 0.9, 256, ["END"], 7, 1)
    assert kwargs["extra_body"] == {"top_k": 40}


def test_gemini_response_schema_becomes_a_json_schema_response_format():
    schema = {"type": "OBJECT", "propertyOrdering": ["b", "a"], "required": ["a"],
              "properties": {"a": {"type": "STRING", "enum": ["x", "y"]},
                             "b": {"type": "ARRAY", "items": {"type": "INTEGER"}, "nullable": True}}}
    kwargs = chat_request({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                           "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}}, "m")
    expected = {"type": "object", "required": ["a"],
                "properties": {"b": {"type": ["array", "null"], "items": {"type": "integer"}},
                               "a": {"type": "string", "enum": ["x", "y"]}}}
    assert kwargs["response_format"] == {"type": "json_schema",
                                         "json_schema": {"name": "response", "schema": expected, "strict": True}}
    assert list(json_schema(schema)["properties"]) == ["b", "a"]  # propertyOrdering kept as key order
    plain_json = chat_request({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                               "generation_config": {"response_mime_type": "application/json"}}, "m")
    assert plain_json["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("request_, message", [
    ({"contents": [{"role": "tester", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
    ({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": []}]},
     "'tools' (function calling) has no translation"),
    ({"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "gs://b/f.pdf"}}]}]},
     "a 'fileData' part has no chat-completions translation"),
    ({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "text/x.enum"}},
     "responseMimeType 'text/x.enum' has no chat-completions translation"),
    ({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "promt": "typo"}, 'Unknown name "promt"'),
])
def test_what_has_no_equivalent_is_an_error_naming_the_field(request_, message):
    with pytest.raises(TranslationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        chat_request(request_, "m")


def test_a_chat_completion_becomes_a_generate_content_response():
    completion = {
        "id": "chatcmpl-1", "model": "qwen2.5:7b",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "Soup is", "reasoning_content": "Think."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    assert generate_content_response(completion) == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Think.", "thought": True}, {"text": "Soup is"}]},
                        "index": 0, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 15},
        "modelVersion": "qwen2.5:7b", "responseId": "chatcmpl-1",
    }


# -- whole jobs --------------------------------------------------------------------------


@pytest.fixture
def fake():
    # The jobs go through the real `openai` client: an optional dependency of bqbatch.
    pytest.importorskip("openai", reason="the openai_compatible predictor needs the openai client library")
    with OpenAIFake() as server:
        yield server


@pytest.fixture
def adapter(tmp_path):
    ad = DuckDBAdapter(tmp_path / "w.duckdb")
    yield ad
    ad.close()


def test_a_job_answers_every_row_and_retries_an_overloaded_server(adapter, fake):
    adapter.execute(
        "CREATE TABLE main.req AS SELECT i AS id, json_object('systemInstruction', json_object('parts', "
        "json_array(json_object('text', 'Be brief.'))), 'contents', json_array(json_object('role', "
        "CASE WHEN i = 2 THEN 'tester' ELSE 'user' END, 'parts', json_array(json_object('text', 'dish ' || i))))) "
        "AS request FROM range(5) t(i)")
    fake.fail_next(503, times=1)
    fake.fail_next(429, times=1)
    predictor = make_predictor("openai_compatible", adapter, base_url=fake.url + "/v1", model="fake-llm",
                               concurrency=2, initial_backoff_seconds=0.01, max_backoff_seconds=0.05,
                               flush_seconds=0.05)
    spec = BatchJobSpec("gemini-2.5-flash", adapter.relation("req"), adapter.relation("out"), "test")
    job = predictor.wait(predictor.submit(spec).name, 60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert (job.succeeded, job.failed) == (4, 1)
    rows = adapter.fetchall("SELECT id, CAST(response AS VARCHAR), status FROM main.out ORDER BY id")
    assert rows[2] == (2, None, TESTER_STATUS)  # refused by the shared rules, never sent
    for id_, response, status in rows[:2] + rows[3:]:
        answer = json.loads(response)
        assert status == "" and answer["candidates"][0]["content"]["parts"][0]["text"] == f"[openai fake] dish {id_}"
        assert answer["modelVersion"] == "fake-llm" and answer["usageMetadata"]["totalTokenCount"] > 0
    assert len(fake.requests) == 6  # four rows, two of them asked twice
    assert fake.requests[-1]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_the_example_project_runs_unchanged_against_a_model_server(tmp_path, fake):
    """Same models, parsed view included; only the profile names another predictor."""
    from click.testing import CliRunner

    from bqbatch_sql.cli import main

    root = tmp_path / "example"
    for name in ("models", "seeds", "macros"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "bqbatch_project.yml", root)
    (root / "profiles.yml").write_text(
        "bqbatch_example:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: target/llm.duckdb\n"
        f"      predictor:\n        type: openai_compatible\n        base_url: {fake.url}/v1\n        model: fake-llm\n"
        "        flush_seconds: 0.05\n")
    result = CliRunner().invoke(main, ["build", "--project-dir", str(root), "--profiles-dir", str(root),
                                       "--select", "+support_replies +review_sentiment"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 error" in result.output
    import duckdb

    with duckdb.connect(str(root / "target" / "llm.duckdb"), read_only=True) as db:
        parsed = db.execute("SELECT thread_id, text, error_code, error_message FROM main.support_replies__parsed "
                            "ORDER BY thread_id").fetchall()
        typed = db.execute("SELECT sentiment, score, needs_follow_up FROM main.review_sentiment__parsed").fetchall()
    assert parsed[0][1].startswith("[openai fake]") and parsed[0][2] is None
    assert parsed[2][2:] == (400, "Please use a valid role: user, model.")
    # the fake answers the translated json_schema with a conforming value; the typed columns read it
    assert len(typed) == 6 and all(row == ("positive", 0.5, True) for row in typed)
    assert all(r["model"] == "fake-llm" for r in fake.requests)
