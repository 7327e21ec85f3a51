"""The request rules, one import away (stage: validate).

Where each part lives:
- `request_spec`: the rules as data (fields, messages, kinds of problem, limits);
- `request_sql` (+ `request_sql_ops`, `request_sql_bigquery`): the full checks as one
  scalar SQL expression per dialect, and the Vertex-style messages;
- `request_fast`: DuckDB's fast path, derived from the same specs.
`validate.py` is what the rest of bqbatch calls; this module gathers the names tests
and tools reach for.
"""

from __future__ import annotations

from bqbatch_sql.request_fast import scalar_fast_valid
from bqbatch_sql.request_spec import (
    KINDS, LEARN_MORE, MAX_REQUEST_BYTES, MAX_REQUESTS_PER_JOB, REQUEST, Kind, hint_for,
)
from bqbatch_sql.request_sql import make_ops, message_sql, problem_sql, request_problem, status_sql
from bqbatch_sql.request_sql_bigquery import BigQueryOps
from bqbatch_sql.request_sql_ops import DuckDBOps, Ops

__all__ = [
    "KINDS", "LEARN_MORE", "MAX_REQUEST_BYTES", "MAX_REQUESTS_PER_JOB", "REQUEST", "Kind", "hint_for",
    "make_ops", "message_sql", "problem_sql", "request_problem", "status_sql", "scalar_fast_valid",
    "BigQueryOps", "DuckDBOps", "Ops",
]
