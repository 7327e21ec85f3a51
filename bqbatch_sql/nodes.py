"""Plain data of the project graph: relations, models, sources, seeds, macros."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlglot import exp


@dataclass(frozen=True)
class Relation:
    """A table or view in the warehouse: BigQuery project.dataset.name, DuckDB catalog.schema.name."""

    database: str | None
    schema: str
    name: str

    def table(self, alias: str | None = None) -> exp.Table:
        """The relation as a sqlglot table; sqlglot quotes every part when rendered."""
        return exp.table_(self.name, db=self.schema, catalog=self.database, quoted=True, alias=alias)

    def sql(self, dialect: str) -> str:
        return self.table().sql(dialect=dialect)

    def with_name(self, name: str) -> "Relation":
        return Relation(self.database, self.schema, name)

    def __str__(self) -> str:
        return ".".join(p for p in (self.database, self.schema, self.name) if p)


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # upper-case type name as the warehouse reports it (BigQuery spelling)
