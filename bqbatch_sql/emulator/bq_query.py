"""Query jobs of the emulated BigQuery: BigQuery SQL in, DuckDB statements out.

Each statement is parsed as BigQuery SQL, its table references are rewritten in the
tree onto the catalog's DuckDB tables ("project:dataset"."table"), its query
parameters become DuckDB bind parameters wrapped in a CAST to the declared type
(data values never become SQL text), and the tree is rendered for DuckDB by the
same transpiler as the local target (bqbatch_sql.compile.transpile). Dataset DDL
(CREATE/DROP SCHEMA) is answered by the catalog, as BigQuery keeps datasets apart
from tables. A SELECT's rows are written to a table, as BigQuery writes them to an
anonymous or destination table, and pages are read back from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from bqbatch_sql.compile import parse_statement, transpile
from bqbatch_sql.emulator import bq_types
from bqbatch_sql.emulator.api_errors import ApiError, bad_request, conflict, invalid_query, not_found
from bqbatch_sql.emulator.bq_rewrite import bind_parameters, name_anonymous_columns, name_positional
from bqbatch_sql.emulator.storage import Catalog, TableRef, sql_table
from bqbatch_sql.errors import CompileError

# Table properties BigQuery DDL carries that have no meaning in DuckDB; dropped
# from the tree so DuckDB is not handed syntax it would refuse or warn about.
_DROPPED_PROPERTIES = (exp.PartitionedByProperty, exp.ClusterProperty, exp.Property, exp.LocationProperty)


@dataclass
class QueryOutcome:
    statement_type: str
    result: TableRef | None = None  # the table holding the rows a SELECT produced
    num_dml_affected_rows: int | None = None
    ddl_target_table: TableRef | None = None
    ddl_target_dataset: tuple[str, str] | None = None
    ddl_operation: str | None = None
    referenced: list[TableRef] = field(default_factory=list)
    fields: list[dict[str, Any]] | None = None  # a dry run's result schema
    bytes_estimate: int = 0  # a dry run's guess of the bytes read


@dataclass
class QueryRequest:
    sql: str
    project: str
    result_ref: TableRef  # where a SELECT's rows go when there is no destination
    default_dataset: tuple[str, str] | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    destination: TableRef | None = None
    write_disposition: str | None = None
    create_disposition: str | None = None


class QueryEngine:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def run(self, request: QueryRequest) -> QueryOutcome:
        sql, request.parameters = name_positional(request.sql, request.parameters)
        statements = parse_sql(sql)
        outcome = QueryOutcome("SELECT")
        with self.catalog.lock:
            for i, tree in enumerate(statements):
                last = i == len(statements) - 1
                outcome = self._run_one(tree, request, last)
        if len(statements) > 1:
            outcome.statement_type = "SCRIPT"
        return outcome

    def dry_run(self, request: QueryRequest) -> QueryOutcome:
        """Check a query as BigQuery's dryRun does: names resolve, SQL transpiles, a SELECT's schema; nothing runs."""
        sql, request.parameters = name_positional(request.sql, request.parameters)
        statements = parse_sql(sql)
        outcome = QueryOutcome("SCRIPT" if len(statements) > 1 else "SELECT")
        with self.catalog.lock:
            for tree in statements:
                if isinstance(tree, (exp.Create, exp.Drop)) and tree.kind == "SCHEMA":
                    outcome.statement_type = f"{tree.key.upper()}_SCHEMA"
                    continue
                one = QueryOutcome(_statement_type(tree))
                self._rewrite_tables(tree, request, one)
                params = bind_parameters(tree, request.parameters)
                if isinstance(tree, exp.Query):
                    name_anonymous_columns(tree)
                    # DESCRIBE plans the query (names, types, functions) without running it.
                    described = self._execute(exp.Describe(this=tree), params)
                    one.fields = [bq_types.duckdb_to_field(row[0], row[1]) for row in described]
                else:
                    try:
                        transpile(tree, "duckdb")
                    except CompileError as e:
                        raise invalid_query(str(e)) from None
                one.bytes_estimate = sum(
                    self.catalog.row_count(ref) * 8 * len(self.catalog.duckdb_columns(ref))
                    for ref in set(one.referenced)
                    if self.catalog.table_kind(ref) == "TABLE"
                )
                outcome.referenced += one.referenced
                outcome.bytes_estimate += one.bytes_estimate
                if len(statements) == 1:
                    outcome.statement_type = one.statement_type
                outcome.fields = one.fields
        return outcome

    def run_tree(self, tree: exp.Expression, request: QueryRequest) -> QueryOutcome:
        """Run one statement already parsed (tables.insert of a view builds its CREATE VIEW)."""
        with self.catalog.lock:
            return self._run_one(tree, request, last=True)

    # -- one statement ------------------------------------------------------------

    def _run_one(self, tree: exp.Expression, request: QueryRequest, last: bool) -> QueryOutcome:
        if isinstance(tree, (exp.Command, exp.Declare, exp.Set, exp.Transaction)):
            raise invalid_query(
                f"Statement '{tree.sql(dialect='bigquery')[:80]}' is not supported by the emulator "
                "(scripting, variables, transactions and sessions are not emulated)."
            )
        if isinstance(tree, exp.Create) and tree.kind == "SCHEMA":
            return self._create_schema(tree, request)
        if isinstance(tree, exp.Drop) and tree.kind == "SCHEMA":
            return self._drop_schema(tree, request)

        outcome = QueryOutcome(_statement_type(tree))
        # tables.get shows a view's SQL as the user wrote it, before the rewrite.
        view_sql = tree.expression.sql(dialect="bigquery") if isinstance(tree, exp.Create) and tree.kind == "VIEW" and tree.expression else None
        target = self._rewrite_tables(tree, request, outcome)
        params = bind_parameters(tree, request.parameters)

        if isinstance(tree, exp.Query):
            return self._select(tree, request, params, outcome, last)
        if isinstance(tree, exp.Create):
            return self._create(tree, target, params, outcome, view_sql)
        if isinstance(tree, exp.Drop):
            self._execute(tree, params)
            for ref in [target] if target else []:
                self.catalog.forget_table(ref)
            outcome.ddl_target_table, outcome.ddl_operation = target, "DROP"
            return outcome
        rows = self._execute(tree, params)
        if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
            outcome.num_dml_affected_rows = int(rows[0][0]) if rows and rows[0] else 0
        if target is not None:
            if isinstance(tree, exp.Alter):
                self.catalog.sync(target.project, target.dataset)  # ALTER ... RENAME TO moves the table
            if self.catalog.table_kind(target) is not None:
                self.catalog.record_table(target, replaced=False)
            if not isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
                outcome.ddl_target_table = target
        return outcome

    def _select(self, tree: exp.Query, request: QueryRequest, params: dict, outcome: QueryOutcome, last: bool) -> QueryOutcome:
        name_anonymous_columns(tree)
        dest = request.destination if last and request.destination else request.result_ref
        statement: exp.Expression
        kind = self.catalog.table_kind(dest)
        self.catalog.require_dataset(dest.project, dest.dataset)
        disposition = (request.write_disposition or "WRITE_EMPTY") if dest == request.destination else "WRITE_TRUNCATE"
        if kind is None:
            if dest == request.destination and request.create_disposition == "CREATE_NEVER":
                raise not_found(f"Not found: Table {dest.legacy_id} (createDisposition is CREATE_NEVER)")
            statement = exp.Create(this=sql_table(dest), kind="TABLE", expression=tree)
            replaced = True
        elif disposition == "WRITE_APPEND":
            statement = exp.Insert(this=sql_table(dest), expression=tree, by_name=True)
            replaced = False
        elif disposition == "WRITE_TRUNCATE":
            statement = exp.Create(this=sql_table(dest), kind="TABLE", expression=tree, replace=True)
            replaced = True
        else:
            if self.catalog.row_count(dest) > 0:
                raise conflict(f"Already Exists: Table {dest.legacy_id} (writeDisposition WRITE_EMPTY and the table is not empty)")
            statement = exp.Create(this=sql_table(dest), kind="TABLE", expression=tree, replace=True)
            replaced = True
        self._execute(statement, params)
        self.catalog.record_table(dest, kind="TABLE", replaced=replaced)
        outcome.result = dest
        return outcome

    def _create(
        self, tree: exp.Create, target: TableRef | None, params: dict, outcome: QueryOutcome, view_sql: str | None
    ) -> QueryOutcome:
        assert target is not None
        description = _option(tree, "description")
        like = tree.find(exp.LikeProperty)
        if like is not None:
            # CREATE TABLE t LIKE s (BigQuery: s's schema, no rows) has no DuckDB form: build it from s.
            like.pop()
            tree.set("expression", exp.select("*").from_(like.this).limit(0))
        for prop in list(tree.find_all(*_DROPPED_PROPERTIES)):
            prop.pop()
        existed = self.catalog.table_kind(target) is not None
        if existed and tree.args.get("exists") and not tree.args.get("replace"):
            outcome.ddl_operation = "SKIP"
        else:
            if existed and not tree.args.get("replace"):
                raise conflict(f"Already Exists: Table {target.legacy_id}")
            self._execute(tree, params)
            kind = "VIEW" if (tree.kind or "").upper() == "VIEW" else "TABLE"
            self.catalog.record_table(target, kind=kind, description=description, view_query=view_sql)
            outcome.ddl_operation = "REPLACE" if existed else "CREATE"
        outcome.ddl_target_table = target
        return outcome

    def _create_schema(self, tree: exp.Create, request: QueryRequest) -> QueryOutcome:
        project, dataset = _schema_ref(tree.this, request.project)
        location = _option(tree, "location")
        existed = self.catalog.get_dataset(project, dataset) is not None
        if existed and not tree.args.get("exists"):
            raise conflict(f"Already Exists: Dataset {project}:{dataset}")
        if not existed:
            self.catalog.create_dataset(project, dataset, location, description=_option(tree, "description"))
        return QueryOutcome(
            "CREATE_SCHEMA", ddl_target_dataset=(project, dataset), ddl_operation="SKIP" if existed else "CREATE"
        )

    def _drop_schema(self, tree: exp.Drop, request: QueryRequest) -> QueryOutcome:
        project, dataset = _schema_ref(_drop_tables(tree)[0], request.project)
        if self.catalog.get_dataset(project, dataset) is None:
            if tree.args.get("exists"):
                return QueryOutcome("DROP_SCHEMA", ddl_target_dataset=(project, dataset), ddl_operation="SKIP")
            raise not_found(f"Not found: Dataset {project}:{dataset}")
        self.catalog.delete_dataset(project, dataset, delete_contents=bool(tree.args.get("cascade")))
        return QueryOutcome("DROP_SCHEMA", ddl_target_dataset=(project, dataset), ddl_operation="DROP")

    # -- tree rewriting -----------------------------------------------------------------

    def _rewrite_tables(self, tree: exp.Expression, request: QueryRequest, outcome: QueryOutcome) -> TableRef | None:
        """Point every table reference at its DuckDB table; return the statement's target table."""
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        target_node = _target_table(tree)
        target: TableRef | None = None
        for table in list(tree.find_all(exp.Table)):
            if not isinstance(table.this, exp.Identifier):
                continue  # table functions, UNNEST and the like are not catalog tables
            if not table.args.get("db") and table.name.lower() in ctes:
                continue
            if isinstance(table.parent, exp.AlterRename):
                continue  # RENAME TO takes a bare name in the table's own dataset
            ref = _resolve(table, request)
            if ref.table.upper().startswith("INFORMATION_SCHEMA."):
                raise invalid_query(
                    f"{ref.dataset}.{ref.table} is not emulated. Fix: use the tables API "
                    "(client.get_table / client.list_tables) to read schemas against the emulator."
                )
            dataset = self.catalog.get_dataset(ref.project, ref.dataset)
            if dataset is None:
                raise not_found(f"Not found: Dataset {ref.project}:{ref.dataset} was not found in location US")
            is_target = table is target_node
            if is_target:
                target = ref
            # A CREATE target may be new; so may a DROP ... IF EXISTS target.
            must_exist = not is_target or not (
                isinstance(tree, exp.Create) or (isinstance(tree, exp.Drop) and tree.args.get("exists"))
            )
            if must_exist and self.catalog.table_kind(ref) is None:
                raise not_found(f"Not found: Table {ref.legacy_id} was not found in location {dataset.location}")
            if not is_target:
                outcome.referenced.append(ref)
            alias = table.args.get("alias")
            replacement = sql_table(ref)
            if alias is not None:
                replacement.set("alias", alias)
            elif not is_target and ref.table != table.name:
                replacement.set("alias", exp.TableAlias(this=exp.to_identifier(table.name, quoted=True)))
            table.replace(replacement)
        return target

    def _execute(self, tree: exp.Expression, params: dict) -> list[tuple]:
        try:
            sql = transpile(tree, "duckdb")
        except CompileError as e:
            raise invalid_query(str(e)) from None
        try:
            return self.catalog.conn.execute(sql, params or None).fetchall()
        except duckdb.ConstraintException as e:
            raise bad_request(f"{e}", reason="invalid") from None
        except duckdb.Error as e:
            raise invalid_query(f"{_first_line(str(e))} [the emulator ran the query on DuckDB]") from None


# --- helpers --------------------------------------------------------------------------


def parse_sql(sql: str) -> list[exp.Expression]:
    if not sql or not sql.strip():
        raise invalid_query("Syntax error: the query is empty.")
    try:
        statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
    except (ParseError, TokenError):
        try:
            parse_statement(sql)  # for its located, hinted message
        except CompileError as e:
            raise invalid_query(str(e)) from None
        raise invalid_query("Syntax error in the query.") from None
    if not statements:
        raise invalid_query("Syntax error: the query has no statement.")
    return statements


def _statement_type(tree: exp.Expression) -> str:
    if isinstance(tree, exp.Query):
        return "SELECT"
    if isinstance(tree, exp.Create):
        kind = (tree.kind or "TABLE").upper()
        if kind == "TABLE" and tree.expression is not None:
            return "CREATE_TABLE_AS_SELECT"
        return f"CREATE_{kind}"
    if isinstance(tree, exp.Drop):
        return f"DROP_{(tree.kind or 'TABLE').upper()}"
    if isinstance(tree, exp.Alter):
        return "ALTER_TABLE"
    if isinstance(tree, exp.TruncateTable):
        return "TRUNCATE_TABLE"
    return tree.key.upper()


def _target_table(tree: exp.Expression) -> exp.Table | None:
    if isinstance(tree, exp.Create):
        node = tree.this
        return node.this if isinstance(node, exp.Schema) else node
    if isinstance(tree, exp.Drop):
        tables = _drop_tables(tree)
        return tables[0] if tables else None
    if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Alter)):
        node = tree.this
        return node.this if isinstance(node, exp.Schema) else node
    if isinstance(tree, exp.TruncateTable):
        return tree.expressions[0] if tree.expressions else None
    return None


def _drop_tables(tree: exp.Drop) -> list[exp.Expression]:
    return tree.args.get("tables") or tree.expressions or ([tree.this] if tree.this else [])


def _resolve(table: exp.Table, request: QueryRequest) -> TableRef:
    dataset = table.args.get("db")
    if dataset is None:
        if request.default_dataset is None:
            raise invalid_query(
                f'Table "{table.name}" must be qualified with a dataset (e.g. dataset.table).'
            )
        project, dataset_id = request.default_dataset
        return TableRef(project, dataset_id, table.name)
    catalog = table.args.get("catalog")
    return TableRef(catalog.name if catalog is not None else request.project, dataset.name, table.name)


def _schema_ref(node: exp.Expression, project: str) -> tuple[str, str]:
    """(project, dataset) of CREATE/DROP SCHEMA; sqlglot keeps `p.d` in backticks as one name."""
    if not isinstance(node, exp.Table):
        raise invalid_query("CREATE/DROP SCHEMA needs a dataset name.")
    db, catalog = node.args.get("db"), node.args.get("catalog")
    name = db.name if db is not None else node.name
    if catalog is not None:
        return catalog.name, name
    if "." in name:
        head, _, tail = name.rpartition(".")
        return head, tail
    return project, name


def _option(tree: exp.Expression, name: str) -> str | None:
    """A string OPTIONS(name=...) of a CREATE statement, e.g. location or description."""
    for prop in tree.find_all(exp.Property, exp.LocationProperty):
        if isinstance(prop, exp.LocationProperty) and name == "location":
            return prop.this.name
        if isinstance(prop, exp.Property) and prop.name.lower() == name and isinstance(prop.args.get("value"), exp.Literal):
            return prop.args["value"].name
    return None


def _first_line(text: str) -> str:
    return " ".join(text.strip().splitlines()[:3])


__all__ = ["QueryEngine", "QueryOutcome", "QueryRequest", "ApiError", "parse_sql"]
