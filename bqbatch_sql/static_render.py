"""Static fast path of the render stage: simple templates rendered without compiling Jinja.

Most models use Jinja only for calls with literal arguments: `{{ ref('stg') }}`,
`{{ config(materialized='table') }}`, `{{ gemini_request(prompt="'Hi ' || name",
temperature=0.2) }}`. Compiling each such file to Python through Jinja costs a few
milliseconds, which is most of a cold parse of a large project (dbt ships a static
parser for the same reason). Here such a template is split into text and `{{ }}`
expressions; each expression is parsed by Python's `ast` and evaluated by a tiny
interpreter that knows calls, literals and global names, nothing else. Any other
construct (statements, filters, operators, attribute access, whitespace control) and
the template goes to Jinja, so the fast path can never change what a model means.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Jinja spells these in lower case; Python accepts neither as a constant.
_JINJA_CONSTANTS = {"none": None, "true": True, "false": False, "None": None, "True": True, "False": False}


@dataclass(frozen=True)
class StaticTemplate:
    """Text pieces and (line, expression) pairs, in order."""

    pieces: tuple[str | tuple[int, ast.expr], ...]


def compile_static(text: str, known_names: Mapping[str, Any]) -> StaticTemplate | None:
    """The template as static pieces, or None when it needs Jinja."""
    if "{%" in text:
        return None
    pieces: list[str | tuple[int, ast.expr]] = []
    pos = 0
    while (start := _next_tag(text, pos)) != -1:
        if text.startswith("{#", start):  # a comment renders as nothing
            close = text.find("#}", start)
            if close == -1 or text[start:close].startswith(("{#-", "{#+")) or text[close - 1] in "-+":
                return None
            pieces.append(text[pos:start])
            pos = close + 2
            continue
        found = _expression_at(text, start)
        if found is None:
            return None
        node, end = found
        if not _supported(node, known_names):
            return None
        pieces.append(text[pos:start])
        pieces.append((text.count("\n", 0, start) + 1, node))
        pos = end
    rest = text[pos:]
    if "{{" in rest or "}}" in rest or "#}" in rest:
        return None  # unbalanced: let Jinja report it
    pieces.append(rest)
    return StaticTemplate(tuple(pieces))


def _expression_at(text: str, start: int) -> tuple[ast.expr, int] | None:
    """The expression opened by `{{` at `start` and the index after its `}}`.

    A dict literal holds `}}` of its own, so each closing candidate is tried in turn
    until the inside parses, as Jinja's lexer balances brackets.
    """
    end = start + 2
    while (close := text.find("}}", end)) != -1:
        inner = text[start + 2:close]
        if inner.startswith(("-", "+")) or inner.endswith(("-", "+")):
            return None  # whitespace control: Jinja's business
        try:
            return ast.parse(inner.strip(), mode="eval").body, close + 2
        except SyntaxError:
            end = close + 1
    return None


def _next_tag(text: str, pos: int) -> int:
    positions = [p for p in (text.find("{{", pos), text.find("{#", pos)) if p != -1]
    return min(positions) if positions else -1


def _supported(node: ast.expr, known: Mapping[str, Any]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (str, int, float, bool, type(None))) and not isinstance(node.value, bytes)
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_supported(e, known) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _supported(k, known) for k in node.keys) and all(
            _supported(v, known) for v in node.values)
    if isinstance(node, ast.Name):
        return node.id in _JINJA_CONSTANTS or node.id in known
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float))
    if isinstance(node, ast.Call):
        return (
            isinstance(node.func, ast.Name) and node.func.id in known and callable(known[node.func.id])
            and all(_supported(a, known) and not isinstance(a, ast.Starred) for a in node.args)
            and all(k.arg is not None and _supported(k.value, known) for k in node.keywords)
        )
    return False


def render_static(template: StaticTemplate, names: Mapping[str, Any], on_line: Callable[[int], None]) -> str:
    """Evaluate the expressions against `names` (the Jinja globals) and join the pieces."""
    out: list[str] = []
    for piece in template.pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        line, node = piece
        on_line(line)
        value = _evaluate(node, names)
        out.append(value if isinstance(value, str) else str(value))
    return "".join(out)


def _evaluate(node: ast.expr, names: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [_evaluate(e, names) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(e, names) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_evaluate(k, names): _evaluate(v, names) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, ast.Name):
        return _JINJA_CONSTANTS[node.id] if node.id in _JINJA_CONSTANTS else names[node.id]
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, names)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    func = names[node.func.id]
    args = [_evaluate(a, names) for a in node.args]
    kwargs = {k.arg: _evaluate(k.value, names) for k in node.keywords}
    return func(*args, **kwargs)
