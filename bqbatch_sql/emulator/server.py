"""HTTP plumbing of the emulator: server, routing, fault injection, JSON in and out.

One ThreadingHTTPServer on 127.0.0.1 answers both APIs: BigQuery under
/bigquery/v2/... (google-cloud-bigquery with client_options={"api_endpoint": url})
and Vertex AI under /v1/... and /v1beta1/... (google-genai with
HttpOptions(base_url=url)). Each call first passes the instance's fault rules
(`Emulator.faults`), then is routed to bigquery_api or vertex_api; an ApiError
becomes the error body that service would send.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from bqbatch_sql.emulator.api_errors import ApiError
from bqbatch_sql.emulator.bigquery_api import BigQueryApi
from bqbatch_sql.emulator.faults import Faults
from bqbatch_sql.emulator.storage import Catalog
from bqbatch_sql.emulator.vertex_api import VertexApi


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        """A boolean query parameter; clients send true, True or 1."""
        return (self.arg(name) or "").lower() in ("true", "1")

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as e:
            raise ApiError(400, f"Invalid JSON payload received. {e}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "Invalid JSON payload received: expected an object.")
        return value


Handler = Callable[..., Any]


class Router:
    """Path templates like /projects/{project}/jobs/{job}:cancel -> handlers."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler, str]] = []

    def add(self, method: str, template: str, handler: Handler, api: str) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/:]+)", re.escape(template))
        self._routes.append((method, re.compile(f"^{pattern}$"), handler, api))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for route_method, pattern, handler, _ in self._routes:
            m = pattern.match(path)
            if m:
                if route_method == method:
                    return handler, {k: unquote(v) for k, v in m.groupdict().items()}
                allowed = True
        if allowed:
            raise ApiError(405, f"Method {method} is not allowed on {path}.")
        raise ApiError(404, f"The emulator does not serve {method} {path}.", reason="notFound")


def api_of(path: str) -> str:
    if path.startswith(("/bigquery/", "/upload/bigquery/")):
        return "bigquery"
    if path.startswith(("/v1/", "/v1beta1/")):
        return "vertex"
    if path.startswith(("/v1beta/", "/upload/v1beta/")):
        return "gemini"
    return "other"


class Emulator:
    """The BigQuery + Vertex AI batch prediction emulator.

    >>> with Emulator() as emu:            # port 0: a free port
    ...     url = emu.url                  # http://127.0.0.1:PORT
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_path: str | Path | None = None,
        *,
        faults: Faults | None = None,
        vertex_options: dict[str, Any] | None = None,
        log: bool = False,
    ):
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        self.catalog = Catalog(data_path)
        self.bigquery = BigQueryApi(self.catalog)
        self.router = Router()
        for method, template, handler in self.bigquery.routes():
            self.router.add(method, template, handler, "bigquery")
        self.vertex = VertexApi(self.catalog, self.faults, **(vertex_options or {}))
        for version in ("v1", "v1beta1"):
            for method, template, handler in self.vertex.routes(f"/{version}"):
                self.router.add(method, template, handler, "vertex")
        # The Gemini Developer API (and Vertex's online generateContent) share the server.
        from bqbatch_sql.emulator.gemini_api import GeminiApi

        self.gemini = None
        GeminiApi().install(self)
        self.log = log
        self._server: ThreadingHTTPServer | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("The emulator is not running; call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Serve in a background thread; return the base URL (port 0 picks a free port)."""
        if self._server is not None:
            return self.url
        if self._stopped:
            raise RuntimeError("This emulator was stopped; make a new Emulator (the same data_path keeps its tables).")
        server = _Server((self.host, self.port), _RequestHandler)
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bqbatch-emulator", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving, end running batch jobs, close the database (an emulator is started once)."""
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            self._server.shutdown()
            # Clients keep connections alive; close them so every handler thread ends
            # (and lets go of the database) before the catalog closes.
            self._server.close_connections()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
        if self.vertex is not None:
            self.vertex.stop()
        if self.gemini is not None:
            self.gemini.stop()
        self.catalog.close()

    def __enter__(self) -> "Emulator":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one call -------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        api = api_of(request.path)
        decision = self.faults.decide(api, request.method, request.path)
        if decision.delay:
            time.sleep(decision.delay)
        try:
            if decision.status is not None:
                raise ApiError(decision.status, decision.message)
            handler, params = self.router.match(request.method, request.path)
            result = handler(request, **params)
        except ApiError as e:
            return e.code, e.body(api), {}
        except Exception as e:  # a bug of ours: answer 500 with the cause, and say so on stderr
            traceback.print_exc(file=sys.stderr)
            error = ApiError(500, f"Emulator internal error: {type(e).__name__}: {e}")
            return 500, error.body(api), {}
        if result is None:
            return 204, None, {}
        if isinstance(result, tuple):
            return result
        return 200, result, {}


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client closed it first: nothing left to close


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the clients reuse connections
    # Headers and body go out as two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms a call).
    disable_nagle_algorithm = True
    server_version = "bqbatch-emulator"

    def _dispatch(self) -> None:
        emulator: Emulator = self.server.emulator  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            body=body,
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        started = time.perf_counter()
        status, payload, headers = emulator.handle(request)
        self.elapsed_ms = (time.perf_counter() - started) * 1000
        # bytes are a file's content (Gemini Files API downloads), sent as they are
        raw = isinstance(payload, (bytes, bytearray))
        data = b"" if payload is None else bytes(payload) if raw else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None and not raw:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "emulator").log:  # noqa: B009
            took = f" {self.elapsed_ms:.0f} ms" if hasattr(self, "elapsed_ms") else ""
            sys.stderr.write("emulator: " + (format % args) + took + "\n")


def run_emulator(host: str = "127.0.0.1", port: int = 9050, data_path: str | Path | None = None, *, log: bool = True) -> None:
    """`bqbatch emulator`: serve until Ctrl-C, after printing how to point clients at it."""
    emulator = Emulator(host, port, data_path, log=log)
    url = emulator.start()
    print(connection_help(url, data_path), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


def connection_help(url: str, data_path: str | Path | None) -> str:
    storage = f"DuckDB file {data_path}" if data_path else "in memory (gone when it stops; --data PATH keeps it)"
    lines = [
        f"bqbatch emulator listening on {url}",
        f"  storage: {storage}",
        "",
        "profiles.yml target (BigQuery + Vertex AI, pointed at the emulator):",
        "  type: bigquery",
        "  project: my-project",
        "  dataset: analytics",
        "  location: us-central1",
        f"  api_endpoint: {url}",
        "  vertex:",
        f"    base_url: {url}",
        "",
        "Environment for other tools:",
        f"  export GOOGLE_VERTEX_BASE_URL={url}    # google-genai (vertexai=True) reads it",
        "",
        "Python clients:",
        f"  bigquery.Client(project=..., credentials=AnonymousCredentials(), client_options={{'api_endpoint': '{url}'}})",
        "  genai.Client(vertexai=True, project=..., location=..., credentials=google.oauth2.credentials.Credentials(token='x'),",
        f"               http_options=types.HttpOptions(base_url='{url}', api_version='v1'))",
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)
