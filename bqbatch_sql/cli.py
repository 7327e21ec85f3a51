"""Command line: options -> Context -> one call -> print. No SQL and no SDK calls here.

Imports stay light at module level: `bqbatch --help` must not load sqlglot, DuckDB
or the cloud SDKs.

Run as the program (`program`: the `bqbatch` console script, `python -m bqbatch_sql`), a project
command ends the process with os._exit once its context is closed (DuckDB checkpointed),
no worker thread is left, the atexit handlers have run (logging flushed, temporary
directories removed) and stdout and stderr are flushed: the interpreter's own shutdown,
a garbage collection over ~100,000 objects and then the teardown of every module, had
nothing left to save and took ~0.2 s of every command (from the 'Finished' line to the
exit of `bqbatch build`: 10 rows 0.24-0.36 s -> 0.03 s; 1M rows 0.25-0.29 s -> 0.07-0.10 s,
DuckDB's checkpoint included).
Invoked through `main` (click's CliRunner, `main([...])`, a script's own call), the CLI
returns or raises SystemExit as any click program does.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

import click

from bqbatch_sql import __version__

# The contexts made by the commands of this process, when it runs as the program (else None).
_program_contexts: list | None = None


def program() -> None:
    """The `bqbatch` program (the console script, `python -m bqbatch_sql`): the CLI on
    sys.argv, then the process ends as `_end_program` says. Calling `main` instead
    (click's CliRunner, `main([...])`, a script of one's own) exits the usual way."""
    global _program_contexts

    _program_contexts = []
    try:
        main()
    except SystemExit as stop:
        _end_program(stop, _program_contexts)


def _flushed() -> bool:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and not getattr(stream, "closed", False):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - the interpreter's exit reports it (and exits 120)
                return False
    return True


def _end_program(stop: SystemExit, contexts: list) -> NoReturn:
    """os._exit with the code of `stop` when nothing is left for the interpreter's shutdown to do;
    otherwise raise `stop`, for the usual exit."""
    code = 0 if stop.code is None else stop.code
    idle = all(t is threading.main_thread() or t.daemon or not t.is_alive() for t in threading.enumerate())
    # Only a project command, whose contexts are all closed: any other command (help, the emulator)
    # exits the usual way, and so does a run that left a warehouse open or a worker running.
    if (contexts and all(c.closed for c in contexts) and idle
            and isinstance(code, int) and 0 <= code <= 255 and _flushed()):
        atexit._run_exitfuncs()  # what the interpreter runs first at exit; it clears them (never run twice)
        if _flushed():
            os._exit(code)
    gc.unfreeze()  # the interpreter's shutdown collects what _context_class froze, as it would have
    raise stop


def _common(func):
    """Options every project command takes."""
    options = [
        click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path), default=".",
                     show_default=True, help="Directory holding bqbatch_project.yml."),
        click.option("--profiles-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Directory holding profiles.yml (else $BQBATCH_PROFILES_DIR, the project dir, ~/.bqbatch/)."),
        click.option("--target", "-t", default=None, help="Target in the profile (default: the profile's `target`; 'local' without profiles.yml)."),
        click.option("--vars", "vars_", default=None, help="YAML mapping of variables, e.g. '{day: 2026-11-01}'."),
        click.option("--debug", is_flag=True, help="Show tracebacks of errors."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _selection(func):
    func = click.option("--exclude", multiple=True, help="Nodes to leave out (same syntax as --select).")(func)
    func = click.option("--select", "-s", multiple=True,
                        help="Nodes to act on: name, +name, name+, tag:x, path:models/sub, config.materialized:table.")(func)
    return func


def _context_class():
    """Context, imported. Run as the program, its imports (pydantic, sqlglot, Jinja, YAML: ~85,000
    objects that live as long as the process, ~600 of garbage) run without the cyclic garbage collector,
    and are then frozen out of its sight: otherwise it traverses them again and again as they load
    (40-60 ms of a 10-row build, a 30 ms full collection among them)."""
    if _program_contexts is None or not gc.isenabled() or "bqbatch_sql.context" in sys.modules:
        from bqbatch_sql.context import Context

        return Context
    gc.disable()
    try:
        from bqbatch_sql.context import Context
    finally:
        gc.freeze()
        gc.enable()
    return Context


def _context(project_dir: Path, profiles_dir: Path | None, target: str | None, vars_: str | None, threads: int | None = None):
    from bqbatch_sql.errors import BqbatchError

    Context = _context_class()

    variables = {}
    if vars_:
        import yaml

        try:
            variables = yaml.safe_load(vars_)
        except yaml.YAMLError as e:
            raise BqbatchError(f"--vars is not valid YAML: {e}") from None
        if not isinstance(variables, dict):
            raise BqbatchError("--vars must be a YAML mapping, e.g. --vars '{day: 2026-11-01}'.")
    ctx = Context(project_dir=project_dir, profiles_dir=profiles_dir, target_name=target, variables=variables,
                  threads=threads)
    if _program_contexts is not None:
        _program_contexts.append(ctx)
    return ctx


def _handle_errors(func):
    """BqbatchError -> 'Error: ...' and exit 1; --debug shows the traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from bqbatch_sql.errors import BqbatchError

        try:
            return func(*args, **kwargs)
        except BqbatchError as e:
            if kwargs.get("debug"):
                raise
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bqbatch")
def main():
    """bqbatch: SQL models in, Gemini batch predictions out.

    Models are BigQuery SQL files with Jinja macros (models/*.sql, macros/*.sql).
    A batch_prediction model builds a `request` column; `bqbatch run` materializes
    it, submits it as a batch prediction job, waits, and builds the parsed view.
    With no profiles.yml the project runs embedded: DuckDB under target/ and a
    local predictor that emulates Gemini.
    """


def _run_nodes(resource_types, project_dir, profiles_dir, target, vars_, debug, select, exclude,
               threads=None, full_refresh=False, command="run", **job_options):
    ctx = _context(project_dir, profiles_dir, target, vars_, threads)  # first: it imports sqlglot with the GC off
    from bqbatch_sql.jobs import exit_code
    try:
        results = ctx.run(select, exclude, resource_types=resource_types, full_refresh=full_refresh, debug=debug,
                          args={"command": command, "select": list(select), "exclude": list(exclude),
                                "full_refresh": full_refresh, "target": ctx.target.name}, **job_options)
    finally:
        ctx.close()
    code = exit_code(results, getattr(ctx, "interrupted", False))
    if code:
        sys.exit(code)


def _job_options(func):
    """How a run treats its batch jobs (exit codes: 0 ok, 1 error, 2 partially succeeded, 3 paused, 130 Ctrl-C)."""
    func = click.option("--cancel-on-interrupt", is_flag=True,
                        help="On Ctrl-C, cancel the batch jobs being waited for (default: leave them running).")(func)
    func = click.option("--no-wait", "no_wait", is_flag=True,
                        help="Submit batch jobs and return; `bqbatch wait` finishes them later.")(func)
    return func


@main.command()
@_common
@_selection
@click.option("--threads", type=int, default=None, help="Nodes to run at once (default: the target's threads).")
@click.option("--full-refresh", is_flag=True, help="Rebuild everything, predictions included.")
@click.option("--dry-run", is_flag=True,
              help="For each selected batch model, print the rows a run would submit, their estimated tokens and "
                   "cost; build and submit nothing.")
@_job_options
@_handle_errors
def run(project_dir, profiles_dir, target, vars_, debug, select, exclude, threads, full_refresh, dry_run, no_wait,
        cancel_on_interrupt):
    """Run the selected models in dependency order (views, tables, batch predictions).

    A batch job that is still running from an earlier run (same model, same SQL) is
    re-attached, never submitted twice. An incremental model submits only its new,
    changed and failed rows. Exit codes: 0 ok, 1 error (or, with --dry-run, a budget
    the run would exceed), 2 a job ended PARTIALLY_SUCCEEDED, 3 a job is PAUSED,
    130 interrupted.
    """
    _run_nodes({"model"}, project_dir, profiles_dir, target, vars_, debug, select, exclude, threads, full_refresh,
               command="run", wait=not no_wait, cancel_on_interrupt=cancel_on_interrupt, dry_run=dry_run)


@main.command()
@_common
@_selection
@click.option("--threads", type=int, default=None, help="Models to retry at once.")
@click.option("--cancel-on-interrupt", is_flag=True, help="On Ctrl-C, cancel the jobs being waited for.")
@_handle_errors
def retry(project_dir, profiles_dir, target, vars_, debug, select, exclude, threads, cancel_on_interrupt):
    """Resubmit the rows of batch models that have no answer (a status, or missing), and merge the answers in.

    Works on the request table and output the last run left (all batch models without
    --select). Each model gets up to config(max_retries=...) attempts (default 3) and
    stops early when an attempt makes no progress. Exit codes: 0 every row answered,
    1 error, 2 some rows still fail, 130 interrupted.
    """
    selection = tuple(select) or ("config.materialized:batch_prediction",)
    _run_nodes({"model"}, project_dir, profiles_dir, target, vars_, debug, selection, exclude, threads,
               command="retry", retry=True, cancel_on_interrupt=cancel_on_interrupt)


@main.command()
@_common
@_selection
@click.option("--threads", type=int, default=None, help="Nodes to run at once.")
@click.option("--full-refresh", is_flag=True, help="Rebuild everything, predictions included.")
@_job_options
@_handle_errors
def build(project_dir, profiles_dir, target, vars_, debug, select, exclude, threads, full_refresh, no_wait,
          cancel_on_interrupt):
    """Load seeds, then run models: the whole project in dependency order."""
    _run_nodes({"seed", "model"}, project_dir, profiles_dir, target, vars_, debug, select, exclude, threads,
               full_refresh, "build", wait=not no_wait, cancel_on_interrupt=cancel_on_interrupt)


@main.command()
@_common
@_selection
@click.option("--threads", type=int, default=None, help="Seeds to load at once.")
@_handle_errors
def seed(project_dir, profiles_dir, target, vars_, debug, select, exclude, threads):
    """Load seeds/*.csv into the target as tables, with inferred column types."""
    _run_nodes({"seed"}, project_dir, profiles_dir, target, vars_, debug, select, exclude, threads, command="seed")


@main.command(name="compile")
@_common
@_selection
@click.option("--validate", "validate_", is_flag=True,
              help="Also have the warehouse check each compiled query without running it (BigQuery: a dry run).")
@_handle_errors
def compile_(project_dir, profiles_dir, target, vars_, debug, select, exclude, validate_):
    """Render and parse the selected models; write target/compiled/ and target/manifest.json."""
    ctx = _context(project_dir, profiles_dir, target, vars_)
    try:
        compiled = ctx.compile(select, exclude)
        click.echo(f"Compiled {len(compiled)} model(s) to {ctx.project.target_dir / 'compiled'}")
        if validate_:
            from bqbatch_sql.jobs import dry_run_lines

            lines, failures = dry_run_lines(ctx, compiled)
    finally:
        ctx.close()
    if validate_:
        for line in lines:
            click.echo(line)
        if failures:
            click.echo(f"{failures} of {len(compiled)} model(s) failed validation "
                       f"(upstream models must exist in the warehouse: run them first).", err=True)
            sys.exit(1)


@main.command(name="ls")
@_common
@_selection
@click.option("--resource-type", type=click.Choice(["model", "seed", "all"]), default="all", show_default=True)
@click.option("--output", type=click.Choice(["name", "path", "json"]), default="name", show_default=True)
@_handle_errors
def ls_(project_dir, profiles_dir, target, vars_, debug, select, exclude, resource_type, output):
    """List the selected nodes in run order."""
    import json

    ctx = _context(project_dir, profiles_dir, target, vars_)
    types = None if resource_type == "all" else {resource_type}
    try:
        nodes = ctx.manifest.selectables()
        chosen = ctx.select(select, exclude, types)
    finally:
        ctx.close()
    for uid in chosen:
        node = nodes[uid]
        if output == "json":
            click.echo(json.dumps({"unique_id": uid, "name": node.name, "resource_type": node.resource_type,
                                   "path": node.path, "tags": node.tags,
                                   "materialized": node.config.get("materialized")}))
        else:
            click.echo(node.path if output == "path" else node.name)


@main.command()
@_common
@_handle_errors
def debug(project_dir, profiles_dir, target, vars_, debug):
    """Check the project, the profile and the connection to the warehouse."""
    ctx = _context(project_dir, profiles_dir, target, vars_)
    try:
        lines = ctx.debug_report()
    finally:
        ctx.close()
    for line in lines:
        click.echo(line)


@main.command()
@_common
@_selection
@_handle_errors
def validate(project_dir, profiles_dir, target, vars_, debug, select, exclude):
    """Check the request tables of batch_prediction models, row by row, without submitting.

    Materializes each selected model's <model>__requests table (its upstream models must
    exist: run `bqbatch build --exclude config.materialized:batch_prediction` first) and
    reports the invalid rows, counted by kind, with the first offenders and the fix.
    Exits 1 when any request is invalid.
    """
    ctx = _context(project_dir, profiles_dir, target, vars_)
    try:
        reports = ctx.validate(select, exclude)
    finally:
        ctx.close()
    if not reports:
        click.echo("No batch_prediction model is selected.")
    for report in reports:
        click.echo(report.render())
    if any(r.invalid or r.over_job_limit for r in reports):
        sys.exit(1)


@main.command(name="wait")
@_common
@_selection
@click.option("--cancel-on-interrupt", is_flag=True, help="On Ctrl-C, cancel the jobs being waited for.")
@_handle_errors
def wait_(project_dir, profiles_dir, target, vars_, debug, select, exclude, cancel_on_interrupt):
    """Wait for the submitted batch jobs of the selected models and finish them (output, checks, parsed view).

    Submits nothing: a model without a live job is reported and skipped. Exit codes
    as for `run`.
    """
    selection = tuple(select) or ("config.materialized:batch_prediction",)
    _run_nodes({"model"}, project_dir, profiles_dir, target, vars_, debug, selection, exclude, command="wait",
               attach_only=True, cancel_on_interrupt=cancel_on_interrupt)


@main.command()
@_common
@_selection
@_handle_errors
def status(project_dir, profiles_dir, target, vars_, debug, select, exclude):
    """Show the newest batch job of each selected batch_prediction model, and what its last run cost.

    One line per model: job, state, counts, age, console link; then the tokens (from
    usageMetadata) and cost of each model's last finished run.
    """
    ctx = _context(project_dir, profiles_dir, target, vars_)  # first: it imports sqlglot with the GC off
    from bqbatch_sql.jobs import status_rows
    try:
        rows = status_rows(ctx, select, exclude)
    finally:
        ctx.close()
    if not rows:
        click.echo("No batch_prediction model is selected.")
        return
    from bqbatch_sql.jobs import format_spend, format_status

    # Plain aligned columns, never wrapped or cut: ids and links are copied from here, and logs are grepped.
    for line in format_status(rows):
        click.echo(line)
    spend = format_spend(rows)
    if spend:
        click.echo("")
        for line in spend:
            click.echo(line)


@main.command()
@_common
@_selection
@_handle_errors
def cancel(project_dir, profiles_dir, target, vars_, debug, select, exclude):
    """Cancel the running batch jobs of the selected batch_prediction models (all of them without --select)."""
    ctx = _context(project_dir, profiles_dir, target, vars_)  # first: it imports sqlglot with the GC off
    from bqbatch_sql.jobs import cancel_jobs
    try:
        lines = cancel_jobs(ctx, select, exclude)
    finally:
        ctx.close()
    for line in lines or ["No batch_prediction model is selected."]:
        click.echo(line)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback only by default).")
@click.option("--port", type=int, default=9050, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="DuckDB file keeping datasets, tables and jobs across restarts (default: in memory).")
def emulator(host, port, data):
    """Serve local stand-ins of the BigQuery and Vertex AI batch prediction REST APIs.

    The real client libraries (google-cloud-bigquery, google-genai) work against it;
    point a `type: bigquery` target at it (api_endpoint, predictor.base_url) to run a
    production profile offline. Serves until Ctrl-C.
    """
    from bqbatch_sql.emulator.server import run_emulator

    run_emulator(host=host, port=port, data_path=data)
