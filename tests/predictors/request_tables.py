"""Request tables for the predictor tests, and the status Vertex gives a request it refuses."""

from __future__ import annotations

from bqbatch_sql.predictors.base import BatchJobSpec

# Vertex's answer to a request whose role is 'tester' (as its batch prediction page shows): every predictor gives it.
TESTER_STATUS = ('Bad Request: {"error": {"code": 400, "message": "Please use a valid role: user, model.", '
                 '"status": "INVALID_ARGUMENT"}}')


def make_requests(adapter, n: int, *, tester: tuple[int, ...] = (), text: str = "question ",
                  duplicate_of_first: int = 0) -> BatchJobSpec:
    """main.req: rows id 0..n-1 asking `text || id` (rows in `tester` with an invalid role) -> main.out."""
    adapter.execute(
        "CREATE TABLE main.req AS SELECT i AS id, json_object('contents', json_array(json_object("
        "'role', CASE WHEN list_contains($1, i) THEN 'tester' ELSE 'user' END, "
        "'parts', json_array(json_object('text', $3 || i))))) AS request FROM range($2) t(i)",
        [list(tester), n, text],
    )
    for _ in range(duplicate_of_first):  # identical rows: each still gets its own output row
        adapter.execute("INSERT INTO main.req SELECT * FROM main.req WHERE id = 0 LIMIT 1")
    return BatchJobSpec("gemini-2.5-flash", adapter.relation("req"), adapter.relation("out"), "test-job")
