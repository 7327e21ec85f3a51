"""Render stage: Jinja over model files, in two passes as dbt does.

The parse pass runs every model's template once to record what it calls:
`ref`, `source` and `config`. The run pass renders again with those resolved to
relations of the target. Macros (the project's and the built-in library) are
compiled once and shared; the per-model state they see (`this`, `ref`, ...) lives
in a ContextVar, so one Environment serves every model and every thread.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jinja2
from jinja2 import StrictUndefined

from bqbatch_sql.errors import RenderError, did_you_mean
from bqbatch_sql.macro_helpers import MACRO_GLOBALS
from bqbatch_sql.nodes import Model, Relation
from bqbatch_sql.static_render import StaticTemplate, compile_static, render_static


@dataclass
class TargetInfo:
    """What `{{ target }}` shows a template."""

    name: str
    type: str
    schema: str
    database: str | None
    dialect: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "schema": self.schema, "dataset": self.schema,
                "database": self.database, "project": self.database, "dialect": self.dialect}


@dataclass
class ParseRecord:
    """What one model's parse pass called, with the template line of each call."""

    refs: list[tuple[str, int | None]] = field(default_factory=list)
    sources: list[tuple[str, str, int | None]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Frame:
    """The state templates and macros see while one node renders."""

    label: str  # "Model 'x' (models/x.sql)" for messages
    path: str
    this: Relation | None
    record: ParseRecord | None  # set in the parse pass
    resolve_ref: Callable[[str], Relation] | None = None
    resolve_source: Callable[[str, str], Relation] | None = None
    line: int | None = None  # the expression being evaluated by the static fast path

    def at_line(self, line: int) -> None:
        self.line = line


_current: ContextVar[_Frame | None] = ContextVar("bqbatch_render_frame", default=None)


def _frame() -> _Frame:
    frame = _current.get()
    if frame is None:
        raise RenderError("ref/source/config/this are only available while a model or hook renders.")
    return frame


class _ThisProxy:
    """`{{ this }}`: the relation of the node being rendered, quoted for BigQuery SQL."""

    def _relation(self) -> Relation:
        this = _frame().this
        if this is None:
            raise RenderError(f"{_frame().label}: 'this' is not defined here.")
        return this

    def __str__(self) -> str:
        return self._relation().sql("bigquery")

    def __getattr__(self, name: str) -> Any:
        relation = self._relation()
        if name == "identifier":
            return relation.name
        if name in ("dataset",):
            return relation.schema
        if name in ("project",):
            return relation.database
        return getattr(relation, name)


class RelationRef(str):
    """What ref() and source() return: renders as quoted SQL, and exposes the parts."""

    relation: Relation

    def __new__(cls, relation: Relation) -> "RelationRef":
        self = super().__new__(cls, relation.sql("bigquery"))
        self.relation = relation
        return self

    @property
    def name(self) -> str:
        return self.relation.name

    @property
    def schema(self) -> str:
        return self.relation.schema

    @property
    def database(self) -> str | None:
        return self.relation.database


def _template_line(path: str) -> int | None:
    """The template line currently executing in `path`, from the live Python stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == path:
            debug = frame.f_globals.get("__jinja_template__")
            if debug is not None:
                return debug.get_corresponding_lineno(frame.f_lineno)
        frame = frame.f_back
    current = _current.get()
    return current.line if current is not None and current.path == path else None


class Renderer:
    def __init__(self, macro_files: list[Path], project_root: Path, target: TargetInfo,
                 variables: dict[str, Any], project_vars: dict[str, Any], cache_dir: Path | None = None):
        self.root = project_root
        self.target = target
        self.vars = {**project_vars, **variables}
        self._sources: dict[str, str] = {}
        self.env = jinja2.Environment(
            loader=jinja2.FunctionLoader(self._load),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            cache_size=-1,
            bytecode_cache=_bytecode_cache(cache_dir),
        )
        self.env.globals.update(MACRO_GLOBALS)
        self.env.globals.update(
            ref=self._ref, source=self._source, config=self._config, var=self._var, env_var=_env_var,
            this=_ThisProxy(), target=target.as_dict(), is_incremental=lambda: False,
            exceptions={"raise_compiler_error": self._raise},
        )
        self._static: dict[str, StaticTemplate | None] = {}  # template text -> its static form
        self.macros: dict[str, str] = {}  # macro name -> file that defines it
        for path in macro_files:
            self._load_macro_file(path)

    # -- loading ---------------------------------------------------------------

    def _load(self, name: str):
        source = self._sources[name]
        return source, name, lambda: True

    def _rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:  # the built-in library, installed with bqbatch
            return f"bqbatch built-in macros/{path.name}"

    def _load_macro_file(self, path: Path) -> None:
        name = self._rel(path)
        self._sources[name] = path.read_text(encoding="utf-8")
        frame = _Frame(label=f"Macro file '{name}'", path=name, this=None, record=None)
        token = _current.set(frame)
        try:
            module = self.env.get_template(name).make_module()
        except jinja2.TemplateSyntaxError as e:
            raise RenderError(f"Failed to load macros from '{name}': Jinja syntax error at line {e.lineno}: {e.message}") from None
        except RenderError:
            raise
        except Exception as e:  # a macro file must only define macros
            raise RenderError(f"Failed to load macros from '{name}': {e}") from None
        finally:
            _current.reset(token)
        for macro_name in dir(module):
            if macro_name.startswith("_"):
                continue
            value = getattr(module, macro_name)
            if isinstance(value, jinja2.runtime.Macro):
                # A project macro overrides a built-in one of the same name; built-ins load first.
                self.macros[macro_name] = name
                self.env.globals[macro_name] = value

    def add_template(self, name: str, source: str) -> None:
        self._sources[name] = source

    # -- globals that templates call ---------------------------------------------

    def _ref(self, name: str, version: Any = None) -> RelationRef:
        frame = _frame()
        if frame.record is not None:
            frame.record.refs.append((name, _template_line(frame.path)))
            return RelationRef(Relation(self.target.database, self.target.schema, name))
        assert frame.resolve_ref is not None
        return RelationRef(frame.resolve_ref(name))

    def _source(self, source_name: str, table_name: str) -> RelationRef:
        frame = _frame()
        if frame.record is not None:
            frame.record.sources.append((source_name, table_name, _template_line(frame.path)))
            return RelationRef(Relation(self.target.database, source_name, table_name))
        assert frame.resolve_source is not None
        return RelationRef(frame.resolve_source(source_name, table_name))

    def _config(self, *args: Any, **kwargs: Any) -> str:
        frame = _frame()
        if args:
            raise RenderError(f"{frame.label}: config() takes keyword arguments only, e.g. config(materialized='table').")
        if frame.record is not None:
            frame.record.config.update(kwargs)
        return ""

    def _var(self, name: str, default: Any = jinja2.Undefined) -> Any:
        if name in self.vars:
            return self.vars[name]
        if default is not jinja2.Undefined:
            return default
        frame = _current.get()
        line = _template_line(frame.path) if frame else None
        where = f"{frame.label}, line {line}" if frame and line else (frame.label if frame else "A template")
        raise RenderError(
            f"{where}: var('{name}') is not defined.{did_you_mean(name, list(self.vars))} "
            f"Define it under 'vars:' in bqbatch_project.yml, pass --vars '{{{name}: ...}}', "
            f"or give a default: var('{name}', 'default')."
        )

    def _raise(self, message: str) -> None:
        frame = _current.get()
        raise RenderError(f"{frame.label if frame else 'Template'}: {message}")

    # -- rendering -----------------------------------------------------------------

    def parse(self, model: Model, this: Relation) -> ParseRecord:
        record = ParseRecord()
        self._render(model.path, model.raw_sql, _Frame(_label(model), model.path, this, record))
        return record

    def render(self, model: Model, this: Relation, resolve_ref: Callable[[str], Relation],
               resolve_source: Callable[[str, str], Relation]) -> str:
        return self._render(model.path, model.raw_sql,
                            _Frame(_label(model), model.path, this, None, resolve_ref, resolve_source))

    def render_snippet(self, name: str, text: str, label: str, this: Relation | None,
                       resolve_ref: Callable[[str], Relation] | None = None,
                       resolve_source: Callable[[str, str], Relation] | None = None,
                       extra: dict[str, Any] | None = None) -> str:
        """Hooks and other SQL that bqbatch renders on a node's behalf."""
        return self._render(name, text, _Frame(label, name, this, None, resolve_ref, resolve_source), extra)

    def _render(self, name: str, text: str, frame: _Frame, extra: dict[str, Any] | None = None) -> str:
        if extra is None:
            if text not in self._static:
                self._static[text] = compile_static(text, self.env.globals)
            static = self._static[text]
            if static is not None:
                return self._render_static(name, static, frame)
        self._sources.setdefault(name, text)
        if self._sources[name] != text:
            self._sources[name] = text
            self.env.cache.clear() if self.env.cache is not None else None
        token = _current.set(frame)
        try:
            return self.env.get_template(name).render(extra or {})
        except jinja2.TemplateSyntaxError as e:
            where = e.filename or name
            raise RenderError(
                f"{frame.label}: Jinja syntax error in '{where}' at line {e.lineno}: {e.message}"
            ) from None
        except RenderError as e:
            raise _located(e, frame, name, self._sources) from None
        except jinja2.UndefinedError as e:
            line, where = _error_location(e, name, self._sources)
            raise RenderError(
                f"{frame.label}{_at(line)}{where}: {e.message}. Check the spelling, or define it "
                f"(a macro in macros/, a var in bqbatch_project.yml)."
            ) from None
        except Exception as e:
            line, where = _error_location(e, name, self._sources)
            raise RenderError(f"{frame.label}{_at(line)}{where}: {type(e).__name__}: {e}") from e
        finally:
            _current.reset(token)


    def _render_static(self, name: str, static: StaticTemplate, frame: _Frame) -> str:
        token = _current.set(frame)
        try:
            return render_static(static, self.env.globals, frame.at_line)
        except RenderError as e:
            raise _located(e, frame, name, self._sources) from None
        except Exception as e:  # e.g. a macro called with an argument it does not take
            line, where = _error_location(e, name, self._sources)
            raise RenderError(f"{frame.label}{_at(line or frame.line)}{where}: {type(e).__name__}: {e}") from e
        finally:
            _current.reset(token)


def _located(err: RenderError, frame: _Frame, name: str, sources: dict[str, str]) -> RenderError:
    """A RenderError raised inside a macro helper, prefixed with the model, file and line."""
    message = str(err)
    if message.startswith(frame.label):
        return err
    line, where = _error_location(err, name, sources)
    return RenderError(f"{frame.label}{_at(line or frame.line)}{where}: {message}")


def _bytecode_cache(cache_dir: Path | None) -> jinja2.BytecodeCache | None:
    """Compiled templates kept across runs: compiling Jinja is most of a cold parse.

    Jinja keys each entry by template name and source checksum, so an edited model
    is never served stale code.
    """
    if cache_dir is None:
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only project still compiles, only slower
    return jinja2.FileSystemBytecodeCache(str(cache_dir))


def _label(model: Model) -> str:
    return f"Model '{model.name}' ({model.path})"


def _at(line: int | None) -> str:
    return f", line {line}" if line else ""


def _error_location(err: BaseException, name: str, sources: dict[str, str]) -> tuple[int | None, str]:
    """(line in the template `name`, " (in 'macros/x.sql', line N)" for the deepest macro frame or "")."""
    line, where = None, ""
    for entry in traceback.extract_tb(err.__traceback__):
        if entry.filename == name:
            line, where = entry.lineno, ""
        elif entry.filename in sources:
            where = f" (in '{entry.filename}', line {entry.lineno})"
    return line, where


def _env_var(name: str, default: Any = None) -> str:
    value = os.environ.get(name)
    if value is not None:
        return value
    if default is not None:
        return default
    raise RenderError(f"env_var('{name}'): the environment variable is not set and no default was given.")
