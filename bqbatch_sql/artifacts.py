"""Artifacts under target/: compiled SQL, manifest.json and run_results.json.

Both JSON files carry a schema version; a change of their shape bumps it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson

from bqbatch_sql import __version__
from bqbatch_sql.compiled import CompiledModel
from bqbatch_sql.manifest import Manifest
from bqbatch_sql.reporting import NodeResult

MANIFEST_SCHEMA = "https://bqbatch.dev/schemas/manifest/v1.json"
RUN_RESULTS_SCHEMA = "https://bqbatch.dev/schemas/run-results/v1.json"


def _metadata(schema: str, manifest: Manifest) -> dict[str, Any]:
    return {
        "schema_version": schema,
        "bqbatch_version": __version__,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "project_name": manifest.project.name,
        "target": manifest.target.name,
        "target_type": manifest.target.type,
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))


def compiled_path(manifest: Manifest, model_path: str) -> Path:
    return manifest.project.target_dir / "compiled" / manifest.project.name / model_path


def write_compiled(manifest: Manifest, compiled: CompiledModel, made_dirs: set[Path] | None = None) -> Path:
    """Write the model's BigQuery SQL; `made_dirs` spares one mkdir per model in a loop."""
    path = compiled_path(manifest, compiled.model.path)
    if made_dirs is None or path.parent not in made_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        if made_dirs is not None:
            made_dirs.add(path.parent)
    path.write_text(compiled.bigquery_sql, encoding="utf-8")
    return path


def write_manifest(manifest: Manifest, compiled: dict[str, CompiledModel] | None = None) -> Path:
    project = manifest.project
    nodes: dict[str, Any] = {}
    for model in project.models.values():
        relation = manifest.relations[model.unique_id]
        entry = {
            "unique_id": model.unique_id,
            "resource_type": "model",
            "name": model.name,
            "path": model.path,
            "fqn": list(model.fqn),
            "checksum": {"name": "sha256", "checksum": model.checksum},
            "description": model.description,
            "columns": model.columns,
            "config": model.config.model_dump(by_alias=True, mode="json"),
            "tags": model.tags,
            "refs": model.refs,
            "sources": [list(s) for s in model.sources],
            "depends_on": {"nodes": model.depends_on},
            "relation": {"database": relation.database, "schema": relation.schema, "name": relation.name},
        }
        if compiled and model.unique_id in compiled:
            entry["compiled_path"] = compiled_path(manifest, model.path).relative_to(project.root).as_posix()
            entry["compiled_sql_checksum"] = _sha256(compiled[model.unique_id].bigquery_sql)
        nodes[model.unique_id] = entry
    seeds = {
        seed.unique_id: {"unique_id": seed.unique_id, "resource_type": "seed", "name": seed.name, "path": seed.path,
                         "config": seed.config}
        for seed in project.seeds.values()
    }
    sources = {
        src.unique_id: {"unique_id": src.unique_id, "source_name": src.source_name, "name": src.name,
                        "path": src.path, "relation": str(src.relation)}
        for src in project.sources.values()
    }
    data = {
        "metadata": _metadata(MANIFEST_SCHEMA, manifest),
        "nodes": nodes,
        "seeds": seeds,
        "sources": sources,
        "macros": dict(sorted(manifest.renderer.macros.items())),
        "parent_map": {uid: manifest.graph.parents[uid] for uid in manifest.graph.order},
        "child_map": {uid: manifest.graph.children[uid] for uid in manifest.graph.order},
    }
    path = project.target_dir / "manifest.json"
    write_json(path, data)
    return path


def write_run_results(manifest: Manifest, results: list[NodeResult], elapsed: float, args: dict[str, Any]) -> Path:
    data = {
        "metadata": _metadata(RUN_RESULTS_SCHEMA, manifest),
        "elapsed_time": round(elapsed, 3),
        "args": args,
        "results": [
            {
                "unique_id": r.unique_id,
                "name": r.name,
                "materialized": r.kind,
                "status": r.status,
                "message": r.message,
                "execution_time": round(r.execution_time, 3),
                "rows_affected": r.rows,
                "relation": r.relation,
                "timing": {"started_at": dt.datetime.fromtimestamp(r.started_at, dt.timezone.utc).isoformat()},
                **({"batch": r.batch} if r.batch else {}),
            }
            for r in results
        ],
    }
    path = manifest.project.target_dir / "run_results.json"
    write_json(path, data)
    return path


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
