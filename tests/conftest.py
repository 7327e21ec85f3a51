"""Shared fixtures: small projects written into tmp dirs, and the CLI run in-process."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture
def make_project(tmp_path, monkeypatch):
    """make_project({"models/a.sql": "select 1 as x"}) -> project dir with a default bqbatch_project.yml."""
    # Keep the developer's own ~/.bqbatch and $BQBATCH_PROFILES_DIR out of the tests.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BQBATCH_PROFILES_DIR", raising=False)

    def make(files: dict[str, str], name: str = "proj") -> Path:
        root = tmp_path / name
        files = {"bqbatch_project.yml": "name: demo\n", **files}
        return write_tree(root, files)

    return make


@pytest.fixture
def cli():
    """cli("run", "--project-dir", p) -> click Result; the CLI runs in-process."""
    from bqbatch_sql.cli import main

    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke
