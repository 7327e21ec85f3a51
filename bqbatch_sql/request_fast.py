"""DuckDB fast path of request validation (stage: validate).

The full checks (`request_sql`) cost tens of microseconds a row in DuckDB: lists and
lambdas per JSON object, each JSON read a fresh parse. A batch of a million rows
needs something cheaper for the rows that are fine, which is nearly all of them.

A request splits in two parts that behave differently across a batch:
- the *head*, `contents` and the system instruction, differs on every row;
- the *tail*, every other root member (generationConfig, responseSchema,
  safetySettings, labels, tools, ...), is nearly always the same on every row
  (the gemini_request macro writes them as constants).

The head is checked on the raw text by one regular expression (RE2, linear time, no
JSON parse), generated from the spec (`request_spec`): the JSON grammar for strings
and whitespace, then contents/parts/fileData/inlineData objects with their known
keys in either spelling and any order, the role values, non-empty text, a mimeType
where one is needed, a file URI of the accepted kinds, base64 data. What it matches
is valid JSON that the full checks accept. `regexp_replace` cuts the head off: what
remains is the tail text, and rows are grouped by it. Each distinct tail is checked
once, by the full checks, as part of a small request: a valid content, then the tail
(`synthesized_request`). Its verdict -- problem and message included -- is the
verdict of every row of the group: the full checks look at the root's keys, then
contents, then the other members, so a row with a sound head fails exactly where
its tail fails. One tail varies per row often enough to get its own pattern: a
generationConfig of scalar fields alone (a seed, a temperature per row), whose ranges
and enums the spec turns into a pattern too (`config_tail_pattern`), then perhaps a
system instruction of text parts (sorted keys put it there); such a tail counts as none.

Rows the pattern does not match (an unusual shape, or a problem in the head) say
nothing; they go to the full checks, which have the final word and the exact
message. Tests check the guarantee on every catalog entry and on thousands of
mutations: the fast path's statuses equal the full checks' on every row.
"""

from __future__ import annotations

import functools
import json
import re

from sqlglot import exp

from bqbatch_sql import request_spec as spec
from bqbatch_sql.request_sql_ops import BASE64, _and, _case, _fn, _lit, _not, _num

# -- the JSON grammar (RFC 8259) as RE2 pieces: exact, so what they match is JSON -----

WS = r"[ \t\n\r]*"  # JSON whitespace only (RE2's \s would also take \f and \v)
_CHAR = r'[^"\\\x00-\x1f]'
# \u escapes: no lone surrogates (a JSON parser may refuse them), pairs allowed
_UNICODE = (r"u(?:[0-9a-ce-fA-CE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}"
            r"|[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})")
_ESCAPE = r'\\(?:["\\/bfnrt]|' + _UNICODE + ")"
STRING = f'"(?:{_CHAR}|{_ESCAPE})*"'
NONEMPTY_STRING = f'"(?:{_CHAR}|{_ESCAPE})+"'
# Values the full checks test as the API reads them (unescaped): only texts without
# escapes are taken here, so the pattern sees what the API would.
_PLAIN = r'[^"\\\x00-\x1f]'
FILE_URI_VALUE = f'"(?:gs://{_PLAIN.replace("]", "/]")}+/{_PLAIN}+|https?://{_PLAIN.replace("]", "/]")}+{_PLAIN}*)"'
BASE64_VALUE = f'"{BASE64}"'
ROLE_VALUE = '"(?:' + "|".join(r for r in spec.ROLES if r) + ')?"'  # "" is the unset default

# The head ends where the tail begins: at the root's next ',' or its closing '}'.
TAIL_START = (",", "}")
# A request the tail's check is made with: one valid content, then the tail.
HEAD_STANDIN = '{"contents":[{"role":"user","parts":[{"text":"x"}]}]'


def _key(f: spec.Field) -> str:
    return '"(?:' + "|".join(f.aliases) + ')"'


def _member(f: spec.Field, value: str) -> str:
    return _key(f) + WS + ":" + WS + value


def _seq(*items: str) -> str:
    return (WS + "," + WS).join(items)


def _opt(item: str, after: bool = False) -> str:
    """An optional member before (or after) the others."""
    return f"(?:{WS},{WS}{item})?" if after else f"(?:{item}{WS},{WS})?"


def _pair_object(a: str, b: str, optional: str) -> str:
    """An object of members a and b (either order) and, anywhere, an optional one.

    The optional member may come twice: the full checks read the first of a repeated
    key, and both must match here, so that is safe; a or b twice is not matched."""
    body = _opt(optional) + "(?:" + _seq(a, _opt(optional) + b) + "|" + _seq(b, _opt(optional) + a) + ")" + _opt(optional, True)
    return r"\{" + WS + body + WS + r"\}"


def _list(item: str, *, empty: bool = False) -> str:
    items = item + "(?:" + WS + "," + WS + item + ")*"
    return r"\[" + WS + (f"(?:{items})?" if empty else items) + WS + r"\]"


def _number(f: spec.Field) -> str | None:
    """JSON number literals inside the field's range, from its spec (a subset: no exponent,
    an int without a fraction, at most 9 digits: below 2**31); None when not expressible."""
    frac = "" if f.kind == "int" else r"(?:\.[0-9]+)?"
    zeros = "" if f.kind == "int" else r"(?:\.0+)?"
    big = "[1-9][0-9]{0,8}"
    low, high = f.low, f.high
    if high is None:
        return {None: f"-?(?:0|{big}){frac}", 0: f"(?:0|{big}){frac}", 1: f"{big}{frac}"}.get(low)
    if low is None or low != int(low) or high != int(high) or high - low > 20:
        return None
    alternatives = []
    for i in range(int(low), int(high)):  # the numbers in [i, i + 1)
        if i >= 0:
            alternatives.append(f"{i}{frac}")
        else:  # -k itself, and -(k - 1).x
            alternatives.append(f"-{-i}{zeros}")
            if f.kind != "int":
                alternatives.append(f"-{-i - 1}\\.[0-9]+")
    if f.high_inclusive:
        alternatives.append(f"{int(high)}{zeros}" if high >= 0 else f"-{-int(high)}{zeros}")
    return "(?:" + "|".join(alternatives) + ")"


def _scalar(f: spec.Field) -> str | None:
    """The accepted values of a scalar field of generationConfig, or None (not in the head)."""
    if f.repeated:
        return None
    if f.kind in ("number", "int"):
        return _number(f)
    if f.kind == "bool":
        return "(?:true|false)"
    if f.kind == "enum":
        return '"(?:' + "|".join(f.enum) + ')"'
    if f.name == "responseMimeType":  # without a responseSchema (not taken here) any listed type goes
        return '"(?:' + "|".join(re.escape(m) for m in spec.RESPONSE_MIME_TYPES) + ')"'
    return None


def _scalar_object(msg: spec.Message, snake: bool) -> str:
    """An object of the message's scalar fields (and nested objects of them), all in one
    spelling -- so camelCase and snake_case of one field never meet (the full checks
    refuse that); a key given twice is read first by the full checks, both must match."""
    members = []
    for f in msg.fields:
        name = f.snake if snake else f.name
        if f.name in msg.nested:
            members.append(f'"{name}"' + WS + ":" + WS + _scalar_object(msg.nested[f.name], snake))
        elif (value := _scalar(f)) is not None:
            members.append(f'"{name}"' + WS + ":" + WS + value)
    member = "(?:" + "|".join(members) + ")"
    return r"\{" + WS + f"(?:{member}(?:{WS},{WS}{member})*)?" + WS + r"\}"


@functools.lru_cache(maxsize=1)
def head_pattern() -> str:
    """The head of a request the full checks accept, anchored at the start of the text.

    Kept small on purpose: RE2 runs a pattern this size as a DFA (about a microsecond a
    row); a pattern a few times larger outgrows the DFA's memory and runs ten times slower."""
    blob, file_data = spec.BLOB, spec.FILE_DATA
    mime = lambda m: _member(m.get("mimeType"), NONEMPTY_STRING)  # noqa: E731  (a mimeType is required, non-empty)
    display = lambda m: _member(m.get("displayName"), STRING)  # noqa: E731
    data = {
        "text": _member(spec.PART.get("text"), NONEMPTY_STRING),  # an empty text is refused
        "inlineData": _member(spec.PART.get("inlineData"), _pair_object(
            mime(blob), _member(blob.get("data"), BASE64_VALUE), display(blob))),
        "fileData": _member(spec.PART.get("fileData"), _pair_object(
            mime(file_data), _member(file_data.get("fileUri"), FILE_URI_VALUE), display(file_data))),
    }
    assert set(data) <= set(spec.DATA_FIELDS)
    # a part holds exactly one data field
    part = r"\{" + WS + "(?:" + "|".join(data.values()) + ")" + WS + r"\}"
    content, request = spec.CONTENT, spec.REQUEST
    role = _member(content.get("role"), ROLE_VALUE)
    # role before or after parts (or both: the first is read, both must be valid)
    turn = r"\{" + WS + _opt(role) + _member(content.get("parts"), _list(part)) + _opt(role, True) + WS + r"\}"
    contents = _member(request.get("contents"), _list(turn))
    system_member = _system_member(part)
    # the system instruction before or after contents, not both: both spellings at once
    # are refused by the full checks (one in the head and one in the tail: `system_split_sql`)
    sep = WS + "," + WS
    return "^" + WS + r"\{" + WS + f"(?:{contents}{_opt(system_member, True)}|{system_member}{sep}{contents})" + WS


def _text_part() -> str:
    """A part of one non-empty text: what a system instruction holds in nearly every request."""
    return r"\{" + WS + _member(spec.PART.get("text"), NONEMPTY_STRING) + WS + r"\}"


def _system_member(part: str) -> str:
    """The systemInstruction member: its role is ignored (but must be text), its parts may be empty."""
    content = spec.CONTENT
    system_role = _member(content.get("role"), STRING)
    system = (r"\{" + WS + _opt(system_role) + _member(content.get("parts"), _list(part, empty=True))
              + _opt(system_role, True) + WS + r"\}")
    return _member(spec.REQUEST.get("systemInstruction"), system)


@functools.lru_cache(maxsize=1)
def config_tail_pattern() -> str:
    """A tail that is a generationConfig of scalar fields and the closing brace: its values
    often vary per row (a seed, a temperature), so it is checked here, per row, rather
    than once per distinct tail."""
    config = spec.REQUEST.get("generationConfig")
    member = "(?:" + "|".join(f'"{a}"' + WS + ":" + WS + _scalar_object(spec.GENERATION_CONFIG, a != config.name)
                              for a in config.aliases) + ")"
    # Compiled requests sort their keys, so a system instruction comes after generationConfig
    # and lands in the tail; one of text parts is taken here too, or every such table would
    # pay the full checks' planning (~0.5 s) for its one distinct tail. A system instruction
    # in both head and tail never gets here (`system_split_sql`).
    system = _system_member(_text_part())
    return "," + WS + member + f"(?:{WS},{WS}{system})?" + WS + r"\}" + WS


def canonical_tail_sql(tail: exp.Expression) -> exp.Expression:
    """The tail to group by: a scalar generationConfig that passes (`config_tail_pattern`)
    counts as no tail at all, so rows differing only there share one group."""
    return _case([(_fn("regexp_full_match", tail.copy(), _lit(config_tail_pattern())), _lit("}"))], tail)


def tail_sql(raw: exp.Expression) -> exp.Expression:
    """The request text without its head: starts with ',' or '}' when the head matched
    (the text is unchanged, so starts with '{' or whitespace, when it did not)."""
    return exp.Anonymous(this="regexp_replace", expressions=[raw, _lit(head_pattern()), _lit("")])


def head_ok_sql(raw: exp.Expression, tail: exp.Expression) -> exp.Expression:
    """The head matched (and the request is within the size limit); FALSE for NULL.

    Without a match the text comes back whole: a shorter text means a head was cut."""
    cond = _and(
        exp.LT(this=_fn("strlen", tail.copy()), expression=_fn("strlen", raw.copy())),
        exp.or_(*[_fn("starts_with", tail.copy(), _lit(c)) for c in TAIL_START]),
        exp.LTE(this=_fn("strlen", raw), expression=_num(spec.MAX_REQUEST_BYTES)),
    )
    return exp.Coalesce(this=cond, expressions=[exp.false()])


def system_split_sql(raw: exp.Expression, tail: exp.Expression) -> exp.Expression:
    """TRUE when both the head and the tail name a system instruction: one in each could
    be a camelCase/snake_case pair (or a repeated key) that only the whole request shows,
    so such rows take the full checks. A system instruction in the tail alone is judged
    with the tail (our own compiled requests put it after generationConfig: keys sorted).
    A quoted key cannot occur inside a JSON string, where quotes are escaped, nor straddle
    the head and the tail (the tail starts with ',' or '}'). The head names a key when the
    text before its first occurrence is shorter than the head, in bytes: DuckDB's LEFT
    counts characters, so a head cut by LEFT(raw, bytes) took part of the tail along with
    every non-ASCII prompt (and sent such rows, all of them in Japanese, to the full checks)."""
    names = [json.dumps(a) for a in spec.REQUEST.get("systemInstruction").aliases]
    head_bytes = exp.Sub(this=_fn("strlen", raw.copy()), expression=_fn("strlen", tail.copy()))

    def in_head(key: str) -> exp.Expression:
        before = _fn("strlen", _fn("split_part", raw.copy(), _lit(key), exp.Literal.number(1)))
        return _and(_fn("contains", raw.copy(), _lit(key)), exp.LT(this=before, expression=head_bytes.copy()))

    in_tail = exp.or_(*[_fn("contains", tail.copy(), _lit(k)) for k in names])
    return _and(exp.or_(*[in_head(k) for k in names]), in_tail)


def synthesized_request(tail: exp.Expression) -> exp.Expression:
    """The request the tail's check runs on: a valid head, then the tail."""
    return exp.DPipe(this=_lit(HEAD_STANDIN), expression=tail, safe=True)


def scalar_fast_valid(request: exp.Expression) -> exp.Expression:
    """TRUE only for a request the full checks accept, as one scalar expression (no
    grouping): a sound head and nothing after it."""
    raw = exp.cast(request.copy(), exp.DataType.build("VARCHAR"))
    tail = tail_sql(raw.copy())
    return _and(head_ok_sql(raw.copy(), tail.copy()), _not(system_split_sql(raw, tail.copy())),
                bare_tail_sql(canonical_tail_sql(tail)))


def bare_tail_sql(tail: exp.Expression) -> exp.Expression:
    """Nothing but the closing brace is left: the request is its head alone."""
    return _fn("regexp_full_match", tail, _lit(r"\}" + WS))
