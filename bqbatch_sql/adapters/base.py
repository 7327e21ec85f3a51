"""The warehouse seam: what the runner, validator, ledger and predictors ask of a warehouse."""

from __future__ import annotations

from typing import ClassVar, Protocol

from sqlglot import exp

from bqbatch_sql.nodes import Column, Relation


class WarehouseAdapter(Protocol):
    dialect: ClassVar[str]  # sqlglot dialect the adapter executes

    def execute(self, sql: str | exp.Expression) -> None: ...

    def fetchall(self, sql: str | exp.Expression) -> list[tuple]: ...

    def create_schema(self, schema: str) -> None: ...

    def create_table_as(self, relation: Relation, query: exp.Query) -> None: ...

    def create_view(self, relation: Relation, query: exp.Query) -> None: ...

    def drop_relation(self, relation: Relation) -> None: ...

    def table_exists(self, relation: Relation) -> bool: ...

    def columns(self, relation: Relation) -> list[Column]: ...

    def row_count(self, relation: Relation) -> int: ...

    def close(self) -> None: ...


class RelationDDL:
    """The DDL both adapters write the same way, over their own execute / relation_kind / drop_relation."""

    def _drop_other_kind(self, relation: Relation, keep: str) -> None:
        # CREATE OR REPLACE TABLE refuses to replace a view, and the other way round.
        kind = self.relation_kind(relation)
        if kind and kind != keep:
            self.drop_relation(relation)

    def create_table_as(self, relation: Relation, query: exp.Query) -> None:
        self._drop_other_kind(relation, "TABLE")
        self.execute(exp.Create(this=relation.table(), kind="TABLE", expression=query, replace=True))

    def create_view(self, relation: Relation, query: exp.Query) -> None:
        self._drop_other_kind(relation, "VIEW")
        self.execute(exp.Create(this=relation.table(), kind="VIEW", expression=query, replace=True))

    def replace_table(self, relation: Relation, staged: Relation) -> None:
        """`relation` takes the rows of `staged`, which is dropped: one CREATE OR REPLACE, so
        readers see the old table or the new one, never none. (DuckDB renames instead.)"""
        self.create_table_as(relation, exp.select("*").from_(staged.table()))
        self.drop_relation(staged)
