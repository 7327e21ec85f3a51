"""Nothing leaves the machine: every connection the real clients open goes to 127.0.0.1.

The socket layer is observed (each connect and name lookup is recorded, then done
as usual), so the clients run their real code path while the test watches.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys

from google.cloud import bigquery
from google.genai import types


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def test_every_connection_of_both_clients_stays_on_loopback(emulator, make_bq, make_genai, monkeypatch):
    connects: list = []
    lookups: list = []
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        connects.append(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        connects.append(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        lookups.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    # Clients are made inside the observed window: credentials, discovery, everything.
    bq = make_bq(emulator.url)
    ds = bigquery.Dataset(f"{bq.project}.net")
    ds.location = "us-central1"
    bq.create_dataset(ds)
    bq.query_and_wait("create table net.t as select 1 as id")
    assert [r["id"] for r in bq.query("select id from net.t").result()] == [1]
    assert bq.insert_rows_json("net.t", [{"id": 2}]) == []
    genai = make_genai(emulator.url)
    job = genai.batches.create(model="gemini-2.5-flash", src="bq://emu-project.net.missing",
                               config=types.CreateBatchJobConfig(dest="bq://emu-project.net.out"))
    genai.batches.get(name=job.name)
    list(genai.batches.list())

    assert connects, "the clients opened no connection at all: the observation is not working"
    assert [a for a in connects if not _is_loopback(a)] == []
    assert [h for h in lookups if not _is_loopback(h)] == []


def test_run_emulator_serves_until_interrupted_and_prints_how_to_connect(make_bq):
    code = "from bqbatch_sql.emulator import run_emulator; run_emulator(port=0, log=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline()]
        assert lines[0].startswith("bqbatch emulator listening on http://127.0.0.1:"), lines[0] + proc.stderr.read()
        url = lines[0].split()[-1]
        while "Ctrl-C" not in lines[-1] and lines[-1]:
            lines.append(proc.stdout.readline())
        printed = "".join(lines)
        bq = make_bq(url)
        assert bq.create_dataset("from_cli").dataset_id == "from_cli"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert f"api_endpoint: {url}" in printed and f"GOOGLE_VERTEX_BASE_URL={url}" in printed
