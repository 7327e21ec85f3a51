"""Predict stage, OpenAI-compatible servers: GenerateContentRequest -> chat completion -> GenerateContentResponse.

Models build Gemini requests; Ollama, vLLM and llama.cpp's server speak the OpenAI
chat completions API. This module maps one onto the other and the answer back, so
the output table and the parsed view look the same whichever server answered.

Request: systemInstruction -> a system message; contents -> messages (role `model`
-> `assistant`; text parts joined, inline images -> image_url data URLs);
generationConfig -> temperature, top_p, max_tokens, stop, n, seed, presence and
frequency penalties, logprobs; responseMimeType application/json -> json_object;
responseSchema (Gemini's OpenAPI subset) or responseJsonSchema -> json_schema. topK
goes in the body as `top_k`, which vLLM, llama.cpp and Ollama read.

What has no equivalent is an error naming the field, never silently dropped:
function calling (tools, toolConfig, functionCall parts), file URIs, audio and video
parts. Settings that only steer Google's serving (safetySettings, labels,
cachedContent, thinkingConfig, mediaResolution) do not change what a chat model is
asked, and are left out; the README lists them.
"""

from __future__ import annotations

from typing import Any

# Keys of a GenerateContentRequest and of its generationConfig, in both spellings.
_IGNORED_REQUEST = {"safetySettings", "labels", "cachedContent", "model"}
_REFUSED_REQUEST = {"tools", "toolConfig"}
_IGNORED_CONFIG = {"thinkingConfig", "mediaResolution", "responseModalities", "routingConfig",
                   "modelSelectionConfig", "audioTimestamp", "enableEnhancedCivicAnswers"}

_FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY",
                   "tool_calls": "STOP", "function_call": "STOP"}


class TranslationError(ValueError):
    """A request that cannot be said in the chat completions API; the row fails with a 400 status."""


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _camel_keys(obj: Any) -> dict[str, Any]:
    return {_camel(k): v for k, v in obj.items()} if isinstance(obj, dict) else {}


def chat_request(request: dict[str, Any], model: str) -> dict[str, Any]:
    """Keyword arguments of `client.chat.completions.create` for one GenerateContentRequest."""
    req = _camel_keys(request)
    for key in req:
        if key in _REFUSED_REQUEST:
            raise TranslationError(f"'{key}' (function calling) has no translation for OpenAI-compatible servers; "
                                   f"remove it from the request or use the online or gemini_batch predictor.")
        if key not in _IGNORED_REQUEST | {"contents", "systemInstruction", "generationConfig"}:
            raise TranslationError(f"Invalid JSON payload received. Unknown name \"{key}\": Cannot find field.")
    messages: list[dict[str, Any]] = []
    system = req.get("systemInstruction")
    if system is not None:
        text = _text_of(system, "systemInstruction")
        if text:
            messages.append({"role": "system", "content": text})
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise TranslationError("'contents' must be a non-empty list of {role, parts}.")
    for i, content in enumerate(contents):
        messages.append(_message(content, f"contents[{i}]"))
    kwargs: dict[str, Any] = {"model": model, "messages": messages}
    kwargs.update(_generation(_camel_keys(req.get("generationConfig"))))
    return kwargs


def _message(content: Any, where: str) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise TranslationError(f"{where} must be an object with role and parts.")
    role = content.get("role", "user")
    if role not in ("user", "model"):
        raise TranslationError("Please use a valid role: user, model.")
    parts = content.get("parts")
    if isinstance(parts, dict):
        parts = [parts]
    if not isinstance(parts, list) or not parts:
        raise TranslationError(f"{where}.parts must be a non-empty list.")
    pieces: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        pieces.append(_part(_camel_keys(part), f"{where}.parts[{j}]"))
    chat_role = "assistant" if role == "model" else "user"
    if all(p["type"] == "text" for p in pieces):
        # Plain strings: every server accepts them, not all accept content arrays.
        return {"role": chat_role, "content": "".join(p["text"] for p in pieces)}
    if chat_role == "assistant":
        raise TranslationError(f"{where}: images in a 'model' turn have no chat-completions equivalent.")
    return {"role": chat_role, "content": pieces}


def _part(part: dict[str, Any], where: str) -> dict[str, Any]:
    if "text" in part:
        if part.get("thought"):
            return {"type": "text", "text": ""}  # earlier reasoning is not replayed to the server
        return {"type": "text", "text": str(part["text"])}
    if "inlineData" in part:
        data = _camel_keys(part["inlineData"])
        mime = str(data.get("mimeType", ""))
        if not mime.startswith("image/"):
            raise TranslationError(f"{where}: inlineData of type '{mime}' cannot be sent; only images can.")
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data.get('data', '')}"}}
    kind = next(iter(part), "empty part")
    raise TranslationError(f"{where}: a '{kind}' part has no chat-completions translation; send text or inline images.")


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, dict):
        raise TranslationError(f"{where} must be an object with parts.")
    parts = content.get("parts")
    parts = [parts] if isinstance(parts, dict) else parts or []
    texts = []
    for part in parts:
        if not isinstance(part, dict) or "text" not in part:
            raise TranslationError(f"{where}: only text parts can become a system message.")
        texts.append(str(part["text"]))
    return "\n".join(texts)


def _generation(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    simple = {"temperature": "temperature", "topP": "top_p", "maxOutputTokens": "max_tokens",
              "candidateCount": "n", "seed": "seed", "presencePenalty": "presence_penalty",
              "frequencyPenalty": "frequency_penalty"}
    for key, value in config.items():
        if key in simple:
            out[simple[key]] = value
        elif key == "stopSequences":
            out["stop"] = list(value)
        elif key == "topK":
            extra["top_k"] = value
        elif key == "responseLogprobs":
            out["logprobs"] = bool(value)
        elif key == "logprobs":
            out["top_logprobs"] = value
        elif key in ("responseMimeType", "responseSchema", "responseJsonSchema") or key in _IGNORED_CONFIG:
            continue
        else:
            raise TranslationError(f"generationConfig.{key} has no chat-completions translation.")
    mime = str(config.get("responseMimeType") or "").lower()
    schema = config.get("responseJsonSchema")
    if schema is None and config.get("responseSchema") is not None:
        schema = json_schema(config["responseSchema"])
    if schema is not None:
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "response", "schema": schema, "strict": True}}
    elif mime == "application/json":
        out["response_format"] = {"type": "json_object"}
    elif mime and mime != "text/plain":
        raise TranslationError(f"generationConfig.responseMimeType '{mime}' has no chat-completions translation.")
    if extra:
        out["extra_body"] = extra
    return out


_SCHEMA_KEYS = {"minItems": "minItems", "maxItems": "maxItems", "minLength": "minLength", "maxLength": "maxLength",
                "minimum": "minimum", "maximum": "maximum", "pattern": "pattern", "format": "format",
                "description": "description", "title": "title", "enum": "enum", "required": "required"}


def json_schema(schema: Any) -> Any:
    """Gemini's responseSchema (OpenAPI subset, upper-case types, `nullable`) as JSON Schema."""
    if not isinstance(schema, dict):
        return schema
    s = _camel_keys(schema)
    out: dict[str, Any] = {}
    kind = s.get("type")
    if isinstance(kind, str):
        out["type"] = kind.lower()
    for key, target in _SCHEMA_KEYS.items():
        if key in s:
            out[target] = s[key]
    if "properties" in s:
        props = s["properties"]
        order = [p for p in s.get("propertyOrdering") or [] if p in props]
        order += [p for p in props if p not in order]
        out["properties"] = {p: json_schema(props[p]) for p in order}
        out.setdefault("type", "object")
    if "items" in s:
        out["items"] = json_schema(s["items"])
    if "anyOf" in s:
        out["anyOf"] = [json_schema(x) for x in s["anyOf"]]
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def generate_content_response(completion: dict[str, Any]) -> dict[str, Any]:
    """A chat completion (as a dict) in the shape of a GenerateContentResponse."""
    candidates = []
    for i, choice in enumerate(completion.get("choices") or []):
        message = choice.get("message") or {}
        parts: list[dict[str, Any]] = []
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            parts.append({"text": reasoning, "thought": True})  # the parsed view leaves thoughts out of `text`
        content = message.get("content")
        if isinstance(content, str):
            parts.append({"text": content})
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts or [{"text": ""}]},
                                     "index": choice.get("index", i)}
        reason = choice.get("finish_reason")
        candidate["finishReason"] = _FINISH_REASONS.get(reason, "OTHER") if reason else "FINISH_REASON_UNSPECIFIED"
        candidates.append(candidate)
    out: dict[str, Any] = {"candidates": candidates}
    usage = completion.get("usage") or {}
    if usage:
        prompt, output = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        out["usageMetadata"] = {"promptTokenCount": prompt, "candidatesTokenCount": output,
                                "totalTokenCount": usage.get("total_tokens") or prompt + output}
    if completion.get("model"):
        out["modelVersion"] = completion["model"]
    if completion.get("id"):
        out["responseId"] = completion["id"]
    return out
