"""Plain data of the project graph: relations, models, sources, seeds, macros."""

from __future__ import annotations

import functools
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
        return _relation_sql(self, dialect)

    def with_name(self, name: str) -> "Relation":
        return Relation(self.database, self.schema, name)

    def __str__(self) -> str:
        return ".".join(p for p in (self.database, self.schema, self.name) if p)


@functools.lru_cache(maxsize=65536)
def _relation_sql(relation: Relation, dialect: str) -> str:
    # A ref() renders the same few relations over and over; sqlglot's generator is
    # the costly part of a large project's parse pass, so each is generated once.
    return relation.table().sql(dialect=dialect)


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # upper-case type name as the warehouse reports it (BigQuery spelling)


@dataclass
class Macro:
    name: str
    path: str  # where it is defined, for error messages


@dataclass
class Source:
    """A table declared in models/*.yml under `sources:`; referenced with source('src', 'table')."""

    source_name: str
    name: str
    relation: Relation | None  # None: resolved against the target's database/schema at run time
    path: str
    description: str = ""

    @property
    def unique_id(self) -> str:
        return f"source.{self.source_name}.{self.name}"


@dataclass
class Seed:
    name: str
    path: str  # relative to the project
    abs_path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def unique_id(self) -> str:
        return f"seed.{self.name}"


@dataclass
class Model:
    """A SQL model: raw text as read, then what the parse pass found, then compiled SQL."""

    name: str
    path: str  # relative to the project, posix
    abs_path: Path
    raw_sql: str
    fqn: tuple[str, ...]  # folder parts under the model path, then the name
    checksum: str
    description: str = ""
    columns: dict[str, Any] = field(default_factory=dict)
    yml_config: dict[str, Any] = field(default_factory=dict)
    # filled by the parse pass
    config: Any = None  # config.ModelConfig
    refs: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)  # unique ids

    @property
    def unique_id(self) -> str:
        return f"model.{self.name}"

    @property
    def materialized(self) -> str:
        return self.config.materialized if self.config else "view"

    @property
    def tags(self) -> list[str]:
        return self.config.tags if self.config else []
