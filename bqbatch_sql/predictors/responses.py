"""Predict stage, local predictor: the shapes of emulated Gemini answers.

Vertex-style status texts; the GenerateContentResponse of an emulated answer, as a
SQL expression the warehouse evaluates per row and as a Python dict for a user's
response function; and one deterministic value per `responseSchema` that conforms
to it. A schema's value is computed once here and mapped onto every row carrying
that schema inside the warehouse, so the cost is per distinct schema, not per row.
"""

from __future__ import annotations

import http
import json
import math
from typing import Any

from sqlglot import exp

from bqbatch_sql.rowsql import fragment

# Short, as every byte of an answer is paid per row: written, cast to JSON, read by the
# parsed view (1M rows: the 26 bytes less than "[bqbatch local predictor: emulated
# response] Request ..." saved ~0.2 s of writing the output and reading its view).
EMULATED_TAG = "[bqbatch emulated]"

# Free-text strings in a schema's value carry this marker; the warehouse swaps it for
# eight hex digits of the row's request hash, so rows differ yet stay deterministic.
# Same length as the replacement, so minLength/maxLength still hold after the swap.
HASH_MARKER = "#@hash@#"

# A recursive schema ($ref to itself) is cut here: deep enough for real nesting.
MAX_DEPTH = 24
# Past this depth, values shrink to what the schema requires (null where allowed, no
# optional properties, minItems items), so recursive schemas end with a valid value.
SHRINK_DEPTH = 8


class SchemaValueError(ValueError):
    """A schema no value can satisfy; the rows carrying it fail with a 400 status."""


# -- status texts --------------------------------------------------------------------


def status_text(code: int, message: str, status: str) -> str:
    """The `status` column text Vertex writes for a failed row.

    Vertex writes the HTTP reason, then the JSON error body with Python-style
    separators: `Bad Request: {"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT"}}`.
    """
    reason = http.HTTPStatus(code).phrase
    body = {"error": {"code": code, "message": message, "status": status}}
    return f"{reason}: {json.dumps(body, ensure_ascii=False)}"


def injected_failure_statuses(failure_rate: float) -> list[str]:
    """The error texts a `failure_rate` draws from: the transient errors Vertex batch rows really get."""
    note = f"(bqbatch local predictor: failure injected by failure_rate={failure_rate:g})"
    return [
        status_text(429, f"Resource exhausted. Please try again later. {note}", "RESOURCE_EXHAUSTED"),
        status_text(500, f"Internal error encountered. {note}", "INTERNAL"),
        status_text(503, f"The service is currently unavailable. {note}", "UNAVAILABLE"),
    ]


def function_error_status(function_path: str, error: BaseException | str) -> str:
    detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return status_text(500, f"response_function {function_path} failed: {detail}", "INTERNAL")


def schema_error_status(error: Exception) -> str:
    return status_text(400, f"Invalid responseSchema: {error}", "INVALID_ARGUMENT")


# -- responses -----------------------------------------------------------------------


def model_version(model_id: str) -> str:
    """`publishers/google/models/gemini-2.5-flash` -> `gemini-2.5-flash`, as Vertex reports it."""
    return model_id.rstrip("/").rsplit("/", 1)[-1] or model_id


def estimate_tokens(text: str) -> int:
    # About four bytes a token for English text: the usual rule of thumb; the SQL
    # path uses the same rule (on STRLEN) so both paths report comparable counts.
    return max(1, math.ceil(len(text.encode("utf-8")) / 4)) if text else 0


def request_text(request: Any) -> str:
    """Every text part of a request's contents, joined: what the prompt token count is estimated from."""
    if not isinstance(request, dict):
        return ""
    texts: list[str] = []
    for content in request.get("contents") or []:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else [parts]:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return " ".join(texts)


def text_response(text: str, request: Any, version: str) -> dict[str, Any]:
    """A GenerateContentResponse around one text answer, with estimated usage."""
    prompt_tokens = max(1, estimate_tokens(request_text(request)))
    output_tokens = estimate_tokens(text)
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
        "modelVersion": version,
    }


def coerce_function_result(result: Any, request: Any, version: str) -> dict[str, Any]:
    """What a user's response function returned, as a GenerateContentResponse dict."""
    if isinstance(result, str):
        return text_response(result, request, version)
    if isinstance(result, dict):
        if "modelVersion" not in result:
            result = {**result, "modelVersion": version}
        return result
    raise TypeError(
        f"returned {type(result).__name__}; return a GenerateContentResponse dict or a str of text"
    )


# -- structured output ---------------------------------------------------------------


def structured_text(mime_type: str | None, schema: Any, json_schema: Any) -> str | None:
    """The candidate text for a request's generationConfig, or None for plain text answers.

    `responseSchema` is Gemini's OpenAPI subset, `responseJsonSchema` is JSON Schema;
    both go through one generator, which accepts either spelling of types and keys.
    """
    mime = (mime_type or "").strip().lower()
    chosen = schema if schema is not None else json_schema
    if mime == "text/x.enum":
        values = _get(chosen, "enum") if isinstance(chosen, dict) else None
        if not values:
            raise SchemaValueError("responseMimeType text/x.enum needs a responseSchema with an enum")
        return str(values[0])
    if chosen is not None:
        return json.dumps(schema_value(chosen), ensure_ascii=False)
    if mime == "application/json":
        return json.dumps({"response": f"{EMULATED_TAG} request {HASH_MARKER}"}, ensure_ascii=False)
    return None


def schema_value(schema: Any, name: str = "value") -> Any:
    """A deterministic value that conforms to `schema` (types, enum, required, nesting, bounds, formats)."""
    if not isinstance(schema, dict):
        raise SchemaValueError(f"a schema must be an object, got {json.dumps(schema)[:80]}")
    defs = {**(_get(schema, "definitions") or {}), **(_get(schema, "$defs", "defs") or {})}
    return _Generator(defs).value(schema, name, 0)


_KEY_ALIASES = {
    "propertyOrdering": "property_ordering",
    "minItems": "min_items",
    "maxItems": "max_items",
    "minLength": "min_length",
    "maxLength": "max_length",
    "anyOf": "any_of",
    "oneOf": "one_of",
    "allOf": "all_of",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
    "uniqueItems": "unique_items",
    "prefixItems": "prefix_items",
}


def _get(schema: dict, *keys: str) -> Any:
    """A schema keyword in camelCase or snake_case (the API accepts both)."""
    for key in keys:
        for spelling in (key, _KEY_ALIASES.get(key)):
            if spelling and spelling in schema:
                return schema[spelling]
    return None


_FORMAT_VALUES = {
    "date": "2024-01-15",
    "date-time": "2024-01-15T12:00:00Z",
    "time": "12:00:00",
    "duration": "P1D",
    "email": "emulated@example.com",
    "uri": "https://example.com/emulated",
    "url": "https://example.com/emulated",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


class _Generator:
    def __init__(self, defs: dict[str, Any]):
        self.defs = defs

    def value(self, schema: Any, name: str, depth: int) -> Any:
        if schema is True or schema == {}:
            return f"emulated {name} {HASH_MARKER}"
        if not isinstance(schema, dict):
            raise SchemaValueError(f"'{name}': a schema must be an object, got {json.dumps(schema)[:80]}")
        if depth > MAX_DEPTH:
            if _nullable(schema):
                return None
            raise SchemaValueError(f"'{name}': schema nests deeper than {MAX_DEPTH} levels (recursive $ref?)")
        if depth > SHRINK_DEPTH and _nullable(schema):
            return None
        ref = schema.get("$ref") or schema.get("ref")
        if isinstance(ref, str):
            return self.value(self._resolve(ref, name), name, depth + 1)
        if "const" in schema:
            return schema["const"]
        enum = _get(schema, "enum")
        if enum:
            return enum[0]
        for combinator in ("anyOf", "oneOf"):
            options = _get(schema, combinator)
            if options:
                usable = [o for o in options if not (isinstance(o, dict) and _type_name(o) == "null")]
                if depth > SHRINK_DEPTH and len(usable) < len(options):
                    return None
                return self.value((usable or options)[0], name, depth + 1)
        all_of = _get(schema, "allOf")
        if all_of:
            merged: dict[str, Any] = {}
            for part in all_of:
                part = self._resolve(part["$ref"], name) if isinstance(part, dict) and "$ref" in part else part
                if isinstance(part, dict):
                    merged = _merge(merged, part)
            return self.value(merged, name, depth + 1)

        kind = _type_name(schema)
        if kind == "string":
            return self._string(schema, name)
        if kind == "integer":
            return int(self._number(schema, default=1, integer=True))
        if kind == "number":
            return self._number(schema, default=0.5, integer=False)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "object":
            return self._object(schema, name, depth)
        raise SchemaValueError(f"'{name}': unknown type {json.dumps(schema.get('type'))}")

    def _resolve(self, ref: str, name: str) -> Any:
        key = ref.rsplit("/", 1)[-1]
        if key not in self.defs:
            raise SchemaValueError(f"'{name}': $ref {ref!r} names no definition in $defs/definitions")
        return self.defs[key]

    def _string(self, schema: dict, name: str) -> str:
        fmt = str(_get(schema, "format") or "").lower()
        text = _FORMAT_VALUES.get(fmt) or f"emulated {name} {HASH_MARKER}"
        min_len, max_len = _get(schema, "minLength"), _get(schema, "maxLength")
        if min_len is not None and len(text) < int(min_len):
            text = text + "." * (int(min_len) - len(text))
        if max_len is not None and len(text) > int(max_len):
            text = text[: int(max_len)]
        return text

    def _number(self, schema: dict, *, default: float, integer: bool) -> float:
        low, high = _get(schema, "minimum"), _get(schema, "maximum")
        ex_low, ex_high = _get(schema, "exclusiveMinimum"), _get(schema, "exclusiveMaximum")
        step = 1 if integer else 0.5
        # JSON Schema draft 6+ gives the exclusive bound as a number; draft 4 as a flag.
        if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool):
            low = ex_low + step
        elif ex_low is True and low is not None:
            low = low + step
        if isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool):
            high = ex_high - step
        elif ex_high is True and high is not None:
            high = high - step
        value: float = default
        if low is not None:
            value = max(value, math.ceil(low) if integer else low)
        if high is not None:
            value = min(value, math.floor(high) if integer else high)
        if low is not None and high is not None and value < low:
            raise SchemaValueError(f"minimum {low} is above maximum {high}")
        return value

    def _array(self, schema: dict, name: str, depth: int) -> list[Any]:
        items = _get(schema, "items")
        prefix = _get(schema, "prefixItems") or []
        low, high = _get(schema, "minItems"), _get(schema, "maxItems")
        count = max(int(low or 0), 0 if depth > SHRINK_DEPTH else 1, len(prefix))
        if high is not None:
            count = min(count, int(high))
        if low is not None and high is not None and int(low) > int(high):
            raise SchemaValueError(f"'{name}': minItems {low} is above maxItems {high}")
        out = []
        for i in range(count):
            item_schema = prefix[i] if i < len(prefix) else (items if items is not None else {})
            out.append(self.value(item_schema, f"{name} {i + 1}", depth + 1))
        return out

    def _object(self, schema: dict, name: str, depth: int) -> dict[str, Any]:
        properties = _get(schema, "properties") or {}
        required = _get(schema, "required") or []
        order = [p for p in (_get(schema, "propertyOrdering") or []) if p in properties]
        order += [p for p in properties if p not in order]
        if depth > SHRINK_DEPTH:
            order = [p for p in order if p in required]
        out = {prop: self.value(properties[prop], prop, depth + 1) for prop in order}
        for prop in required:
            out.setdefault(prop, f"emulated {prop} {HASH_MARKER}")
        return out


def _type_name(schema: dict) -> str:
    """The schema's type in lower case; inferred from its keywords when `type` is absent."""
    kind = schema.get("type")
    if isinstance(kind, list):  # JSON Schema: ["string", "null"]
        non_null = [k for k in kind if str(k).lower() != "null"]
        kind = non_null[0] if non_null else "null"
    if isinstance(kind, str) and kind.upper() != "TYPE_UNSPECIFIED":
        return kind.lower()
    if _get(schema, "properties") is not None:
        return "object"
    if _get(schema, "items", "prefixItems") is not None:
        return "array"
    if kind is None or str(kind).upper() == "TYPE_UNSPECIFIED":
        return "string"
    return str(kind).lower()


def _nullable(schema: dict) -> bool:
    kind = schema.get("type")
    return bool(schema.get("nullable")) or (isinstance(kind, list) and "null" in [str(k).lower() for k in kind])


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = {**left, **right}
    for key in ("properties",):
        if isinstance(left.get(key), dict) and isinstance(right.get(key), dict):
            merged[key] = {**left[key], **right[key]}
    if left.get("required") or right.get("required"):
        merged["required"] = list(dict.fromkeys([*(left.get("required") or []), *(right.get("required") or [])]))
    return merged


# -- the same shapes as SQL, evaluated per row in DuckDB -------------------------------

def sql_fragment(template: str, **nodes: exp.Expression) -> exp.Expression:
    """`rowsql.fragment` for a DuckDB template: these expressions run in DuckDB as written."""
    return fragment(template, read="duckdb", **nodes)


def default_text_sql(tag: exp.Expression) -> exp.Expression:
    """The emulated answer: says so and names the request by its hash,
    `[bqbatch emulated] request 1A2B3C4D`.

    It does not echo the prompt (it did, up to 80 characters, until 2026-11-22): each
    byte of an answer is built, cast to JSON, compressed, written and read again by the
    parsed view, and the echo cost ~0.5 s of a 1M-row build and read (3.2x -> 2.6x the
    bench's floor). The request sits next to its answer in the output table, and a
    response function can answer with any text.
    """
    return exp.func("concat", exp.Literal.string(f"{EMULATED_TAG} request "), tag)


def token_estimate_sql(byte_length: exp.Expression) -> exp.Expression:
    """The SQL twin of estimate_tokens: about four bytes a token, at least one."""
    return sql_fragment("GREATEST(1, (COALESCE(LEN, 0) + 3) // 4)", LEN=byte_length)


def response_json_sql(text: exp.Expression, prompt_tokens: exp.Expression, output_tokens: exp.Expression,
                      version: str) -> exp.Expression:
    """A GenerateContentResponse as JSON around `text`, shaped as Vertex's batch output.

    CONCAT of constant pieces with TO_JSON escaping the text: in DuckDB this beats
    JSON_OBJECT (about 5x) and TO_JSON of a struct (about 1.5x), measured on 1M rows.
    """
    head = '{"candidates":[{"content":{"role":"model","parts":[{"text":'
    usage = '}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":'
    tail = '},"modelVersion":' + json.dumps(version, ensure_ascii=False) + "}"
    return sql_fragment(
        "CAST(CONCAT(HEAD, TO_JSON(TXT), USAGE, P, LIT_C, C, LIT_T, P + C, TAIL) AS JSON)",
        HEAD=exp.Literal.string(head), TXT=text, USAGE=exp.Literal.string(usage), P=prompt_tokens,
        C=output_tokens, TAIL=exp.Literal.string(tail),
        LIT_C=exp.Literal.string(',"candidatesTokenCount":'),
        LIT_T=exp.Literal.string(',"totalTokenCount":'),
    )


# failure_rate draws from a hash of (request, row position) in steps of one millionth.
FAILURE_RESOLUTION = 1_000_000


def failure_sql(failure_hash: exp.Expression, failure_rate: float) -> tuple[exp.Expression, exp.Expression]:
    """(is this row an injected failure, its status text) for a deterministic `failure_rate` fraction."""
    if failure_rate <= 0:
        return exp.false(), exp.Null()
    statuses = injected_failure_statuses(failure_rate)
    cases = exp.Case(this=sql_fragment("H // LIT_RES % LIT_N", H=failure_hash,
                                       LIT_RES=exp.Literal.number(FAILURE_RESOLUTION),
                                       LIT_N=exp.Literal.number(len(statuses))))
    for i, text in enumerate(statuses[:-1]):
        cases = cases.when(exp.Literal.number(i), exp.Literal.string(text))
    cases = cases.else_(exp.Literal.string(statuses[-1]))
    if failure_rate >= 1:
        return exp.true(), cases
    threshold = exp.Literal.number(round(failure_rate * FAILURE_RESOLUTION))
    failed = sql_fragment("H % LIT_RES < LIT_THRESHOLD", H=failure_hash,
                          LIT_RES=exp.Literal.number(FAILURE_RESOLUTION), LIT_THRESHOLD=threshold)
    return failed, cases
