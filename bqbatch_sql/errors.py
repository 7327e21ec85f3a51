"""The exception tree. Every message says what, where (file, model, row, field) and the fix.

BqbatchError
├── ProjectError       project files: bqbatch_project.yml, models/*.yml, seeds, layout
├── ProfileError       profiles.yml: missing target, unknown keys, bad values
├── RenderError        Jinja: syntax, missing ref/source/var, macro failures
├── CompileError       sqlglot: SQL syntax, constructs that cannot be transpiled safely
├── SelectionError     --select / --exclude that name nothing or are malformed
├── DagError           cycles between models
├── WarehouseError     a query the warehouse refused
├── ConfigError        a model's config() that is invalid (materialization, model id, ...)
├── RequestTableError  a request table that breaks the batch input contract
└── PredictorError     a batch job that could not be submitted, tracked or completed
"""

from __future__ import annotations


class BqbatchError(Exception):
    """Root of every error bqbatch raises on purpose; the CLI prints it without a traceback."""


class ProjectError(BqbatchError):
    pass


class ProfileError(BqbatchError):
    pass


class RenderError(BqbatchError):
    pass


class CompileError(BqbatchError):
    pass


class SelectionError(BqbatchError):
    pass


class DagError(BqbatchError):
    pass


class WarehouseError(BqbatchError):
    pass


class ConfigError(BqbatchError):
    pass


class RequestTableError(BqbatchError):
    pass


class PredictorError(BqbatchError):
    pass


def did_you_mean(word: str, choices: "list[str] | set[str] | tuple[str, ...]") -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class JobNotFoundError(PredictorError):
    """The predictor does not know the job (expired, deleted, or a local job of a finished process)."""
