"""Fixtures of the emulator tests: a running emulator and the real clients pointed at it.

Clients get short retry delays and timeouts so that fault-injection tests run in
well under a second, while still going through the clients' own retry code.
"""

from __future__ import annotations

import pytest

from bqbatch_sql.emulator import Emulator

PROJECT = "emu-project"
REGION = "us-central1"


def _bigquery_client(url: str, project: str = PROJECT):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": url})


def _genai_client(url: str, location: str = REGION, *, attempts: int | None = None, labels: dict | None = None):
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    retry = types.HttpRetryOptions(attempts=attempts, initial_delay=0.01, max_delay=0.05, jitter=0) if attempts else None
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=location,
        # AnonymousCredentials is refused by the SDK; a static token never refreshes.
        credentials=google.oauth2.credentials.Credentials(token="emulator-token"),
        http_options=types.HttpOptions(
            base_url=url,
            api_version="v1",
            retry_options=retry,
            timeout=10_000,
            extra_body={"labels": labels} if labels else None,
        ),
    )


@pytest.fixture
def emulator():
    # Vertex jobs move PENDING -> RUNNING -> SUCCEEDED quickly in tests.
    with Emulator(vertex_options={"pending_seconds": 0.05}) as emu:
        yield emu


@pytest.fixture
def make_bq():
    """make_bq(url, project=...) -> google.cloud.bigquery.Client pointed at the emulator."""
    return _bigquery_client


@pytest.fixture
def make_genai():
    """make_genai(url, location=..., attempts=..., labels=...) -> google.genai.Client (Vertex mode)."""
    return _genai_client


@pytest.fixture
def bq(emulator):
    return _bigquery_client(emulator.url)


@pytest.fixture
def genai(emulator):
    return _genai_client(emulator.url)


@pytest.fixture
def fast_retry():
    """fast_retry(deadline) -> the BigQuery client's own retry policy with test-sized delays."""
    from google.cloud.bigquery import DEFAULT_RETRY

    def make(deadline: float = 3.0):
        return DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.05).with_timeout(deadline)

    return make


@pytest.fixture
def dataset(bq):
    """A single-region dataset (us-central1), as Vertex batch prediction needs."""
    from google.cloud import bigquery

    ds = bigquery.Dataset(f"{bq.project}.analytics")
    ds.location = REGION
    return bq.create_dataset(ds)
