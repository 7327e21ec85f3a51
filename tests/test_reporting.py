"""What a batch job's progress prints where there is no terminal (CI logs, files)."""

from __future__ import annotations

import io

from rich.console import Console

from bqbatch_sql.reporting import JobProgress, Reporter


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
