"""Tree rewrites the emulator applies to a BigQuery statement before it is transpiled for DuckDB.

These keep BigQuery's meaning where the local target's transpiler has no reason to:
query parameters become DuckDB bind parameters CAST to their declared BigQuery type
(data values never become SQL text), `?` placeholders are named in the order of the
text, and unnamed result columns get BigQuery's names (f0_, f1_, ...).
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from bqbatch_sql.emulator import bq_types
from bqbatch_sql.emulator.api_errors import invalid_query


def name_anonymous_columns(tree: exp.Query) -> None:
    """BigQuery names unnamed result columns f0_, f1_, ... (DuckDB would use the expression text)."""
    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.this
    if not isinstance(select, exp.Select):
        return
    n = 0
    new = []
    for projection in select.expressions:
        if isinstance(projection, (exp.Alias, exp.Column, exp.Star, exp.Dot)) or projection.find(exp.Star):
            new.append(projection)
            continue
        new.append(exp.alias_(projection, f"f{n}_", quoted=True))
        n += 1
    select.set("expressions", new)


_POSITIONAL = "__bqemu_pos_"


def name_positional(sql: str, parameters: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Give each `?` the name of its parameter, in the order the `?` appear in the text.

    The tree cannot tell that order (a WITH clause is stored after the SELECT it
    precedes), the tokens can. Only placeholder tokens are rewritten, into named
    parameters; values stay bound parameters.
    """
    positional = [p for p in parameters if not p.get("name")]
    if not positional:
        return sql, parameters
    from sqlglot.dialects.bigquery import BigQuery
    from sqlglot.errors import TokenError
    from sqlglot.tokens import TokenType

    try:
        spots = [t for t in BigQuery().tokenize(sql) if t.token_type == TokenType.PLACEHOLDER]
    except TokenError:
        return sql, parameters  # the parser will report the syntax error with its location
    if len(spots) != len(positional):
        raise invalid_query(f"The query has {len(spots)} positional parameters (?) but {len(positional)} values were given.")
    pieces, cursor = [], 0
    for i, token in enumerate(spots):
        pieces += [sql[cursor:token.start], f"@{_POSITIONAL}{i}"]
        cursor = token.end + 1
    pieces.append(sql[cursor:])
    named = [p for p in parameters if p.get("name")] + [{**p, "name": f"{_POSITIONAL}{i}"} for i, p in enumerate(positional)]
    return "".join(pieces), named


def bind_parameters(tree: exp.Expression, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """Replace @name by CAST($name AS type); return the values DuckDB binds."""
    named = {p["name"].lower(): p for p in parameters if p.get("name")}
    values: dict[str, Any] = {}
    for node in [n for n in tree.walk(bfs=False) if isinstance(n, (exp.Parameter, exp.Placeholder))]:
        if isinstance(node, exp.Placeholder):
            raise invalid_query("Positional parameters (?) need values: pass them as query_parameters.")
        if isinstance(node.this, exp.Parameter):
            raise invalid_query(f"System variable @@{node.this.name} is not supported by the emulator.")
        name = node.name
        param = named.get(name.lower())
        if param is None:
            raise invalid_query(f"Query parameter '{name}' not found")
        key = f"n_{name.lower()}"
        try:
            dtype = bq_types.parameter_type_to_duckdb(param.get("parameterType") or {})
            values[key] = bq_types.parameter_value(param.get("parameterType") or {}, param.get("parameterValue"))
        except (bq_types.TypeMappingError, ValueError, KeyError) as e:
            raise invalid_query(f"Invalid query parameter {param.get('name') or key}: {e}") from None
        node.replace(exp.Cast(this=exp.Placeholder(this=key), to=dtype))
    return values
