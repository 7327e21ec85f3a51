"""Shared pieces of the emulated BigQuery REST resources: paging, row pages, etags.

BigQuery pages lists and rows with opaque tokens; the emulator's token is the offset
of the next item. Rows go out in the REST encoding of bq_types.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bqbatch_sql.emulator import bq_types
from bqbatch_sql.emulator.api_errors import bad_request
from bqbatch_sql.emulator.storage import Catalog, TableRef

PREFIX = "/bigquery/v2"
DEFAULT_PAGE_ROWS = 50_000


def rows_page(catalog: Catalog, ref: TableRef, req) -> dict[str, Any]:
    """totalRows, schema, one page of rows and the next pageToken (tabledata.list, getQueryResults)."""
    total = catalog.row_count(ref)
    start = as_int(req.arg("startIndex")) or 0
    token = req.arg("pageToken")
    if token:
        start = decode_token(token)
    max_results = as_int(req.arg("maxResults"))
    limit = DEFAULT_PAGE_ROWS if max_results is None else max_results
    selected = [s for s in (req.arg("selectedFields") or "").split(",") if s] or None
    fields, rows = catalog.read_rows(ref, offset=start, limit=limit, selected=selected)
    int64 = req.flag("formatOptions.useInt64Timestamp")
    body: dict[str, Any] = {
        "totalRows": str(total),
        "schema": {"fields": fields},
        "rows": [{"f": [{"v": bq_types.encode_cell(v, f, int64_timestamp=int64)} for v, f in zip(row, fields)]} for row in rows],
    }
    if limit == 0:
        # maxResults=0 asks for the job's state and schema only; a page without
        # "rows" tells the client to fetch rows with a further call.
        del body["rows"]
    elif start + len(rows) < total:
        body["pageToken"] = encode_token(start + len(rows))
    return body


def page(items: list, req) -> tuple[list, str | None]:
    """One page of a resource list (datasets, tables, jobs) and the token of the next."""
    start = decode_token(req.arg("pageToken")) if req.arg("pageToken") else 0
    size = as_int(req.arg("maxResults")) or 1000
    return items[start : start + size], (encode_token(start + size) if start + size < len(items) else None)


def encode_token(offset: int) -> str:
    return f"o{offset}"


def decode_token(token: str) -> int:
    if not token.startswith("o") or not token[1:].isdigit():
        raise bad_request(f"Invalid page token {token!r}.")
    return int(token[1:])


def as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad_request(f"Invalid integer value {value!r}.") from None


def etag(*parts: Any) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]
