"""What a Gemini batch request must look like: the rules, once, as data (stage: validate).

This module is the single definition of the per-row request rules. `validate.py`
renders them to SQL for the warehouse (DuckDB locally, BigQuery in the cloud); the
local predictor and the emulator get their per-row status from the same rendering.
Nothing here touches a database.

Sources for the rules (Vertex AI v1 REST reference, "Generate content with the
Gemini API in Vertex AI", and the v1 protos of GenerateContentRequest, Content,
Part, GenerationConfig, SafetySetting, Schema):
- request body keys: contents, systemInstruction, cachedContent, tools, toolConfig,
  labels, safetySettings, modelArmorConfig, generationConfig (+ model);
- Part.data is a oneof: text, inlineData, fileData, functionCall, functionResponse,
  executableCode, codeExecutionResult ("A Part can only contain one of the accepted
  types in Part.data"); inlineData/fileData need a mimeType;
- Content.role is "user" or "model" (seeds: role "tester" -> "Please use a valid
  role: user, model.");
- proto3 JSON mapping (what the API's JSON front end accepts): lowerCamelCase and
  the original snake_case field names are both accepted; numbers may be given as
  JSON numbers or as strings; enums by name or number; null means "not set";
  the front end also accepts a single object where a repeated field is expected
  (the seeds' failing example has "parts" as an object and still fails on the role).
Messages copy the wording Vertex uses where it is known (quoted in the catalog
below), and name the field path ESF-style, in snake_case: contents[0].parts[1].text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Vertex reads at most this many requests per batch job (BigQuery input).
MAX_REQUESTS_PER_JOB = 200_000

# Per-request size limit: the Vertex AI Gemini API refuses requests above 20 MB
# (Firebase/Vertex "Supported input files and requirements": "the maximum total
# request size is 20 MB"); larger media must go through Cloud Storage (fileData).
MAX_REQUEST_BYTES = 20 * 1024 * 1024

LEARN_MORE = "Learn more: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"
PROTO = "type.googleapis.com/google.cloud.aiplatform.v1."


def snake(name: str) -> str:
    """The proto (snake_case) spelling of a lowerCamelCase JSON name."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True)
class Field:
    """One field of a request message, by its JSON (lowerCamelCase) name.

    kind: string | bytes | number | int | bool | enum | object | any
    repeated: a JSON array of `kind` (a single value is accepted, as the API does)
    """

    name: str
    kind: str
    proto: str = ""  # the type named in "Invalid value at 'x' (<proto>), v"
    repeated: bool = False
    enum: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    high_inclusive: bool = True
    max_items: int | None = None

    @property
    def snake(self) -> str:
        return snake(self.name)

    @property
    def aliases(self) -> tuple[str, ...]:
        return (self.name,) if self.snake == self.name else (self.name, self.snake)


def _f(name: str, kind: str, proto: str = "", **kw) -> Field:
    default_proto = {
        "string": "TYPE_STRING",
        "bytes": "TYPE_BYTES",
        "number": "TYPE_FLOAT",
        "int": "TYPE_INT32",
        "bool": "TYPE_BOOL",
    }.get(kind, "")
    return Field(name, kind, proto or default_proto, **kw)


@dataclass(frozen=True)
class Message:
    """A JSON object the API parses into a proto message: its fields and nested objects."""

    name: str  # proto message name, for "Invalid value at 'x' (type.googleapis.com/...)"
    fields: tuple[Field, ...]
    # nested single objects whose keys and leaves are checked inside the same scope
    nested: dict[str, "Message"] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        out: list[str] = []
        for f in self.fields:
            out.extend(f.aliases)
        return tuple(out)

    def get(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


HARM_CATEGORIES = (
    "HARM_CATEGORY_UNSPECIFIED",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
    "HARM_CATEGORY_IMAGE_HATE",
    "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT",
    "HARM_CATEGORY_IMAGE_HARASSMENT",
    "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_JAILBREAK",
)
HARM_THRESHOLDS = (
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
    "BLOCK_LOW_AND_ABOVE",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_NONE",
    "OFF",
)
HARM_METHODS = ("HARM_BLOCK_METHOD_UNSPECIFIED", "SEVERITY", "PROBABILITY")
MODALITIES = ("MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO")
MEDIA_RESOLUTIONS = (
    "MEDIA_RESOLUTION_UNSPECIFIED",
    "MEDIA_RESOLUTION_LOW",
    "MEDIA_RESOLUTION_MEDIUM",
    "MEDIA_RESOLUTION_HIGH",
)
THINKING_LEVELS = ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH")
# generationConfig.responseMimeType values the API documents for Gemini.
RESPONSE_MIME_TYPES = ("text/plain", "application/json", "text/x.enum")
SCHEMA_MIME_TYPES = ("application/json", "text/x.enum")
# Schema.type: the OpenAPI subset of the v1 Type enum; upper case in the proto, and
# the lower-case spelling of JSON Schema is accepted too (both are common in the wild).
SCHEMA_TYPES = ("TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL")

# Part.data oneof, in the proto's order.
DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)

BLOB = Message("Blob", (_f("mimeType", "string"), _f("data", "bytes"), _f("displayName", "string")))
FILE_DATA = Message("FileData", (_f("mimeType", "string"), _f("fileUri", "string"), _f("displayName", "string")))

PART = Message(
    "Part",
    (
        _f("text", "string"),
        _f("inlineData", "object", PROTO + "Blob"),
        _f("fileData", "object", PROTO + "FileData"),
        _f("functionCall", "object", PROTO + "FunctionCall"),
        _f("functionResponse", "object", PROTO + "FunctionResponse"),
        _f("executableCode", "object", PROTO + "ExecutableCode"),
        _f("codeExecutionResult", "object", PROTO + "CodeExecutionResult"),
        _f("thought", "bool"),
        _f("thoughtSignature", "bytes"),
        _f("videoMetadata", "object", PROTO + "VideoMetadata"),
        _f("mediaResolution", "any"),
    ),
    nested={"inlineData": BLOB, "fileData": FILE_DATA},
)

CONTENT = Message("Content", (_f("role", "string"), _f("parts", "object", PROTO + "Part", repeated=True)))

THINKING_CONFIG = Message(
    "GenerationConfig.ThinkingConfig",
    (
        _f("includeThoughts", "bool"),
        _f("thinkingBudget", "int"),
        _f("thinkingLevel", "enum", PROTO + "GenerationConfig.ThinkingConfig.ThinkingLevel", enum=THINKING_LEVELS),
    ),
)

GENERATION_CONFIG = Message(
    "GenerationConfig",
    (
        # Ranges from the Vertex AI model reference (generationConfig parameters).
        _f("temperature", "number", low=0.0, high=2.0),
        _f("topP", "number", low=0.0, high=1.0),
        _f("topK", "number", low=1.0),  # upper bound depends on the model
        _f("candidateCount", "int", low=1, high=8),
        _f("maxOutputTokens", "int", low=1),  # upper bound depends on the model
        _f("stopSequences", "string", repeated=True, max_items=5),
        _f("responseLogprobs", "bool"),
        _f("logprobs", "int", low=0, high=20),
        _f("presencePenalty", "number", low=-2.0, high=2.0, high_inclusive=False),
        _f("frequencyPenalty", "number", low=-2.0, high=2.0, high_inclusive=False),
        _f("seed", "int"),
        _f("responseMimeType", "string"),
        _f("responseSchema", "object", PROTO + "Schema"),
        _f("responseJsonSchema", "any"),
        _f("routingConfig", "object", PROTO + "GenerationConfig.RoutingConfig"),
        _f("audioTimestamp", "bool"),
        _f("responseModalities", "enum", PROTO + "GenerationConfig.Modality", repeated=True, enum=MODALITIES),
        _f("mediaResolution", "enum", PROTO + "MediaResolution", enum=MEDIA_RESOLUTIONS),
        _f("speechConfig", "object", PROTO + "SpeechConfig"),
        _f("thinkingConfig", "object", PROTO + "GenerationConfig.ThinkingConfig"),
        _f("enableAffectiveDialog", "bool"),
        _f("modelConfig", "object", PROTO + "GenerationConfig.ModelConfig"),
        _f("imageConfig", "object", PROTO + "ImageConfig"),
        _f("audioTranscriptionConfig", "object", PROTO + "AudioTranscriptionConfig"),
        _f("translationConfig", "object", PROTO + "TranslationConfig"),
        _f("responseFormat", "any"),
    ),
    nested={"thinkingConfig": THINKING_CONFIG},
)

SAFETY_SETTING = Message(
    "SafetySetting",
    (
        _f("category", "enum", PROTO + "HarmCategory", enum=HARM_CATEGORIES),
        _f("threshold", "enum", PROTO + "SafetySetting.HarmBlockThreshold", enum=HARM_THRESHOLDS),
        _f("method", "enum", PROTO + "SafetySetting.HarmBlockMethod", enum=HARM_METHODS),
    ),
)

TOOL = Message(
    "Tool",
    (
        _f("functionDeclarations", "object", PROTO + "FunctionDeclaration", repeated=True),
        _f("retrieval", "object", PROTO + "Retrieval"),
        _f("googleSearch", "object", PROTO + "Tool.GoogleSearch"),
        _f("googleSearchRetrieval", "object", PROTO + "GoogleSearchRetrieval"),
        _f("enterpriseWebSearch", "object", PROTO + "EnterpriseWebSearch"),
        _f("googleMaps", "object", PROTO + "GoogleMaps"),
        _f("codeExecution", "object", PROTO + "Tool.CodeExecution"),
        _f("urlContext", "object", PROTO + "UrlContext"),
        _f("computerUse", "object", PROTO + "Tool.ComputerUse"),
    ),
)

REQUEST = Message(
    "GenerateContentRequest",
    (
        _f("contents", "object", PROTO + "Content", repeated=True),
        _f("systemInstruction", "object", PROTO + "Content"),
        _f("cachedContent", "string"),
        _f("tools", "object", PROTO + "Tool", repeated=True),
        _f("toolConfig", "object", PROTO + "ToolConfig"),
        _f("labels", "object", "map<string, string>"),
        _f("safetySettings", "object", PROTO + "SafetySetting", repeated=True),
        _f("modelArmorConfig", "object", PROTO + "ModelArmorConfig"),
        _f("generationConfig", "object", PROTO + "GenerationConfig"),
        _f("model", "string"),
    ),
)

# Schema (generationConfig.responseSchema): the keys of one schema node. Nodes nest
# through properties.<name>, items and anyOf[i].
SCHEMA = Message(
    "Schema",
    (
        _f("type", "enum", PROTO + "Type", enum=SCHEMA_TYPES),
        _f("format", "string"),
        _f("title", "string"),
        _f("description", "string"),
        _f("nullable", "bool"),
        _f("default", "any"),
        _f("items", "object", PROTO + "Schema"),
        _f("minItems", "int"),
        _f("maxItems", "int"),
        _f("enum", "string", repeated=True),
        _f("properties", "object", "map<string, Schema>"),
        _f("propertyOrdering", "string", repeated=True),
        _f("required", "string", repeated=True),
        _f("minProperties", "int"),
        _f("maxProperties", "int"),
        _f("minimum", "number"),
        _f("maximum", "number"),
        _f("minLength", "int"),
        _f("maxLength", "int"),
        _f("pattern", "string"),
        _f("example", "any"),
        _f("anyOf", "object", PROTO + "Schema", repeated=True),
        _f("additionalProperties", "any"),
        _f("ref", "string"),
        _f("defs", "object", "map<string, Schema>"),
    ),
)
# How deep the row check follows responseSchema nesting (properties/items/anyOf).
SCHEMA_MAX_DEPTH = 5


@dataclass(frozen=True)
class Kind:
    """A kind of problem: the code the report counts by, what a user should do, and the
    status message. In `message`, {path} is the field path, {at} is " at '<path>'" (empty
    at the top level), {a} {b} {c} are the problem's arguments."""

    code: str
    title: str
    fix: str
    message: str = ""


# The catalog of problems, in the order the report lists them. Wording of the
# status messages lives with the SQL rendering (validate.py), next to each check.
KINDS = {
    k.code: k
    for k in (
        Kind("request_null", "request is NULL", "build a request for every row (a NULL prompt gives a NULL request)",
             'Invalid JSON payload received. The request is NULL: every row needs a request (a GenerateContentRequest JSON object).'),
        Kind("not_json", "request is not valid JSON", "build the request with JSON_OBJECT or the gemini_request macro",
             'Invalid JSON payload received. Unexpected token: the request is not valid JSON.'),
        Kind("not_object", "request is not a JSON object", "the request must be a GenerateContentRequest object",
             'Invalid JSON payload received. Root element must be a message: the request is a JSON {a}, not an object.'),
        Kind("request_too_large", "request larger than the per-request limit", "move large media to Cloud Storage and use fileData.fileUri",
             'Unable to submit request because it is {a} bytes, more than the {b} bytes allowed per request. Put large media in Cloud Storage and reference it with fileData.'),
        Kind("unknown_field", "unknown field", "remove or rename the field (JSON keys are camelCase or snake_case API names)",
             'Invalid JSON payload received. Unknown name "{a}"{at}: Cannot find field.'),
        Kind("duplicate_field", "field given in camelCase and snake_case", "keep one spelling of the field",
             'Invalid JSON payload received. Field "{a}" is set twice, as "{a}" and as "{b}"{at}. Keep one spelling.'),
        Kind("not_repeating", "list given for a single-valued field", "give one value, not a list",
             'Invalid JSON payload received. Unknown name "{a}"{at}: Proto field is not repeating, cannot start list.'),
        Kind("wrong_type", "value of the wrong JSON type", "give the type the API expects for this field",
             "Invalid value at '{path}' ({a}), {b}"),
        Kind("invalid_enum", "value not among the allowed names", "use one of the enum names of the API",
             "Invalid value at '{path}' ({a}), {b}"),
        Kind("out_of_range", "number outside the supported range", "use a value inside the range",
             'Unable to submit request because it has a {a} value of {b} but the supported range is {c}. Update the value and try again.'),
        Kind("contents_empty", "contents missing or empty", "give at least one content with parts",
             "Unable to submit request because at least one contents field is required. " + LEARN_MORE),
        Kind("invalid_role", "role other than user/model", "use role 'user' or 'model'",
             'Please use a valid role: user, model.'),
        Kind("parts_empty", "content without parts", "give each content at least one part",
             "Unable to submit request because it must include at least one parts field, which describes the prompt input "
             "({path} is empty). " + LEARN_MORE),
        Kind("part_no_data", "part without data", "set one of text, inlineData, fileData, functionCall, functionResponse, ...",
             'Unable to submit request because {path} has no data: set one of text, inlineData, fileData, functionCall, functionResponse, executableCode, codeExecutionResult.'),
        Kind("part_multiple_data", "part with more than one data field", "split the part: one data field per part",
             "Invalid JSON payload received. Oneof field 'data' is already set at '{path}': a part holds one of text, inlineData, fileData, ... and this one sets {a}."),
        Kind("empty_text", "empty text part", "drop empty text parts or filter rows with empty prompts",
             'Unable to submit request because Model input cannot be empty ({path} is an empty string).'),
        Kind("missing_mime_type", "inlineData/fileData without mimeType", "set mimeType, e.g. image/png or application/pdf",
             'Unable to submit request because {path} has no mime_type. Add a mimeType (for example image/png) and try again.'),
        Kind("invalid_base64", "inlineData.data is not base64", "encode the bytes as base64 (TO_BASE64 in BigQuery)",
             "Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed."),
        Kind("invalid_file_uri", "fileData.fileUri not gs:// nor http(s)://", "use gs://bucket/object or a public https:// URL",
             "Unable to submit request because {path} is '{a}', which is neither a Cloud Storage URI (gs://bucket/object) nor an HTTP(S) URL."),
        Kind("too_many_items", "list longer than the API allows", "shorten the list",
             'Unable to submit request because {path} has {a} values but at most {b} are supported.'),
        Kind("invalid_mime_type", "unsupported responseMimeType", "use text/plain, application/json or text/x.enum",
             "Unable to submit request because it has a response_mime_type of '{a}', which is not supported. Use one of: text/plain, application/json, text/x.enum."),
        Kind("schema_needs_json", "responseSchema without a JSON responseMimeType", "set responseMimeType to application/json",
             "Unable to submit request because a response schema requires response_mime_type to be application/json or text/x.enum ({path} is '{a}')."),
        Kind("schema_conflict", "responseSchema and responseJsonSchema both set", "set only one of them",
             'Unable to submit request because {path} sets both response_schema and response_json_schema; set only one.'),
        Kind("invalid_schema", "responseSchema is not a valid Schema", "fix the schema (keys: type, properties, items, required, enum, ...)",
             'Unable to submit request because {path} is not a valid schema: {a}.'),
    )
}


def hint_for(code: str, message: str) -> str:
    """Extra advice for a known trap, shown in the report (never in the Vertex-style status)."""
    if code == "unknown_field" and '"type_"' in message:
        return "type_ is the Python SDK's attribute name; the API's JSON key is type"
    if code == "unknown_field" and re.search(r'"(max_tokens|max_output_token|maxTokens)"', message):
        return "the field is maxOutputTokens (or max_output_tokens)"
    if code == "unknown_field" and '"system"' in message:
        return "the field is systemInstruction (or system_instruction)"
    if code == "unknown_field" and '"config"' in message:
        return "the REST field is generationConfig; config is the SDK's argument name"
    kind = KINDS.get(code)
    return kind.fix if kind else ""




# ---------------------------------------------------------------------------
# Rendering: the rules above as one scalar SQL expression per dialect.
#
# The expression is NULL for a valid request, else a problem [code, path, a, b, c]
# that `message_sql` turns into the Kind's message. Each JSON object of the request
# is a "scope": its leaves are read once (DuckDB: one multi-path json_type and one
# json_extract_string per object) and checked by one table-driven expression over a
# constant list describing the leaves, so the SQL stays small (DuckDB's bind time
# grows with the size of the expression and steeply with lambda nesting) and the
# per-row cost is a handful of JSON parses.
# ---------------------------------------------------------------------------

from typing import Callable, Sequence  # noqa: E402

from sqlglot import exp  # noqa: E402

KIND_CODES = {"string": "s", "bytes": "y", "number": "n", "int": "i", "bool": "b", "enum": "e", "object": "o", "any": "a"}
SCALAR_KINDS = ("string", "bytes", "number", "int", "bool", "enum")
NO_PATH = "$.__bqbatch_absent__"  # keeps the scalar-value list aligned with the leaf list
BASE64 = r"[A-Za-z0-9+/_\-]*={0,2}"  # proto3 JSON bytes: standard or URL-safe base64, padding optional
FILE_URI = r"(gs://[^/]+/.+|https?://[^/]+.*)"


def _lit(value: str) -> exp.Expression:
    return exp.Literal.string(value)


def _num(value: float | int) -> exp.Expression:
    return exp.Literal.number(value)


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _and(*conds: exp.Expression) -> exp.Expression:
    return exp.and_(*[exp.paren(c, copy=False) for c in conds], copy=False)


def _or(*conds: exp.Expression) -> exp.Expression:
    return exp.or_(*[exp.paren(c, copy=False) for c in conds], copy=False)


def _not(cond: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.paren(cond, copy=False))


def _is_null(e: exp.Expression) -> exp.Expression:
    return exp.Is(this=e, expression=exp.Null())


def _not_null(e: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.Is(this=e, expression=exp.Null()))


def _eq(a: exp.Expression, b: exp.Expression | str | int) -> exp.Expression:
    if isinstance(b, str):
        b = _lit(b)
    elif isinstance(b, int):
        b = _num(b)
    return exp.EQ(this=a, expression=b)


def _in(e: exp.Expression, values: Sequence[str]) -> exp.Expression:
    return exp.In(this=e, expressions=[_lit(v) for v in values])


def _case(whens: list[tuple[exp.Expression, exp.Expression]], default: exp.Expression | None = None) -> exp.Expression:
    if not whens:
        return default if default is not None else exp.Null()
    return exp.Case(ifs=[exp.If(this=c, true=v) for c, v in whens], default=default)


def _coalesce(items: list[exp.Expression]) -> exp.Expression:
    items = [i for i in items if not isinstance(i, exp.Null)]
    if not items:
        return exp.Null()
    return items[0] if len(items) == 1 else exp.Coalesce(this=items[0], expressions=items[1:])


def _dot(e: exp.Expression, name: str) -> exp.Expression:
    return exp.Dot(this=e, expression=exp.to_identifier(name))


class Path:
    """An ESF-style field path (snake_case, [i] for list items) as pieces of SQL."""

    def __init__(self, parts: tuple = ()):
        self.parts = parts

    def key(self, name: str | exp.Expression) -> "Path":
        if isinstance(name, str):
            return Path(self.parts + ((f".{name}" if self.parts else name),))
        return Path(self.parts + ((".", name) if self.parts else (name,)))

    def index(self, i: exp.Expression) -> "Path":
        return Path(self.parts + ("[", i, "]"))


@dataclass(frozen=True)
class Leaf:
    """One place a field can be, in one spelling: the row of the leaf table."""

    json_path: str  # $.inlineData.mime_type
    error_path: str  # inline_data.mime_type (ESF paths are snake_case)
    parent: str  # inline_data ('' for a field of the scope itself)
    field: Field


def _leaves(msg: Message) -> list[Leaf]:
    out = [Leaf(f"$.{a}", f.snake, "", f) for f in msg.fields for a in f.aliases]
    for oname, sub in msg.nested.items():
        o = msg.get(oname)
        for oa in o.aliases:
            out += [Leaf(f"$.{oa}.{ga}", f"{o.snake}.{g.snake}", o.snake, g) for g in sub.fields for ga in g.aliases]
    return out


def _range_text(f: Field) -> str:
    if f.low is None:
        return ""
    if f.high is None:
        return f"from {f.low:g} (inclusive)"
    return f"from {f.low:g} (inclusive) to {f.high:g} ({'inclusive' if f.high_inclusive else 'exclusive'})"


class Ops:
    """The JSON, list and string primitives the rules are written with, for one dialect."""

    dialect = ""
    TYPES: dict[str, tuple[str, ...]] = {}
    DOUBLE = "DOUBLE"

    def __init__(self) -> None:
        self._n = 0

    def var(self, stem: str) -> str:
        self._n += 1
        return f"_{stem}{self._n}"

    def is_type(self, t: exp.Expression, *kinds: str) -> exp.Expression:
        return _in(t, [n for k in kinds for n in self.TYPES[k]])

    def present(self, t: exp.Expression) -> exp.Expression:
        # JSON null means "not set" in the proto3 JSON mapping
        return _and(_not_null(t), exp.NEQ(this=t, expression=_lit(self.TYPES["null"][0])))

    def concat(self, *parts: exp.Expression | str) -> exp.Expression:
        items: list[exp.Expression] = []
        for p in parts:
            if isinstance(p, str):
                if p:
                    items.append(_lit(p))
            elif isinstance(p, exp.Literal) and p.is_string:
                items.append(p)
            else:
                # a NULL piece must not turn a message into NULL, which would read as "valid"
                items.append(exp.Coalesce(this=self.text(p), expressions=[_lit("")]))
        if not items:
            return _lit("")
        out = items[0]
        for item in items[1:]:
            out = exp.DPipe(this=out, expression=item, safe=True)
        return out

    def path(self, p: Path | None) -> exp.Expression:
        return self.concat(*p.parts) if p is not None and p.parts else _lit("")

    def problem(self, code: str, path: Path | None = None, *args: exp.Expression | str) -> exp.Expression:
        """[code, path, a, b, c]: what `message_sql` turns into the status text."""
        assert code in KINDS, code
        vals = [self.concat(a) if not isinstance(a, str) else _lit(a) for a in args]
        vals += [_lit("")] * (3 - len(vals))
        return exp.Array(expressions=[_lit(code), self.path(path), *vals])

    def struct(self, **members: exp.Expression) -> exp.Expression:
        return exp.Struct(expressions=[exp.PropertyEQ(this=exp.to_identifier(k), expression=v) for k, v in members.items()])

    def const(self, value) -> exp.Expression:
        if value is None:
            return exp.Null()
        if isinstance(value, bool):
            return exp.Boolean(this=value)
        if isinstance(value, (int, float)):
            return _num(float(value))
        return _lit(value)

    def leaf_table(self, leaves: list[Leaf]) -> dict[str, exp.Expression]:
        """The constants describing each leaf, one list per attribute (read by `leaf_problem`)."""
        def col(values: list) -> exp.Expression:
            return exp.Array(expressions=[self.const(v) for v in values])

        fields = [leaf.field for leaf in leaves]
        return {
            "p": col([leaf.json_path for leaf in leaves]),
            "e": col([leaf.error_path for leaf in leaves]),
            "pe": col([leaf.parent for leaf in leaves]),
            "n": col([f.snake for f in fields]),
            "c": col([f.name for f in fields]),
            "k": col([KIND_CODES[f.kind] for f in fields]),
            "r": col([f.repeated for f in fields]),
            "t": col([f.proto for f in fields]),
            "en": col(["|" + "|".join(f.enum) + "|" if f.enum else "" for f in fields]),
            "ci": col([f.proto.endswith(".Type") for f in fields]),
            "lo": col([f.low for f in fields]),
            "hi": col([f.high for f in fields]),
            "hinc": col([f.high_inclusive for f in fields]),
            "rt": col([_range_text(f) for f in fields]),
        }

    def leaf_row(self, table: dict[str, exp.Expression], i: exp.Expression) -> exp.Expression:
        return self.struct(**{name: self.at(values, i) for name, values in table.items()})

    def text(self, e: exp.Expression) -> exp.Expression:
        raise NotImplementedError

    def number(self, s: exp.Expression) -> exp.Expression:
        return exp.TryCast(this=s, to=exp.DataType.build(self.DOUBLE, dialect=self.dialect))


class DuckDBOps(Ops):
    dialect = "duckdb"
    TYPES = {
        "object": ("OBJECT",),
        "array": ("ARRAY",),
        "string": ("VARCHAR",),
        "number": ("BIGINT", "UBIGINT", "HUGEINT", "DOUBLE"),
        "boolean": ("BOOLEAN",),
        "null": ("NULL",),
    }

    def text(self, e: exp.Expression) -> exp.Expression:
        return exp.cast(e, exp.DataType.build("VARCHAR"))

    def lam(self, fn: Callable[..., exp.Expression], *stems: str) -> exp.Expression:
        names = [self.var(s) for s in stems]
        return exp.Lambda(this=fn(*[exp.column(n) for n in names]), expressions=[exp.to_identifier(n) for n in names])

    def at(self, lst: exp.Expression, i: exp.Expression | int) -> exp.Expression:
        return exp.Bracket(this=lst, expressions=[_num(i) if isinstance(i, int) else i], offset=1)

    def let(self, value: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        # Bind once: DuckDB computes `value` one time per row, `fn` reads it many times.
        return self.at(_fn("list_transform", exp.Array(expressions=[value]), self.lam(fn, "x")), 1)

    def first(self, lst: exp.Expression, pred: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        return self.at(_fn("list_filter", lst, self.lam(pred, "k")), 1)

    def first_problem(self, items: exp.Expression, fn: Callable[[exp.Expression, exp.Expression], exp.Expression]) -> exp.Expression:
        """The first non-NULL fn(item, zero-based index) over the items."""
        per_item = _fn("list_transform", items, self.lam(lambda e, i: fn(e, exp.Sub(this=i, expression=_num(1))), "e", "i"))
        return self.first(per_item, _not_null)

    def leaf_problem(self, sc, table: dict, n: int, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        """The first problem of fn(x) over the present leaves, x = {i, t, s, m: the leaf's constants}."""
        t = sc.member("t")
        idx = _fn("list_filter", _fn("range", _num(1), _num(n + 1)), self.lam(lambda i: self.present(self.at(t, i)), "i"))
        rows = _fn("list_transform", idx, self.lam(
            lambda i: self.struct(i=i, t=self.at(t, i), s=self.at(sc.member("s"), i), m=self.leaf_row(table, i)), "i"))
        return self.first(_fn("list_transform", rows, self.lam(fn, "x")), _not_null)

    def leaf_json_text(self, sc, x: exp.Expression) -> exp.Expression:
        return self.text(_fn("json_extract", sc.v, _dot(_dot(x, "m"), "p")))

    def contains(self, lst: exp.Expression, item: exp.Expression) -> exp.Expression:
        return _fn("list_contains", lst, item)

    def length(self, lst: exp.Expression) -> exp.Expression:
        return _fn("len", lst)

    def strpos(self, s: exp.Expression, sub: exp.Expression) -> exp.Expression:
        return _fn("strpos", s, sub)

    def byte_length(self, v: exp.Expression) -> exp.Expression:
        return _fn("strlen", self.text(v))

    def regexp(self, s: exp.Expression, pattern: str) -> exp.Expression:
        return _fn("regexp_full_match", s, _lit(pattern))

    def valid_json(self, v: exp.Expression) -> exp.Expression:
        return _fn("json_valid", v)

    def json_quote(self, s: exp.Expression) -> exp.Expression:
        return self.text(_fn("to_json", s))

    def types(self, v: exp.Expression, paths: list[str]) -> exp.Expression:
        return _fn("json_type", v, exp.Array(expressions=[_lit(p) for p in paths]))

    def strings(self, v: exp.Expression, paths: list[str]) -> exp.Expression:
        return _fn("json_extract_string", v, exp.Array(expressions=[_lit(p) for p in paths]))

    def keys(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _fn("json_keys", v, _lit(path)) if path != "$" else _fn("json_keys", v)

    def key_members(self, v: exp.Expression, paths: list[str]) -> dict[str, exp.Expression]:
        # one parse for the keys of the object and of its nested objects
        return {"k": _fn("json_keys", v, exp.Array(expressions=[_lit(p) for p in paths]))}

    def key_get(self, sc, index: int) -> exp.Expression:
        return self.at(sc.member("k"), index + 1)

    def leaf_json_member(self, v: exp.Expression, paths: list[str]) -> dict[str, exp.Expression]:
        return {}

    def type_at(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _fn("json_type", v, _lit(path)) if path != "$" else _fn("json_type", v)

    def json_at(self, v: exp.Expression, path: str) -> exp.Expression:
        return _fn("json_extract", v, _lit(path))

    def string_at(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _fn("json_extract_string", v, _lit(path))

    def json_text(self, v: exp.Expression) -> exp.Expression:
        return self.text(v)

    def array_length(self, v: exp.Expression, path: str) -> exp.Expression:
        return _fn("json_array_length", v, _lit(path))

    def items(self, v: exp.Expression, path: str) -> exp.Expression:
        """The items of the JSON array at `path`; any other value counts as a list of one."""
        t = _fn("json_type", v, _lit(path))
        return _case([
            (_eq(t, "ARRAY"), _fn("json_extract", v, _lit(path + "[*]"))),
            (self.present(t), exp.Array(expressions=[_fn("json_extract", v, _lit(path))])),
        ])

    def indexed(self, items: exp.Expression, prefix: Callable[[exp.Expression], exp.Expression], **flags) -> exp.Expression:
        """The items as {p: path, j: item, ...flags}, the path made from the zero-based index."""
        return _fn("list_transform", items, self.lam(
            lambda e, i: self.struct(p=prefix(exp.Sub(this=i, expression=_num(1))), j=e, **flags), "e", "i"))

    def append_if(self, lst: exp.Expression, cond: exp.Expression, item: exp.Expression) -> exp.Expression:
        return _fn("list_concat", lst, _case([(cond, exp.Array(expressions=[item]))]))

    def concat_lists(self, lists: list[exp.Expression]) -> exp.Expression:
        return _fn("flatten", exp.Array(expressions=lists))

    def members(self, obj: exp.Expression, prefix: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        """The members of a JSON object as {p: prefix(key), j: value} (keys and values in order)."""
        return _fn("list_transform", _fn("json_keys", obj), self.lam(
            lambda k, i: self.struct(p=prefix(k), j=self.at(_fn("json_extract", obj, _lit("$.*")), i)), "k", "i"))

    def flat_map(self, lst: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        return _fn("flatten", _fn("list_transform", lst, self.lam(fn, "n")))

    def flat_items(self, outer: exp.Expression, inner: Callable[[exp.Expression], exp.Expression],
                   path: Callable[[exp.Expression, exp.Expression], exp.Expression]) -> exp.Expression:
        """Items of items as one list of {p: path, j: item}, so the checks need not nest lambdas
        (DuckDB's bind time grows steeply with lambda depth). `outer` holds {p, j} rows."""
        def per_outer(c: exp.Expression) -> exp.Expression:
            return self.indexed(inner(_dot(c, "j")), lambda j: path(_dot(c, "p"), j))

        return _fn("flatten", _fn("list_transform", outer, self.lam(per_outer, "c")))


def _bq(name: str, *args: exp.Expression) -> exp.Expression:
    # typed sqlglot nodes where sqlglot knows the function, so the SQL also transpiles
    return exp.func(name, *args, dialect="bigquery")


class BigQueryOps(Ops):
    dialect = "bigquery"
    DOUBLE = "FLOAT64"
    TYPES = {
        "object": ("object",),
        "array": ("array",),
        "string": ("string",),
        "number": ("number",),
        "boolean": ("boolean",),
        "null": ("null",),
    }

    def __init__(self, request_type: str = "JSON") -> None:
        super().__init__()
        self.request_type = request_type.upper()

    def text(self, e: exp.Expression) -> exp.Expression:
        return exp.cast(e, exp.DataType.build("STRING", dialect="bigquery"))

    def _unnest(self, lst: exp.Expression, alias: str, offset: str | None = None) -> exp.Expression:
        return exp.Unnest(expressions=[lst], alias=exp.TableAlias(columns=[exp.to_identifier(alias)]),
                          offset=exp.to_identifier(offset) if offset else None)

    def at(self, lst: exp.Expression, i: exp.Expression | int) -> exp.Expression:
        return exp.Bracket(this=lst, expressions=[_num(i) if isinstance(i, int) else i], offset=1)

    def let(self, value: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        # wrapped in a STRUCT: BigQuery has no arrays of arrays, and the value may be one
        x = self.var("x")
        wrapped = exp.Array(expressions=[self.struct(v=value)])
        return exp.Subquery(this=exp.select(fn(_dot(exp.column(x), "v"))).from_(self._unnest(wrapped, x)))

    def first(self, lst: exp.Expression, pred: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        k, o = self.var("k"), self.var("o")
        q = exp.select(exp.column(k)).from_(self._unnest(lst, k, o)).where(pred(exp.column(k))).order_by(exp.column(o)).limit(1)
        return exp.Subquery(this=q)

    def _first_of(self, inner: exp.Select, p: str, o: str) -> exp.Expression:
        q = exp.select(exp.column(p)).from_(exp.Subquery(this=inner)).where(_not_null(exp.column(p)))
        return exp.Subquery(this=q.order_by(exp.column(o)).limit(1))

    def first_problem(self, items: exp.Expression, fn: Callable[[exp.Expression, exp.Expression], exp.Expression]) -> exp.Expression:
        e, o, p = self.var("e"), self.var("o"), self.var("p")
        inner = exp.select(fn(exp.column(e), exp.column(o)).as_(p), exp.column(o)).from_(self._unnest(items, e, o))
        return self._first_of(inner, p, o)

    def leaf_problem(self, sc, table: dict, n: int, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        i, x, p = self.var("i"), self.var("x"), self.var("p")
        ic = exp.column(i)
        rows = exp.select(
            ic.as_("i"), self.at(sc.member("t"), ic).as_("t"), self.at(sc.member("s"), ic).as_("s"),
            self.at(sc.member("j"), ic).as_("j"), self.leaf_row(table, ic).as_("m"),
        ).from_(self._unnest(_bq("GENERATE_ARRAY", _num(1), _num(n)), i)).where(self.present(self.at(sc.member("t"), ic)))
        rows.set("kind", "STRUCT")
        inner = (exp.select(fn(exp.column(x)).as_(p), _dot(exp.column(x), "i").as_(i))
                 .from_(self._unnest(exp.Array(expressions=[rows]), x)))
        return self._first_of(inner, p, i)

    def leaf_json_text(self, sc, x: exp.Expression) -> exp.Expression:
        return _dot(x, "j")  # BigQuery needs literal JSON paths: the scope keeps each leaf's JSON text

    def contains(self, lst: exp.Expression, item: exp.Expression) -> exp.Expression:
        return exp.In(this=item, unnest=exp.Unnest(expressions=[lst]))

    def length(self, lst: exp.Expression) -> exp.Expression:
        return _bq("ARRAY_LENGTH", lst)

    def strpos(self, s: exp.Expression, sub: exp.Expression) -> exp.Expression:
        return _bq("STRPOS", s, sub)

    def byte_length(self, v: exp.Expression) -> exp.Expression:
        return _bq("BYTE_LENGTH", v if self.request_type == "STRING" else _bq("TO_JSON_STRING", v))

    def regexp(self, s: exp.Expression, pattern: str) -> exp.Expression:
        return _bq("REGEXP_CONTAINS", s, _lit(f"^(?:{pattern})$"))

    def valid_json(self, v: exp.Expression) -> exp.Expression:
        if self.request_type != "STRING":
            return exp.true()  # a JSON column holds valid JSON by construction
        return _not_null(exp.SafeFunc(this=exp.ParseJSON(this=v)))

    def root_json(self, v: exp.Expression) -> exp.Expression:
        return exp.SafeFunc(this=exp.ParseJSON(this=v)) if self.request_type == "STRING" else v

    def json_quote(self, s: exp.Expression) -> exp.Expression:
        return _bq("TO_JSON_STRING", s)

    def types(self, v: exp.Expression, paths: list[str]) -> exp.Expression:
        return exp.Array(expressions=[self.type_at(v, p) for p in paths])

    def strings(self, v: exp.Expression, paths: list[str]) -> exp.Expression:
        return exp.Array(expressions=[self.string_at(v, p) for p in paths])

    def keys(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _bq("JSON_KEYS", v if path == "$" else self.json_at(v, path), _num(1))

    def key_members(self, v: exp.Expression, paths: list[str]) -> dict[str, exp.Expression]:
        return {f"k{i}": self.keys(v, p) for i, p in enumerate(paths)}  # no arrays of arrays in BigQuery

    def key_get(self, sc, index: int) -> exp.Expression:
        return sc.member(f"k{index}")

    def leaf_json_member(self, v: exp.Expression, paths: list[str]) -> dict[str, exp.Expression]:
        return {"j": exp.Array(expressions=[self.json_text(self.json_at(v, p)) for p in paths])}

    def type_at(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _bq("JSON_TYPE", v if path == "$" else self.json_at(v, path))

    def json_at(self, v: exp.Expression, path: str) -> exp.Expression:
        return _bq("JSON_QUERY", v, _lit(path))

    def string_at(self, v: exp.Expression, path: str = "$") -> exp.Expression:
        return _bq("JSON_VALUE", v, _lit(path))

    def json_text(self, v: exp.Expression) -> exp.Expression:
        return _bq("TO_JSON_STRING", v)

    def array_length(self, v: exp.Expression, path: str) -> exp.Expression:
        return _bq("ARRAY_LENGTH", _bq("JSON_QUERY_ARRAY", v, _lit(path)))

    def items(self, v: exp.Expression, path: str) -> exp.Expression:
        t = self.type_at(v, path)
        return _case([
            (_eq(t, "array"), _bq("JSON_QUERY_ARRAY", v, _lit(path))),
            (self.present(t), exp.Array(expressions=[self.json_at(v, path)])),
        ])

    def indexed(self, items: exp.Expression, prefix: Callable[[exp.Expression], exp.Expression], **flags) -> exp.Expression:
        e, i = self.var("e"), self.var("i")
        sel = (exp.select(prefix(exp.column(i)).as_("p"), exp.column(e).as_("j"), *[v.as_(k) for k, v in flags.items()])
               .from_(self._unnest(items, e, i)).order_by(exp.column(i)))
        sel.set("kind", "STRUCT")
        return exp.Array(expressions=[sel])

    def append_if(self, lst: exp.Expression, cond: exp.Expression, item: exp.Expression) -> exp.Expression:
        return _bq("ARRAY_CONCAT", lst, exp.If(this=cond, true=exp.Array(expressions=[item]), false=exp.Array(expressions=[])))

    def concat_lists(self, lists: list[exp.Expression]) -> exp.Expression:
        return _bq("ARRAY_CONCAT", *[_fn("IFNULL", lst, exp.Array(expressions=[])) for lst in lists])

    def members(self, obj: exp.Expression, prefix: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        k, o = self.var("k"), self.var("o")
        sel = (exp.select(prefix(exp.column(k)).as_("p"), exp.Bracket(this=obj, expressions=[exp.column(k)]).as_("j"))
               .from_(self._unnest(self.keys(obj), k, o)).order_by(exp.column(o)))
        sel.set("kind", "STRUCT")
        return exp.Array(expressions=[sel])

    def flat_map(self, lst: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
        n, o, c, j = self.var("n"), self.var("o"), self.var("c"), self.var("j")
        sel = (exp.select(exp.column(c)).from_(self._unnest(lst, n, o))
               .join(self._unnest(fn(exp.column(n)), c, j), join_type="CROSS").order_by(exp.column(o), exp.column(j)))
        return exp.Array(expressions=[sel])

    def flat_items(self, outer: exp.Expression, inner: Callable[[exp.Expression], exp.Expression],
                   path: Callable[[exp.Expression, exp.Expression], exp.Expression]) -> exp.Expression:
        c, o, q, j = self.var("c"), self.var("o"), self.var("q"), self.var("j")
        sel = (exp.select(path(_dot(exp.column(c), "p"), exp.column(j)).as_("p"), exp.column(q).as_("j"))
               .from_(self._unnest(outer, c, o))
               .join(self._unnest(inner(_dot(exp.column(c), "j")), q, j), join_type="CROSS")
               .order_by(exp.column(o), exp.column(j)))
        sel.set("kind", "STRUCT")
        return exp.Array(expressions=[sel])


class Scope:
    """One JSON object of the request, read once: leaf types, scalar values and keys."""

    def __init__(self, ops: Ops, v: exp.Expression, msg: Message, extra: dict | None = None):
        self.ops, self.msg, self.value = ops, msg, v
        self.leaves = _leaves(msg)
        self.index = {(leaf.json_path): i for i, leaf in enumerate(self.leaves, start=1)}
        self.key_paths = ["$"] + [f"$.{oa}" for o in msg.nested for oa in msg.get(o).aliases]
        paths = [leaf.json_path for leaf in self.leaves]
        members = {
            "v": v,
            "st": ops.type_at(v),
            "t": ops.types(v, paths),
            "s": ops.strings(v, [leaf.json_path if leaf.field.kind in SCALAR_KINDS else NO_PATH for leaf in self.leaves]),
            **ops.key_members(v, self.key_paths),
            **ops.leaf_json_member(v, paths),
        }
        members.update({n: fn(v) for n, fn in (extra or {}).items()})
        self.struct = ops.struct(**members)
        self.var: exp.Expression | None = None

    def bind(self, body: Callable[["Scope"], exp.Expression]) -> exp.Expression:
        def with_var(x: exp.Expression) -> exp.Expression:
            self.var = x
            return body(self)

        return self.ops.let(self.struct, with_var)

    def member(self, name: str) -> exp.Expression:
        return _dot(self.var, name)

    @property
    def v(self) -> exp.Expression:
        return self.member("v")

    def _paths(self, fname: str, obj: str | None) -> list[str]:
        if obj is None:
            return [f"$.{a}" for a in self.msg.get(fname).aliases]
        return [f"$.{oa}.{ga}" for oa in self.msg.get(obj).aliases for ga in self.msg.nested[obj].get(fname).aliases]

    def type(self, fname: str, obj: str | None = None) -> exp.Expression:
        """The field's JSON type; NULL when absent or null (proto3 JSON: null = not set)."""
        null = _lit(self.ops.TYPES["null"][0])
        return _coalesce([exp.Nullif(this=self.ops.at(self.member("t"), self.index[p]), expression=null)
                          for p in self._paths(fname, obj)])

    def str(self, fname: str, obj: str | None = None) -> exp.Expression:
        return _coalesce([self.ops.at(self.member("s"), self.index[p]) for p in self._paths(fname, obj)])

    def keys(self, obj: str | None = None) -> exp.Expression:
        if obj is None:
            return self.ops.key_get(self, 0)
        return _coalesce([self.ops.key_get(self, self.key_paths.index(f"$.{oa}")) for oa in self.msg.get(obj).aliases])

    def field_json(self, fname: str) -> exp.Expression:
        return _coalesce([self.ops.json_at(self.v, p) for p in self._paths(fname, None)])

    def items(self, fname: str) -> exp.Expression:
        return _coalesce([self.ops.items(self.v, p) for p in self._paths(fname, None)])


# ---------------------------------------------------------------------------
# The checks, evaluated in order, the first problem wins: (condition, problem) pairs,
# or (None, expression) for an expression that is itself the problem or NULL (so an
# expensive expression is never written twice, once to test it and once to report it).
# ---------------------------------------------------------------------------

Check = tuple["exp.Expression | None", exp.Expression]


def _chain(checks: list[Check], rest: exp.Expression | None = None) -> exp.Expression:
    acc = rest
    whens: list[tuple[exp.Expression, exp.Expression]] = []
    for cond, value in reversed(checks):
        if cond is not None:
            whens.insert(0, (cond, value))
            continue
        if whens:
            acc = _case(whens, acc)
            whens = []
        acc = value if acc is None else exp.Coalesce(this=value, expressions=[acc])
    if whens:
        acc = _case(whens, acc)
    return acc if acc is not None else exp.Null()


def _key_checks(ops: Ops, sc: Scope, path: Path, obj: str | None = None) -> list[Check]:
    """Unknown keys, and one field spelled both ways (camelCase and snake_case)."""
    m = sc.msg.nested[obj] if obj else sc.msg
    where = path.key(snake(obj)) if obj else path
    keys = sc.keys(obj)
    checks: list[Check] = [(None, ops.first_problem(
        keys, lambda k, i: _case([(_not(_in(k, m.names)), ops.problem("unknown_field", where, k))])))]
    pairs = [(f.name, f.snake) for f in m.fields if f.snake != f.name]
    if pairs:
        table = exp.Array(expressions=[ops.struct(c=_lit(c), s=_lit(s)) for c, s in pairs])
        both = lambda pr: _and(ops.contains(keys, _dot(pr, "c")), ops.contains(keys, _dot(pr, "s")))  # noqa: E731
        checks.append((None, ops.first_problem(table, lambda pr, i: _case(
            [(both(pr), ops.problem("duplicate_field", where, _dot(pr, "c"), _dot(pr, "s")))]))))
    return checks


def _leaf_checks(ops: Ops, sc: Scope, path: Path) -> Check:
    """Type, enum, range and base64 checks of every present leaf, from the leaf table."""
    def problem(x: exp.Expression) -> exp.Expression:
        t, s, m = _dot(x, "t"), _dot(x, "s"), _dot(x, "m")
        k = _dot(m, "k")
        n = ops.number(s)
        is_t = lambda *kinds: ops.is_type(t, *kinds)  # noqa: E731
        field_path = path.key(_dot(m, "e"))
        parent = _case([(_eq(_dot(m, "pe"), ""), ops.path(path))],
                       ops.path(path.key(_dot(m, "pe")))) if path.parts else _dot(m, "pe")
        value = ops.leaf_json_text(sc, x)
        type_ok = exp.Case(this=k, ifs=[
            exp.If(this=_lit("a"), true=exp.true()),
            exp.If(this=_lit("s"), true=is_t("string")),
            exp.If(this=_lit("y"), true=is_t("string")),
            exp.If(this=_lit("b"), true=is_t("boolean")),
            exp.If(this=_lit("o"), true=is_t("object")),
            exp.If(this=_lit("n"), true=_or(is_t("number"), _and(is_t("string"), _not_null(n)))),
            exp.If(this=_lit("i"), true=_and(is_t("number", "string"), _not_null(n), _eq(n, _fn("floor", n)),
                                             exp.LT(this=_fn("abs", n), expression=_num(2**31)))),
            exp.If(this=_lit("e"), true=is_t("number", "string")),
        ], default=exp.false())
        name = _case([(_dot(m, "ci"), _fn("upper", s))], s)
        bad_enum = _and(_eq(k, "e"), _or(
            _and(is_t("string"), _eq(ops.strpos(_dot(m, "en"), ops.concat("|", name, "|")), 0)),
            _and(is_t("number"), _not(_eq(n, _fn("floor", n))))))
        hi, lo = _dot(m, "hi"), _dot(m, "lo")
        out_of_range = _and(_not_null(lo), _or(
            exp.LT(this=n, expression=lo),
            _and(_not_null(hi), _or(exp.GT(this=n, expression=hi), _and(_not(_dot(m, "hinc")), _eq(n, hi))))))
        parent_path = Path((parent,))
        return _case([
            (_and(is_t("array"), _not(_dot(m, "r"))), ops.problem("not_repeating", parent_path, _dot(m, "n"))),
            (is_t("array"), exp.Null()),  # a list for a repeated field: its items are checked on their own
            (_not(type_ok), ops.problem("wrong_type", field_path, _dot(m, "t"), value)),
            (bad_enum, ops.problem("invalid_enum", field_path, _dot(m, "t"), value)),
            (out_of_range, ops.problem("out_of_range", field_path, _dot(m, "c"), s, _dot(m, "rt"))),
            (_and(_eq(k, "y"), _not(ops.regexp(s, BASE64))), ops.problem("invalid_base64", field_path)),
        ])

    return (None, ops.leaf_problem(sc, ops.leaf_table(sc.leaves), len(sc.leaves), problem))


def _repeated_scalar_checks(ops: Ops, sc: Scope, path: Path) -> list[Check]:
    """Lists of scalars (stopSequences, responseModalities, ...): their length and each item."""
    checks: list[Check] = []
    for f in sc.msg.fields:
        if not (f.repeated and f.kind in SCALAR_KINDS):
            continue
        items = sc.items(f.name)
        fpath = path.key(f.snake)
        is_list = ops.is_type(sc.type(f.name), "array")
        if f.max_items is not None:
            too_many = exp.GT(this=ops.length(items), expression=_num(f.max_items))
            checks.append((_and(is_list, too_many),
                           ops.problem("too_many_items", fpath, ops.length(items), str(f.max_items))))

        def item_problem(e: exp.Expression, i: exp.Expression, f: Field = f, fpath: Path = fpath) -> exp.Expression:
            t, s = ops.type_at(e), ops.string_at(e)
            ok = {"string": ops.is_type(t, "string"), "enum": _and(ops.is_type(t, "string"), _in(s, f.enum))}[f.kind]
            code = "invalid_enum" if f.kind == "enum" else "wrong_type"
            return _case([(_not(ok), ops.problem(code, fpath.index(i), f.proto, ops.json_text(e)))])

        checks.append((None, _case([(is_list, ops.first_problem(items, item_problem))])))
    return checks


def _object_problem(ops: Ops, v: exp.Expression, msg: Message, path: Path, *,
                    extra: Callable[[Scope], list[Check]] | None = None,
                    children: Callable[[Scope], list[exp.Expression]] | None = None,
                    self_check: bool = True, members: dict | None = None) -> exp.Expression:
    """The first problem of one JSON object: its own type, keys, leaves, extra rules, then children."""
    def body(sc: Scope) -> exp.Expression:
        whens: list[Check] = []
        if self_check:
            whens.append((_not(ops.is_type(sc.member("st"), "object")),
                          ops.problem("wrong_type", path, PROTO + msg.name, ops.json_text(sc.v))))
        whens += _key_checks(ops, sc, path)
        for obj in msg.nested:
            whens += _key_checks(ops, sc, path, obj)
        whens.append(_leaf_checks(ops, sc, path))
        whens += _repeated_scalar_checks(ops, sc, path)
        whens += extra(sc) if extra else []
        rest = _coalesce(children(sc)) if children else None
        return _chain(whens, None if rest is None or isinstance(rest, exp.Null) else rest)

    return Scope(ops, v, msg, members).bind(body)


def _content_problem(ops: Ops, row: exp.Expression) -> exp.Expression:
    """A content of `contents`, or the system instruction (row.sys): the row is {p, j, sys}."""
    path = Path((_dot(row, "p"),))

    def extra(sc: Scope) -> list[Check]:
        role, parts_type = sc.str("role"), sc.type("parts")
        no_parts = _or(_is_null(parts_type),
                       _and(ops.is_type(parts_type, "array"), _eq(ops.array_length(sc.v, "$.parts"), 0)))
        user_turn = _not(_dot(row, "sys"))  # the role of a system instruction is ignored by the API
        return [
            # "" is the proto default (unset) and is accepted; any other role is refused.
            (_and(user_turn, _not_null(role), _not(_in(role, ["user", "model", ""]))), ops.problem("invalid_role")),
            (_and(user_turn, no_parts), ops.problem("parts_empty", path.key("parts"))),
        ]

    return _object_problem(ops, _dot(row, "j"), CONTENT, path, extra=extra)


def _part_problem(ops: Ops, v: exp.Expression, path: Path) -> exp.Expression:
    def extra(sc: Scope) -> list[Check]:
        flags = [(_not_null(sc.type(d)), d) for d in DATA_FIELDS]
        count = exp.paren(_sum([_case([(c, _num(1))], _num(0)) for c, _ in flags]), copy=False)
        names = _fn("trim", ops.concat(*[_case([(c, _lit(f" {d}"))], _lit("")) for c, d in flags]))
        text, checks = sc.str("text"), []
        checks += [
            (_eq(count, 0), ops.problem("part_no_data", path)),
            (exp.GT(this=count, expression=_num(1)), ops.problem("part_multiple_data", path, names)),
            (_eq(text, ""), ops.problem("empty_text", path.key("text"))),
        ]
        for obj in ("inlineData", "fileData"):
            mime = sc.str("mimeType", obj)
            checks.append((_and(_not_null(sc.type(obj)), _or(_is_null(mime), _eq(mime, ""))),
                           ops.problem("missing_mime_type", path.key(snake(obj)))))
        uri = sc.str("fileUri", "fileData")
        checks.append((_and(_not_null(sc.type("fileData")), _or(_is_null(uri), _not(ops.regexp(uri, FILE_URI)))),
                       ops.problem("invalid_file_uri", path.key("file_data").key("file_uri"), uri)))
        return checks

    return _object_problem(ops, v, PART, path, extra=extra)


def _sum(terms: list[exp.Expression]) -> exp.Expression:
    out = terms[0]
    for t in terms[1:]:
        out = exp.Add(this=out, expression=t)
    return out


def _generation_config_problem(ops: Ops, v: exp.Expression, path: Path) -> exp.Expression:
    def extra(sc: Scope) -> list[Check]:
        mime = sc.str("responseMimeType")
        schema, json_schema = _not_null(sc.type("responseSchema")), _not_null(sc.type("responseJsonSchema"))
        return [
            (_and(_not_null(mime), _not(_in(mime, RESPONSE_MIME_TYPES))), ops.problem("invalid_mime_type", path, mime)),
            (_and(schema, json_schema), ops.problem("schema_conflict", path)),
            (_and(_or(schema, json_schema), _or(_is_null(mime), _not(_in(mime, SCHEMA_MIME_TYPES)))),
             ops.problem("schema_needs_json", path.key("response_mime_type"), mime)),
        ]

    def children(sc: Scope) -> list[exp.Expression]:
        schema = _coalesce([ops.json_at(sc.v, f"$.{a}") for a in GENERATION_CONFIG.get("responseSchema").aliases])
        is_object = ops.is_type(sc.type("responseSchema"), "object")
        return [_case([(is_object, _schema_problem(ops, schema, path.key("response_schema")))])]

    return _object_problem(ops, v, GENERATION_CONFIG, path, extra=extra, children=children, self_check=False)


def _schema_problem(ops: Ops, schema: exp.Expression, path: Path) -> exp.Expression:
    """Every node of a responseSchema, found level by level down to SCHEMA_MAX_DEPTH
    (properties.<name>, items, anyOf[i]), checked as a Schema object."""
    def children(nodes: exp.Expression) -> exp.Expression:
        def of(n: exp.Expression) -> exp.Expression:
            p, j = _dot(n, "p"), _dot(n, "j")
            props = ops.json_at(j, "$.properties")
            items = _coalesce([ops.json_at(j, "$.items")])
            any_of = _coalesce([ops.items(j, f"$.{a}") for a in SCHEMA.get("anyOf").aliases])
            return ops.concat_lists([
                _case([(ops.is_type(ops.type_at(j, "$.properties"), "object"),
                        ops.members(props, lambda k: ops.concat(p, ".properties.", k)))]),
                _case([(ops.is_type(ops.type_at(j, "$.items"), "object"),
                        exp.Array(expressions=[ops.struct(p=ops.concat(p, ".items"), j=items)]))]),
                ops.indexed(any_of, lambda i: ops.concat(p, ".any_of[", i, "]")),
            ])
        return ops.flat_map(nodes, of)

    levels = [exp.Array(expressions=[ops.struct(p=ops.path(path), j=schema)])]
    for _ in range(SCHEMA_MAX_DEPTH):
        levels.append(children(levels[-1]))
    nodes = ops.concat_lists(levels)
    return ops.first_problem(nodes, lambda e, i: _object_problem(ops, _dot(e, "j"), SCHEMA, Path((_dot(e, "p"),))))


def _request_problem(ops: Ops, request: exp.Expression, *, fast: bool = True) -> exp.Expression:
    root = Path()

    def extra(sc: Scope) -> list[Check]:
        contents_type = sc.type("contents")
        no_contents = _or(_is_null(contents_type),
                          _and(ops.is_type(contents_type, "array"), _eq(ops.array_length(sc.v, "$.contents"), 0)))
        return [(no_contents, ops.problem("contents_empty"))]

    def children(sc: Scope) -> list[exp.Expression]:
        # One flat list per kind of object (every content and the system instruction,
        # then all their parts), so no check sits more than three lambdas deep.
        out = [
            ops.first_problem(sc.member("contents"), lambda e, i: _content_problem(ops, e)),
            ops.first_problem(sc.member("parts"), lambda e, i: _part_problem(ops, _dot(e, "j"), Path((_dot(e, "p"),)))),
        ]
        config = sc.field_json("generationConfig")
        out.append(_case([(ops.is_type(sc.type("generationConfig"), "object"),
                           _generation_config_problem(ops, config, root.key("generation_config")))]))
        for name, msg in (("safetySettings", SAFETY_SETTING), ("tools", TOOL)):
            out.append(ops.first_problem(
                sc.items(name), lambda e, i, name=name, msg=msg: _object_problem(ops, e, msg, root.key(snake(name)).index(i))))
        return out

    def contents(v: exp.Expression) -> exp.Expression:
        listed = ops.indexed(ops.items(v, "$.contents"), lambda i: ops.concat("contents[", i, "]"), sys=exp.false())
        system = _coalesce([ops.json_at(v, f"$.{a}") for a in REQUEST.get("systemInstruction").aliases])
        is_system = _or(*[ops.is_type(ops.type_at(v, f"$.{a}"), "object") for a in REQUEST.get("systemInstruction").aliases])
        return ops.append_if(listed, is_system, ops.struct(p=_lit("system_instruction"), j=system, sys=exp.true()))

    def parts(v: exp.Expression) -> exp.Expression:
        return ops.flat_items(contents(v), lambda c: ops.items(c, "$.parts"),
                              lambda p, j: ops.concat(p, ".parts[", j, "]"))

    def body(x: exp.Expression) -> exp.Expression:
        whens_first: list[Check] = [
            (_not(ops.is_type(ops.type_at(x), "object")), ops.problem("not_object", None, _fn("lower", ops.type_at(x)))),
            (exp.GT(this=ops.byte_length(request), expression=_num(MAX_REQUEST_BYTES)),
             ops.problem("request_too_large", None, ops.byte_length(request), str(MAX_REQUEST_BYTES))),
        ]
        checked = _object_problem(ops, x, REQUEST, root, extra=extra, children=children, self_check=False,
                                  members={"contents": contents, "parts": parts})
        return _case(whens_first, checked)

    whens = [(_is_null(request), ops.problem("request_null")), (_not(ops.valid_json(request)), ops.problem("not_json"))]
    if isinstance(ops, DuckDBOps):
        if fast:
            whens.append((duckdb_fast_valid(ops, request), exp.Null()))
        return _case(whens, body(request))
    return _case(whens, ops.let(ops.root_json(request), body))


def make_ops(dialect: str, request_type: str = "JSON") -> Ops:
    if dialect == "duckdb":
        return DuckDBOps()
    if dialect == "bigquery":
        return BigQueryOps(request_type)
    raise ValueError(f"Request validation has no SQL rendering for the dialect '{dialect}' (duckdb, bigquery).")


def problem_sql(request: exp.Expression, dialect: str, request_type: str = "JSON") -> exp.Expression:
    """[code, path, a, b, c] of the first problem of the request, NULL when it is valid."""
    return _request_problem(make_ops(dialect, request_type), request)


def message_sql(problem: exp.Expression, dialect: str) -> exp.Expression:
    """The status message of a problem list (problem is evaluated once per template piece)."""
    ops = make_ops(dialect)
    code, path = ops.at(problem, 1), ops.at(problem, 2)
    args = {"{a}": ops.at(problem, 3), "{b}": ops.at(problem, 4), "{c}": ops.at(problem, 5), "{path}": path,
            "{at}": _case([(_eq(path, ""), _lit(""))], ops.concat(" at '", path, "'"))}
    ifs = []
    for kind in KINDS.values():
        pieces = [p for p in re.split(r"(\{a\}|\{b\}|\{c\}|\{path\}|\{at\})", kind.message) if p]
        ifs.append(exp.If(this=_lit(kind.code), true=ops.concat(*[args.get(p, p) for p in pieces])))
    return exp.Case(this=code, ifs=ifs)


def status_sql(problem: exp.Expression, dialect: str) -> exp.Expression:
    """Vertex's status text for a problem: Bad Request: {"error": {"code": 400, ...}}."""
    ops = make_ops(dialect)
    return ops.concat('Bad Request: {"error": {"code": 400, "message": ', ops.json_quote(message_sql(problem, dialect)),
                      ', "status": "INVALID_ARGUMENT"}}')


# ---------------------------------------------------------------------------
# DuckDB fast path. The checks above cost tens of microseconds a row in DuckDB (lists
# and lambdas per object); a batch of a million rows needs a few. So on DuckDB a
# row first meets a cheap test, built from the same Field specs, that is TRUE only
# for requests of the common shape (text parts, plain generationConfig) that pass
# every rule; only the other rows -- the invalid ones and unusual valid ones -- go
# through the full checks, which have the final word. The test uses whole-document
# JSON paths with wildcards (one parse each) and list functions without lambdas.
# ---------------------------------------------------------------------------

FAST_CONFIG = ("temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "presencePenalty",
               "frequencyPenalty", "seed", "logprobs", "responseMimeType")


def _fast_number_ok(f: Field, t: exp.Expression, n: exp.Expression) -> exp.Expression:
    """`_leaf_checks` for one numeric generationConfig leaf: t its JSON type, n its value."""
    # a JSON number or a numeric string (the API takes both); true, objects, "hot" fail
    ok = [_in(t, DuckDBOps.TYPES["number"] + DuckDBOps.TYPES["string"]), _not_null(n)]
    if f.kind == "int":
        ok += [_eq(n, _fn("floor", n)), exp.LT(this=_fn("abs", n), expression=_num(2**31))]
    if f.low is not None:
        ok.append(exp.GTE(this=n, expression=_num(f.low)))
    if f.high is not None:
        ok.append((exp.LTE if f.high_inclusive else exp.LT)(this=n, expression=_num(f.high)))
    return _or(_is_null(t), _and(*ok))


def duckdb_fast_valid(ops: DuckDBOps, request: exp.Expression) -> exp.Expression:
    """TRUE only for a request that passes every rule (see above); FALSE says nothing.

    A handful of whole-document reads (multi-path and wildcard JSON paths, one parse
    each) are bound once, as small lists, and checked for the common shape: text-only
    contents with roles user/model, a system instruction of text parts, numeric
    generationConfig fields and responseMimeType. Unknown keys show as more keys in the
    raw text (each key is a string followed by ':') than known fields were found."""
    r, raw = request, ops.text(request)
    numeric = [GENERATION_CONFIG.get(n) for n in FAST_CONFIG if GENERATION_CONFIG.get(n).kind != "string"]
    # generationConfig holds camelCase fields, generation_config snake_case ones (a mix
    # fails the key count and takes the full checks)
    leaves = [(f, f"$.generationConfig.{f.name}") for f in numeric] + [(f, f"$.generation_config.{f.snake}") for f in numeric]
    mime = ["$.generationConfig.responseMimeType", "$.generation_config.response_mime_type"]
    objects = ["$.systemInstruction", "$.system_instruction", "$.generationConfig", "$.generation_config"]
    system_parts = ["$.systemInstruction.parts", "$.system_instruction.parts"]
    paths = ["$", "$.contents", *objects, "$.systemInstruction.role", "$.system_instruction.role",
             *system_parts, *mime, *[p for _, p in leaves]]
    scalars = [*mime, *[p for _, p in leaves]]
    lengths = ["$.contents", *system_parts]
    pairs = exp.Div(this=exp.paren(exp.Sub(this=_fn("length", raw), expression=_fn(
        "length", exp.Anonymous(this="replace", expressions=[raw, _lit('":'), _lit("")])))), expression=_num(2))
    members = {
        "t": ops.types(r, paths),
        "s": ops.strings(r, scalars),
        "len": _fn("json_array_length", r, exp.Array(expressions=[_lit(p) for p in lengths])),
        "roles": _fn("json_extract_string", r, _lit("$.contents[*].role")),
        "cp": _fn("json_array_length", r, _lit("$.contents[*].parts")),
        "ct": _fn("json_type", r, _lit("$.contents[*].parts[*].text")),
        # $.* reaches the system instruction (either spelling): no other root field has parts
        "st": _fn("json_type", r, _lit("$.*.parts[*].text")),
        "pairs": pairs,
        # An empty string anywhere (an empty text part), or spaces before a colon (a key
        # the count below would miss), send the row to the full checks.
        "plain": _and(_not(_fn("contains", raw, _lit('""'))), _not(_fn("regexp_matches", raw, _lit(r'"\s+:')))),
        "size": ops.byte_length(r),
    }

    def test(b: exp.Expression) -> exp.Expression:
        m = lambda name: _dot(b, name)  # noqa: E731
        t = lambda p: ops.at(m("t"), paths.index(p) + 1)  # noqa: E731
        n_of = lambda p: ops.at(m("len"), lengths.index(p) + 1)  # noqa: E731
        total = lambda lst: _fn("coalesce", _fn("list_sum", lst), _num(0))  # noqa: E731
        one = lambda c: _case([(c, _num(1))], _num(0))  # noqa: E731
        arr = lambda *vals: exp.Array(expressions=[_lit(v) for v in vals])  # noqa: E731
        system_total = _sum([_fn("coalesce", n_of(p), _num(0)) for p in system_parts])

        def with_numbers(n: exp.Expression) -> exp.Expression:
            value = lambda p: ops.at(m("s"), scalars.index(p) + 1)  # noqa: E731
            number = lambda p: ops.at(n, scalars.index(p) + 1)  # noqa: E731
            conds = [
                _eq(t("$"), "OBJECT"),
                _eq(t("$.contents"), "ARRAY"),
                *[_or(_is_null(t(p)), _eq(t(p), "OBJECT")) for p in objects],
                _or(_is_null(t(objects[0])), _is_null(t(objects[1]))),
                _or(_is_null(t(objects[2])), _is_null(t(objects[3]))),
                _is_null(t("$.systemInstruction.role")), _is_null(t("$.system_instruction.role")),
                *[_or(_is_null(t(p)), _eq(t(p), "ARRAY")) for p in system_parts],
                *[_or(_is_null(t(p)), _and(_eq(t(p), "VARCHAR"), _in(value(p), RESPONSE_MIME_TYPES))) for p in mime],
                *[_fast_number_ok(f, t(p), number(p)) for f, p in leaves],
                m("plain"),
                exp.LTE(this=m("size"), expression=_num(MAX_REQUEST_BYTES)),
                exp.GTE(this=n_of("$.contents"), expression=_num(1)),
                _eq(_fn("len", m("cp")), n_of("$.contents")),  # every content is an object with parts ...
                exp.GTE(this=_fn("list_min", m("cp")), expression=_num(1)),  # ... and at least one part
                _fn("list_has_all", arr("user", "model"), m("roles")),
                _eq(_fn("len", m("ct")), total(m("cp"))),  # one text per part ...
                _eq(_fn("len", m("st")), system_total),
                _fn("list_has_all", arr("VARCHAR"), m("ct")),  # ... and it is a string
                _fn("list_has_all", arr("VARCHAR"), m("st")),
            ]
            known_keys = [
                _num(1),  # contents
                _fn("len", m("roles")), _fn("len", m("cp")), total(m("cp")), system_total,  # role, parts, texts
                *[one(_not_null(t(p))) for p in objects],
                *[one(_not_null(t(p))) for p in system_parts],
                *[one(_not_null(t(p))) for p in scalars],
            ]
            conds.append(_eq(m("pairs"), exp.paren(_sum(known_keys), copy=False)))
            return exp.Coalesce(this=_and(*conds), expressions=[exp.false()])

        return ops.let(exp.TryCast(this=m("s"), to=exp.DataType.build("DOUBLE[]", dialect="duckdb")), with_numbers)

    return ops.let(ops.struct(**members), test)


