"""BigQuery v2 jobs and queries of the emulator: jobs.insert/get/list/cancel/delete, jobs.query, getQueryResults.

Query jobs run synchronously inside jobs.insert / jobs.query (bq_query.QueryEngine),
so a job is DONE when the client first sees it. A failed query is a DONE job with
status.errorResult, and getQueryResults answers it with the HTTP error the client
turns into NotFound, BadRequest, Conflict, ... A SELECT's rows are kept in a table of
a hidden dataset, as BigQuery keeps them in an anonymous one, and paged from there.
A dry run is checked and described, never run, and kept nowhere.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable

from bqbatch_sql.emulator.api_errors import ApiError, bad_request, conflict, not_found
from bqbatch_sql.emulator.bq_query import QueryEngine, QueryOutcome, QueryRequest
from bqbatch_sql.emulator.bq_rest import PREFIX, etag, page, rows_page
from bqbatch_sql.emulator.storage import Catalog, TableRef, now_ms

ANON_DATASET = "_emulator_query_results"  # hidden, like BigQuery's anonymous datasets


class BigQueryJobs:
    def __init__(self, catalog: Catalog, engine: QueryEngine):
        self.catalog = catalog
        self.engine = engine
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self._jobs_lock = threading.Lock()

    def routes(self) -> list[tuple[str, str, Callable[..., Any]]]:
        p = PREFIX + "/projects/{project}"
        return [
            ("POST", p + "/jobs", self.insert_job),
            ("GET", p + "/jobs", self.list_jobs),
            ("GET", p + "/jobs/{job}", self.get_job),
            ("POST", p + "/jobs/{job}/cancel", self.cancel_job),
            ("DELETE", p + "/jobs/{job}/delete", self.delete_job),
            ("POST", p + "/queries", self.query),
            ("GET", p + "/queries/{job}", self.get_query_results),
            ("POST", "/upload" + p + "/jobs", self.upload_job),
        ]

    def upload_job(self, req, project):
        # Load jobs upload a file (load_table_from_file/_json/_dataframe); not emulated.
        raise ApiError(
            501,
            "Load jobs (client.load_table_from_*) are not emulated. Fix: write rows with client.insert_rows / "
            "insert_rows_json, or with an INSERT query whose values are query parameters.",
            reason="notImplemented",
        )

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
            "etag": etag(project, job_id),
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
        shown, token = page(jobs, req)
        body = {"kind": "bigquery#jobList", "etag": etag(project, len(jobs)), "jobs": [{**j, "state": j["status"]["state"]} for j in shown]}
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
            "etag": etag(resource["id"]),
            "location": resource["jobReference"]["location"],
            "creationTime": resource["statistics"]["creationTime"],
            "startTime": resource["statistics"]["startTime"],
            "endTime": resource["statistics"]["endTime"],
        }
        if outcome.num_dml_affected_rows is not None:
            body["numDmlAffectedRows"] = str(outcome.num_dml_affected_rows)
        if outcome.result is not None and self.catalog.table_kind(outcome.result) is not None:
            body.update(rows_page(self.catalog, outcome.result, req))
        # No totalRows for DDL/DML: the client then knows there is no result table to read.
        return body

    def query(self, req, project):
        body = req.json()
        ref = {"projectId": project, "jobId": f"job_{uuid.uuid4().hex}"}
        if body.get("location"):
            ref["location"] = body["location"]
        config_keys = ("query", "defaultDataset", "queryParameters", "parameterMode", "useLegacySql")
        query_config = {k: body[k] for k in config_keys if k in body}
        # The job jobs.query makes carries the request's labels where jobs.insert has them.
        labels = {"labels": body["labels"]} if body.get("labels") else {}
        if body.get("dryRun"):
            job = self._dry_run(ref, {"query": query_config, "dryRun": True, **labels})
            stats = job["statistics"]["query"]
            result = {"kind": "bigquery#queryResponse", "jobReference": job["jobReference"], "jobComplete": True,
                      "totalBytesProcessed": stats["totalBytesProcessed"], "cacheHit": False}
            if "schema" in stats:
                result["schema"] = stats["schema"]
            return result
        with self._jobs_lock:
            self.jobs[(project, ref["jobId"])] = {}
        job = self._run_query_job(ref, {"query": query_config, **labels})
        if job["error"] is not None:
            raise job["error"]
        result = self._results_body(job, _BodyArgs(body))
        result["kind"] = "bigquery#queryResponse"
        result["queryId"] = ref["jobId"]
        return result


class _BodyArgs:
    """jobs.query carries in its body what getQueryResults takes as URL parameters (paging, formats)."""

    def __init__(self, body: dict[str, Any]):
        self.body = body

    def arg(self, name: str, default: str | None = None) -> str | None:
        value = self.body.get(name)
        return default if value is None else str(value)

    def flag(self, name: str) -> bool:
        if name == "formatOptions.useInt64Timestamp":
            return bool((self.body.get("formatOptions") or {}).get("useInt64Timestamp"))
        return str(self.body.get(name)).lower() == "true"
