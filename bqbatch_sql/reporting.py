"""What a run prints: a line per node as it ends, batch job progress, and a summary.

On a terminal lines are coloured and batch jobs get a rich progress bar; otherwise (CI,
Airflow logs, a pipe) plain lines, one per state change or progress step, so logs stay
readable. Plain lines never import rich (~30 ms of a 1 s command): they are written as
rich would write them to a file, control characters dropped and tabs expanded. Lines
are text, never markup: a model name or an error message prints as it is, `[x]` and
`:a:` included.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Union

# A piece of a line: text, or (text, rich style) coloured on a terminal.
Piece = Union[str, tuple[str, str]]
# What rich drops from text it prints (BEL, BS, VT, FF, CR): plain lines drop the same.
_DROPPED_CONTROLS = dict.fromkeys((7, 8, 11, 12, 13))


@dataclass
class NodeResult:
    unique_id: str
    name: str
    kind: str  # view, table, batch_prediction, seed
    status: str  # success, error, skipped
    message: str = ""
    execution_time: float = 0.0
    rows: int | None = None
    relation: str = ""
    started_at: float = field(default_factory=time.time)
    batch: dict[str, Any] | None = None  # job name, state, completion stats, tokens


def _maybe_terminal() -> bool:
    """False where rich would surely see no terminal: stdout is no tty and neither FORCE_COLOR nor
    TTY_COMPATIBLE (rich's overrides) is set. Where it may be one, rich decides."""
    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return True
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except ValueError:  # a closed stdout
        return False


class Reporter:
    """console: a rich Console to print through (tests pass one); by default rich's on a
    terminal, and plain lines on sys.stdout elsewhere."""

    def __init__(self, console: Any = None):
        if console is None and _maybe_terminal():
            from rich.console import Console

            console = Console(highlight=False, soft_wrap=True)
        self.console = console
        self.interactive = console is not None and console.is_terminal
        self._lock = threading.Lock()

    def line(self, *pieces: Piece) -> None:
        """Print one line made of `pieces`: text, or (text, style) coloured on a terminal."""
        with self._lock:
            if self.console is not None:
                from rich.text import Text

                self.console.print(Text.assemble(*pieces))
                return
            text = "".join(p if isinstance(p, str) else p[0] for p in pieces)
            out = sys.stdout  # looked up at each line, as rich does: click's test runner swaps it
            out.write(text.translate(_DROPPED_CONTROLS).expandtabs(8) + "\n")
            out.flush()  # each line reaches the log as it happens, as rich's did

    def plain(self, text: str) -> None:
        self.line(text)

    def node_done(self, index: int, total: int, result: NodeResult) -> None:
        style = {"success": "green", "error": "red", "skipped": "yellow"}[result.status]
        label = {"success": "OK", "error": "ERROR", "skipped": "SKIP"}[result.status]
        rows = f"{result.rows:,} rows, " if result.rows is not None else ""
        timing = f"[{rows}{result.execution_time:.2f}s]" if result.status != "skipped" else ""
        self.line(f"{index} of {total} ", (f"{label:<5}", style),
                  f" {result.kind} {result.relation or result.name} {timing}")
        if result.status == "error":
            for text_line in result.message.splitlines():
                self.line("    ", (text_line, "red"))
        elif result.message:
            self.line(f"    {result.message}")
        if (result.batch and "rows" in result.batch
                and not any(result.batch.get(k) for k in ("reused", "submitted", "interrupted"))):
            b = result.batch
            spent = ""
            if "cost_usd" in b:
                from bqbatch_sql.cost import format_usd

                spent = (f"; cost {format_usd(b['cost_usd'])} ({b['price']})" if b.get("price")
                         else "; cost unknown (no batch price for this model: see `prices:` in bqbatch_project.yml)")
            rows = f"{b['rows']:,} rows: {b['succeeded']:,} succeeded, {b['failed']:,} failed"
            if b.get("kind") in ("incremental", "retry"):  # tokens and cost are those of the rows sent this run
                rows = f"{b['submitted_rows']:,} rows sent, output {rows}"
            self.line(f"    {rows}; tokens {b['prompt_tokens']:,} in, {b['output_tokens']:,} out, "
                      f"{b['total_tokens']:,} total{spent}")

    def summary(self, results: list[NodeResult], elapsed: float) -> None:
        counts = {s: sum(r.status == s for r in results) for s in ("success", "error", "skipped")}
        colour = "green" if not counts["error"] and not counts["skipped"] else "red"
        self.line("\n", (f"Finished {len(results)} node(s) in {elapsed:.2f}s: "
                         f"{counts['success']} ok, {counts['error']} error, {counts['skipped']} skipped.", colour))

    def job_progress(self, model: str) -> "JobProgress":
        return JobProgress(self, model)


class JobProgress:
    """Progress of one batch job: a live bar on a terminal; elsewhere a line per change of
    state, and for counts at most one line every PLAIN_EVERY_SECONDS (a log stays short
    however often the job is polled)."""

    PLAIN_EVERY_SECONDS = 2.0
    clock = staticmethod(time.monotonic)

    def __init__(self, reporter: Reporter, model: str):
        self.reporter = reporter
        self.model = model
        self._last: tuple | None = None
        self._printed_at = float("-inf")
        self._progress = None
        self._task = None
        if reporter.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=reporter.console, transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(model, total=None)

    def update(self, state: str, done: int, total: int | None, failed: int = 0) -> None:
        key = (state, done, total)
        if key == self._last:
            return
        state_changed = self._last is None or self._last[0] != state
        self._last = key
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self.model} {state}", completed=done, total=total)
        elif state_changed or self.clock() - self._printed_at >= self.PLAIN_EVERY_SECONDS:
            self._printed_at = self.clock()
            of = f"{done:,}/{total:,} rows" if total else f"{done:,} rows"
            self.reporter.plain(f"    {self.model}: {state} {of}" + (f" ({failed:,} failed)" if failed else ""))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
