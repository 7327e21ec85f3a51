"""The CLI as a user meets it: help, errors, and imports kept light."""

from __future__ import annotations

import subprocess
import sys


def test_help_lists_the_commands(cli):
    out = cli("--help").output
    for command in ("build", "compile", "debug", "ls", "run", "seed"):
        assert command in out


def test_each_command_explains_itself(cli):
    assert "--select" in cli("run", "--help").output
    assert "--full-refresh" in cli("build", "--help").output


def test_help_and_ls_do_not_import_the_cloud_sdks(make_project):
    root = make_project({"models/m.sql": "select 1 as x"})
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from bqbatch_sql.cli import main\n"
        f"r = CliRunner().invoke(main, ['ls', '--project-dir', {str(root)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(main, ['compile', '--project-dir', {str(root)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "loaded = [m for m in sys.modules if m.startswith(('google.genai', 'google.cloud'))]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_errors_print_without_traceback_and_exit_1(make_project, cli):
    root = make_project({"models/m.sql": "select * from {{ ref('nope') }}"})
    result = cli("run", "--project-dir", root)
    assert result.exit_code == 1
    assert result.output.startswith("Error: Model 'm' (models/m.sql), line 1 depends on a node named 'nope'")
    assert "Traceback" not in result.output


def test_ls_output_formats(make_project, cli):
    root = make_project({"models/a.sql": "select 1", "models/b.sql": "select * from {{ ref('a') }}"})
    assert cli("ls", "--project-dir", root).output.split() == ["a", "b"]
    assert cli("ls", "--project-dir", root, "--output", "path", "-s", "b").output.split() == ["models/b.sql"]
    assert '"materialized": "view"' in cli("ls", "--project-dir", root, "--output", "json").output


def test_vars_must_be_a_mapping(make_project, cli):
    root = make_project({"models/a.sql": "select {{ var('n') }} as n"})
    result = cli("compile", "--project-dir", root, "--vars", "[1, 2]")
    assert result.exit_code == 1 and "--vars must be a YAML mapping" in result.output
    assert cli("compile", "--project-dir", root, "--vars", "{n: 3}").exit_code == 0
