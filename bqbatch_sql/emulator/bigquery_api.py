"""BigQuery v2 REST resources of the emulator: datasets, tables, tabledata, jobs, queries.

The subset google-cloud-bigquery 3.x calls when bqbatch (and a typical pipeline)
runs against BigQuery. Query jobs run synchronously inside jobs.insert / jobs.query
(bq_query.QueryEngine), so a job is DONE when the client first sees it; a failed
query is a DONE job with status.errorResult, and getQueryResults answers it with the
HTTP error the client turns into NotFound, BadRequest, Conflict, ...
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import uuid
from typing import Any, Callable

from sqlglot import exp

from bqbatch_sql.emulator import bq_types
from bqbatch_sql.emulator.api_errors import ApiError, bad_request, conflict, not_found
from bqbatch_sql.emulator.bq_query import QueryEngine, QueryOutcome, QueryRequest, parse_sql
from bqbatch_sql.emulator.storage import Catalog, TableRef, now_ms, sql_table

PREFIX = "/bigquery/v2"
ANON_DATASET = "_emulator_query_results"  # hidden, like BigQuery's anonymous datasets
DEFAULT_PAGE_ROWS = 50_000


class BigQueryApi:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.engine = QueryEngine(catalog)
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self._jobs_lock = threading.Lock()
        self._job_seq = itertools.count(1)

    def routes(self) -> list[tuple[str, str, Callable[..., Any]]]:
        p = PREFIX + "/projects/{project}"
        return [
            ("GET", p + "/datasets", self.list_datasets),
            ("POST", p + "/datasets", self.insert_dataset),
            ("GET", p + "/datasets/{dataset}", self.get_dataset),
            ("PATCH", p + "/datasets/{dataset}", self.patch_dataset),
            ("PUT", p + "/datasets/{dataset}", self.patch_dataset),
            ("DELETE", p + "/datasets/{dataset}", self.delete_dataset),
            ("GET", p + "/datasets/{dataset}/tables", self.list_tables),
            ("POST", p + "/datasets/{dataset}/tables", self.insert_table),
            ("GET", p + "/datasets/{dataset}/tables/{table}", self.get_table),
            ("PATCH", p + "/datasets/{dataset}/tables/{table}", self.patch_table),
            ("PUT", p + "/datasets/{dataset}/tables/{table}", self.patch_table),
            ("DELETE", p + "/datasets/{dataset}/tables/{table}", self.delete_table),
            ("GET", p + "/datasets/{dataset}/tables/{table}/data", self.list_table_data),
            ("POST", p + "/datasets/{dataset}/tables/{table}/insertAll", self.insert_all),
            ("POST", p + "/jobs", self.insert_job),
            ("GET", p + "/jobs", self.list_jobs),
            ("GET", p + "/jobs/{job}", self.get_job),
            ("POST", p + "/jobs/{job}/cancel", self.cancel_job),
            ("DELETE", p + "/jobs/{job}/delete", self.delete_job),
            ("POST", p + "/queries", self.query),
            ("GET", p + "/queries/{job}", self.get_query_results),
        ]

    # -- datasets ------------------------------------------------------------------

    def _dataset_resource(self, d) -> dict[str, Any]:
        body = {
            "kind": "bigquery#dataset",
            "etag": _etag(d.project, d.dataset, d.modified),
            "id": f"{d.project}:{d.dataset}",
            "selfLink": f"{PREFIX}/projects/{d.project}/datasets/{d.dataset}",
            "datasetReference": {"projectId": d.project, "datasetId": d.dataset},
            "location": d.location,
            "creationTime": str(d.created),
            "lastModifiedTime": str(d.modified),
            "labels": d.labels,
            "access": [],
            "type": "DEFAULT",
        }
        if d.description is not None:
            body["description"] = d.description
        return body

    def list_datasets(self, req, project):
        datasets = self.catalog.list_datasets(project, include_hidden=req.flag("all"))
        for clause in (req.arg("filter") or "").split():
            # filter=labels.key:value (or labels.key) selects datasets by label
            key, _, value = clause.removeprefix("labels.").partition(":")
            datasets = [d for d in datasets if key in d.labels and (not value or d.labels[key] == value)]
        page, token = _page(datasets, req)
        body = {
            "kind": "bigquery#datasetList",
            "etag": _etag(project, len(datasets)),
            "datasets": [
                {
                    "kind": "bigquery#dataset",
                    "id": f"{d.project}:{d.dataset}",
                    "datasetReference": {"projectId": d.project, "datasetId": d.dataset},
                    "labels": d.labels,
                    "location": d.location,
                }
                for d in page
            ],
        }
        if token:
            body["nextPageToken"] = token
        return body

    def insert_dataset(self, req, project):
        body = req.json()
        ref = body.get("datasetReference") or {}
        if not ref.get("datasetId"):
            raise bad_request("Missing required field: datasetReference.datasetId")
        d = self.catalog.create_dataset(
            ref.get("projectId") or project,
            ref["datasetId"],
            body.get("location"),
            description=body.get("description"),
            labels=body.get("labels"),
        )
        return self._dataset_resource(d)

    def get_dataset(self, req, project, dataset):
        return self._dataset_resource(self.catalog.require_dataset(project, dataset))

    def patch_dataset(self, req, project, dataset):
        return self._dataset_resource(self.catalog.update_dataset(project, dataset, req.json()))

    def delete_dataset(self, req, project, dataset):
        self.catalog.delete_dataset(project, dataset, delete_contents=req.flag("deleteContents"))
        return None

    # -- tables ----------------------------------------------------------------------

    def _table_resource(self, ref: TableRef, *, full: bool = True) -> dict[str, Any]:
        kind = self.catalog.require_table(ref)
        dataset = self.catalog.require_dataset(ref.project, ref.dataset)
        meta = self.catalog.table_meta(ref)
        ref = TableRef(ref.project, ref.dataset, meta.name)
        body: dict[str, Any] = {
            "kind": "bigquery#table",
            "etag": _etag(ref.legacy_id, meta.modified),
            "id": ref.legacy_id,
            "selfLink": f"{PREFIX}/projects/{ref.project}/datasets/{ref.dataset}/tables/{ref.table}",
            "tableReference": ref.api(),
            "type": kind,
            "creationTime": str(meta.created),
            "labels": meta.labels,
        }
        if meta.expiration is not None:
            body["expirationTime"] = str(meta.expiration)
        if not full:
            return body
        body.update(
            {
                "schema": {"fields": self.catalog.fields(ref)},
                "lastModifiedTime": str(meta.modified),
                "location": dataset.location,
            }
        )
        if meta.description is not None:
            body["description"] = meta.description
        if kind == "TABLE":
            rows = self.catalog.row_count(ref)
            body.update({"numRows": str(rows), "numBytes": str(rows * 8 * len(body["schema"]["fields"])), "numLongTermBytes": "0"})
        else:
            body["view"] = {"query": meta.view_query or "", "useLegacySql": False}
        return body

    def list_tables(self, req, project, dataset):
        self.catalog.require_dataset(project, dataset)
        names = self.catalog.list_tables(project, dataset)
        page, token = _page(names, req)
        body = {
            "kind": "bigquery#tableList",
            "etag": _etag(project, dataset, len(names)),
            "tables": [self._table_resource(TableRef(project, dataset, name), full=False) for name, _ in page],
            "totalItems": len(names),
        }
        if token:
            body["nextPageToken"] = token
        return body

    def insert_table(self, req, project, dataset):
        body = req.json()
        ref = TableRef.from_api({"projectId": project, "datasetId": dataset, **(body.get("tableReference") or {})}, project)
        with self.catalog.lock:
            if body.get("view"):
                self._create_view(ref, body["view"])
            else:
                self.catalog.create_table(ref, (body.get("schema") or {}).get("fields") or [])
            self.catalog.record_table(
                ref,
                kind="VIEW" if body.get("view") else "TABLE",
                description=body.get("description"),
                labels=body.get("labels"),
                expiration=_int(body.get("expirationTime")),
                view_query=(body.get("view") or {}).get("query"),
            )
        return self._table_resource(ref)

    def _create_view(self, ref: TableRef, view: dict[str, Any]) -> None:
        if view.get("useLegacySql"):
            raise bad_request("Legacy SQL views are not supported by the emulator; set use_legacy_sql=False.")
        self.catalog.require_dataset(ref.project, ref.dataset)
        if self.catalog.table_kind(ref) is not None:
            raise conflict(f"Already Exists: Table {ref.legacy_id}")
        # The view's body is the user's SQL: parsed as BigQuery and put under a
        # CREATE VIEW tree, which the engine rewrites like any statement.
        body = parse_sql(view.get("query") or "")
        if len(body) != 1 or not isinstance(body[0], exp.Query):
            raise bad_request("A view's query must be exactly one SELECT.")
        tree = exp.Create(this=exp.table_(ref.table, db=ref.dataset, catalog=ref.project, quoted=True), kind="VIEW", expression=body[0])
        self.engine.run_tree(tree, QueryRequest(sql=view.get("query") or "", project=ref.project, result_ref=ref))

    def get_table(self, req, project, dataset, table):
        return self._table_resource(TableRef(project, dataset, table))

    def patch_table(self, req, project, dataset, table):
        ref = TableRef(project, dataset, table)
        self.catalog.require_table(ref)
        body = req.json()
        new_fields = (body.get("schema") or {}).get("fields")
        if new_fields is not None:
            self._add_columns(ref, new_fields)
        self.catalog.update_table_meta(ref, body)
        return self._table_resource(ref)

    def _add_columns(self, ref: TableRef, fields: list[dict[str, Any]]) -> None:
        # BigQuery lets a schema update only add NULLABLE/REPEATED columns.
        current = {f["name"].lower() for f in self.catalog.fields(ref)}
        for field in fields:
            if field["name"].lower() in current:
                continue
            if field.get("mode") == "REQUIRED":
                raise bad_request(f"Provided Schema does not match Table {ref.legacy_id}. Cannot add required field {field['name']}.")
            column = exp.ColumnDef(this=exp.to_identifier(field["name"], quoted=True), kind=bq_types.field_to_duckdb(field))
            self.catalog.execute(exp.Alter(this=sql_table(ref), kind="TABLE", actions=[column]))

    def delete_table(self, req, project, dataset, table):
        self.catalog.drop_table(TableRef(project, dataset, table))
        return None

    def list_table_data(self, req, project, dataset, table):
        ref = TableRef(project, dataset, table)
        if self.catalog.require_table(ref) == "VIEW":
            raise bad_request(f"Cannot list a table of type VIEW: {ref.legacy_id}. Fix: query the view instead.")
        body = self._rows_page(ref, req)
        body.update({"kind": "bigquery#tableDataList", "etag": _etag(ref.legacy_id, body["totalRows"])})
        body.pop("schema", None)
        return body

    def insert_all(self, req, project, dataset, table):
        ref = TableRef(project, dataset, table)
        if self.catalog.require_table(ref) == "VIEW":
            raise bad_request(f"Cannot insert into a view: {ref.legacy_id}.")
        from bqbatch_sql.emulator.bq_insert import insert_rows

        errors = insert_rows(self.catalog, ref, req.json())
        body: dict[str, Any] = {"kind": "bigquery#tableDataInsertAllResponse"}
        if errors:
            body["insertErrors"] = errors
        return body

    # -- rows --------------------------------------------------------------------------------

    def _rows_page(self, ref: TableRef, req) -> dict[str, Any]:
        total = self.catalog.row_count(ref)
        start = _int(req.arg("startIndex")) or 0
        token = req.arg("pageToken")
        if token:
            start = _decode_token(token)
        max_results = _int(req.arg("maxResults"))
        limit = DEFAULT_PAGE_ROWS if max_results is None else max_results
        selected = [s for s in (req.arg("selectedFields") or "").split(",") if s] or None
        fields, rows = self.catalog.read_rows(ref, offset=start, limit=limit, selected=selected)
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
            body["pageToken"] = _encode_token(start + len(rows))
        return body

    # -- jobs --------------------------------------------------------------------------------

    def insert_job(self, req, project):
        body = req.json()
        ref = dict(body.get("jobReference") or {})
        ref.setdefault("projectId", project)
        ref.setdefault("jobId", f"job_{uuid.uuid4().hex}")
        config = body.get("configuration") or {}
        if "query" not in config:
            kinds = ", ".join(k for k in config if k not in ("labels", "dryRun", "jobTimeoutMs")) or "none"
            raise bad_request(f"The emulator runs query jobs only; this job's configuration is: {kinds}.")
        if config.get("dryRun"):
            return self._dry_run(ref, config)
        key = (ref["projectId"], ref["jobId"])
        with self._jobs_lock:
            if key in self.jobs:
                raise conflict(f"Already Exists: Job {ref['projectId']}:{ref.get('location') or 'US'}.{ref['jobId']}")
            self.jobs[key] = {}  # reserved, so a concurrent insert of the same id is refused
        job = self._run_query_job(ref, config)
        return job["resource"]

    def _run_query_job(self, ref: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        project, job_id = ref["projectId"], ref["jobId"]
        query = dict(config["query"])
        created = now_ms()
        if query.get("useLegacySql"):
            outcome, error = None, bad_request("Legacy SQL is not supported by the emulator; set use_legacy_sql=False.", "invalidQuery")
        else:
            outcome, error = self._execute(project, job_id, query)
        location = ref.get("location") or self._location_of(outcome, project, query) or "US"
        ref["location"] = location
        statistics: dict[str, Any] = {
            "creationTime": str(created),
            "startTime": str(created),
            "endTime": str(now_ms()),
            "totalBytesProcessed": "0",
        }
        status: dict[str, Any] = {"state": "DONE"}
        if error is not None:
            status["errorResult"] = error.error_proto()
            status["errors"] = [error.error_proto()]
        else:
            statistics["query"] = self._statistics(outcome)
            if outcome.result is not None:
                query["destinationTable"] = outcome.result.api()
        resource = {
            "kind": "bigquery#job",
            "etag": _etag(project, job_id),
            "id": f"{project}:{location}.{job_id}",
            "selfLink": f"{PREFIX}/projects/{project}/jobs/{job_id}?location={location}",
            "user_email": "emulator@localhost",
            "jobReference": ref,
            "configuration": {**config, "query": query, "jobType": "QUERY"},
            "status": status,
            "statistics": statistics,
        }
        job = {"resource": resource, "outcome": outcome, "error": error}
        with self._jobs_lock:
            self.jobs[(project, job_id)] = job
        return job

    def _dry_run(self, ref: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        """A dry run is answered at once and kept nowhere; an invalid query is an HTTP error, as BigQuery does."""
        project = ref["projectId"]
        query = dict(config["query"])
        outcome = self.engine.dry_run(self._request(project, ref["jobId"], query))
        ref = {"projectId": project, "location": ref.get("location") or self._location_of(outcome, project, query) or "US"}
        stats: dict[str, Any] = {
            "statementType": outcome.statement_type,
            "totalBytesProcessed": str(outcome.bytes_estimate),
            "totalBytesBilled": "0",
            "cacheHit": False,
            "referencedTables": [r.api() for r in dict.fromkeys(outcome.referenced)],
        }
        if outcome.fields is not None:
            stats["schema"] = {"fields": outcome.fields}
        return {
            "kind": "bigquery#job",
            "jobReference": ref,
            "configuration": {**config, "jobType": "QUERY"},
            "status": {"state": "DONE"},
            "statistics": {"creationTime": str(now_ms()), "totalBytesProcessed": str(outcome.bytes_estimate), "query": stats},
        }

    def _execute(self, project: str, job_id: str, query: dict[str, Any]) -> tuple[QueryOutcome | None, ApiError | None]:
        try:
            return self.engine.run(self._request(project, job_id, query)), None
        except ApiError as e:
            return None, e

    def _request(self, project: str, job_id: str, query: dict[str, Any]) -> QueryRequest:
        default = query.get("defaultDataset")
        dest = query.get("destinationTable")
        self.catalog.create_dataset(project, ANON_DATASET, hidden=True, exists_ok=True)
        return QueryRequest(
            sql=query.get("query") or "",
            project=project,
            result_ref=TableRef(project, ANON_DATASET, f"anon_{job_id}"),
            default_dataset=(default.get("projectId") or project, default["datasetId"]) if default else None,
            parameters=query.get("queryParameters") or [],
            destination=TableRef.from_api(dest, project) if dest else None,
            write_disposition=query.get("writeDisposition"),
            create_disposition=query.get("createDisposition"),
        )

    def _location_of(self, outcome: QueryOutcome | None, project: str, query: dict[str, Any]) -> str | None:
        refs = list(outcome.referenced) if outcome else []
        if outcome and outcome.ddl_target_table:
            refs.append(outcome.ddl_target_table)
        for ref in refs:
            d = self.catalog.get_dataset(ref.project, ref.dataset)
            if d is not None:
                return d.location
        return None

    def _statistics(self, outcome: QueryOutcome) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "statementType": outcome.statement_type,
            "totalBytesProcessed": "0",
            "totalBytesBilled": "0",
            "cacheHit": False,
        }
        if outcome.num_dml_affected_rows is not None:
            stats["numDmlAffectedRows"] = str(outcome.num_dml_affected_rows)
        if outcome.ddl_target_table is not None:
            stats["ddlTargetTable"] = outcome.ddl_target_table.api()
        if outcome.ddl_target_dataset is not None:
            stats["ddlTargetDataset"] = {"projectId": outcome.ddl_target_dataset[0], "datasetId": outcome.ddl_target_dataset[1]}
        if outcome.ddl_operation:
            stats["ddlOperationPerformed"] = outcome.ddl_operation
        if outcome.result is not None:
            stats["schema"] = {"fields": self.catalog.fields(outcome.result)}
        return stats

    def _job(self, project: str, job_id: str) -> dict[str, Any]:
        with self._jobs_lock:
            job = self.jobs.get((project, job_id))
        if not job:
            raise not_found(f"Not found: Job {project}:{job_id}")
        return job

    def get_job(self, req, project, job):
        return self._job(project, job)["resource"]

    def list_jobs(self, req, project):
        with self._jobs_lock:
            jobs = [j["resource"] for (p, _), j in self.jobs.items() if p == project and j]
        jobs.reverse()  # newest first, as BigQuery lists them
        page, token = _page(jobs, req)
        body = {"kind": "bigquery#jobList", "etag": _etag(project, len(jobs)), "jobs": [{**j, "state": j["status"]["state"]} for j in page]}
        if token:
            body["nextPageToken"] = token
        return body

    def cancel_job(self, req, project, job):
        # Jobs finish inside jobs.insert, so there is never a running one to stop.
        return {"kind": "bigquery#jobCancelResponse", "job": self._job(project, job)["resource"]}

    def delete_job(self, req, project, job):
        self._job(project, job)
        with self._jobs_lock:
            self.jobs.pop((project, job), None)
        return None

    def get_query_results(self, req, project, job):
        found = self._job(project, job)
        if found["error"] is not None:
            raise found["error"]
        body = self._results_body(found, req)
        body["kind"] = "bigquery#getQueryResultsResponse"
        return body

    def _results_body(self, job: dict[str, Any], req) -> dict[str, Any]:
        resource, outcome = job["resource"], job["outcome"]
        body: dict[str, Any] = {
            "jobReference": resource["jobReference"],
            "jobComplete": True,
            "totalBytesProcessed": "0",
            "cacheHit": False,
            "etag": _etag(resource["id"]),
            "location": resource["jobReference"]["location"],
            "creationTime": resource["statistics"]["creationTime"],
            "startTime": resource["statistics"]["startTime"],
            "endTime": resource["statistics"]["endTime"],
        }
        if outcome.num_dml_affected_rows is not None:
            body["numDmlAffectedRows"] = str(outcome.num_dml_affected_rows)
        if outcome.result is not None and self.catalog.table_kind(outcome.result) is not None:
            body.update(self._rows_page(outcome.result, req))
        # No totalRows for DDL/DML: the client then knows there is no result table to read.
        return body

    def query(self, req, project):
        body = req.json()
        ref = {"projectId": project, "jobId": f"job_{uuid.uuid4().hex}"}
        if body.get("location"):
            ref["location"] = body["location"]
        config_keys = ("query", "defaultDataset", "queryParameters", "parameterMode", "useLegacySql", "labels")
        query_config = {k: body[k] for k in config_keys if k in body}
        if body.get("dryRun"):
            job = self._dry_run(ref, {"query": query_config, "dryRun": True})
            stats = job["statistics"]["query"]
            result = {"kind": "bigquery#queryResponse", "jobReference": job["jobReference"], "jobComplete": True,
                      "totalBytesProcessed": stats["totalBytesProcessed"], "cacheHit": False}
            if "schema" in stats:
                result["schema"] = stats["schema"]
            return result
        with self._jobs_lock:
            self.jobs[(project, ref["jobId"])] = {}
        job = self._run_query_job(ref, {"query": query_config})
        if job["error"] is not None:
            raise job["error"]

        class _Args:  # jobs.query carries paging and format options in its body
            def flag(self, name):
                return self.arg(name) == "true"

            def arg(self, name, default=None):
                if name == "formatOptions.useInt64Timestamp":
                    return "true" if (body.get("formatOptions") or {}).get("useInt64Timestamp") else "false"
                value = body.get(name)
                return default if value is None else str(value)

        result = self._results_body(job, _Args())
        result["kind"] = "bigquery#queryResponse"
        result["queryId"] = ref["jobId"]
        return result


# --- small helpers ----------------------------------------------------------------------


def _page(items: list, req) -> tuple[list, str | None]:
    start = _decode_token(req.arg("pageToken")) if req.arg("pageToken") else 0
    size = _int(req.arg("maxResults")) or 1000
    page = items[start : start + size]
    return page, (_encode_token(start + size) if start + size < len(items) else None)


def _encode_token(offset: int) -> str:
    return f"o{offset}"


def _decode_token(token: str) -> int:
    if not token.startswith("o") or not token[1:].isdigit():
        raise bad_request(f"Invalid page token {token!r}.")
    return int(token[1:])


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad_request(f"Invalid integer value {value!r}.") from None


def _etag(*parts: Any) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]
