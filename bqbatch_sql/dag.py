"""The node graph: who depends on whom, in which order they run, and what a failure skips."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable

from bqbatch_sql.errors import DagError


class Graph:
    def __init__(self, parents: dict[str, list[str]], labels: dict[str, str] | None = None):
        """`parents` maps every node id to the ids it depends on (all of them nodes of the graph)."""
        self.parents = {node: list(dict.fromkeys(deps)) for node, deps in parents.items()}
        self.children: dict[str, list[str]] = {node: [] for node in self.parents}
        for node, deps in self.parents.items():
            for dep in deps:
                self.children[dep].append(node)
        self.labels = labels or {}
        self.order = self._topological_order()

    def _topological_order(self) -> list[str]:
        sorter = graphlib.TopologicalSorter(self.parents)
        try:
            return list(sorter.static_order())
        except graphlib.CycleError as e:
            cycle = e.args[1]
            # graphlib lists the cycle ending with its start: a -> b -> a
            chain = " -> ".join(self.labels.get(n, n) for n in reversed(cycle))
            raise DagError(f"Found a cycle between models: {chain}. Remove one of these ref() calls.") from None

    def ancestors(self, node: str, depth: int | None = None) -> set[str]:
        return self._walk(node, self.parents, depth)

    def descendants(self, node: str, depth: int | None = None) -> set[str]:
        return self._walk(node, self.children, depth)

    @staticmethod
    def _walk(start: str, edges: dict[str, list[str]], depth: int | None) -> set[str]:
        seen: set[str] = set()
        frontier = [start]
        level = 0
        while frontier and (depth is None or level < depth):
            level += 1
            nxt = []
            for node in frontier:
                for other in edges.get(node, ()):
                    if other not in seen:
                        seen.add(other)
                        nxt.append(other)
            frontier = nxt
        return seen

    def sorted(self, nodes: Iterable[str]) -> list[str]:
        wanted = set(nodes)
        return [n for n in self.order if n in wanted]
