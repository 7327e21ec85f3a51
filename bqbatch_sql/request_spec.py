"""What a Gemini batch request must look like: the rules, once, as data (stage: validate).

This module is the single definition of the per-row request rules. `request_sql`
renders them to SQL for the warehouse (DuckDB locally, BigQuery in the cloud) and
`request_fast` derives DuckDB's fast path from the same specs; the local predictor
and the emulator get their per-row status from that rendering (`validate.py`).
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

# In every structured-output key, either spelling (responseSchema, response_mime_type,
# responseJsonSchema, ...): a request whose text lacks it (and any \u escape) asks for
# no structured output, so a substring test spares the JSON parse of most rows. DuckDB's
# CONTAINS looks for the needle's first byte, then compares: 'p' is rarer than 'e' in
# requests and prompts (1M bench requests: 'ponse' 0.12 s of CPU, 'esponse' 0.21 s,
# reading the column alone 0.10 s).
STRUCTURED_OUTPUT_HINT = "ponse"

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


# Which message an object field holds, where the spec knows it: the full checks walk
# these explicitly (request_sql), the fast path derives its typed reading from them.
FIELD_MESSAGES: dict[tuple[str, str], Message] = {
    ("GenerateContentRequest", "contents"): CONTENT,
    ("GenerateContentRequest", "systemInstruction"): CONTENT,
    ("GenerateContentRequest", "generationConfig"): GENERATION_CONFIG,
    ("GenerateContentRequest", "safetySettings"): SAFETY_SETTING,
    ("GenerateContentRequest", "tools"): TOOL,
    ("Content", "parts"): PART,
    ("Part", "inlineData"): BLOB,
    ("Part", "fileData"): FILE_DATA,
    ("GenerationConfig", "thinkingConfig"): THINKING_CONFIG,
    ("GenerationConfig", "responseSchema"): SCHEMA,
}
# Content.role values the API takes ("" is the proto default: unset).
ROLES = ("user", "model", "")


def field_message(msg: Message, name: str) -> Message | None:
    return FIELD_MESSAGES.get((msg.name, name))

