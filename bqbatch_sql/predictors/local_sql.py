"""Predict stage, embedded target: the SQL of one local batch job, as sqlglot trees rendered for DuckDB.

`JobPlan` inspects the request table and renders the job's statements once: the
output table, one validation pass with the shared rules of `bqbatch_sql.validate`,
the per-chunk INSERT ... SELECT that builds every row's response and status, the
progress count, the token tallies, and the queries that feed structured output and
a response function. `local.py` runs them; `responses.py` supplies the answer shapes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import duckdb
from sqlglot import exp

from bqbatch_sql.errors import PredictorError
from bqbatch_sql.nodes import Relation
from bqbatch_sql.predictors.responses import (
    HASH_MARKER,
    default_text_sql,
    failure_sql,
    function_error_status,
    response_json_sql,
    sql_fragment,
    token_estimate_sql,
)
from bqbatch_sql.request_spec import STRUCTURED_OUTPUT_HINT

# Read from each valid request in one JSON parse: DuckDB evaluates a list of paths
# against a single parse of the document (wildcards excepted). The API takes either
# spelling of every key, at every level, hence the four spellings per setting.
_SETTINGS = {
    # The prompt and system text the token estimate counts:
    # first parts only. A wildcard over every part costs a second parse (~0.3 s per
    # million rows); multi-part and multi-turn prompts are estimated low.
    "prompt": ["$.contents[0].parts[0].text"],
    "system": [f"$.{k}.parts[0].text" for k in ("systemInstruction", "system_instruction")],
    "mime": [f"$.{g}.{k}" for g in ("generationConfig", "generation_config") for k in ("responseMimeType", "response_mime_type")],
    "schema": [f"$.{g}.{k}" for g in ("generationConfig", "generation_config") for k in ("responseSchema", "response_schema")],
    "json_schema": [
        f"$.{g}.{k}" for g in ("generationConfig", "generation_config") for k in ("responseJsonSchema", "response_json_schema")
    ],
}
_PATHS = [p for paths in _SETTINGS.values() for p in paths]
_TEXT_PATHS = _SETTINGS["prompt"] + _SETTINGS["system"]  # first in _PATHS: rows without templates read only these


def _path_list(paths: list[str]) -> str:
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"


OUTPUT_COLUMNS = ("response", "status", "processed_time")
# DuckDB's default row group. A chunk of whole row groups is written straight to the
# database file; a smaller one goes through the WAL and is written again at the
# checkpoint (measured: ~15% of the chunks' CPU for 1M rows), so large chunk sizes
# are rounded to a multiple of it.
ROW_GROUP_ROWS = 122_880


def _setting(e: exp.Expression, name: str) -> exp.Expression:
    """COALESCE over the spellings of one setting in the extracted path list `e` (1-based)."""
    start = _PATHS.index(_SETTINGS[name][0]) + 1
    items = [sql_fragment(f"E[{start + i}]", E=e) for i in range(len(_SETTINGS[name]))]
    return exp.Coalesce(this=items[0], expressions=items[1:])


def _settings_parts(e: exp.Expression) -> list[exp.Expression]:
    """[mime type, responseSchema, responseJsonSchema] of a row, as text, from the extracted path list `e`."""
    return [_setting(e, n) for n in ("mime", "schema", "json_schema")]


def _settings_key(e: exp.Expression) -> exp.Expression:
    """A 64-bit hash of a row's structured-output settings; NULL when it asks for none.

    A hash, not the settings' text: rows look their template up by an integer
    compare instead of comparing ~300-byte schema texts (measured ~2x faster per row).
    Two distinct settings colliding in one job has odds of about k^2 / 2^65.
    """
    mime, schema, json_schema = _settings_parts(e)
    return sql_fragment("CASE WHEN COALESCE(A, B, C) IS NOT NULL THEN HASH(A, B, C) END", A=mime, B=schema, C=json_schema)


@dataclasses.dataclass
class JobPlan:
    """What one job reads and writes, and the statements that do it (rendered once, run per chunk).

    Scratch tables (`__bqbatch_<what>_<job>` next to the destination, dropped when
    the job ends) are plain tables: the job's second connection reads them too.
    """

    source: Relation
    destination: Relation
    destination_kind: str | None
    columns: list[str]
    request: str
    low: int
    high: int
    total: int
    tag: str
    scratch: list[Relation] = dataclasses.field(default_factory=list)
    # False when every row is known valid (bqbatch validated the table just before):
    # the chunks then read no status table and pair nothing by position.
    statuses: bool = True

    @classmethod
    def inspect(cls, cursor: duckdb.DuckDBPyConnection, source: Relation, destination: Relation, tag: str) -> "JobPlan":
        kind = _relation_kind(cursor, source)
        if kind is None:
            raise PredictorError(f"Batch job input {source} does not exist; materialize the request table first.")
        if source == destination:
            raise PredictorError(f"Batch job input and output are the same table {source}; name another destination.")
        columns = [r[0] for r in cursor.execute(*_catalog_query("columns", source, "column_name")).fetchall()]
        by_lower = {c.lower(): c for c in columns}
        if "request" not in by_lower:
            raise PredictorError(
                f"Batch job input {source} has no column named 'request' (columns: {', '.join(columns)}). "
                f"The model's SQL must select the GenerateContentRequest JSON AS request."
            )
        reserved = [by_lower[c] for c in OUTPUT_COLUMNS if c in by_lower]
        if reserved:
            raise PredictorError(
                f"Batch job input {source} has column(s) {', '.join(reserved)}, which the output table adds; "
                f"rename them in the model's SQL."
            )
        plan = cls(source, destination, _relation_kind(cursor, destination), columns, by_lower["request"], 0, -1, 0, tag)
        if kind == "VIEW":
            # rowid ranges need a table: a view is read once into a snapshot.
            snapshot = plan._scratch("source")
            cursor.execute(exp.Create(this=snapshot.table(), kind="TABLE", replace=True,
                                      expression=exp.select("*").from_(source.table())).sql("duckdb"))
            plan.source = snapshot
        low, high, total = cursor.execute(
            exp.select("MIN(rowid)", "MAX(rowid)", "COUNT(*)").from_(plan.source.table()).sql("duckdb")
        ).fetchone()
        plan.low, plan.high, plan.total = (low or 0), (high if high is not None else -1), total
        return plan

    def chunks(self, size: int):
        """Rowid ranges of about `size` rows; see ROW_GROUP_ROWS for the rounding."""
        if size >= ROW_GROUP_ROWS // 2:
            size = round(size / ROW_GROUP_ROWS) * ROW_GROUP_ROWS
        for low in range(self.low, self.high + 1, size):
            yield low, low + size

    def _scratch(self, what: str) -> Relation:
        relation = self.destination.with_name(f"__bqbatch_{what}_{self.tag}")
        if relation not in self.scratch:
            self.scratch.append(relation)
        return relation

    # -- DDL -----------------------------------------------------------------------

    def create_destination(self) -> list[str]:
        """Replace the destination by an empty table: the source's columns, then the output columns."""
        query = exp.select(
            "s.*", "CAST(NULL AS JSON) AS response", "CAST(NULL AS TEXT) AS status",
            "CAST(NULL AS TIMESTAMP) AS processed_time", dialect="duckdb",
        ).from_(self.source.table(alias="s")).limit(0)
        statements = [exp.Create(this=self.destination.table(), kind="TABLE", expression=query, replace=True)]
        if self.destination_kind == "VIEW":  # DuckDB cannot replace a view by a table
            statements.insert(0, exp.Drop(tables=[self.destination.table()], kind="VIEW", exists=True))
        return [s.sql("duckdb") for s in statements]

    def validate_all(self) -> list[str]:
        """Statuses of a table bqbatch has just validated, in table order, into the 'status' scratch table.

        Only rows that are not JSON objects get a status here (the runner's checks passed
        the rest); a table not validated before goes through validate.materialize_statuses.
        Stored in scan order, one row per source row, so each chunk pairs it with the
        source by POSITIONAL JOIN: a hash join would reorder the chunk and sorting it
        back costs ~1.2 s of CPU per million rows.
        """
        request = exp.column(self.request, quoted=True)
        # The cheap test reads __bqb_j, NULL unless the request is valid JSON: DuckDB
        # may hoist parts of an expression out of a CASE guard, never out of a NULL.
        vouched = "JSON_TYPE(__bqb_j) = 'OBJECT'"
        guarded = exp.select("rowid AS rid", request, sql_fragment("CASE WHEN JSON_VALID(R) THEN R END", R=request)
                             .as_("__bqb_j")).from_(self.source.table())
        suspects = exp.select("s.rid", f"{_STATUS_SLOT} AS v").from_(
            exp.select("rid", request).from_(guarded.subquery("g")).where(
                f"NOT COALESCE({_VOUCHED_SLOT}, FALSE)").order_by("rid").subquery("s"))
        failing = self._scratch("failing")
        text = exp.Create(this=failing.table(), kind="TABLE", expression=suspects, replace=True).sql("duckdb")
        text = text.replace(_STATUS_SLOT, _status_sql(self.request), 1)
        text = text.replace(_VOUCHED_SLOT, vouched, 1)
        every_row = exp.select("s.rowid AS rid", "f.v").from_(self.source.table(alias="s")).join(
            failing.table(alias="f"), on="f.rid = s.rowid", join_type="left").order_by("rid")
        return [text, exp.Create(this=self._scratch("status").table(), kind="TABLE", expression=every_row,
                                 replace=True).sql("duckdb")]

    def create_scratch(self, what: str, columns: list[str]) -> str:
        schema = exp.Schema(
            this=self._scratch(what).table(),
            expressions=[
                exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=exp.DataType.build(kind, dialect="duckdb"))
                for name, kind in (c.split(" ", 1) for c in columns)
            ],
        )
        return exp.Create(this=schema, kind="TABLE", replace=True).sql("duckdb")

    def insert_lists(self, what: str, types: list[str]) -> str:
        """INSERT of Python lists bound as array parameters: one statement per batch, no row loop."""
        select = exp.select(*[
            sql_fragment(f"UNNEST(CAST(${i + 1} AS {t}[]))") for i, t in enumerate(types)
        ])
        return exp.insert(select, self._scratch(what).table()).sql("duckdb")

    def clear_scratch(self, what: str) -> str:
        return exp.delete(self._scratch(what).table()).sql("duckdb")

    def drop_scratch(self) -> list[str]:
        return [exp.Drop(tables=[t.table()], kind="TABLE", exists=True).sql("duckdb") for t in self.scratch]

    # -- per-chunk queries --------------------------------------------------------------

    def _rows(self, failure_rate: float) -> tuple[exp.Select, exp.Expression]:
        """The chunk's rows ($1 <= rowid < $2) with their status, hashes and injected-failure draw.

        __bqb_v: NULL or the Vertex status text; __bqb_j: the request of valid rows
        only, so no JSON function ever sees garbage.
        """
        request = exp.column(self.request, quoted=True)
        chunk = "rowid >= $1 AND rowid < $2"
        source = exp.select("*", "rowid AS __bqb_rid").from_(self.source.table()).where(chunk, dialect="duckdb")
        hashes = [sql_fragment("HASH(R)", R=request).as_("__bqb_h"),
                  sql_fragment("HASH(R, s.__bqb_rid)", R=request).as_("__bqb_fh")]
        if not self.statuses:
            rows = exp.select("s.*", "CAST(NULL AS TEXT) AS __bqb_v", *hashes,
                              exp.alias_(request.copy(), "__bqb_j")).from_(source.subquery("s"))
        else:
            status = exp.select("rid", "v").from_(self._scratch("status").table()).where(
                chunk.replace("rowid", "rid"), dialect="duckdb")
            rows = exp.select(
                "s.*",
                # Positional pairing is only right while both sides hold the same rows in
                # the same order; a mismatch stops the job instead of mislabelling rows.
                sql_fragment("CASE WHEN i.rid IS DISTINCT FROM s.__bqb_rid THEN ERROR(MSG) ELSE i.v END",
                             MSG=exp.Literal.string("bqbatch local predictor: status rows out of step with the "
                                                    "request rows (was preserve_insertion_order turned off?)")).as_("__bqb_v"),
                *hashes,
                sql_fragment("CASE WHEN i.v IS NULL THEN R END", R=request).as_("__bqb_j"),
            ).from_(source.subquery("s"))
            rows.append("joins", exp.Join(this=status.subquery("i"), method="POSITIONAL"))
        failed, status = failure_sql(exp.column("__bqb_fh"), failure_rate)
        return exp.select("l1.*", failed.as_("__bqb_fail")).from_(rows.subquery("l1")), status

    def function_inputs(self, failure_rate: float) -> str:
        rows, _ = self._rows(failure_rate)
        query = exp.select("__bqb_rid", "CAST(__bqb_j AS TEXT)").from_(rows.subquery("l2")).where(
            "__bqb_v IS NULL AND NOT __bqb_fail", dialect="duckdb"
        )
        return query.sql("duckdb")

    def chunk_insert(self, version: str, failure_rate: float, *, templates: str | None, function: bool,
                     tallies: bool = False) -> str:
        """INSERT INTO destination SELECT ...: one output row per source row of the chunk.

        Parameters: $1, $2 the rowid range, $3 processed_time; with templates="lists"
        also $4, $5, $6 (see _Templates). tallies: also write each answered row's
        prompt and output token counts into the tally columns (see add_tallies).
        """
        rows, failure_status = self._rows(failure_rate)
        if function:
            answered = exp.select("l2.*", "f.response AS __bqb_out", "f.error AS __bqb_err").from_(
                rows.subquery("l2")).join(self._scratch("fn").table(alias="f"), on="f.rid = l2.__bqb_rid", join_type="left")
            response = sql_fragment("CAST(__bqb_out AS JSON)")
            missing = exp.Literal.string(function_error_status("?", "no result was recorded for this row"))
            error = sql_fragment("COALESCE(__bqb_err, CASE WHEN __bqb_out IS NULL THEN M END)", M=missing)
        else:
            e = exp.column("__bqb_e")
            tag = exp.column("__bqb_tag")
            prompt = _setting(e, "prompt")
            parsed = exp.select(
                "l2.*",
                sql_fragment(f"__bqb_j ->> {_path_list(_PATHS if templates else _TEXT_PATHS)}").as_("__bqb_e"),
                # 8 hex digits of the request's hash: names the request in the text and
                # varies a schema's free strings per row (same width as HASH_MARKER).
                sql_fragment("LPAD(HEX(__bqb_h >> 32), 8, '0')").as_("__bqb_tag"),
            ).from_(rows.subquery("l2"))
            default_text = default_text_sql(tag)
            key = _settings_key(exp.column("__bqb_e", table="l3"))
            if templates == "lists":
                # $4, $5, $6: the settings' keys, candidate texts and error statuses.
                looked_up = exp.select("l3.*", sql_fragment("LIST_POSITION(CAST($4 AS UBIGINT[]), K)", K=key).as_("__bqb_ti")
                                       ).from_(parsed.subquery("l3"))
                template = sql_fragment("CAST($5 AS TEXT[])[__bqb_ti]")
                error_of = sql_fragment("CAST($6 AS TEXT[])[__bqb_ti]")
                source = looked_up.subquery("l3b")
                joined = exp.select("l3b.*").from_(source)
            elif templates == "table":
                template, error_of = sql_fragment("m.template"), sql_fragment("m.error")
                joined = exp.select("l3.*").from_(parsed.subquery("l3")).join(
                    self._scratch("templates").table(alias="m"), on=sql_fragment("m.key = K", K=key), join_type="left")
            if templates:
                text = sql_fragment("CASE WHEN T IS NOT NULL THEN REPLACE(T, MARK, TAG) ELSE D END",
                                    T=template, MARK=exp.Literal.string(HASH_MARKER), TAG=tag, D=default_text)
                answered = joined.select(text.as_("__bqb_text"), error_of.as_("__bqb_err"))
            else:
                answered = exp.select("l3.*", default_text.as_("__bqb_text"), "NULL AS __bqb_err").from_(
                    parsed.subquery("l3"))
            # Token counts in their own layer: each is used twice in the response.
            answered = exp.select(
                "l4.*",
                token_estimate_sql(sql_fragment("STRLEN(P) + STRLEN(COALESCE(S, ''))", P=prompt,
                                                S=_setting(e, "system"))).as_("__bqb_pt"),
                token_estimate_sql(sql_fragment("STRLEN(__bqb_text)")).as_("__bqb_ct"),
            ).from_(answered.subquery("l4"))
            response = response_json_sql(exp.column("__bqb_text"), exp.column("__bqb_pt"), exp.column("__bqb_ct"), version)
            error = exp.column("__bqb_err")
        ok = sql_fragment("__bqb_v IS NULL AND NOT __bqb_fail AND ERR IS NULL", ERR=error)
        status = sql_fragment(
            "CASE WHEN __bqb_v IS NOT NULL THEN __bqb_v WHEN __bqb_fail THEN F WHEN ERR IS NOT NULL THEN ERR ELSE '' END",
            F=failure_status, ERR=error,
        )
        select = exp.select(
            *[exp.column(c, quoted=True) for c in self.columns],
            exp.Case().when(ok, response).as_("response"),
            status.as_("status"),
            sql_fragment("CAST($3 AS TIMESTAMP)").as_("processed_time"),
        ).from_(answered.subquery("l5"))
        columns = [*self.columns, *OUTPUT_COLUMNS]
        if tallies:
            if function:
                raise ValueError("tallies count emulated answers; a response function's answers are its own")
            # The very values the response prints, for the rows whose response is written.
            select = select.select(*[exp.Case().when(ok.copy(), exp.column(c)).as_(n) for c, n in
                                     zip(("__bqb_pt", "__bqb_ct"), self.tally_columns)])
            columns += self.tally_columns
        # Keep the table's row order: the hash joins of templates and function results
        # may reorder a chunk (measured), so those paths sort it back by rowid.
        if templates == "table" or function:
            select = select.order_by("__bqb_rid")
        return exp.insert(select, self.destination.table(), columns=[exp.to_identifier(c, quoted=True) for c in columns]).sql("duckdb")

    # -- token tallies -------------------------------------------------------------------
    # The job's token totals, without parsing the responses again (1M rows: ~0.4 s of
    # CPU): two BIGINT columns, added to the destination inside the job's transaction,
    # hold the prompt and output counts of each answered row, summed once written and
    # dropped before COMMIT, so no other connection ever sees them. Dropping a column
    # is a catalog change in DuckDB; the table's data is not rewritten (1M rows: 2 ms,
    # the next checkpoint 5 ms).

    @property
    def tally_columns(self) -> list[str]:
        return [f"__bqbatch_prompt_tokens_{self.tag}", f"__bqbatch_output_tokens_{self.tag}"]

    def add_tallies(self) -> list[str]:
        return [exp.Alter(this=self.destination.table(), kind="TABLE", actions=[
            exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=exp.DataType.build("BIGINT"))]).sql("duckdb")
            for name in self.tally_columns]

    def tallies(self) -> str:
        """Rows answered, their prompt and output tokens, and the largest prompt count."""
        p, c = (exp.column(n, quoted=True) for n in self.tally_columns)
        return exp.select(exp.func("COUNT", p), sql_fragment("COALESCE(SUM(P), 0)", P=p.copy()),
                          sql_fragment("COALESCE(SUM(C), 0)", C=c), exp.func("MAX", p.copy())).from_(
            self.destination.table()).sql("duckdb")

    def drop_tallies(self) -> list[str]:
        return [exp.Alter(this=self.destination.table(), kind="TABLE", actions=[
            exp.Drop(tables=[exp.column(name, quoted=True)], kind="COLUMN")]).sql("duckdb") for name in self.tally_columns]

    def written_counts(self) -> str:
        """Rows written since row $1 of the destination, and how many of them failed."""
        return exp.select("COUNT(*)", "COUNT(*) FILTER (WHERE status <> '')").from_(self.destination.table()).where(
            "rowid >= $1", dialect="duckdb").sql("duckdb")

    def distinct_output_settings(self) -> str:
        """The distinct structured-output settings of the source (a few, usually): key, mime, schema, JSON schema.

        One group has a NULL key: the rows that ask for no structured output.
        """
        request = exp.column(self.request, table="s", quoted=True)
        extracted = exp.select(
            sql_fragment(f"(CASE WHEN JSON_VALID(R) THEN R END) ->> {_path_list(_PATHS)}", R=request).as_("__bqb_e")
        ).from_(self.source.table(alias="s")).where(
            sql_fragment("CONTAINS(CAST(R AS TEXT), HINT)", R=request, HINT=exp.Literal.string(STRUCTURED_OUTPUT_HINT)))
        e = exp.column("__bqb_e")
        keyed = exp.select(_settings_key(e).as_("k"), *[p.as_(n) for p, n in zip(_settings_parts(e), "abc")]).from_(
            extracted.subquery("x"))
        # No WHERE k IS NOT NULL here: DuckDB pushes it below the projection and parses
        # every request again for it (5x slower, measured); the caller skips the NULL key.
        return exp.select("k", "ANY_VALUE(a)", "ANY_VALUE(b)", "ANY_VALUE(c)").from_(keyed.subquery("y")).group_by(
            "k").sql("duckdb")


# The shared rules render to ~100 KB of SQL, which costs sqlglot ~0.1-0.2 s to build
# and render: rendered once per request column name and spliced into the statement
# sqlglot rendered around this slot.
_STATUS_SLOT = "__bqbatch_status_slot__"
_VOUCHED_SLOT = "__bqbatch_vouched_slot__"


@functools.lru_cache(maxsize=8)
def _status_sql(request_column: str) -> str:
    from bqbatch_sql.validate import request_status_sql

    return request_status_sql(exp.column(request_column, table="s", quoted=True), "duckdb").sql("duckdb")


def written_state(relation: Relation) -> tuple[str, list[Any]]:
    """(catalog id, rows with a response) of a table: what tells the table a job wrote from
    one replaced since under its name, or given more answers (a table's id is new on every
    CREATE, kept by INSERT and ALTER). COUNT of a column DuckDB answers from its null counts."""
    where = "schema_name = $1 AND table_name = $2 AND database_name = " + (
        "$3" if relation.database else "current_database()")
    oid = f"(SELECT table_oid FROM duckdb_tables() WHERE {where})"
    query = exp.select(sql_fragment(oid), exp.func("COUNT", exp.column("response", quoted=True))).from_(relation.table())
    return query.sql("duckdb"), [relation.schema, relation.name] + ([relation.database] if relation.database else [])


def _catalog_query(what: str, relation: Relation, column: str) -> tuple[str, list[Any]]:
    where = "table_schema = $1 AND table_name = $2" + (" AND table_catalog = $3" if relation.database else "")
    params = [relation.schema, relation.name] + ([relation.database] if relation.database else [])
    order = " ORDER BY ordinal_position" if what == "columns" else ""
    return f"SELECT {column} FROM information_schema.{what} WHERE {where}{order}", params


def _relation_kind(cursor: duckdb.DuckDBPyConnection, relation: Relation) -> str | None:
    rows = cursor.execute(*_catalog_query("tables", relation, "table_type")).fetchall()
    if not rows:
        return None
    return "VIEW" if rows[0][0] == "VIEW" else "TABLE"
