"""Generate a project of N models chained through refs, each calling macros, as bqbatch and as dbt.

    python bench/gen_project.py OUT_DIR [--models 1000]

Writes OUT_DIR/bqbatch (bqbatch_project.yml) and OUT_DIR/dbt (dbt_project.yml +
profiles.yml on dbt-duckdb): the same model files in both, so `compile` and `ls` time
the same work.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

MACROS = """
{% macro cents_to_dollars(col) %}({{ col }} / 100.0){% endmacro %}
{% macro label(prefix, col) %}concat('{{ prefix }}-', cast({{ col }} as string)){% endmacro %}
"""


def model_sql(i: int, fan_in: int = 3) -> str:
    if i == 0:
        return "select 1 as id, 250 as amount_cents, 'a' as name\n"
    parents = sorted({max(0, i - d) for d in (1, 7, 31)[:fan_in]})
    first = f"m_{parents[0]:04d}"
    joins = "".join(
        f"\nleft join {{{{ ref('m_{p:04d}') }}}} as p{k} using (id)" for k, p in enumerate(parents[1:], 1)
    )
    return (
        "{{ config(materialized='view', tags=['generated']) }}\n"
        f"select t.id,\n"
        f"  {{{{ cents_to_dollars('t.amount_cents') }}}} * 100 as amount_cents,\n"
        f"  {{{{ label('m{i}', 't.id') }}}} as name\n"
        f"from {{{{ ref('{first}') }}}} as t{joins}\n"
        f"where t.id is not null\n"
    )


def generate(out: Path, models: int) -> None:
    if out.exists():
        shutil.rmtree(out)
    for flavour in ("bqbatch", "dbt"):
        root = out / flavour
        (root / "models").mkdir(parents=True)
        (root / "macros").mkdir()
        (root / "macros" / "helpers.sql").write_text(MACROS)
        for i in range(models):
            (root / "models" / f"m_{i:04d}.sql").write_text(model_sql(i))
    (out / "bqbatch" / "bqbatch_project.yml").write_text("name: bench\n")
    (out / "dbt" / "dbt_project.yml").write_text(
        "name: bench\nversion: '1.0'\nconfig-version: 2\nprofile: bench\nmodel-paths: [models]\nmacro-paths: [macros]\n"
    )
    (out / "dbt" / "profiles.yml").write_text(
        "bench:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: target/bench.duckdb\n      threads: 2\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", type=int, default=1000)
    args = parser.parse_args()
    generate(args.out, args.models)
    print(f"wrote {args.models} models to {args.out}/bqbatch and {args.out}/dbt")
