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

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals["env_var"] = _env_var
    try:
        text = env.from_string(path.read_text(encoding="utf-8")).render()
    except jinja2.TemplateError as e:
        raise ProfileError(f"Failed to render '{path}': {e}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ProfileError(f"Failed to read '{path}': invalid YAML{at}.") from None
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
    try:
        profile = ProfileConfig.model_validate(doc[profile_name])
    except ValidationError as e:
        raise ProfileError(describe_validation_error(e, f"Profile '{profile_name}' in '{path}'")) from None
    name = target_name or profile.target
    if name not in profile.outputs:
        raise ProfileError(
            f"Target '{name}' is not in profile '{profile_name}' ({path}); it has {sorted(profile.outputs)}."
            f"{did_you_mean(name, list(profile.outputs))}"
        )
    return ResolvedTarget(name, profile.outputs[name], path)
