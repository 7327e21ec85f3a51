"""Time `bqbatch compile` and `bqbatch ls` on a generated 1,000-model project, next to dbt.

    python bench/bench_compile.py [--models 1000] [--runs 3] [--dbt /path/to/venv/bin/dbt]

Cold = no target/ directory (no Jinja bytecode cache, no dbt partial parse); warm = the
second run onward. dbt-core with dbt-duckdb lives in a separate environment (1.11.x
installs here); without it only bqbatch is timed. Prints a Markdown table.

Both tools run as on a user's machine: Python writes .pyc files (this sandbox sets
PYTHONDONTWRITEBYTECODE=1, removed from the children's environment; pip has compiled
dbt's, while bqbatch is installed editable and would compile its own modules on every
run), after one warm-up `compile` of each, not counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gen_project import generate  # noqa: E402


# A user's Python writes .pyc files; this sandbox's environment forbids it (see the docstring).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=CHILD_ENV)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def measure(cmd: list[str], cwd: Path, runs: int) -> tuple[float, float]:
    """(cold, warm median) seconds."""
    shutil.rmtree(cwd / "target", ignore_errors=True)
    cold = timed(cmd, cwd)
    warm = statistics.median(timed(cmd, cwd) for _ in range(runs))
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dbt", default=shutil.which("dbt"), help="dbt executable (dbt-core + dbt-duckdb)")
    args = parser.parse_args()
    bqbatch = str(Path(sys.executable).parent / "bqbatch")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out, args.models)
        # Warm-up, not counted: the .pyc of every module a command loads are written.
        timed([bqbatch, "compile"], out / "bqbatch")
        if args.dbt:
            timed([args.dbt, "compile", "--profiles-dir", "."], out / "dbt")
        rows = []
        rows.append(("bqbatch --help", *measure([bqbatch, "--help"], out / "bqbatch", args.runs)))
        for sub in ("compile", "ls"):
            rows.append((f"bqbatch {sub}", *measure([bqbatch, sub], out / "bqbatch", args.runs)))
            if args.dbt:
                rows.append((f"dbt {sub}", *measure([args.dbt, sub, "--profiles-dir", "."], out / "dbt", args.runs)))
    print(f"{args.models} models; cold = first run without target/, warm = median of {args.runs} later runs\n")
    print("| command | cold (s) | warm (s) |\n|---|---:|---:|")
    for name, cold, warm in rows:
        print(f"| {name} | {cold:.2f} | {warm:.2f} |")


if __name__ == "__main__":
    main()
