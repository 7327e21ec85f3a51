"""Run pass: each model rendered with its refs resolved, parsed by sqlglot, kept as a tree.

`CompiledModel.bigquery_sql` is what target/compiled/ shows (models are BigQuery SQL);
`CompiledModel.query` is the tree for the target's dialect, handed to the adapter.

`bqbatch compile` keeps a CheckCache under target/cache: a model whose rendered SQL
has compiled cleanly before, with the same bqbatch and sqlglot, is not parsed again
(dbt calls its version of this partial parsing). Runs always build fresh trees.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlglot import exp

from bqbatch_sql.compile import parse_model_sql, to_dialect, transpile
from bqbatch_sql.manifest import Manifest
from bqbatch_sql.nodes import Model, Relation


@dataclass(frozen=True)
class CompiledModel:
    model: Model
    relation: Relation
    bigquery_sql: str
    query: exp.Query | None  # in the target's dialect; None when the check cache vouched for it


class CheckCache:
    """Digests of rendered SQL already parsed and transpiled without error."""

    def __init__(self, path: Path, dialect: str):
        import sqlglot

        from bqbatch_sql import __version__

        self.path = path
        self.salt = f"{__version__}|{sqlglot.__version__}|{dialect}|"
        self._lock = threading.Lock()
        try:
            self.known = set(path.read_text().split())
        except OSError:
            self.known = set()
        self.seen: set[str] = set()

    def key(self, sql: str) -> str:
        return hashlib.blake2b((self.salt + sql).encode(), digest_size=16).hexdigest()

    def __contains__(self, key: str) -> bool:
        return key in self.known

    def add(self, key: str) -> None:
        with self._lock:
            self.seen.add(key)

    def save(self) -> None:
        """Keep what this compile saw, and what it did not select while the file stays small."""
        keep = self.seen | self.known if len(self.known) < 4 * max(len(self.seen), 1000) else self.seen
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("\n".join(sorted(keep)))
        except OSError:
            pass  # a cache that cannot be written only costs speed next time


def compile_model(manifest: Manifest, model: Model, cache: CheckCache | None = None) -> CompiledModel:
    """Render and parse `model`; with a cache (the compile command) only check it, keeping no tree."""
    relation = manifest.relations[model.unique_id]
    rendered = manifest.renderer.render(
        model,
        relation,
        resolve_ref=functools.partial(manifest.resolve_ref, model),
        resolve_source=functools.partial(manifest.resolve_source, model),
    )
    bigquery_sql = rendered.strip() + "\n"
    if cache is not None:
        key = cache.key(rendered)
        cache.add(key)
        if key in cache:
            return CompiledModel(model, relation, bigquery_sql, None)
    tree = parse_model_sql(rendered, path=model.path, model=model.name)
    dialect = manifest.target.dialect
    if cache is not None:
        # Checking needs the generated text, not the tree: no clone for a tree to keep.
        if dialect != "bigquery":
            transpile(tree, dialect, path=model.path, model=model.name, consume=True)
        return CompiledModel(model, relation, bigquery_sql, None)
    # The tree is ours alone, so the dialect rewrite may work in place.
    query = to_dialect(tree, dialect, path=model.path, model=model.name, copy=False)
    return CompiledModel(model, relation, bigquery_sql, query)


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
