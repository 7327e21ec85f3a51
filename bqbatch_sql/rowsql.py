"""SQL over request and output rows, shared by the spending stages (incremental, retry, sharding, cost).

Every statement here is a BigQuery-dialect sqlglot tree, rendered for the target's
warehouse at the last moment (`run`, `fetch`, `create_table`). Templates hold only
program-owned text; identifiers arrive as sqlglot nodes, so sqlglot quotes them.
"""

from __future__ import annotations

from typing import Any

import sqlglot
from sqlglot import exp

from bqbatch_sql.compile import to_dialect, transpile
from bqbatch_sql.nodes import Relation

REQUEST = "request"
OUTPUT_COLUMNS = ("response", "status", "processed_time")
# A status of this kind is the API refusing the request itself (400 INVALID_ARGUMENT, as
# in 'Bad Request: {"error": {"code": 400, ...'): sending it again fails again.
REFUSED_MARK = '"code": 400'


def fragment(template: str, *, read: str = "bigquery", **nodes: exp.Expression) -> exp.Expression:
    """Parse a fixed template (BigQuery SQL unless `read` says otherwise) and put the given
    trees where its placeholder columns stand.

    Templates hold only program-owned text; every identifier and value from the user
    arrives as a sqlglot node, so sqlglot does all quoting and escaping.
    """
    tree = sqlglot.parse_one(template, read=read)

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not node.table and node.name in nodes:
            return nodes[node.name].copy()
        return node

    return tree.transform(swap)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def column_types(adapter: Any, relation: Relation) -> dict[str, str]:
    """Column name -> BigQuery type name (upper case), in table order."""
    return {c.name: c.data_type.upper().split("<")[0].split("(")[0].strip() for c in adapter.columns(relation)}


def request_text(types: dict[str, str], table: str | None = None) -> exp.Expression:
    """The request as comparable text: JSON serialized by the warehouse, a STRING column as it is."""
    name = next(n for n in types if n.lower() == REQUEST)
    column = col(name, table)
    if types[name] == "JSON":
        return fragment("TO_JSON_STRING(R)", R=column)
    return column


def succeeded(table: str | None = None) -> exp.Expression:
    """A row Vertex answered: its status is NULL or empty."""
    return fragment("(S IS NULL OR S = '')", S=col("status", table))


def refused(table: str | None = None) -> exp.Expression:
    """A row the API refused as invalid (400): sending the same request again cannot succeed."""
    return fragment("STRPOS(S, M) > 0", S=col("status", table), M=exp.Literal.string(REFUSED_MARK))


def render(adapter: Any, tree: exp.Expression) -> str:
    return transpile(tree, adapter.dialect)


def fetch(adapter: Any, tree: exp.Expression) -> list[tuple]:
    return adapter.fetchall(render(adapter, tree))


def run(adapter: Any, tree: exp.Expression) -> None:
    adapter.execute(render(adapter, tree))


def create_table(adapter: Any, relation: Relation, query: exp.Query) -> None:
    """CREATE OR REPLACE `relation` AS the BigQuery `query`, rewritten for the warehouse."""
    adapter.create_table_as(relation, to_dialect(query, adapter.dialect, copy=False))


def drop(adapter: Any, *relations: Relation) -> None:
    for relation in relations:
        adapter.drop_relation(relation)
