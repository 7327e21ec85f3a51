from __future__ import annotations

import pytest

from bqbatch_sql.config import BigQueryTarget, DuckDBTarget
from bqbatch_sql.errors import ProfileError
from bqbatch_sql.profiles import resolve_target

PROFILE = """
demo:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('BQB_TEST_DB', 'target/dev.duckdb') }}"
      schema: analytics
    prod:
      type: bigquery
      project: my-project
      dataset: ml
      location: us-central1
"""


def test_no_profiles_file_means_the_builtin_local_target(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("BQBATCH_PROFILES_DIR", raising=False)
    target = resolve_target("demo", None, None, tmp_path)
    assert target.name == "local" and isinstance(target.config, DuckDBTarget)
    assert target.config.path == "target/bqbatch.duckdb"


def test_lookup_order_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "profiles.yml").write_text(PROFILE)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "profiles.yml").write_text(PROFILE.replace("analytics", "from_project_dir"))
    monkeypatch.setenv("BQBATCH_PROFILES_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("BQB_TEST_DB", "/tmp/x.duckdb")
    target = resolve_target("demo", None, None, tmp_path / "project")
    assert target.config.schema_ == "analytics"  # $BQBATCH_PROFILES_DIR wins over the project dir
    assert target.config.path == "/tmp/x.duckdb"
    monkeypatch.delenv("BQBATCH_PROFILES_DIR")
    assert resolve_target("demo", None, None, tmp_path / "project").config.schema_ == "from_project_dir"
    prod = resolve_target("demo", "prod", tmp_path / "env", tmp_path / "project")
    assert isinstance(prod.config, BigQueryTarget) and prod.config.dataset == "ml"


def test_unknown_key_is_rejected_with_did_you_mean(tmp_path):
    (tmp_path / "profiles.yml").write_text(PROFILE.replace("schema: analytics", "shema: analytics"))
    with pytest.raises(ProfileError, match="unknown key 'shema'. Did you mean 'schema'"):
        resolve_target("demo", None, tmp_path, tmp_path)


def test_missing_target_and_profile_names(tmp_path):
    (tmp_path / "profiles.yml").write_text(PROFILE)
    with pytest.raises(ProfileError, match="Target 'prd' is not in profile 'demo'.*Did you mean 'prod'"):
        resolve_target("demo", "prd", tmp_path, tmp_path)
    with pytest.raises(ProfileError, match="Profile 'dmeo' .* Did you mean 'demo'"):
        resolve_target("dmeo", None, tmp_path, tmp_path)


def test_unset_env_var_without_default_is_an_error_not_an_empty_value(tmp_path, monkeypatch):
    monkeypatch.delenv("BQB_SECRET", raising=False)
    (tmp_path / "profiles.yml").write_text(PROFILE.replace("'BQB_TEST_DB', 'target/dev.duckdb'", "'BQB_SECRET'"))
    with pytest.raises(ProfileError, match=r"env_var\('BQB_SECRET'\), which is not set"):
        resolve_target("demo", None, tmp_path, tmp_path)


def test_target_without_profiles_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("BQBATCH_PROFILES_DIR", raising=False)
    with pytest.raises(ProfileError, match="only the built-in 'local' target"):
        resolve_target("demo", "prod", None, tmp_path)


def test_profiles_example_is_a_valid_profile(tmp_path, monkeypatch):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "profiles.example.yml"
    (tmp_path / "profiles.yml").write_text(example.read_text())
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    assert resolve_target("bqbatch_example", "local", tmp_path, tmp_path).config.type == "duckdb"
    prod = resolve_target("bqbatch_example", "prod", tmp_path, tmp_path).config
    assert (prod.type, prod.project, prod.predictor.type) == ("bigquery", "my-project", "vertex")


def test_only_the_chosen_target_needs_its_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    profile = PROFILE.replace("project: my-project", "project: \"{{ env_var('GOOGLE_CLOUD_PROJECT') }}\"")
    (tmp_path / "profiles.yml").write_text(profile + "# keyfile: \"{{ env_var('NOT_SET_ANYWHERE') }}\"\n")
    assert resolve_target("demo", "dev", tmp_path, tmp_path).config.type == "duckdb"
    with pytest.raises(ProfileError, match="GOOGLE_CLOUD_PROJECT"):
        resolve_target("demo", "prod", tmp_path, tmp_path)
