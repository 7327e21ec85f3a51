"""Helpers of the CLI tests that run a small project, on the local target or on the emulator.

On the local target a project's warehouse is `target/bqbatch.duckdb`; on the emulator
it is BigQuery + Vertex AI, reached with the real google-cloud-bigquery and google-genai
clients. Fixtures that write the projects stay in the tests (and tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import yaml

PROJECT, REGION = "emu-project", "us-central1"

# Polls and retries of jobs on the emulator: fast, as its jobs end in fractions of a second.
FAST_TARGET = {"retry_initial_seconds": 0.01}
FAST_PREDICTOR = {"poll_initial_seconds": 0.02, "poll_max_seconds": 0.1, "retry_initial_seconds": 0.01}


def ok(result):
    """The CLI result of a command that must succeed (its output shown if it did not)."""
    assert result.exit_code == 0, result.output
    return result


def fails(result, exit_code: int = 1):
    """The CLI result of a command that must fail with `exit_code`."""
    assert result.exit_code == exit_code, result.output
    return result


# -- the local target ----------------------------------------------------------------------------------


def local_rows(root: Path, sql: str) -> list[tuple]:
    """Rows of a query on the project's local warehouse, opened read-only (as a user's second session would)."""
    with duckdb.connect(str(root / "target" / "bqbatch.duckdb"), read_only=True) as db:
        return db.execute(sql).fetchall()


def local_tables(root: Path) -> list[str]:
    return [t for (t,) in local_rows(root, "select table_name from information_schema.tables order by 1")]


# -- the emulator: BigQuery + Vertex AI ----------------------------------------------------------------


def emulator_for_valid_requests():
    """An emulator (a context manager) whose Vertex jobs leave PENDING after 0.02 s and run the local predictor
    without its validation pass: for projects whose requests are valid by construction, where that pass (about
    a second of query planning per job) would dominate the test."""
    from bqbatch_sql.emulator import Emulator

    return Emulator(vertex_options={"pending_seconds": 0.02, "predictor_options": {"assume_valid": True}})


def emulator_profiles(emulator, dataset: str, *, profile: str = "demo", predictor: dict[str, Any] | None = None,
                      **target: Any) -> str:
    """profiles.yml text: `profile`, whose target `prod` is BigQuery on the emulator in `dataset` with a
    Vertex predictor. `target` and `predictor` add to (or override) the fast defaults."""
    prod = {"type": "bigquery", "method": "emulator", "project": PROJECT, "dataset": dataset, "location": REGION,
            "api_endpoint": emulator.url, **FAST_TARGET, **target,
            "predictor": {"type": "vertex", "base_url": emulator.url, **FAST_PREDICTOR, **(predictor or {})}}
    return yaml.safe_dump({profile: {"target": "prod", "outputs": {"prod": prod}}}, sort_keys=False)


def on_emulator(root: Path, emulator, dataset: str) -> tuple:
    """Point a project made by `make_project` at the emulator (its profile in the project dir, in `dataset`);
    the CLI arguments that run it there."""
    (root / "bqbatch_project.yml").write_text("name: demo\nprofile: demo\n")
    (root / "profiles.yml").write_text(emulator_profiles(emulator, dataset))
    return ("--project-dir", root, "--profiles-dir", root)


def bigquery(emulator):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery as bq

    return bq.Client(project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator.url})


def bigquery_rows(client, sql: str) -> list[tuple]:
    return [tuple(r.values()) for r in client.query_and_wait(sql)]


def vertex_jobs(emulator, dataset: str, **labels: str) -> list:
    """The Vertex jobs writing into `dataset` with these labels, oldest first, as google-genai lists them."""
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    client = genai.Client(vertexai=True, project=PROJECT, location=REGION,
                          credentials=google.oauth2.credentials.Credentials(token="test"),
                          http_options=types.HttpOptions(base_url=emulator.url, api_version="v1"))
    flt = " AND ".join(f'labels.{k}="{v}"' for k, v in labels.items())
    found = client.batches.list(config=types.ListBatchJobsConfig(filter=flt, page_size=100))
    return sorted((j for j in found if f".{dataset}." in j.dest.bigquery_uri), key=lambda j: j.create_time)
