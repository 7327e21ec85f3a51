"""Fixtures of the predictor tests whose jobs talk to the emulated Gemini API (online, gemini_batch)."""

from __future__ import annotations

import pytest

from bqbatch_sql.adapters.duckdb import DuckDBAdapter
from bqbatch_sql.emulator import Emulator
from bqbatch_sql.emulator.gemini_api import GeminiApi


@pytest.fixture(scope="module")
def emu():
    with Emulator() as emulator:
        if getattr(emulator, "gemini", None) is None:  # an emulator that does not register the Gemini API itself
            GeminiApi().install(emulator)
        yield emulator


@pytest.fixture
def gemini(emu):
    """The emulated Gemini API as a new one: no calls on record, no scripted batch outcomes, no faults, no limits."""
    api = emu.gemini
    api.calls.clear()
    api.outcomes.clear()
    api.limits.reset()
    api.limits.latency_seconds, api.limits.requests_per_minute = 0.0, None
    api.pending_seconds = 0.02
    api.running.set()
    emu.faults.clear()
    yield api
    api.outcomes.clear()
    api.running.set()  # a test that held batches PENDING must not leave them held
    emu.faults.clear()


@pytest.fixture
def adapter(tmp_path, monkeypatch):
    """A DuckDB warehouse file, with an API key in the environment (test_local and
    test_openai_compatible define their own `adapter`)."""
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-123")
    ad = DuckDBAdapter(tmp_path / "w.duckdb")
    yield ad
    ad.close()
