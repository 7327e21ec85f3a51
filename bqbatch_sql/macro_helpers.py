"""Render stage: Python helpers the built-in Jinja macros (macros/*.sql) call.

The macros write BigQuery SQL as text, so every constant that crosses from Jinja
into SQL goes through here and comes out as a literal printed by sqlglot: a prompt
full of quotes, backslashes, newlines or emoji can never break out of its literal.
The helpers also check macro arguments at render time, so a typo in a model fails
`bqbatch compile` with the argument named, before any job is paid for.

`MACRO_GLOBALS` is what the render engine registers as Jinja globals.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from typing import Any, NoReturn

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from bqbatch_sql.errors import RenderError, did_you_mean

# Gemini's roles; anything else fails the whole row at Vertex ("Please use a valid
# role: user, model."), so a constant role is checked here instead.
ROLES = ("user", "model")

# Schema type -> how the parsed view reads it out of the JSON answer.
# ARRAY/OBJECT stay JSON: their shape varies too much for one SQL type.
SCHEMA_TYPES = {
    "STRING": "STRING",
    "INTEGER": "INT64",
    "NUMBER": "FLOAT64",
    "BOOLEAN": "BOOL",
    "ARRAY": "JSON",
    "OBJECT": "JSON",
}

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def raise_error(message: str) -> NoReturn:
    """Let a macro stop rendering with a RenderError (Jinja has no raise)."""
    raise RenderError(message)


_local = threading.local()


def _generate(node: exp.Expression) -> str:
    # Expression.sql() builds a new generator per call (~30 us); macros call this a few
    # times per model, so each thread keeps one BigQuery generator and reuses it.
    generator = getattr(_local, "generator", None)
    if generator is None:
        generator = _local.generator = Dialect.get_or_raise("bigquery").generator()
    return generator.generate(node)


@functools.lru_cache(maxsize=4096)
def _string_literal(value: str) -> str:
    return _generate(exp.Literal.string(value))


def sql_string(value: Any) -> str:
    """A BigQuery string literal holding exactly `value`, escaped by sqlglot."""
    if not isinstance(value, str):
        raise RenderError(f"Expected a string constant, got {type(value).__name__} {value!r}.")
    return _string_literal(value)


def sql_ident(name: Any) -> str:
    """A BigQuery identifier, always backquoted, so reserved words and odd names are safe."""
    if not isinstance(name, str) or not name:
        raise RenderError(f"Expected a column name, got {name!r}.")
    return _generate(exp.to_identifier(name, quoted=True))


def to_json_text(value: Any, what: str = "value") -> str:
    """Compact JSON text of a Jinja constant (dict, list, str, number, bool).

    A string is taken as JSON text already (a schema pasted from a file), so it is
    parsed to check it and printed again in canonical form.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RenderError(f"{what} is a string but not valid JSON ({e}). Pass a dict, or a JSON string.") from e
    try:
        # allow_nan=False: NaN/Infinity are not JSON and BigQuery's PARSE_JSON rejects them.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RenderError(f"{what} cannot be written as JSON: {e}.") from e


def sql_json(value: Any, what: str = "value") -> str:
    """A JSON constant: PARSE_JSON('<json>') (sqlglot turns it into JSON('...') on DuckDB)."""
    return f"PARSE_JSON({sql_string(to_json_text(value, what))})"


def check_role(role: Any, where: str = "contents") -> str:
    if role not in ROLES:
        raise RenderError(
            f"gemini_request: {where} has role {role!r}; Gemini accepts only 'user' or 'model'."
            + did_you_mean(str(role), ROLES)
        )
    return role


def _number(name: str, value: Any, *, integer: bool = False, low: float | None = None, high: float | None = None) -> Any:
    # bool is an int in Python; temperature=true is a typo, not 1.
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        raise RenderError(f"gemini_request: {name} must be {kind} constant, got {value!r}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RenderError(f"gemini_request: {name}={value!r} is out of range [{low}, {high}].")
    return value


def generation_config(
    temperature: Any = None,
    max_output_tokens: Any = None,
    top_p: Any = None,
    top_k: Any = None,
    candidate_count: Any = None,
    seed: Any = None,
    stop_sequences: Any = None,
    response_mime_type: Any = None,
    response_schema: Any = None,
    extra: Any = None,
) -> dict[str, Any] | None:
    """The generationConfig object (camelCase keys) from gemini_request's options, or None.

    A response_schema without a response_mime_type gets application/json: Gemini
    refuses a schema with any other MIME type, and JSON is what the parsed view reads.
    """
    config: dict[str, Any] = {}
    if temperature is not None:
        config["temperature"] = _number("temperature", temperature, low=0, high=2)
    if top_p is not None:
        config["topP"] = _number("top_p", top_p, low=0, high=1)
    if top_k is not None:
        config["topK"] = _number("top_k", top_k, integer=True, low=1)
    if candidate_count is not None:
        config["candidateCount"] = _number("candidate_count", candidate_count, integer=True, low=1)
    if max_output_tokens is not None:
        config["maxOutputTokens"] = _number("max_output_tokens", max_output_tokens, integer=True, low=1)
    if seed is not None:
        config["seed"] = _number("seed", seed, integer=True)
    if stop_sequences is not None:
        if isinstance(stop_sequences, str):
            stop_sequences = [stop_sequences]
        if not isinstance(stop_sequences, (list, tuple)) or not all(isinstance(s, str) for s in stop_sequences):
            raise RenderError(f"gemini_request: stop_sequences must be a list of strings, got {stop_sequences!r}.")
        config["stopSequences"] = list(stop_sequences)
    if response_schema is not None:
        schema = json.loads(to_json_text(response_schema, "gemini_request: response_schema"))
        if not isinstance(schema, dict):
            raise RenderError(
                "gemini_request: response_schema must be an object such as "
                "{'type': 'OBJECT', 'properties': {...}}, got " + repr(schema) + "."
            )
        config["responseSchema"] = schema
        config["responseMimeType"] = "application/json"
    if response_mime_type is not None:
        if not isinstance(response_mime_type, str):
            raise RenderError(f"gemini_request: response_mime_type must be a string, got {response_mime_type!r}.")
        if response_schema is not None and response_mime_type != "application/json":
            raise RenderError(
                f"gemini_request: response_schema needs response_mime_type='application/json', "
                f"got {response_mime_type!r}. Drop response_mime_type; it defaults to JSON."
            )
        config["responseMimeType"] = response_mime_type
    if extra is not None:
        # The escape hatch for options without an argument of their own (thinkingConfig, ...).
        if not isinstance(extra, dict):
            raise RenderError(f"gemini_request: generation_config must be a dict, got {extra!r}.")
        clash = sorted(set(extra) & set(config))
        if clash:
            raise RenderError(
                f"gemini_request: {', '.join(clash)} set both as an argument and in generation_config; keep one."
            )
        config.update(extra)
    return config or None


def safety_settings(settings: Any) -> list[dict[str, Any]]:
    """Check safety_settings is a list of {category, threshold} dicts (both required by Gemini)."""
    if isinstance(settings, dict):
        settings = [settings]
    if not isinstance(settings, (list, tuple)):
        raise RenderError(f"gemini_request: safety_settings must be a list of dicts, got {settings!r}.")
    for i, s in enumerate(settings):
        if not isinstance(s, dict) or "category" not in s or "threshold" not in s:
            raise RenderError(
                f"gemini_request: safety_settings[{i}] must be a dict with 'category' and 'threshold', "
                f"e.g. {{'category': 'HARM_CATEGORY_HATE_SPEECH', 'threshold': 'BLOCK_ONLY_HIGH'}}; got {s!r}."
            )
    return list(settings)


def request_labels(labels: Any) -> dict[str, str]:
    """Check labels: a dict of string to string, as Vertex requires."""
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise RenderError(f"gemini_request: labels must be a dict of strings to strings, got {labels!r}.")
    return dict(labels)


@functools.lru_cache(maxsize=4096)
def _not_an_expression(sql: str) -> str | None:
    """Why `sql` is not one BigQuery expression, or None when it is (cached: models repeat prompts)."""
    from sqlglot.errors import ParseError, TokenError

    try:
        tree = sqlglot.parse_one(sql, read="bigquery")
    except (ParseError, TokenError) as e:
        return str(e).splitlines()[0]
    if isinstance(tree, exp.Alias):
        return "it reads as a column with an alias"
    if isinstance(tree, exp.Query) and not isinstance(tree, exp.Subquery):
        return "a query must be in parentheses to be a value"
    return None


def sql_expr(value: Any, what: str) -> str:
    """Check that a macro argument meant as SQL is one expression, and return it unchanged.

    The usual slip is a constant prompt without inner quotes (prompt='Summarize this'),
    which otherwise surfaces later as a syntax error in SQL the user never wrote.
    """
    if not isinstance(value, str) or not value.strip():
        raise RenderError(f"gemini_request: {what} must be a SQL expression in a string, got {value!r}.")
    reason = _not_an_expression(value)
    if reason:
        raise RenderError(
            f"gemini_request: {what} is not a SQL expression ({reason}): {value!r}. "
            f"{what} is SQL evaluated per row; for a constant text, quote it inside: "
            f"{what}=\"{sql_string(value)}\"."
        )
    return value


def turns(contents: Any) -> list[dict[str, Any]]:
    """Normalise contents=[('user', sql), ('model', sql)] or [{'role':..., 'text':...}] to dicts.

    Each turn's text/file_uri/mime_type_sql are SQL expressions; mime_type is a constant.
    """
    if not isinstance(contents, (list, tuple)) or not contents:
        raise RenderError(
            "gemini_request: contents must be a non-empty list of (role, sql_expression) pairs, "
            "or a SQL expression of type JSON holding the contents array."
        )
    allowed = {"role", "text", "file_uri", "mime_type", "mime_type_sql"}
    out = []
    for i, turn in enumerate(contents):
        if isinstance(turn, (list, tuple)) and len(turn) == 2:
            turn = {"role": turn[0], "text": turn[1]}
        if not isinstance(turn, dict):
            raise RenderError(f"gemini_request: contents[{i}] must be a (role, sql_expression) pair or a dict, got {turn!r}.")
        unknown = sorted(set(turn) - allowed)
        if unknown:
            raise RenderError(
                f"gemini_request: contents[{i}] has unknown key {unknown[0]!r}."
                + did_you_mean(unknown[0], allowed)
            )
        check_role(turn.get("role"), f"contents[{i}]")
        if turn.get("text") is None and turn.get("file_uri") is None:
            raise RenderError(f"gemini_request: contents[{i}] needs a text or file_uri SQL expression.")
        if turn.get("file_uri") is None and (turn.get("mime_type") or turn.get("mime_type_sql")):
            raise RenderError(f"gemini_request: contents[{i}] has a mime_type but no file_uri.")
        for key in ("text", "file_uri", "mime_type_sql"):
            if turn.get(key) is not None:
                sql_expr(turn[key], f"contents[{i}].{key}")
        # Every key present: the macro tests `is not none`, and a missing key is Undefined, not None.
        out.append({key: turn.get(key) for key in sorted(allowed)})
    return out


def json_path(*keys: str) -> str:
    """A JSONPath string literal for BigQuery's JSON_VALUE/JSON_QUERY, keys double-quoted when needed."""
    parts = ["$"]
    for key in keys:
        if _PLAIN_KEY.match(key):
            parts.append(f".{key}")
        elif '"' in key or "\\" in key:
            raise RenderError(
                f"Schema property {key!r} contains a quote or backslash, which BigQuery JSON paths cannot address. "
                "Rename the property."
            )
        else:
            parts.append(f'."{key}"')
    return sql_string("".join(parts))


def _schema_kind(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "JSON"
    kind = prop.get("type")
    if isinstance(kind, list):  # JSON-Schema style ["string", "null"]
        kinds = [k for k in kind if isinstance(k, str) and k.upper() != "NULL"]
        kind = kinds[0] if len(kinds) == 1 else None
    if not isinstance(kind, str):
        return "JSON"  # anyOf, enum without type, ...: keep the raw JSON value
    return SCHEMA_TYPES.get(kind.upper(), "JSON")


def response_schema_columns(response_schema: Any, reserved: Any = ()) -> list[dict[str, str]]:
    """The typed columns the parsed view adds for a responseSchema: [{name, type, path}].

    `reserved` are the view's other column names (pass-through and fixed); a schema
    property with one of those names would make a duplicate column, so it is
    renamed `output_<name>` instead of failing after the job has been paid for.
    """
    if response_schema is None or response_schema == "":
        return []
    schema = json.loads(to_json_text(response_schema, "parsed_response_view: response_schema"))
    if not isinstance(schema, dict):
        return []
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    order = schema.get("propertyOrdering")
    names = [n for n in order if n in properties] if isinstance(order, list) else []
    names += [n for n in properties if n not in names]
    taken = {str(r).lower() for r in reserved}
    columns = []
    for name in names:
        column = name
        while column.lower() in taken:
            column = f"output_{column}"
        taken.add(column.lower())
        columns.append({"name": column, "type": _schema_kind(properties[name]), "path": json_path(name)})
    return columns


MACRO_GLOBALS: dict[str, Any] = {
    "sql_string": sql_string,
    "sql_ident": sql_ident,
    "sql_json": sql_json,
    "raise_error": raise_error,
    "bqbatch_generation_config": generation_config,
    "bqbatch_safety_settings": safety_settings,
    "bqbatch_labels": request_labels,
    "bqbatch_turns": turns,
    "bqbatch_sql_expr": sql_expr,
    "bqbatch_check_role": check_role,
    "bqbatch_json_path": json_path,
    "bqbatch_response_schema_columns": response_schema_columns,
}
