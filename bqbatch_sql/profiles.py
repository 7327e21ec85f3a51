"""Find and read profiles.yml: which warehouse and predictor a target means.

Looked up in --profiles-dir, $BQBATCH_PROFILES_DIR, the project directory, then
~/.bqbatch/. With no profiles.yml anywhere the project runs on the built-in `local`
target (DuckDB under target/, local predictor). Values may use env_var('X', 'default');
they are rendered before YAML is read, and never echoed back in errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml
from pydantic import ValidationError

from bqbatch_sql.config import DuckDBTarget, ProfileConfig, TargetConfig, describe_validation_error
from bqbatch_sql.errors import ProfileError, did_you_mean

PROFILES_FILE = "profiles.yml"
BUILTIN_TARGET = "local"


@dataclass
class ResolvedTarget:
    name: str
    config: TargetConfig
    profiles_path: Path | None  # None: the built-in local target


def find_profiles(profiles_dir: Path | None, project_dir: Path) -> Path | None:
    if profiles_dir is not None:
        path = profiles_dir / PROFILES_FILE
        if not path.is_file():
            raise ProfileError(f"--profiles-dir '{profiles_dir}' has no {PROFILES_FILE}.")
        return path
    candidates = []
    if os.environ.get("BQBATCH_PROFILES_DIR"):
        candidates.append(Path(os.environ["BQBATCH_PROFILES_DIR"]))
    candidates += [project_dir, Path.home() / ".bqbatch"]
    for directory in candidates:
        if (directory / PROFILES_FILE).is_file():
            return directory / PROFILES_FILE
    return None


def _env_var(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise ProfileError(
            f"{PROFILES_FILE} uses env_var('{name}'), which is not set. Export it, or give a default: env_var('{name}', '...')."
        )
    return value


def _render_values(value, path: Path):
    """Every string value with Jinja in it, rendered with env_var()."""
    if isinstance(value, dict):
        return {k: _render_values(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_values(v, path) for v in value]
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        env.globals["env_var"] = _env_var
        try:
            return env.from_string(value).render()
        except jinja2.TemplateError as e:
            raise ProfileError(f"Failed to render a value in '{path}': {e}") from None
    return value


def resolve_target(profile_name: str | None, target_name: str | None, profiles_dir: Path | None,
                   project_dir: Path) -> ResolvedTarget:
    path = find_profiles(profiles_dir, project_dir)
    if path is None:
        if target_name not in (None, BUILTIN_TARGET):
            raise ProfileError(
                f"Target '{target_name}' was asked for, but no {PROFILES_FILE} was found (looked in --profiles-dir, "
                f"$BQBATCH_PROFILES_DIR, the project directory and ~/.bqbatch/). Without one, only the built-in "
                f"'{BUILTIN_TARGET}' target exists; see profiles.example.yml."
            )
        return ResolvedTarget(BUILTIN_TARGET, DuckDBTarget(), None)

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ProfileError(f"Failed to read '{path}': invalid YAML{at}.") from None
    # Values are rendered after YAML is read (as dbt does), so env_var() in a comment
    # or in a target not chosen costs nothing.
    if not isinstance(doc, dict) or not doc:
        raise ProfileError(f"'{path}' defines no profile. Expected '<profile>: {{target: ..., outputs: {{...}}}}'.")
    if profile_name is None:
        if len(doc) != 1:
            raise ProfileError(f"'{path}' has several profiles {sorted(doc)}; set 'profile:' in bqbatch_project.yml.")
        profile_name = next(iter(doc))
    if profile_name not in doc:
        raise ProfileError(
            f"Profile '{profile_name}' (named in bqbatch_project.yml) is not in '{path}'.{did_you_mean(profile_name, list(doc))}"
        )
    raw = doc[profile_name]
    if not isinstance(raw, dict) or not isinstance(raw.get("outputs"), dict) or "target" not in raw:
        raise ProfileError(
            f"Profile '{profile_name}' in '{path}' needs 'target:' and 'outputs:' (see profiles.example.yml)."
        )
    name = target_name or _render_values(raw["target"], path)
    outputs = raw["outputs"]
    if name not in outputs:
        raise ProfileError(
            f"Target '{name}' is not in profile '{profile_name}' ({path}); it has {sorted(outputs)}."
            f"{did_you_mean(str(name), list(outputs))}"
        )
    # Only the chosen target is rendered and checked: a dev run needs no prod secrets.
    try:
        profile = ProfileConfig.model_validate(
            {**{k: v for k, v in raw.items() if k != "outputs"}, "target": name,
             "outputs": {name: _render_values(outputs[name], path)}})
    except ValidationError as e:
        raise ProfileError(describe_validation_error(e, f"Profile '{profile_name}' in '{path}'")) from None
    return ResolvedTarget(name, profile.outputs[name], path)
