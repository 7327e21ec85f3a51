"""The facade the CLI talks to: project + target + adapter + predictor, built lazily.

Nothing here imports a cloud SDK: the BigQuery adapter and the Vertex predictor
import theirs when they are constructed, so `ls` and `compile` never pay for them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bqbatch_sql.config import BigQueryTarget, DuckDBTarget
from bqbatch_sql.manifest import Manifest, build_manifest
from bqbatch_sql.profiles import ResolvedTarget, resolve_target
from bqbatch_sql.project import Project, load_project
from bqbatch_sql.render import Renderer, TargetInfo


@dataclass
class Context:
    project_dir: Path = field(default_factory=Path.cwd)
    profiles_dir: Path | None = None
    target_name: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    # Set once close() has closed what the context opened; the CLI's fast exit requires it.
    closed: bool = field(default=False, init=False, repr=False)

    @functools.cached_property
    def project(self) -> Project:
        return load_project(self.project_dir)

    @functools.cached_property
    def target(self) -> ResolvedTarget:
        return resolve_target(self.project.config.profile, self.target_name, self.profiles_dir, self.project.root)

    @property
    def dialect(self) -> str:
        return "duckdb" if isinstance(self.target.config, DuckDBTarget) else "bigquery"

    @functools.cached_property
    def target_info(self) -> TargetInfo:
        cfg = self.target.config
        database = cfg.project if isinstance(cfg, BigQueryTarget) else None
        return TargetInfo(self.target.name, cfg.type, cfg.schema_, database, self.dialect)

    @functools.cached_property
    def manifest(self) -> Manifest:
        renderer = Renderer(self.project.macro_files, self.project.root, self.target_info,
                            self.variables, self.project.config.vars,
                            cache_dir=self.project.target_dir / "cache" / "jinja")
        return build_manifest(self.project, renderer, self.target_info)

    @property
    def thread_count(self) -> int:
        return self.threads or self.target.config.threads

    @functools.cached_property
    def adapter(self):
        cfg = self.target.config
        if isinstance(cfg, DuckDBTarget):
            from bqbatch_sql.adapters.duckdb import DuckDBAdapter

            path = Path(cfg.path)
            path = path if path.is_absolute() else self.project.root / path
            return DuckDBAdapter(path, cfg.schema_)
        from bqbatch_sql.adapters.bigquery import BigQueryAdapter

        return BigQueryAdapter(cfg)

    @functools.cached_property
    def predictor(self):
        from bqbatch_sql.predictors import make_predictor

        return make_predictor(self.target.config.predictor, self)

    @functools.cached_property
    def ledger(self):
        from bqbatch_sql.ledger import Ledger

        info = self.target_info
        return Ledger(self.adapter, info.schema, info.database)

    def close(self) -> None:
        """Close the warehouse connection, if one was opened (DuckDB checkpoints its file here)."""
        if "adapter" in self.__dict__ and not self.closed:
            self.adapter.close()
        self.closed = True

    # -- operations the CLI calls ------------------------------------------------

    def select(self, select: list[str] | None, exclude: list[str] | None, resource_types: set[str] | None = None) -> list[str]:
        from bqbatch_sql.selection import select_nodes, split_selectors

        manifest = self.manifest
        nodes = manifest.selectables()
        chosen = select_nodes(manifest.graph, nodes, split_selectors(select), split_selectors(exclude))
        return [uid for uid in chosen if resource_types is None or nodes[uid].resource_type in resource_types]

    def compile(self, select: list[str] | None = None, exclude: list[str] | None = None):
        """Compile the selected models; write target/compiled/ and target/manifest.json."""
        from bqbatch_sql.artifacts import write_compiled, write_manifest
        from bqbatch_sql.compiled import CheckCache, compile_model

        manifest = self.manifest
        cache = CheckCache(self.project.target_dir / "cache" / "compiled.txt", self.dialect)
        compiled, made_dirs = {}, set()
        for uid in self.select(select, exclude, {"model"}):
            result = compile_model(manifest, manifest.models[uid], cache)
            write_compiled(manifest, result, made_dirs)
            compiled[uid] = result
        cache.save()
        write_manifest(manifest, compiled)
        return list(compiled.values())

    def validate(self, select=None, exclude=None):
        """Validate the request tables of the selected batch_prediction models; submit nothing.

        Their upstream models must have been built (`bqbatch run` or `build`) first.
        """
        from bqbatch_sql.batch import validate_model
        from bqbatch_sql.compiled import compile_model

        manifest = self.manifest
        reports = []
        for uid in self.select(select, exclude, {"model"}):
            model = manifest.models[uid]
            if model.config.materialized == "batch_prediction":
                reports.append(validate_model(self, compile_model(manifest, model)))
        return reports

    def run(self, select=None, exclude=None, *, resource_types=frozenset({"model"}), reporter=None,
            full_refresh: bool = False, debug: bool = False, args: dict | None = None, wait: bool = True,
            cancel_on_interrupt: bool = False, attach_only: bool = False, dry_run: bool = False,
            retry: bool = False):
        """Run the selected nodes; write target/run_results.json and target/manifest.json.

        dry_run: only the selected batch_prediction models, each reporting the rows it
        would submit, their tokens and cost; nothing is built or submitted.
        retry: only the selected batch_prediction models, each resubmitting its rows
        without an answer (`bqbatch retry`).
        """
        import time

        from bqbatch_sql.artifacts import write_manifest, write_run_results
        from bqbatch_sql.reporting import Reporter
        from bqbatch_sql.runner import RunOptions, Runner

        reporter = reporter or Reporter()
        node_ids = self.select(select, exclude, set(resource_types))
        if dry_run or retry:
            models = self.manifest.models
            node_ids = [uid for uid in node_ids
                        if uid in models and models[uid].config.materialized == "batch_prediction"]
        if dry_run:
            reporter.line("Dry run: nothing is submitted; upstream models are read as they are in the warehouse.")
        write_manifest(self.manifest)
        start = time.perf_counter()
        if not node_ids:
            reporter.line("Nothing to do: the selection matches no node of this kind.")
        options = RunOptions(full_refresh=full_refresh, debug=debug, wait=wait,
                             cancel_on_interrupt=cancel_on_interrupt, attach_only=attach_only,
                             dry_run=dry_run, retry=retry)
        runner = Runner(self, node_ids, reporter, options)
        results = runner.run()
        self.interrupted = runner.interrupted.is_set()
        elapsed = time.perf_counter() - start
        if results:
            reporter.summary(results, elapsed)
        write_run_results(self.manifest, results, elapsed, args or {})
        return results

    def debug_report(self) -> list[str]:
        """Lines that say what bqbatch sees; a failing check raises with the fix."""
        project = self.project
        lines = [f"bqbatch project '{project.name}' at {project.root}"]
        lines.append(f"  models: {len(project.models)}, seeds: {len(project.seeds)}, sources: {len(project.sources)}, "
                     f"macro files: {len(project.macro_files)}")
        target = self.target
        where = target.profiles_path or "built-in (no profiles.yml found)"
        lines.append(f"profile: {where}")
        cfg = target.config
        lines.append(f"target: {target.name} (type {cfg.type}, schema/dataset {cfg.schema_}, predictor {cfg.predictor.type})")
        self.manifest  # parses every model: Jinja, refs, sources, config
        lines.append("  parse: OK")
        lines += [f"  {line}" for line in self.adapter_checks()]
        return lines

    def adapter_checks(self) -> list[str]:
        adapter = self.adapter
        checks = getattr(adapter, "debug_checks", None)
        if checks is not None:
            # The predictor's checks too (Vertex: the region rule and one API call), when it has them.
            predictor_checks = getattr(self.predictor, "debug_checks", None)
            return checks() + (predictor_checks() if predictor_checks is not None else [])
        adapter.fetchall("SELECT 1")
        return [f"connection: OK ({adapter.dialect} {getattr(adapter, 'database', '')})"]
