"""Discover and read a project's files: bqbatch_project.yml, models, schema yml, macros, seeds.

Nothing here renders Jinja or talks to a warehouse: it is the list of what is on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bqbatch_sql.config import ProjectConfig, describe_validation_error
from bqbatch_sql.errors import ProjectError
from bqbatch_sql.nodes import Macro, Model, Relation, Seed, Source

PROJECT_FILE = "bqbatch_project.yml"


def builtin_macro_dir() -> Path:
    """The built-in macro library: package data in a wheel, the repo's macros/ in a checkout."""
    packaged = Path(__file__).parent / "builtin_macros"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "macros"


@dataclass
class Project:
    root: Path
    config: ProjectConfig
    models: dict[str, Model] = field(default_factory=dict)
    sources: dict[tuple[str, str], Source] = field(default_factory=dict)
    seeds: dict[str, Seed] = field(default_factory=dict)
    macro_files: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def target_dir(self) -> Path:
        return self.root / self.config.target_path

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


def read_yaml(path: Path, root: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ProjectError(f"Failed to read '{rel}': invalid YAML{where}: {problem}") from None
    except OSError as e:
        raise ProjectError(f"Failed to read '{path}': {e.strerror}") from None


def load_project(root: Path) -> Project:
    root = root.resolve()
    project_file = root / PROJECT_FILE
    if not project_file.is_file():
        raise ProjectError(
            f"No {PROJECT_FILE} in '{root}'. Run bqbatch from a project directory or pass --project-dir."
        )
    raw = read_yaml(project_file, root) or {}
    if not isinstance(raw, dict):
        raise ProjectError(f"Failed to read '{PROJECT_FILE}': expected a mapping of keys, found {type(raw).__name__}.")
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as e:
        raise ProjectError(describe_validation_error(e, f"'{PROJECT_FILE}'")) from None

    project = Project(root=root, config=config)
    for seed_dir in _dirs(root, config.seed_paths):
        for csv in sorted(seed_dir.rglob("*.csv")):
            _add_seed(project, csv)
    for model_dir in _dirs(root, config.model_paths):
        _load_models(project, model_dir)
    for model_dir in _dirs(root, config.model_paths):
        for yml in sorted([*model_dir.rglob("*.yml"), *model_dir.rglob("*.yaml")]):
            _load_schema_file(project, yml)
    project.macro_files = _macro_files(root, config.macro_paths)
    return project


def _dirs(root: Path, paths: list[str]) -> list[Path]:
    return [root / p for p in paths if (root / p).is_dir()]


def _load_models(project: Project, model_dir: Path) -> None:
    for path in sorted(model_dir.rglob("*.sql")):
        text = path.read_text(encoding="utf-8")
        name = path.stem
        rel = project.rel(path)
        if name in project.models:
            other = project.models[name].path
            raise ProjectError(
                f"Two models are named '{name}': '{other}' and '{rel}'. Model names must be unique; rename one file."
            )
        if name in project.seeds:
            raise ProjectError(f"Model '{rel}' has the same name as seed '{project.seeds[name].path}'; rename one.")
        folders = path.relative_to(model_dir).parent.parts
        project.models[name] = Model(
            name=name,
            path=rel,
            abs_path=path,
            raw_sql=text,
            fqn=(project.name, *folders, name),
            checksum=hashlib.sha256(text.encode()).hexdigest(),
        )


def _load_schema_file(project: Project, path: Path) -> None:
    rel = project.rel(path)
    doc = read_yaml(path, project.root) or {}
    if not isinstance(doc, dict):
        raise ProjectError(f"Failed to read '{rel}': expected a mapping with 'sources:' and/or 'models:'.")
    unknown = set(doc) - {"version", "sources", "models", "seeds"}
    if unknown:
        raise ProjectError(f"'{rel}': unknown top-level key(s) {sorted(unknown)}; expected version, sources, models.")
    for i, src in enumerate(doc.get("sources") or []):
        if not isinstance(src, dict) or "name" not in src:
            raise ProjectError(f"'{rel}': sources[{i}] needs a 'name'.")
        database = src.get("project") or src.get("database")
        schema = src.get("dataset") or src.get("schema")
        for j, table in enumerate(src.get("tables") or []):
            if isinstance(table, str):
                table = {"name": table}
            if not isinstance(table, dict) or "name" not in table:
                raise ProjectError(f"'{rel}': sources[{i}].tables[{j}] needs a 'name'.")
            identifier = table.get("identifier", table["name"])
            relation = Relation(database, schema, identifier) if schema else None
            if relation is None:
                relation = Relation(None, "", identifier)  # schema filled in from the target
            key = (src["name"], table["name"])
            project.sources[key] = Source(
                src["name"], table["name"], relation, rel, table.get("description", "")
            )
    for i, spec in enumerate(doc.get("models") or []):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ProjectError(f"'{rel}': models[{i}] needs a 'name'.")
        model = project.models.get(spec["name"])
        if model is None:
            from bqbatch_sql.errors import did_you_mean

            hint = did_you_mean(spec["name"], list(project.models))
            raise ProjectError(f"'{rel}': models[{i}] describes '{spec['name']}', but no model file has that name.{hint}")
        model.description = spec.get("description", "") or ""
        model.columns = {c["name"]: c for c in spec.get("columns") or [] if isinstance(c, dict) and "name" in c}
        model.yml_config = dict(spec.get("config") or {})


def _add_seed(project: Project, path: Path) -> None:
    name = path.stem
    if name in project.seeds:
        raise ProjectError(f"Two seeds are named '{name}': '{project.seeds[name].path}' and '{project.rel(path)}'.")
    project.seeds[name] = Seed(name=name, path=project.rel(path), abs_path=path, config=dict(project.config.seeds.get(name, {}) or {}))


def _macro_files(root: Path, macro_paths: list[str]) -> list[Path]:
    """Project macros, then the built-in library; a file seen twice (the example project) counts once."""
    seen: set[Path] = set()
    files: list[Path] = []
    for directory in [builtin_macro_dir(), *_dirs(root, macro_paths)]:
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*.sql")):
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                files.append(path)
    return files
