"""Parse pass over a whole project: merged configs, checked refs and sources, the graph.

The result, a Manifest, is what compile, ls, run and the artifacts read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from bqbatch_sql.config import ModelConfig, describe_validation_error, normalize_config_keys
from bqbatch_sql.dag import Graph
from bqbatch_sql.errors import ConfigError, ProjectError, RenderError, did_you_mean
from bqbatch_sql.nodes import Model, Relation, Seed
from bqbatch_sql.project import Project
from bqbatch_sql.render import Renderer, TargetInfo
from bqbatch_sql.selection import Selectable

# Config keys that add up across levels instead of the nearest one winning (as in dbt).
_ADDITIVE = ("tags", "pre-hook", "post-hook")


@dataclass
class Manifest:
    project: Project
    target: TargetInfo
    renderer: Renderer
    graph: Graph
    relations: dict[str, Relation] = field(default_factory=dict)  # unique id -> relation

    def __post_init__(self) -> None:
        self.models: dict[str, Model] = {m.unique_id: m for m in self.project.models.values()}
        self.seeds: dict[str, Seed] = {s.unique_id: s for s in self.project.seeds.values()}

    def node(self, unique_id: str) -> Model | Seed:
        return self.models.get(unique_id) or self.seeds[unique_id]

    def selectables(self) -> dict[str, Selectable]:
        out: dict[str, Selectable] = {}
        for seed in self.project.seeds.values():
            out[seed.unique_id] = Selectable(seed.unique_id, seed.name, seed.path, [], {"materialized": "seed"}, "seed")
        for model in self.project.models.values():
            config = model.config.model_dump(by_alias=True)
            out[model.unique_id] = Selectable(model.unique_id, model.name, model.path, model.tags, config, "model")
        return out

    def resolve_ref(self, model: Model, name: str) -> Relation:
        uid = self.ref_target(name)
        if uid is None:  # checked in the parse pass; a ref from a hook lands here
            raise RenderError(f"{_label(model)} depends on a node named '{name}' which was not found.")
        relation = self.relations[uid]
        base, sep, suffix = name.rpartition("__")
        if sep and suffix in BATCH_SUFFIXES and uid == f"model.{base}":
            return relation.with_name(f"{relation.name}__{suffix}")
        return relation

    def ref_target(self, name: str) -> str | None:
        return _ref_uid(self.project, name)

    def resolve_source(self, model: Model, source_name: str, table: str) -> Relation:
        source = self.project.sources.get((source_name, table))
        if source is None:
            raise RenderError(f"{_label(model)} depends on source '{source_name}.{table}' which was not found.")
        rel = source.relation
        return Relation(rel.database or self.target.database, rel.schema or self.target.schema, rel.name)


# A batch_prediction model `m` also makes `m__requests` and `m__parsed`; ref() reaches them.
BATCH_SUFFIXES = ("requests", "parsed")


def _ref_uid(project: Project, name: str) -> str | None:
    if name in project.models:
        return project.models[name].unique_id
    if name in project.seeds:
        return project.seeds[name].unique_id
    base, sep, suffix = name.rpartition("__")
    model = project.models.get(base) if sep and suffix in BATCH_SUFFIXES else None
    if model is not None and model.config is not None and model.config.materialized == "batch_prediction":
        return model.unique_id
    return None


def _label(model: Model) -> str:
    return f"Model '{model.name}' ({model.path})"


def build_manifest(project: Project, renderer: Renderer, target: TargetInfo) -> Manifest:
    folder_config = _FolderConfig(project)
    relations: dict[str, Relation] = {}
    for seed in project.seeds.values():
        relations[seed.unique_id] = Relation(target.database, target.schema, seed.name)

    records = {}
    for model in project.models.values():
        provisional = Relation(target.database, target.schema, model.name)
        record = records[model.name] = renderer.parse(model, provisional)
        merged = folder_config.for_model(model)
        _merge(merged, normalize_config_keys(model.yml_config))
        _merge(merged, normalize_config_keys(record.config))
        try:
            model.config = ModelConfig.model_validate(merged)
        except ValidationError as e:
            raise ConfigError(describe_validation_error(e, f"The config of {_label(model)}")) from None
        schema = f"{target.schema}_{model.config.schema_}" if model.config.schema_ else target.schema
        relations[model.unique_id] = Relation(target.database, schema, model.config.alias or model.name)

    for model in project.models.values():
        record = records[model.name]
        model.refs = [name for name, _ in record.refs]
        model.sources = [(s, t) for s, t, _ in record.sources]
        deps = []
        for name, line in record.refs:
            uid = _ref_uid(project, name)
            if uid is None:
                at = f", line {line}" if line else ""
                hint = did_you_mean(name, [*project.models, *project.seeds])
                raise RenderError(f"{_label(model)}{at} depends on a node named '{name}' which was not found.{hint}")
            deps.append(uid)
        for source_name, table, line in record.sources:
            if (source_name, table) not in project.sources:
                at = f", line {line}" if line else ""
                known = [f"{s}.{t}" for s, t in project.sources]
                hint = did_you_mean(f"{source_name}.{table}", known)
                raise RenderError(
                    f"{_label(model)}{at} depends on source '{source_name}.{table}' which was not found.{hint} "
                    f"Declare it under 'sources:' in a models/*.yml file."
                )
        model.depends_on = deps

    parents: dict[str, list[str]] = {s.unique_id: [] for s in project.seeds.values()}
    parents.update({m.unique_id: m.depends_on for m in project.models.values() if m.config.enabled})
    for m in project.models.values():  # a ref to a disabled model is an error, not a silent gap
        for dep in m.depends_on:
            if m.config.enabled and dep not in parents:
                raise RenderError(f"{_label(m)} depends on '{dep.split('.', 1)[1]}', which is disabled (enabled=false).")
    labels = {m.unique_id: f"{m.name} ({m.path})" for m in project.models.values()}
    graph = Graph(parents, labels)
    for m in [m for m in project.models.values() if not m.config.enabled]:
        del project.models[m.name]
    return Manifest(project=project, target=target, renderer=renderer, graph=graph, relations=relations)


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if key in _ADDITIVE and key in into:
            old = into[key] if isinstance(into[key], list) else [into[key]]
            add = value if isinstance(value, list) else [value]
            into[key] = [*old, *[v for v in add if v not in old]]
        else:
            into[key] = value


class _FolderConfig:
    """bqbatch_project.yml `models:` tree: `+key` entries are config, other keys are sub-folders."""

    def __init__(self, project: Project):
        self.project = project
        self.tree = project.config.models
        self._cache: dict[tuple[str, ...], dict[str, Any]] = {}
        extra = [k for k in self.tree if not k.startswith("+") and k != project.name]
        if extra:
            raise ProjectError(
                f"'bqbatch_project.yml': models: has key(s) {extra}; folder config goes under the project name "
                f"('{project.name}:'), config keys start with '+' (e.g. '+materialized: table')."
            )

    def for_model(self, model: Model) -> dict[str, Any]:
        folders = model.fqn[:-1]
        if folders not in self._cache:
            merged: dict[str, Any] = {}
            level: Any = self.tree
            self._apply(level, merged, "models")
            for i, part in enumerate(folders):
                if not isinstance(level, dict) or part not in level:
                    break
                level = level[part]
                self._apply(level, merged, "models." + ".".join(folders[: i + 1]))
            self._cache[folders] = merged
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._cache[folders].items()}

    def _apply(self, level: Any, merged: dict[str, Any], where: str) -> None:
        if not isinstance(level, dict):
            raise ProjectError(f"'bqbatch_project.yml': {where} must be a mapping.")
        config_keys = set(ModelConfig.model_fields) | {f.alias for f in ModelConfig.model_fields.values() if f.alias}
        for key, value in level.items():
            if key.startswith("+"):
                _merge(merged, normalize_config_keys({key[1:]: value}))
            elif key in config_keys:
                raise ProjectError(
                    f"'bqbatch_project.yml': {where}.{key} looks like a config key; write it as '+{key}' "
                    f"(keys without '+' name sub-folders)."
                )
