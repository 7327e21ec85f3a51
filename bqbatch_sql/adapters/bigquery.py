"""BigQuery warehouse adapter: the production target's materialize stage.

Same surface as the DuckDB adapter, over google-cloud-bigquery (imported when the
adapter is built, never at start-up). Models are BigQuery SQL already, so trees are
rendered in the BigQuery dialect as they are; generated DDL is a sqlglot tree.
Data values travel as query parameters: `?` placeholders are BigQuery positional
parameters, typed from the Python value. Every query carries the target's job
labels, maximum bytes billed and timeout; API calls answered 429/5xx are retried
by the client's own retry policy with the target's deadline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import threading
from pathlib import Path
from typing import Any, ClassVar, Sequence

from sqlglot import exp

from bqbatch_sql.adapters.base import RelationDDL
from bqbatch_sql.errors import WarehouseError
from bqbatch_sql.gcp import is_multi_region, load_credentials, permission_message
from bqbatch_sql.nodes import Column, Relation

# BigQuery reports legacy type names through the API; the request-table rules and
# the DuckDB adapter speak the standard SQL names.
_STANDARD_TYPES = {
    "INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT",
    "BIGNUMERIC": "BIGNUMERIC", "DECIMAL": "NUMERIC", "BIGDECIMAL": "BIGNUMERIC",
}
# Rows per INSERT when loading a seed, bounded by BigQuery's 10,000 parameters a query.
_SEED_PARAMETERS_PER_QUERY = 8_000


class BigQueryAdapter(RelationDDL):
    dialect: ClassVar[str] = "bigquery"

    def __init__(self, config: Any, *, client: Any = None):
        self.config = config
        self.project = config.project
        self.database = config.project
        self.schema = config.dataset
        self.location = config.location
        self.credentials = load_credentials(config)
        self._client = client
        self._lock = threading.Lock()
        self._bq = None

    # -- the client --------------------------------------------------------------

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                from google.cloud import bigquery

                options = {"api_endpoint": self.config.api_endpoint} if self.config.api_endpoint else None
                self._client = bigquery.Client(project=self.project, credentials=self.credentials.bigquery,
                                               location=self.location, client_options=options)
            return self._client

    @property
    def retry(self):
        """The client's own policy for API calls (429, 5xx, dropped connections), with the target's deadline."""
        from google.cloud.bigquery import DEFAULT_RETRY

        return self._bounded(DEFAULT_RETRY)

    @property
    def job_retry(self):
        """The client's policy for re-running a query job that failed retryably (its own deadline is 10 minutes)."""
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY

        return self._bounded(DEFAULT_JOB_RETRY)

    def _bounded(self, policy):
        cfg = self.config
        first = cfg.retry_initial_seconds
        return policy.with_delay(initial=first, maximum=max(first, 60.0)).with_timeout(cfg.retry_deadline_seconds)

    def relation(self, name: str, schema: str | None = None) -> Relation:
        return Relation(self.project, schema or self.schema, name)

    def _table_id(self, relation: Relation) -> str:
        return f"{relation.database or self.project}.{relation.schema}.{relation.name}"

    # -- statements ------------------------------------------------------------------

    def render(self, sql: str | exp.Expression) -> str:
        return sql if isinstance(sql, str) else sql.sql(dialect=self.dialect)

    def _job_config(self, params: Sequence[Any] | None, **extra: Any):
        from google.cloud import bigquery

        cfg = self.config
        return bigquery.QueryJobConfig(
            query_parameters=[_parameter(v) for v in params or ()],
            labels=dict(cfg.job_labels),
            maximum_bytes_billed=cfg.maximum_bytes_billed,
            default_dataset=f"{self.project}.{self.schema}",
            use_legacy_sql=False,
            **extra,
        )

    def _run(self, sql: str | exp.Expression, params: Sequence[Any] | None) -> list[tuple]:
        text = self.render(sql)
        if params and any(v is None for v in params):
            text, params = _inline_nulls(text, list(params))
        with self._errors("run the statement", text):
            rows = self.client.query_and_wait(
                text, job_config=self._job_config(params), location=self.location, retry=self.retry,
                job_retry=self.job_retry, wait_timeout=self.config.query_timeout_seconds,
                api_timeout=self.config.query_timeout_seconds,
            )
            return [tuple(row.values()) for row in rows]

    def execute(self, sql: str | exp.Expression, params: Sequence[Any] | None = None) -> None:
        self._run(sql, params)

    def fetchall(self, sql: str | exp.Expression, params: Sequence[Any] | None = None) -> list[tuple]:
        return self._run(sql, params)

    def dry_run(self, sql: str | exp.Expression, params: Sequence[Any] | None = None) -> int:
        """Let BigQuery check a query without running it; returns the bytes it would process."""
        text = self.render(sql)
        with self._errors("dry-run the query", text):
            job = self.client.query(text, job_config=self._job_config(params, dry_run=True, use_query_cache=False),
                                    location=self.location, retry=self.retry, job_retry=self.job_retry,
                                    timeout=self.config.query_timeout_seconds)
        return int(job.total_bytes_processed or 0)

    @contextlib.contextmanager
    def _errors(self, what: str, sql: str | None = None):
        """Client exceptions -> WarehouseError saying what failed and, for a permission, the grant to ask for."""
        from google.api_core import exceptions as api

        shown = f"\n  SQL: {_shorten(sql)}" if sql else ""
        try:
            yield
        except api.Forbidden as e:
            raise WarehouseError(permission_message("BigQuery", _message(e), self.project,
                                                    self.credentials.principal)) from None
        except api.GoogleAPICallError as e:
            raise WarehouseError(f"BigQuery could not {what}: {_message(e)}{shown}") from None
        except api.RetryError as e:
            last: Any = e
            while isinstance(last, api.RetryError) and last.cause is not None:  # job retry wraps call retry
                last = last.cause
            cause = _message(last) if not isinstance(last, api.RetryError) else str(last)
            raise WarehouseError(
                f"BigQuery could not {what}: still failing after retrying for "
                f"{self.config.retry_deadline_seconds:g} s (the target's retry_deadline_seconds): {cause}{shown}"
            ) from None
        except TimeoutError:
            raise WarehouseError(
                f"BigQuery could not {what} within the target's query_timeout_seconds "
                f"({self.config.query_timeout_seconds:g} s). Raise it in profiles.yml, or make the query cheaper."
                f"{shown}"
            ) from None

    def _api(self, what: str, call, *args: Any, **kwargs: Any):
        """One BigQuery API call (not a query), with the target's retry and readable errors."""
        with self._errors(what):
            return call(*args, retry=self.retry, **kwargs)

    # -- DDL ----------------------------------------------------------------------------

    def create_schema(self, schema: str) -> None:
        """The dataset, in the target's location; an existing one is kept as it is."""
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.project}.{schema}")
        if self.location:
            dataset.location = self.location
        self._api(f"create the dataset {self.project}.{schema}", self.client.create_dataset, dataset, exists_ok=True)

    def dataset_location(self, schema: str | None = None, project: str | None = None) -> str | None:
        """The location of a dataset, None when it does not exist."""
        from google.api_core import exceptions as api

        dataset_id = f"{project or self.project}.{schema or self.schema}"
        with self._errors(f"read the dataset {dataset_id}"):
            try:
                return self.client.get_dataset(dataset_id, retry=self.retry).location
            except api.NotFound:
                return None

    def drop_relation(self, relation: Relation) -> None:
        self._api(f"drop {relation}", self.client.delete_table, self._table_id(relation), not_found_ok=True)

    def rename(self, relation: Relation, new_name: str) -> None:
        """A table takes a new name in its dataset (ALTER TABLE ... RENAME TO)."""
        statement = exp.Alter(this=relation.table(), kind="TABLE",
                              actions=[exp.AlterRename(this=exp.to_identifier(new_name, quoted=True))])
        self.execute(statement)

    def load_csv(self, relation: Relation, path: Path, column_types: dict[str, str] | None = None) -> int:
        """A seed: column types inferred from the CSV as on the local target (overridable), rows as parameters.

        DuckDB reads the file, so a seed gets the same types on both targets; the
        rows then travel as typed query parameters, never as SQL text.
        """
        from bqbatch_sql.adapters.duckdb import DuckDBAdapter

        reader = DuckDBAdapter(":memory:")
        try:
            local = reader.relation("seed")
            reader.load_csv(local, path, column_types)
            columns = reader.columns(local)
            rows = reader.fetchall(exp.select("*").from_(local.table()))
        finally:
            reader.close()
        for column in columns:
            if column.data_type in ("ARRAY", "STRUCT"):
                raise WarehouseError(f"Seed {path.name}: column '{column.name}' was read as {column.data_type}; "
                                     f"set its type with column_types in the seed's config.")
        schema = [exp.ColumnDef(this=exp.to_identifier(c.name, quoted=True),
                                kind=exp.DataType.build(c.data_type, dialect="bigquery")) for c in columns]
        self._drop_other_kind(relation, "TABLE")
        self.execute(exp.Create(this=exp.Schema(this=relation.table(), expressions=schema), kind="TABLE", replace=True))
        types = [c.data_type for c in columns]
        per_query = max(1, _SEED_PARAMETERS_PER_QUERY // max(1, len(columns)))
        for start in range(0, len(rows), per_query):
            chunk = rows[start:start + per_query]
            values = exp.Values(expressions=[
                exp.Tuple(expressions=[exp.Placeholder() for _ in columns]) for _ in chunk])
            insert = exp.Insert(this=exp.Schema(this=relation.table(), expressions=[
                exp.to_identifier(c.name, quoted=True) for c in columns]), expression=values)
            params = [_TypedValue(types[i], value) for row in chunk for i, value in enumerate(row)]
            self.execute(insert, params)
        return len(rows)

    # -- catalog ----------------------------------------------------------------------------

    def _table(self, relation: Relation):
        from google.api_core import exceptions as api

        with self._errors(f"read the table {relation}"):
            try:
                return self.client.get_table(self._table_id(relation), retry=self.retry)
            except api.NotFound:
                return None

    def relation_kind(self, relation: Relation) -> str | None:
        table = self._table(relation)
        if table is None:
            return None
        return "VIEW" if table.table_type in ("VIEW", "MATERIALIZED_VIEW") else "TABLE"

    def table_exists(self, relation: Relation) -> bool:
        return self._table(relation) is not None

    def columns(self, relation: Relation) -> list[Column]:
        table = self._table(relation)
        if table is None:
            return []
        return [Column(f.name, "ARRAY" if f.mode == "REPEATED" else _STANDARD_TYPES.get(f.field_type, f.field_type))
                for f in table.schema]

    def row_count(self, relation: Relation) -> int:
        query = exp.select(exp.Count(this=exp.Star())).from_(relation.table())
        return int(self.fetchall(query)[0][0])

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- bqbatch debug -------------------------------------------------------------------------

    def debug_checks(self) -> list[str]:
        """Credentials, the dataset and its location, and a query: each line says OK or raises with the fix."""
        cfg = self.config
        lines = [f"credentials: {self.credentials.describe()}"]
        if cfg.api_endpoint:
            lines.append(f"BigQuery endpoint: {cfg.api_endpoint}")
        location = self.dataset_location()
        if location is None:
            lines.append(f"dataset {self.project}.{self.schema}: does not exist yet (the first run creates it in "
                         f"{self.location or 'BigQuery default location US'})")
        else:
            note = " (multi-region: Vertex AI batch prediction cannot use it)" if is_multi_region(location) else ""
            lines.append(f"dataset {self.project}.{self.schema}: OK, location {location}{note}")
        self.fetchall("SELECT 1")
        lines.append("query: OK")
        return lines


# -- parameters --------------------------------------------------------------------


class _TypedValue:
    """A parameter value with its BigQuery type decided by the caller (a seed column's type)."""

    __slots__ = ("type", "value")

    def __init__(self, type_: str, value: Any):
        self.type, self.value = type_, value


def _parameter(value: Any):
    from google.cloud import bigquery

    if isinstance(value, _TypedValue):
        return bigquery.ScalarQueryParameter(None, value.type, value.value)
    if isinstance(value, (list, tuple)):
        kinds = {_scalar_type(v) for v in value if v is not None}
        if len(kinds) > 1:
            raise WarehouseError(f"A list parameter mixes types {sorted(kinds)}; BigQuery arrays hold one type.")
        return bigquery.ArrayQueryParameter(None, kinds.pop() if kinds else "STRING", list(value))
    return bigquery.ScalarQueryParameter(None, _scalar_type(value), value)


def _scalar_type(value: Any) -> str:
    # bool before int: True is an int in Python.
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, str):
        return "STRING"
    raise WarehouseError(f"bqbatch cannot pass a {type(value).__name__} as a BigQuery query parameter.")


def _inline_nulls(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """Replace the placeholders of None values by NULL.

    A BigQuery parameter must declare a type, and a NULL STRING cannot be inserted
    into an INT64 column; an untyped NULL literal can. NULL is a constant of the
    program's own, so it may be SQL text; the tokenizer finds the real `?`
    placeholders (not those inside strings, names or comments).
    """
    from sqlglot.dialects.bigquery import BigQuery
    from sqlglot.tokens import TokenType

    spots = [t for t in BigQuery().tokenize(sql) if t.token_type == TokenType.PLACEHOLDER]
    if len(spots) != len(params):
        raise WarehouseError(f"The statement has {len(spots)} '?' placeholders for {len(params)} parameters."
                             f"\n  SQL: {_shorten(sql)}")
    pieces, kept, cursor = [], [], 0
    for token, value in zip(spots, params):
        if value is None:
            pieces += [sql[cursor:token.start], "NULL"]
            cursor = token.end + 1
        else:
            kept.append(value)
    pieces.append(sql[cursor:])
    return "".join(pieces), kept


def _message(error: Exception) -> str:
    """The service's own words: the client prefixes its message with the method and URL."""
    errors = getattr(error, "errors", None) or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    message = first.get("message") or getattr(error, "message", None) or str(error)
    reason = first.get("reason")
    return f"{message} ({reason})" if reason else message


def _shorten(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."
