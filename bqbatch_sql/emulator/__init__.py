"""A local stand-in for the BigQuery v2 and Vertex AI batchPredictionJobs REST APIs.

Real client libraries (google-cloud-bigquery, google-genai) talk to it over HTTP on
127.0.0.1, so the production path runs end to end offline: tables live in DuckDB,
queries go through the local target's transpiler, batch jobs run the local predictor.

    from bqbatch_sql.emulator import Emulator
    with Emulator() as emu:
        client = bigquery.Client(project="p", credentials=AnonymousCredentials(),
                                 client_options={"api_endpoint": emu.url})
"""

from bqbatch_sql.emulator.faults import Faults
from bqbatch_sql.emulator.server import Emulator, connection_help, run_emulator

__all__ = ["Emulator", "Faults", "run_emulator", "connection_help"]
