"""Run stage: execute selected nodes in dependency order, up to --threads at once.

Per node: compile -> pre-hooks -> materialize (view, table, seed, batch_prediction)
-> post-hooks. A node that fails marks its selected descendants skipped; the rest
of the run goes on.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from bqbatch_sql.compile import transpile
from bqbatch_sql.compiled import CompiledModel, compile_model, render_hook
from bqbatch_sql.context import Context
from bqbatch_sql.errors import BqbatchError
from bqbatch_sql.nodes import Model, Seed
from bqbatch_sql.reporting import NodeResult, Reporter


@dataclass
class RunOptions:
    full_refresh: bool = False
    wait: bool = True
    debug: bool = False
    cancel_on_interrupt: bool = False  # Ctrl-C cancels the batch jobs being waited for
    attach_only: bool = False  # `bqbatch wait`: finish submitted batch jobs, submit none
    dry_run: bool = False  # `run --dry-run`: estimate rows, tokens and cost; submit nothing
    retry: bool = False  # `bqbatch retry`: resubmit only failed or missing rows


class Runner:
    def __init__(self, ctx: Context, node_ids: list[str], reporter: Reporter, options: RunOptions | None = None):
        self.ctx = ctx
        self.manifest = ctx.manifest
        self.node_ids = node_ids
        self.reporter = reporter
        self.options = options or RunOptions()
        self._schemas: set[str] = set()
        self._schema_lock = threading.Lock()
        # Set on Ctrl-C: workers waiting for batch jobs stop waiting; nodes not started are dropped.
        self.interrupted = threading.Event()
        if not self.options.wait and not getattr(ctx.predictor, "detached_jobs", False):
            # This predictor's jobs run inside this process and would die with it: wait for them.
            self.options.wait = True
            reporter.line(f"--no-wait has no effect with predictor '{ctx.predictor.name}': its jobs run inside "
                          f"bqbatch, so this run waits for them.")

    def run(self) -> list[NodeResult]:
        graph = self.manifest.graph
        selected = set(self.node_ids)
        pending = {uid: {p for p in graph.parents[uid] if p in selected} for uid in self.node_ids}
        results: dict[str, NodeResult] = {}
        running: dict[Future, str] = {}
        total = len(self.node_ids)
        adapter = self.ctx.adapter  # open the warehouse once, before the workers start

        def finish(result: NodeResult) -> None:
            results[result.unique_id] = result
            self.reporter.node_done(len(results), total, result)

        with ThreadPoolExecutor(max_workers=self.ctx.thread_count, thread_name_prefix="bqbatch") as pool:
            while pending or running:
                for uid in [u for u, deps in pending.items() if not deps]:
                    del pending[uid]
                    running[pool.submit(self._execute, uid)] = uid
                if not running:
                    break
                done = self._wait_some(running, pending)
                for future in done:
                    uid = running.pop(future)
                    result = future.result()
                    finish(result)
                    for child in graph.children[uid]:
                        if child in pending:
                            pending[child].discard(uid)
                    if result.status != "success":
                        for skipped in graph.sorted(graph.descendants(uid) & set(pending)):
                            del pending[skipped]
                            node = self.manifest.node(skipped)
                            finish(NodeResult(skipped, node.name, _kind(node), "skipped",
                                              f"skipped because '{self.manifest.node(uid).name}' did not succeed",
                                              relation=str(self.manifest.relations[skipped])))
                            for grandchild in graph.children[skipped]:
                                if grandchild in pending:
                                    pending[grandchild].discard(skipped)
        del adapter
        return [results[uid] for uid in self.node_ids if uid in results]

    def _wait_some(self, running: dict, pending: dict) -> set:
        try:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:
            if self.interrupted.is_set():
                raise  # a second Ctrl-C: stop at once
            self.interrupted.set()
            pending.clear()
            jobs = ("batch jobs being waited for are cancelled" if self.options.cancel_on_interrupt
                    else "batch jobs keep running")
            self.reporter.line((f"Interrupted: finishing the nodes in flight; {jobs}.", "yellow"))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
        return done

    # -- one node ----------------------------------------------------------------

    def _execute(self, uid: str) -> NodeResult:
        node = self.manifest.node(uid)
        result = NodeResult(uid, node.name, _kind(node), "success", relation=str(self.manifest.relations[uid]))
        start = time.perf_counter()
        try:
            if isinstance(node, Seed):
                result.rows = self._seed(node)
            else:
                self._model(node, result)
        except BqbatchError as e:
            result.status, result.message = "error", str(e)
        except Exception as e:  # a bug or an unexpected driver error: still one node's failure
            result.status, result.message = "error", f"{type(e).__name__}: {e}"
            if self.options.debug:
                import traceback

                result.message += "\n" + traceback.format_exc()
        result.execution_time = time.perf_counter() - start
        return result

    def _ensure_schema(self, schema: str) -> None:
        with self._schema_lock:
            if schema not in self._schemas:
                self.ctx.adapter.create_schema(schema)
                self._schemas.add(schema)

    def _seed(self, seed: Seed) -> int:
        relation = self.manifest.relations[seed.unique_id]
        self._ensure_schema(relation.schema)
        return self.ctx.adapter.load_csv(relation, seed.abs_path, seed.config.get("column_types"))

    def _model(self, model: Model, result: NodeResult) -> None:
        compiled = compile_model(self.manifest, model)
        self._ensure_schema(compiled.relation.schema)
        self._hooks(model, model.config.pre_hook, "pre_hook")
        adapter = self.ctx.adapter
        kind = model.config.materialized
        if kind == "view":
            adapter.create_view(compiled.relation, compiled.query)
        elif kind == "table":
            adapter.create_table_as(compiled.relation, compiled.query)
            result.rows = adapter.row_count(compiled.relation)
        else:
            from bqbatch_sql.batch import run_batch_prediction

            run_batch_prediction(self, compiled, result)
        self._hooks(model, model.config.post_hook, "post_hook")

    def _hooks(self, model: Model, hooks: list[str], kind: str) -> None:
        for i, hook in enumerate(hooks):
            sql = render_hook(self.manifest, model, hook, i, kind).strip().rstrip(";")
            if sql:
                where = f"{model.path} {kind} #{i + 1}"
                self.ctx.adapter.execute(transpile(sql, self.ctx.dialect, path=where, model=model.name))


def _kind(node: Model | Seed) -> str:
    return "seed" if isinstance(node, Seed) else node.config.materialized
