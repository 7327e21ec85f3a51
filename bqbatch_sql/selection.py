"""--select / --exclude: dbt's node selection syntax over the graph.

A selector is `[N+]method:value[+N]`; `name` alone selects by node name. Space- or
flag-separated selectors are a union; comma-joined ones (`tag:a,path:models/x`) an
intersection. Methods: name (default), tag, path, config.<key>, resource_type.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any

from bqbatch_sql.dag import Graph
from bqbatch_sql.errors import SelectionError, did_you_mean

_SELECTOR = re.compile(r"^(?P<up>\d*\+)?(?P<body>[^+]+?)(?P<down>\+\d*)?$")


class Selectable:
    """What a selector can look at on a node."""

    def __init__(self, unique_id: str, name: str, path: str, tags: list[str], config: dict[str, Any], resource_type: str):
        self.unique_id = unique_id
        self.name = name
        self.path = path
        self.tags = tags
        self.config = config
        self.resource_type = resource_type


def split_selectors(values: Iterable[str] | None) -> list[str]:
    return [part for value in values or () for part in value.split()]


def select_nodes(graph: Graph, nodes: dict[str, Selectable], select: list[str], exclude: list[str]) -> list[str]:
    """Node ids in run order: everything when `select` is empty, minus whatever `exclude` picks."""
    chosen = set(nodes) if not select else set().union(*(_union_member(graph, nodes, s) for s in select))
    for selector in exclude:
        chosen -= _union_member(graph, nodes, selector)
    return graph.sorted(chosen)


def _union_member(graph: Graph, nodes: dict[str, Selectable], selector: str) -> set[str]:
    parts = [p for p in selector.split(",") if p]
    if not parts:
        raise SelectionError(f"Empty selector '{selector}'.")
    result = _one(graph, nodes, parts[0])
    for part in parts[1:]:
        result &= _one(graph, nodes, part)
    return result


def _one(graph: Graph, nodes: dict[str, Selectable], selector: str) -> set[str]:
    m = _SELECTOR.match(selector)
    if not m:
        raise SelectionError(f"Cannot read selector '{selector}'. Examples: my_model, +my_model, tag:nightly, path:models/staging.")
    body = m.group("body")
    matches = {uid for uid, node in nodes.items() if _matcher(body, selector)(node)}
    if not matches:
        hint = did_you_mean(body, [n.name for n in nodes.values()]) if ":" not in body else ""
        raise SelectionError(f"The selector '{selector}' matches no model or seed.{hint}")
    result = set(matches)
    up, down = m.group("up"), m.group("down")
    for uid in matches:
        if up:
            result |= graph.ancestors(uid, int(up[:-1]) if up[:-1] else None)
        if down:
            result |= graph.descendants(uid, int(down[1:]) if down[1:] else None)
    return result


def _matcher(body: str, selector: str) -> Callable[[Selectable], bool]:
    method, sep, value = body.partition(":")
    if not sep:
        method, value = "name", body
    if method == "name":
        return lambda n: fnmatch.fnmatchcase(n.name, value)
    if method == "tag":
        return lambda n: any(fnmatch.fnmatchcase(t, value) for t in n.tags)
    if method == "path":
        prefix = value.rstrip("/")
        return lambda n: n.path == prefix or n.path.startswith(prefix + "/") or fnmatch.fnmatchcase(n.path, value)
    if method == "resource_type":
        return lambda n: n.resource_type == value
    if method.startswith("config."):
        key = method[len("config."):]
        return lambda n: _config_matches(n.config.get(key), value)
    raise SelectionError(
        f"Unknown selector method '{method}' in '{selector}'. Use name, tag:, path:, config.<key>: or resource_type:."
    )


def _config_matches(actual: Any, wanted: str) -> bool:
    if isinstance(actual, (list, tuple)):
        return wanted in [str(a) for a in actual]
    if isinstance(actual, bool):
        return str(actual).lower() == wanted.lower()
    return actual is not None and str(actual) == wanted
