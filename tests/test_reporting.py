"""What a batch job's progress prints where there is no terminal (CI logs, files)."""

from __future__ import annotations

import io

from rich.console import Console

from bqbatch_sql.reporting import JobProgress, NodeResult, Reporter


def test_plain_progress_prints_every_state_and_counts_at_most_every_two_seconds(monkeypatch):
    out = io.StringIO()
    reporter = Reporter(Console(file=out, force_terminal=False, width=200))
    now = [0.0]
    monkeypatch.setattr(JobProgress, "clock", staticmethod(lambda: now[0]))
    progress = reporter.job_progress("summaries")
    assert isinstance(progress, JobProgress) and not reporter.interactive
    for t, args in [(0.0, ("PENDING", 0, None)),         # printed: a new state
                    (0.1, ("RUNNING", 0, 1000)),         # printed: a new state
                    (0.5, ("RUNNING", 100, 1000)),       # held back: 0.4 s after the last line
                    (0.6, ("RUNNING", 100, 1000)),       # the same counts: nothing at all
                    (2.5, ("RUNNING", 600, 1000, 3)),    # printed: 2.4 s after the last line
                    (2.6, ("SUCCEEDED", 1000, 1000, 3))]:  # printed: a new state
        now[0] = t
        progress.update(*args)
    assert out.getvalue().splitlines() == [
        "    summaries: PENDING 0 rows",
        "    summaries: RUNNING 0/1,000 rows",
        "    summaries: RUNNING 600/1,000 rows (3 failed)",
        "    summaries: SUCCEEDED 1,000/1,000 rows (3 failed)",
    ]


RESULTS = [
    NodeResult("seed.demo.reviews", "reviews", "seed", "success", rows=1_000_000, execution_time=0.8,
               relation="main.reviews"),
    NodeResult("model.demo.[odd]:a:", "[odd]:a:", "table", "success", execution_time=0.05),
    NodeResult("model.demo.summaries", "summaries", "batch_prediction", "success", rows=10, execution_time=0.36,
               relation="main.summaries",
               batch={"rows": 10, "succeeded": 9, "failed": 1, "prompt_tokens": 190, "output_tokens": 330,
                      "total_tokens": 520, "cost_usd": 0.00044, "price": "gemini-2.5-flash batch price"}),
    NodeResult("model.demo.bad", "bad", "view", "error", execution_time=0.01, relation="main.bad",
               message="Binder Error: column [x] not found\r\nLINE 1:\tselect [x]\x07 :smile: \\[/red]"),
    NodeResult("model.demo.later", "later", "view", "skipped", message="an upstream node failed: bad"),
]


def _print_all(reporter):
    for i, result in enumerate(RESULTS, 1):
        reporter.node_done(i, len(RESULTS), result)
    progress = reporter.job_progress("summaries")
    progress.update("RUNNING", 3, 10, 1)
    progress.close()
    reporter.line(("Interrupted: finishing the nodes in flight; batch jobs keep running.", "yellow"))
    reporter.summary(RESULTS, 1.5)


def test_plain_lines_without_a_terminal_are_what_rich_writes_to_a_file(capsys, monkeypatch):
    """Where stdout is no terminal the lines are written without rich, to the same text."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    plain = Reporter()
    assert plain.console is None and not plain.interactive
    _print_all(plain)
    written = capsys.readouterr().out
    out = io.StringIO()
    _print_all(Reporter(Console(file=out, highlight=False, soft_wrap=True, force_terminal=False)))
    assert written == out.getvalue()
    assert written.splitlines()[:6] == [
        "1 of 5 OK    seed main.reviews [1,000,000 rows, 0.80s]",
        "2 of 5 OK    table [odd]:a: [0.05s]",  # text as written: no markup, no emoji codes
        "3 of 5 OK    batch_prediction main.summaries [10 rows, 0.36s]",
        "    10 rows: 9 succeeded, 1 failed; tokens 190 in, 330 out, 520 total; cost $0.00044 "
        "(gemini-2.5-flash batch price)",
        "4 of 5 ERROR view main.bad [0.01s]",
        "    Binder Error: column [x] not found",
    ]
    # The carriage return and the bell are dropped and the tab expanded, as rich does.
    assert written.splitlines()[6] == "    LINE 1:     select [x] :smile: \\[/red]"
    assert written.splitlines()[-1] == "Finished 5 node(s) in 1.50s: 3 ok, 1 error, 1 skipped."


def test_a_terminal_gets_colours(monkeypatch):
    out = io.StringIO()
    reporter = Reporter(Console(file=out, force_terminal=True, color_system="standard", width=200))
    reporter.node_done(1, 1, RESULTS[3])
    first = out.getvalue().splitlines()[0]
    assert "\x1b[31mERROR" in first and first.endswith("view main.bad [0.01s]")
