"""Compile stage: rendered BigQuery SQL -> sqlglot tree -> SQL for the target warehouse.

Sits between render (Jinja has produced plain BigQuery SQL) and materialize (the
adapter runs the SQL). Models are always written in BigQuery SQL; on the local
target the tree is rewritten for DuckDB. sqlglot's own BigQuery -> DuckDB
translation is silently wrong for a few constructs; `compile_duckdb` rewrites
those to equivalent DuckDB or rejects them with a CompileError that names the
model, file, line and the fix, and whatever sqlglot itself reports as
untranslatable is refused here too. A wrong answer is worse than an error.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError

from bqbatch_sql.compile_duckdb import DUCKDB_SETTINGS, apply_duckdb_settings, rewrite
from bqbatch_sql.compile_support import Ctx, clone
from bqbatch_sql.errors import CompileError, did_you_mean

__all__ = ["DIALECTS", "DUCKDB_SETTINGS", "apply_duckdb_settings", "parse_model_sql", "parse_statement", "to_dialect", "transpile"]

DIALECTS = ("bigquery", "duckdb")

# Hints for sqlglot parse errors that BigQuery users commonly hit, matched on
# sqlglot's description. Kept short: a hint that is wrong is worse than none.
_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Expecting \)|Expected \)"), "A parenthesis is not closed; count '(' and ')' around this point."),
    (
        re.compile(r"Invalid expression / Unexpected token"),
        "Look for a missing comma between select items, a stray keyword, or an unquoted name "
        "(quote names with spaces or dashes in backticks).",
    ),
    (re.compile(r"end of the SQL"), "The statement stops early; complete the clause this points at."),
)
# sqlglot's descriptions quote its own objects; users need the SQL text instead.
_TOKEN_REPR = re.compile(r"<Token token_type: TokenType\.(\w+), text: (.*?), line: \d+, col: \d+, start: \d+, end: \d+, comments: \[.*?\]>")
_CLASS_REPR = re.compile(r"<class 'sqlglot\.[\w.]*?(\w+)'>")


def _describe(description: str) -> str:
    description = _TOKEN_REPR.sub(
        lambda m: "the end of the SQL" if m.group(1) == "SENTINEL" else f"'{m.group(2)}'", description
    )
    description = re.sub(r"but got the end of the SQL", "but reached the end of the SQL", description)
    return _CLASS_REPR.sub(lambda m: m.group(1), description)


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
    text = lines[line - 1]
    col = max(1, min(col, len(text) + 1))
    # Copy tabs into the padding so the caret lines up however tabs are shown.
    pad = "".join(c if c == "\t" else " " for c in text[: col - 1])
    gutter = f"{line:>4} | "
    return f"\n{gutter}{text}\n{' ' * len(gutter)}{pad}^"


def _line_col(sql: str, offset: int) -> tuple[int, int]:
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    col = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _leftover_jinja(sql: str, where: str) -> CompileError | None:
    """Unrendered '{{' or '{%' outside string literals (the tokenizer knows which is which)."""
    if "{{" not in sql and "{%" not in sql:
        return None
    try:
        tokens = Dialect.get_or_raise("bigquery").tokenize(sql)
    except TokenError:
        return None
    for first, second in zip(tokens, tokens[1:]):
        if first.text == "{" and second.text in ("{", "%") and second.start == first.end + 1:
            line, col = _line_col(sql, first.start)
            return CompileError(
                f"{where}: Jinja was left in the SQL at line {line}, column {col}: "
                f"'{first.text}{second.text}' is not SQL." + _caret(sql, line, col)
                + "\nFix: render the model before compiling it, and check that every '{{' has "
                "its '}}' and every '{%' its '%}'."
            )
    return None


def _syntax_error(sql: str, err: ParseError | TokenError, where: str) -> CompileError:
    jinja = _leftover_jinja(sql, where)
    if jinja is not None:
        return jinja
    if isinstance(err, TokenError):
        # The outer TokenError only quotes context; the cause says which delimiter is
        # missing and where the token started ("Missing ' from 1:7", 7 = offset).
        cause = str(err.__cause__ or err.__context__ or err)
        m = re.search(r"from (\d+):(\d+)", cause)
        if m:
            line, col = _line_col(sql, int(m.group(2)))
            description = cause.split(" from ")[0]
        else:
            # Only the quoted window is known: sql[start:end], 50 characters either side
            # of where the tokenizer stopped.
            start, end = err.start or 0, err.end or 0
            stop = start + 50 if start else (end - 50 if 0 < end < len(sql) - 1 else len(sql))
            line, col = _line_col(sql, stop)
            description = "the SQL text cannot be split into tokens here (often a stray or unbalanced quote)"
        hint = ""
        if description.startswith("Missing") or not m:
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
    description = _describe(first.get("description") or str(err))
    hint = next((text for pattern, text in _HINTS if pattern.search(description)), "")
    near = f" (near '{highlight}')" if highlight else ""
    return CompileError(
        f"{where}: SQL syntax error at line {line}, column {max(col, 1)}{near}: {description}"
        + _caret(sql, line, max(col, 1))
        + (f"\nFix: {hint}" if hint else "")
    )


def _parse_all(sql: str, path: str, model: str) -> list[exp.Expression]:
    where = _where(model, path)
    try:
        trees = sqlglot.parse(sql, read="bigquery")
    except (ParseError, TokenError) as err:
        raise _syntax_error(sql, err, where) from None
    jinja = _leftover_jinja(sql, where)
    if jinja is not None:
        raise jinja
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
        return _to_duckdb(tree.copy() if copy else tree, path, model, keep_tree=True)[0]
    raise _unknown_dialect(dialect, path, model)


def transpile(
    sql: str | exp.Expression, dialect: str, *, path: str = "", model: str = "", consume: bool = False
) -> str:
    """BigQuery SQL (text or tree) -> SQL text for `dialect`; any one statement.

    consume=True hands a tree over: it is rewritten in place instead of copied.
    """
    if isinstance(sql, str):
        tree, owned = parse_statement(sql, path=path, model=model), True
    else:
        tree, owned = sql, consume
    if dialect == "bigquery":
        # No rewrite, so no copy: generating text does not modify the tree.
        return tree.sql(dialect="bigquery")
    if dialect == "duckdb":
        return _to_duckdb(tree if owned else tree.copy(), path, model, keep_tree=False)[1]
    raise _unknown_dialect(dialect, path, model)


def _unknown_dialect(dialect: str, path: str, model: str) -> CompileError:
    return CompileError(
        f"{_where(model, path)}: unknown SQL dialect '{dialect}'; bqbatch compiles to "
        f"{', '.join(DIALECTS)}.{did_you_mean(dialect, DIALECTS)}"
    )


# sqlglot notes that EXTRACT from a TIMESTAMP WITH TIME ZONE depends on the session
# zone; DUCKDB_SETTINGS pins it to UTC, which is BigQuery's, so the note does not apply.
_HARMLESS_NOTES = ("EXTRACT from TIMESTAMPTZ",)
_DUCKDB = Dialect.get_or_raise("duckdb")


def _to_duckdb(
    tree: exp.Expression, path: str, model: str, *, keep_tree: bool
) -> tuple[exp.Expression, str]:
    """Rewrite `tree` (owned by the caller) for DuckDB and generate it once, refusing
    what sqlglot itself reports it cannot translate (it would only log a warning)."""
    ctx = Ctx(path=path, model=model)
    rewritten = rewrite(tree, ctx)
    generator = _DUCKDB.generator(unsupported_level=ErrorLevel.IGNORE)
    try:
        # sqlglot's generator mutates what it is given; when the caller keeps the tree
        # (and generates from it again) it gets a clone (3x cheaper than copy()).
        sql = generator.generate(clone(rewritten) if keep_tree else rewritten, copy=False)
    except SqlglotError as err:
        raise CompileError(
            f"{ctx.where()}: sqlglot cannot write this statement for DuckDB: {err}. "
            "Fix: simplify the construct it names, or run this model on the BigQuery target."
        ) from None
    notes = [m.rstrip(". ") for m in generator.unsupported_messages if not m.startswith(_HARMLESS_NOTES)]
    if notes:
        raise CompileError(
            f"{ctx.where()}: cannot be translated to DuckDB (the local target) without "
            f"changing its meaning: {'; '.join(dict.fromkeys(notes))}. Fix: rewrite that "
            "construct in plainer BigQuery SQL, or run this model on the BigQuery target."
        )
    return rewritten, sql
