"""The CLI as a user meets it: help, errors, and imports kept light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bqbatch_sql.cli import main
from projects import local_rows


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


def test_a_local_build_into_a_log_imports_neither_the_cloud_sdks_nor_rich(make_project):
    """rich draws for a terminal only (~30 ms of import); the cloud SDKs (~1.3 s) serve cloud targets only."""
    root = make_project({"seeds/reviews.csv": REVIEWS, "models/summaries.sql": SUMMARIES % ""})
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from bqbatch_sql.cli import main\n"
        f"r = CliRunner().invoke(main, ['build', '--project-dir', {str(root)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'Finished 2 node(s)' in r.output, r.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('google', 'rich'))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
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


# -- the end of the process --------------------------------------------------------------------------------
# Run as the program, a project command ends with os._exit once everything is closed and flushed;
# what a user sees must be what the interpreter's usual exit gave.

REVIEWS = "id,body\n" + "".join(f"{i},review {i}\n" for i in range(10))
SUMMARIES = """
{{ config(materialized='batch_prediction', model='gemini-2.5-flash'%s) }}
select id, {{ gemini_request(prompt="'Summarize: ' || body") }} as request from {{ ref('reviews') }}
"""
# A response function that leaves work behind: a thread (daemon or not) that writes a line after a
# while, and an atexit handler that writes one.
LEFTOVERS = """
import atexit, threading, time
from pathlib import Path

OUT = Path(__file__).with_name("leftovers.txt")
_started = []


def _write(line):
    with OUT.open("a") as f:
        f.write(line + "\\n")


def answer(request):
    if not _started:
        _started.append(True)
        atexit.register(_write, "atexit handler")
        daemon = {daemon}
        threading.Thread(target=lambda: (time.sleep(0.5), _write("thread")), daemon=daemon).start()
    return "ok"
"""


def _program(*args, cwd=None, env=None):
    """bqbatch run as a user runs it: the console script of this environment."""
    return subprocess.run([str(Path(sys.executable).with_name("bqbatch")), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_the_program_exits_with_the_command_code_its_output_flushed_and_the_warehouse_checkpointed(make_project):
    root = make_project({"seeds/reviews.csv": REVIEWS, "models/summaries.sql": SUMMARIES % ""})
    done = _program("build", "--project-dir", root)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("1 of 2 OK    seed main.reviews [10 rows")
    assert lines[-1].startswith("Finished 2 node(s) in ") and lines[-1].endswith(": 2 ok, 0 error, 0 skipped.")
    assert done.stderr == ""
    target = root / "target"
    assert not (target / "bqbatch.duckdb.wal").exists()  # closed, checkpointed: no log left to replay
    assert [r["status"] for r in json.loads((target / "run_results.json").read_text())["results"]] == ["success"] * 2
    assert local_rows(root, "select count(*), count(response) from summaries") == [(10, 10)]

    failed = _program("run", "--project-dir", root, "-s", "nope")
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr == "Error: The selector 'nope' matches no model or seed.\n"
    assert _program("ls", "--project-dir", root).stdout == "reviews\nsummaries\n"


@pytest.mark.parametrize("daemon", [False, True])
def test_the_program_waits_for_threads_left_running_and_runs_atexit_handlers(make_project, daemon):
    """A non-daemon thread is waited for, as Python does; a daemon thread is not; atexit handlers run."""
    options = ", predictor_options={'response_function': 'leftovers:answer'}"
    root = make_project({"seeds/reviews.csv": REVIEWS, "models/summaries.sql": SUMMARIES % options,
                         "leftovers.py": LEFTOVERS.replace("{daemon}", str(daemon))})
    done = _program("build", "--project-dir", root, env={**os.environ, "PYTHONPATH": str(root)})
    assert (done.returncode, done.stderr) == (0, ""), done.stdout + done.stderr
    written = (root / "leftovers.txt").read_text().splitlines()
    assert written == (["atexit handler"] if daemon else ["thread", "atexit handler"])


def test_called_in_process_the_cli_raises_system_exit_and_never_ends_the_process(make_project, monkeypatch):
    root = make_project({"models/a.sql": "select 1 as x"})
    with pytest.raises(SystemExit) as stop:
        main(["ls", "--project-dir", str(root)])
    assert stop.value.code == 0
    # No arguments (click reads sys.argv), yet called from a test module, not the program's __main__.
    monkeypatch.setattr(sys, "argv", ["bqbatch", "ls", "--project-dir", str(root)])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 0
