"""After the predict stage: where a job writes, and whether its output holds every request once.

Vertex AI batch prediction writes only into a table that does not exist yet. The
output a user (or a dashboard) reads must not vanish while a new job runs for hours,
so a job whose output table already exists writes under a fresh name of its own
(`<model>__bqbatch_<fingerprint>`), and the result is swapped in only once it has
passed the row check (on --full-refresh too: a failed job loses no row).

The row check compares, per key, how many rows the request table and the output
hold, in the warehouse: "one row per request" is the contract, and a difference is
reported by key so the user can see which requests were lost or doubled.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from bqbatch_sql.compile import transpile
from bqbatch_sql.nodes import Relation

STAGING_MARK = "__bqbatch_"
SHOWN_KEYS = 10


def staging_relation(output: Relation, fingerprint: str) -> Relation:
    """The fresh table a job writes to while `output` stays readable; named by the job's fingerprint."""
    return output.with_name(f"{output.name}{STAGING_MARK}{fingerprint[:12]}")


def choose_destination(adapter, output: Relation, fingerprint: str) -> Relation:
    """Where the next job writes: `output` itself when it does not exist yet, else a fresh table.

    Also on --full-refresh: a job that fails must not take the old output with it.
    A staging table left by an earlier job of the same fingerprint is ours alone,
    so it is dropped: Vertex would refuse to write into it.
    """
    staged = staging_relation(output, fingerprint)
    adapter.drop_relation(staged)
    return staged if adapter.table_exists(output) else output


def swap_in(adapter, staged: Relation, output: Relation) -> None:
    """Replace `output` by the staged result: readers see the old output or the new one,
    never no table (the adapter's `replace_table`: a rename on DuckDB, a copy on BigQuery)."""
    if staged == output:
        return
    adapter.replace_table(output, staged)


@dataclass
class RowDifference:
    key: str  # the key as JSON, e.g. {"review_id":101}
    requests: int
    outputs: int

    def describe(self) -> str:
        if self.outputs == 0:
            what = "missing from the output"
        elif self.requests == 0:
            what = "in the output but not among the requests"
        else:
            what = "doubled in the output" if self.outputs > self.requests else "short in the output"
        return f"{self.key}: {what} ({self.requests} request row(s), {self.outputs} output row(s))"


def row_differences(adapter, requests: Relation, output: Relation, key_columns: list[str] | None = None,
                    limit: int = SHOWN_KEYS) -> list[RowDifference]:
    """Keys whose row counts differ between the request table and the output, first `limit` of them.

    The key is the model's key_columns, else every pass-through column, else the
    request itself; JSON values are compared as their JSON text.
    """
    kinds = {c.name: c.data_type for c in adapter.columns(requests)}
    names = list(key_columns or [n for n in kinds if n.lower() != "request"] or [n for n in kinds])

    def key(alias: str) -> str:
        parts = []
        for name in names:
            ident = exp.to_identifier(name, quoted=True).sql("bigquery")
            value = f"TO_JSON_STRING({ident})" if kinds.get(name) == "JSON" else ident
            parts.append(f"{value} AS {ident}")
        return f"TO_JSON_STRING(STRUCT({', '.join(parts)})) AS {alias}"

    sql = (
        f"WITH r AS (SELECT {key('k')}, COUNT(*) AS n FROM {requests.sql('bigquery')} GROUP BY 1), "
        f"o AS (SELECT {key('k')}, COUNT(*) AS n FROM {output.sql('bigquery')} GROUP BY 1) "
        f"SELECT COALESCE(r.k, o.k) AS k, COALESCE(r.n, 0) AS expected, COALESCE(o.n, 0) AS actual "
        f"FROM r FULL OUTER JOIN o ON r.k = o.k WHERE COALESCE(r.n, 0) <> COALESCE(o.n, 0) "
        f"ORDER BY 1 LIMIT {int(limit)}"
    )
    rows = adapter.fetchall(transpile(sql, adapter.dialect))
    return [RowDifference(k, int(expected), int(actual)) for k, expected, actual in rows]


def describe_count_mismatch(model: str, written: Relation, output: Relation, job_name: str, expected: int,
                            actual: int, differences: list[RowDifference]) -> str:
    kept = f" It is kept in {written}; the previous {output} was left as it was." if written != output else ""
    lines = [
        f"Model '{model}': the output of job {job_name} has {actual:,} rows for {expected:,} requests; "
        f"every request must end with exactly one row (a response or a status).{kept}"
    ]
    if differences:
        lines.append(f"  Keys that differ (first {len(differences)}):")
        lines += [f"    {d.describe()}" for d in differences]
    lines.append("  Inspect the job in the console; rerun with --full-refresh to predict these rows again.")
    return "\n".join(lines)
