"""BigQuery v2 REST resources of the emulator: datasets, tables, tabledata, insertAll.

The subset google-cloud-bigquery 3.x calls when bqbatch (and a typical pipeline)
runs against BigQuery; jobs and queries are in bq_jobs. Resources are answered in
the REST shapes the client parses (legacy type names, int64 values as strings,
millisecond times), errors as ApiError in BigQuery's error format.
"""

from __future__ import annotations

from typing import Any, Callable

from sqlglot import exp

from bqbatch_sql.emulator import bq_types
from bqbatch_sql.emulator.api_errors import bad_request, conflict
from bqbatch_sql.emulator.bq_jobs import BigQueryJobs
from bqbatch_sql.emulator.bq_query import QueryEngine, QueryRequest, parse_sql
from bqbatch_sql.emulator.bq_rest import PREFIX, as_int, etag, page, rows_page
from bqbatch_sql.emulator.storage import Catalog, TableRef, sql_table


class BigQueryApi:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.engine = QueryEngine(catalog)
        self.jobs = BigQueryJobs(catalog, self.engine)

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
        ] + self.jobs.routes()

    # -- datasets ------------------------------------------------------------------

    def _dataset_resource(self, d) -> dict[str, Any]:
        body = {
            "kind": "bigquery#dataset",
            "etag": etag(d.project, d.dataset, d.modified),
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
        shown, token = page(datasets, req)
        body = {
            "kind": "bigquery#datasetList",
            "etag": etag(project, len(datasets)),
            "datasets": [
                {
                    "kind": "bigquery#dataset",
                    "id": f"{d.project}:{d.dataset}",
                    "datasetReference": {"projectId": d.project, "datasetId": d.dataset},
                    "labels": d.labels,
                    "location": d.location,
                }
                for d in shown
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
            "etag": etag(ref.legacy_id, meta.modified),
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
        shown, token = page(names, req)
        body = {
            "kind": "bigquery#tableList",
            "etag": etag(project, dataset, len(names)),
            "tables": [self._table_resource(TableRef(project, dataset, name), full=False) for name, _ in shown],
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
                expiration=as_int(body.get("expirationTime")),
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
        body = rows_page(self.catalog, ref, req)
        body.update({"kind": "bigquery#tableDataList", "etag": etag(ref.legacy_id, body["totalRows"])})
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
