"""The BigQuery adapter against the project's emulator, through the real google-cloud-bigquery client."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import pytest
import sqlglot

from bqbatch_sql.adapters.bigquery import BigQueryAdapter
from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.config import BigQueryTarget
from bqbatch_sql.emulator import Emulator
from bqbatch_sql.errors import ProfileError, WarehouseError
from bqbatch_sql.gcp import load_credentials

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulator():
    with Emulator() as emu:
        yield emu


@pytest.fixture
def make_adapter(emulator):
    made = []

    def make(dataset: str = "wh", **overrides) -> BigQueryAdapter:
        settings = dict(project="emu-project", dataset=dataset, location="us-central1", method="emulator",
                        api_endpoint=emulator.url, retry_initial_seconds=0.01, retry_deadline_seconds=3,
                        job_labels={"team": "data"})
        adapter = BigQueryAdapter(BigQueryTarget(**{**settings, **overrides}))
        adapter.create_schema(adapter.schema)
        made.append(adapter)
        return adapter

    yield make
    emulator.faults.clear()
    for adapter in made:
        adapter.close()


def q(sql: str):
    return sqlglot.parse_one(sql, dialect="bigquery")


def test_parameters_are_typed_and_none_becomes_null(make_adapter):
    bq = make_adapter("params")
    bq.execute("CREATE TABLE `params`.`t` (i INT64, f FLOAT64, b BOOL, s STRING, d DATE, ts TIMESTAMP, n NUMERIC)")
    when = dt.datetime(2026, 11, 21, 12, 30, tzinfo=dt.timezone.utc)
    values = [7, 2.5, True, "it's a '?'", dt.date(2026, 1, 2), when, decimal.Decimal("1.25")]
    bq.execute("INSERT INTO `params`.`t` VALUES (?, ?, ?, ?, ?, ?, ?)", values)
    bq.execute("INSERT INTO `params`.`t` (i, s) VALUES (?, ?)", [None, "with a null int"])
    assert bq.fetchall("SELECT i, f, b, s, d, ts, n FROM `params`.`t` WHERE s = ?", ["it's a '?'"]) == [tuple(values)]
    assert bq.fetchall("SELECT i FROM `params`.`t` WHERE s = '?' OR s = ?", ["with a null int"]) == [(None,)]
    assert bq.fetchall("SELECT COUNT(*) FROM `params`.`t` WHERE i IN UNNEST(?)", [[7, 8]]) == [(1,)]


def test_tables_views_and_their_catalog(make_adapter):
    bq = make_adapter("ddl")
    table, view = bq.relation("t"), bq.relation("v")
    bq.create_table_as(table, q("SELECT 1 AS id, 'a' AS s, JSON '{\"k\": 1}' AS j, 2.5 AS x, TRUE AS ok"))
    bq.create_view(view, q("SELECT id FROM `emu-project`.`ddl`.`t`"))
    assert (bq.relation_kind(table), bq.relation_kind(view), bq.relation_kind(bq.relation("nope"))) == \
        ("TABLE", "VIEW", None)
    assert [(c.name, c.data_type) for c in bq.columns(table)] == \
        [("id", "INT64"), ("s", "STRING"), ("j", "JSON"), ("x", "FLOAT64"), ("ok", "BOOL")]
    assert bq.row_count(view) == 1

    bq.create_table_as(view, q("SELECT 2 AS id UNION ALL SELECT 3"))  # a view replaced by a table
    assert bq.relation_kind(view) == "TABLE" and bq.row_count(view) == 2
    bq.drop_relation(view)
    bq.drop_relation(view)  # dropping what is gone is no error
    assert not bq.table_exists(view)


def test_create_schema_uses_the_target_location_and_keeps_an_existing_dataset(make_adapter):
    eu = make_adapter("regional_eu", location="europe-west4")
    assert eu.dataset_location() == "europe-west4"
    again = make_adapter("regional_eu", location="us-central1")
    assert again.dataset_location() == "europe-west4"
    assert again.dataset_location("does_not_exist") is None


def test_seeds_get_the_types_the_local_target_gives_them(make_adapter, tmp_path):
    bq = make_adapter("seeds")
    path = REPO / "seeds" / "reviews.csv"
    assert bq.load_csv(bq.relation("reviews"), path) == 6

    local = DuckDBAdapter(":memory:")
    local.load_csv(local.relation("reviews"), path)
    assert bq.columns(bq.relation("reviews")) == local.columns(local.relation("reviews"))
    text = bq.fetchall("SELECT review_text FROM `seeds`.`reviews` WHERE review_id = 101")[0][0]
    assert text.endswith("love it! 😍")

    csv = tmp_path / "typed.csv"
    csv.write_text("code,day,amount\n007,2026-01-02,\n010,2026-01-03,3\n")
    assert bq.load_csv(bq.relation("typed"), csv, {"code": "STRING", "amount": "NUMERIC"}) == 2
    assert {c.name: c.data_type for c in bq.columns(bq.relation("typed"))} == \
        {"code": "STRING", "day": "DATE", "amount": "NUMERIC"}
    assert bq.fetchall("SELECT code, amount FROM `seeds`.`typed` ORDER BY code") == \
        [("007", None), ("010", decimal.Decimal(3))]


def test_queries_carry_the_target_job_labels(make_adapter, emulator):
    bq = make_adapter("labels", job_labels={"team": "data", "pipeline": "nightly"})
    bq.fetchall("SELECT 'labelled' AS marker")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project="emu-project", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": emulator.url})
    labels = [j.labels for j in client.list_jobs(max_results=20) if "'labelled'" in (j.query or "")]
    assert labels == [{"team": "data", "pipeline": "nightly"}]


def test_dry_run_checks_a_query_without_running_it(make_adapter):
    bq = make_adapter("dry")
    bq.create_table_as(bq.relation("t"), q("SELECT 1 AS id"))
    assert bq.dry_run(q("SELECT id FROM `emu-project`.`dry`.`t`")) >= 0
    with pytest.raises(WarehouseError, match="could not dry-run the query: .*Not found: Table emu-project:dry.missing"):
        bq.dry_run(q("SELECT id FROM `emu-project`.`dry`.`missing`"))


def test_errors_name_what_failed_and_the_sql(make_adapter):
    bq = make_adapter("errs")
    with pytest.raises(WarehouseError) as err:
        bq.fetchall("SELECT * FROM `emu-project`.`errs`.`absent`")
    assert "Not found: Table emu-project:errs.absent" in str(err.value)
    assert "SQL: SELECT * FROM `emu-project`.`errs`.`absent`" in str(err.value)


def test_permission_denied_shows_the_grant_command(make_adapter, emulator):
    bq = make_adapter("denied")
    emulator.faults.fail_call(403, api="bigquery", times=1)
    with pytest.raises(WarehouseError) as err:
        bq.fetchall("SELECT 1")
    message = str(err.value)
    assert message.startswith("BigQuery denied permission")
    assert "gcloud projects add-iam-policy-binding emu-project" in message
    assert '--member="serviceAccount:SERVICE_ACCOUNT_ID@emu-project.iam.gserviceaccount.com"' in message
    assert '--role="roles/bigquery.user"' in message


def test_503_and_429_are_retried_until_the_deadline(make_adapter, emulator):
    bq = make_adapter("flaky", retry_deadline_seconds=1)
    emulator.faults.fail_call(503, api="bigquery", times=2)
    emulator.faults.fail_call(429, api="bigquery", times=1)
    assert bq.fetchall("SELECT 40 + 2") == [(42,)]

    emulator.faults.fail_call(503, api="bigquery", fraction=1.0)
    with pytest.raises(WarehouseError, match=r"still failing after retrying for 1 s .*retry_deadline_seconds"):
        bq.fetchall("SELECT 1")


def test_a_slow_answer_ends_at_the_query_timeout(make_adapter, emulator):
    bq = make_adapter("slow", query_timeout_seconds=0.3, retry_deadline_seconds=1)
    emulator.faults.slow(1.0, api="bigquery", path="/queries")
    with pytest.raises(WarehouseError, match="Read timed out"):
        bq.fetchall("SELECT 1")


def test_debug_checks_say_where_the_dataset_is(make_adapter):
    lines = make_adapter("dbg").debug_checks()
    assert lines[0] == "credentials: emulator"
    assert "dataset emu-project.dbg: OK, location us-central1" in lines
    assert lines[-1] == "query: OK"


# -- credentials ------------------------------------------------------------------------


def _target(**overrides) -> BigQueryTarget:
    return BigQueryTarget(**{"project": "p", "dataset": "d", **overrides})


def test_a_service_account_keyfile_is_named_never_shown(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    keyfile = tmp_path / "sa.json"
    keyfile.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "abc123", "private_key": pem,
        "client_email": "runner@p.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    creds = load_credentials(_target(method="service-account", keyfile=str(keyfile)))
    assert creds.principal == "runner@p.iam.gserviceaccount.com"
    assert creds.describe() == f"service-account as runner@p.iam.gserviceaccount.com (keyfile {keyfile})"

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"type": "service_account", "private_key": "TOP-SECRET-KEY-MATERIAL"}))
    with pytest.raises(ProfileError) as err:
        load_credentials(_target(method="service-account", keyfile=str(broken)))
    assert str(broken) in str(err.value) and "TOP-SECRET" not in str(err.value)

    with pytest.raises(ProfileError, match="keyfile '.*missing.json' does not exist"):
        load_credentials(_target(method="service-account", keyfile=str(tmp_path / "missing.json")))


def test_no_application_default_credentials_says_how_to_log_in(tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server lookup: the test stays offline
    with pytest.raises(ProfileError, match="gcloud auth application-default login"):
        load_credentials(_target(method="oauth"))


def test_the_emulator_method_needs_an_endpoint():
    with pytest.raises(ProfileError, match="needs `api_endpoint:`"):
        load_credentials(_target(method="emulator"))
