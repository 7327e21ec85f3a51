"""Benchmark: does the `online` predictor use a rate limit fully without ever passing it?

A local server (the emulator's Gemini API) answers every generateContent call in
100 ms and allows 600 requests a minute (sliding 60-second window, 429 beyond).
The online predictor, told the same limit, answers N request rows of a DuckDB
table through the real google-genai client. Measured on the server's side:
sustained rate (requests per minute between the first and the last accepted call),
the most calls in any 60-second window, and how many calls the server refused.

    python bench/bench_online.py                    # 1,000 requests, about 100 s
    python bench/bench_online.py --requests 2000 --concurrency 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def run(requests: int, limit: float, latency: float, concurrency: int, client_limit: float | None) -> dict:
    from bqbatch_sql.adapters.duckdb import DuckDBAdapter
    from bqbatch_sql.emulator import Emulator
    from bqbatch_sql.emulator.model_serving import validation_status
    from bqbatch_sql.predictors import make_predictor
    from bqbatch_sql.predictors.base import BatchJobSpec, JobState

    os.environ.setdefault("GEMINI_API_KEY", "bench-key")
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
        api = emu.gemini
        api.limits.latency_seconds, api.limits.requests_per_minute = latency, limit
        adapter = DuckDBAdapter(Path(tmp) / "bench.duckdb")
        adapter.execute(
            "CREATE TABLE main.req AS SELECT i AS id, json_object('contents', json_array(json_object('role', 'user', "
            "'parts', json_array(json_object('text', 'Summarize item ' || i || ' in one line.'))))) AS request "
            "FROM range($1) t(i)", [requests])
        # The server checks each request against the shared rules, once per shape of request (cached):
        # checked here first, so the run measures the limiter and not DuckDB planning the rules.
        validation_status(adapter.fetchall("SELECT CAST(request AS VARCHAR) FROM main.req LIMIT 1")[0][0])
        predictor = make_predictor("online", adapter, base_url=emu.url, requests_per_minute=client_limit or limit,
                                   concurrency=concurrency, initial_backoff_seconds=1.0)
        spec = BatchJobSpec("gemini-2.5-flash", adapter.relation("req"), adapter.relation("out"), "bench")
        started = time.monotonic()
        job = predictor.wait(predictor.submit(spec).name)
        wall = time.monotonic() - started
        if job.state != JobState.SUCCEEDED:
            raise SystemExit(f"benchmark job ended {job.state.short}: {job.error}")
        ok = adapter.fetchall("SELECT COUNT(*) FROM main.out WHERE status = '' AND response IS NOT NULL")[0][0]
        times = list(api.limits.accepted)
        gaps = [b - a for a, b in zip(times, times[1:])]
        span = times[-1] - times[0]
        sustained = (len(times) - 1) / span * 60 if span > 0 else float("nan")
        adapter.close()
        return {
            "requests": requests, "server_limit_rpm": limit, "client_limit_rpm": client_limit or limit,
            "server_latency_ms": latency * 1000, "concurrency": concurrency,
            "answered_ok": ok, "server_accepted": len(times), "server_refused_429": api.limits.rejected,
            "sustained_rpm": round(sustained, 1), "share_of_limit": round(sustained / limit, 4),
            "max_in_any_60s_window": api.limits.max_in_window(60.0),
            "min_gap_ms": round(min(gaps) * 1000, 1), "median_gap_ms": round(statistics.median(gaps) * 1000, 1),
            "job_wall_seconds": round(wall, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--limit", type=float, default=600.0, help="server quota, requests per minute")
    parser.add_argument("--latency", type=float, default=0.1, help="server answer time, seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--client-limit", type=float, default=None,
                        help="the predictor's requests_per_minute (default: the server's quota)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = run(args.requests, args.limit, args.latency, args.concurrency, args.client_limit)
    figures["machine"] = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    verdict = figures["share_of_limit"] >= 0.95 and figures["max_in_any_60s_window"] <= args.limit \
        and figures["server_refused_429"] == 0
    print("PASS" if verdict else "FAIL", "(>= 95% of the limit, no window over it, no 429)", file=sys.stderr)
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
