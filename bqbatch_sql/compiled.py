"""Run pass: each model rendered with its refs resolved, parsed by sqlglot, kept as a tree.

`CompiledModel.bigquery_sql` is what target/compiled/ shows (models are BigQuery SQL);
`CompiledModel.query` is the tree for the target's dialect, handed to the adapter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlglot import exp

from bqbatch_sql.compile import parse_model_sql, to_dialect
from bqbatch_sql.manifest import Manifest
from bqbatch_sql.nodes import Model, Relation


@dataclass(frozen=True)
class CompiledModel:
    model: Model
    relation: Relation
    bigquery_sql: str
    query: exp.Query  # in the target's dialect


def compile_model(manifest: Manifest, model: Model) -> CompiledModel:
    relation = manifest.relations[model.unique_id]
    rendered = manifest.renderer.render(
        model,
        relation,
        resolve_ref=functools.partial(manifest.resolve_ref, model),
        resolve_source=functools.partial(manifest.resolve_source, model),
    )
    tree = parse_model_sql(rendered, path=model.path, model=model.name)
    dialect = manifest.target.dialect
    # The tree is ours alone, so the dialect rewrite may work in place.
    query = to_dialect(tree, dialect, path=model.path, model=model.name, copy=False)
    return CompiledModel(model, relation, rendered.strip() + "\n", query)


def render_hook(manifest: Manifest, model: Model, sql: str, index: int, kind: str) -> str:
    """A pre_hook/post_hook of `model`, rendered with `this` = the model's relation."""
    relation = manifest.relations[model.unique_id]
    return manifest.renderer.render_snippet(
        f"{model.path}#{kind}[{index}]",
        sql,
        f"Model '{model.name}' ({model.path}) {kind} #{index + 1}",
        relation,
        resolve_ref=functools.partial(manifest.resolve_ref, model),
        resolve_source=functools.partial(manifest.resolve_source, model),
    )
