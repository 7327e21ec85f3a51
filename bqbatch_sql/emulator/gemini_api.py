"""The Gemini Developer API, emulated: generateContent, the Files API and batch mode.

Served by the emulator's HTTP server next to BigQuery and Vertex, for google-genai
clients made with `genai.Client(api_key=..., http_options={"base_url": URL})`:

    POST /v1beta/models/{model}:generateContent        one answer (ServerLimits: latency, 429 over quota)
    POST /upload/v1beta/files  (+ the upload URL)      resumable upload of a JSONL input file
    GET|DELETE /v1beta/files/{file}, GET .../{file}:download
    POST /v1beta/models/{model}:batchGenerateContent   a batch over an input file or inline requests
    GET|DELETE /v1beta/batches/{batch}, POST .../{batch}:cancel

Also POST /v1/projects/{p}/locations/{l}/publishers/{pub}/models/{m}:generateContent,
Vertex's online endpoint, with the same answers.

A batch moves PENDING -> RUNNING -> SUCCEEDED in a background thread and writes
its result file: one line per input line, `{"key", "response"}` or `{"key", "error"}`.
The API's limits are configurable (`max_file_bytes`, default the real 2 GB) so tests
can hit them with small files.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from bqbatch_sql.emulator.api_errors import ApiError, not_found
from bqbatch_sql.emulator.model_serving import ServerLimits, emulated_response, status_error, validation_status
from bqbatch_sql.predictors.responses import status_text

FILE_BYTES_LIMIT = 2 * 1024**3  # the Files API's limit per file
INLINE_BYTES_LIMIT = 20 * 1024**2  # batch mode's limit on inline requests
RETENTION = timedelta(hours=48)  # the Files API keeps files this long
TERMINAL = ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class GeminiApi:
    """State and handlers of the emulated Gemini Developer API."""

    def __init__(self, *, latency_seconds: float = 0.0, requests_per_minute: float | None = None,
                 pending_seconds: float = 0.05, max_file_bytes: int = FILE_BYTES_LIMIT):
        self.limits = ServerLimits(latency_seconds, requests_per_minute)
        self.pending_seconds = pending_seconds
        self.max_file_bytes = max_file_bytes
        self.files: dict[str, dict[str, Any]] = {}  # id -> resource
        self.blobs: dict[str, bytes] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        # How the next batches end, in order (tests): "BATCH_STATE_FAILED", "BATCH_STATE_EXPIRED", or
        # "RESULTS_GONE" (succeeds, but its result file is deleted at once, as 48 hours would); None: normally.
        self.outcomes: deque[str | None] = deque()
        self.calls: list[str] = []  # "METHOD path" of every call, for tests
        self.running = threading.Event()  # cleared: batches stay PENDING until it is set again (tests)
        self.running.set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def routes(self) -> list[tuple[str, str, Any]]:
        v = "/v1beta"
        return [
            ("POST", v + "/models/{model}:generateContent", self.generate_content),
            ("POST", "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:generateContent",
             self.generate_content),
            ("POST", "/upload" + v + "/files", self.start_upload),
            ("POST", "/upload" + v + "/files/uploads/{upload}", self.upload_chunk),
            ("GET", v + "/files/{file}", self.get_file),
            ("DELETE", v + "/files/{file}", self.delete_file),
            ("GET", v + "/files/{file}:download", self.download_file),
            ("POST", v + "/models/{model}:batchGenerateContent", self.create_batch),
            ("GET", v + "/batches/{batch}", self.get_batch),
            ("POST", v + "/batches/{batch}:cancel", self.cancel_batch),
            ("DELETE", v + "/batches/{batch}", self.delete_batch),
        ]

    def install(self, emulator: Any) -> None:
        """Add these routes to a running or new `Emulator` (idempotent)."""
        if getattr(emulator, "gemini", None) is self:
            return
        for method, template, handler in self.routes():
            emulator.router.add(method, template, handler, "gemini")
        emulator.gemini = self

    def stop(self) -> None:
        for thread in list(self._threads):
            thread.join(timeout=5)

    def _check_key(self, request: Any) -> None:
        self.calls.append(f"{request.method} {request.path}")
        if request.path.startswith("/v1/"):
            return  # Vertex: OAuth, checked by nobody here
        if not (request.headers.get("x-goog-api-key") or request.arg("key")):
            raise ApiError(403, "Method doesn't allow unregistered callers (callers without established identity). "
                                "Please use API Key or other form of API consumer identity to call this API.")

    # -- generateContent -------------------------------------------------------------

    def generate_content(self, request: Any, model: str, **_: str) -> dict[str, Any]:
        self._check_key(request)
        if not self.limits.admit():
            raise ApiError(429, "Resource has been exhausted (e.g. check quota).")
        self.limits.serve()
        body = request.json()
        status = validation_status(request.body.decode())
        if status is not None:
            code, message, name = status_error(status)
            raise ApiError(code, message, status=name)
        return emulated_response(body, model)

    # -- files -------------------------------------------------------------------------

    def start_upload(self, request: Any) -> tuple[int, dict, dict[str, str]]:
        self._check_key(request)
        if request.headers.get("x-goog-upload-command", "").lower() != "start":
            raise ApiError(400, "Upload requests must start with X-Goog-Upload-Command: start.")
        size = int(request.headers.get("x-goog-upload-header-content-length") or 0)
        if size > self.max_file_bytes:
            raise ApiError(400, f"File size {size} bytes exceeds the maximum of {self.max_file_bytes} bytes.")
        meta = request.json().get("file") or {}
        upload_id = uuid.uuid4().hex
        with self._lock:
            self.uploads[upload_id] = {"meta": meta, "size": size, "data": bytearray()}
        host = request.headers.get("host", "127.0.0.1")
        url = f"http://{host}/upload/v1beta/files/uploads/{upload_id}"
        return 200, {}, {"x-goog-upload-url": url, "x-goog-upload-status": "active"}

    def upload_chunk(self, request: Any, upload: str) -> tuple[int, dict, dict[str, str]]:
        with self._lock:
            state = self.uploads.get(upload)
        if state is None:
            raise not_found(f"Upload {upload} not found.")
        offset = int(request.headers.get("x-goog-upload-offset") or 0)
        if offset != len(state["data"]):
            raise ApiError(400, f"Upload offset {offset} does not match the {len(state['data'])} bytes received.")
        state["data"] += request.body
        if len(state["data"]) > self.max_file_bytes:
            raise ApiError(400, f"File exceeds the maximum of {self.max_file_bytes} bytes.")
        command = request.headers.get("x-goog-upload-command", "")
        if "finalize" not in command:
            return 200, {}, {"x-goog-upload-status": "active"}
        with self._lock:
            del self.uploads[upload]
        meta = state["meta"]
        resource = self._new_file(bytes(state["data"]), meta.get("mimeType") or "application/octet-stream",
                                  meta.get("displayName"), source="UPLOADED")
        return 200, {"file": resource}, {"x-goog-upload-status": "final"}

    def _new_file(self, data: bytes, mime: str, display_name: str | None, *, source: str,
                  file_id: str | None = None) -> dict[str, Any]:
        file_id = file_id or uuid.uuid4().hex[:12]
        now = datetime.now(timezone.utc)
        resource = {
            "name": f"files/{file_id}", "mimeType": mime, "sizeBytes": str(len(data)),
            "createTime": _now(), "updateTime": _now(),
            "expirationTime": (now + RETENTION).isoformat().replace("+00:00", "Z"),
            "sha256Hash": hashlib.sha256(data).hexdigest(), "state": "ACTIVE", "source": source,
        }
        if display_name:
            resource["displayName"] = display_name
        if source == "GENERATED":
            resource["downloadUri"] = f"files/{file_id}:download"
        with self._lock:
            self.files[file_id], self.blobs[file_id] = resource, data
        return resource

    def _file(self, file: str) -> dict[str, Any]:
        with self._lock:
            resource = self.files.get(file)
        if resource is None:
            raise ApiError(403, f"You do not have permission to access the File {file} or it may not exist.",
                           status="PERMISSION_DENIED")
        return resource

    def get_file(self, request: Any, file: str) -> dict[str, Any]:
        self._check_key(request)
        return self._file(file)

    def delete_file(self, request: Any, file: str) -> dict[str, Any]:
        self._check_key(request)
        self._file(file)
        with self._lock:
            self.files.pop(file, None), self.blobs.pop(file, None)
        return {}

    def expire_file(self, name: str) -> None:
        """What 48 hours do to a file (tests)."""
        with self._lock:
            file_id = name.removeprefix("files/")
            self.files.pop(file_id, None), self.blobs.pop(file_id, None)

    def download_file(self, request: Any, file: str) -> tuple[int, bytes, dict[str, str]]:
        self._check_key(request)
        resource = self._file(file)
        if resource["source"] != "GENERATED":
            raise ApiError(400, "Only generated files can be downloaded.")
        return 200, self.blobs[file], {"Content-Type": "application/octet-stream"}

    # -- batches -----------------------------------------------------------------------

    def create_batch(self, request: Any, model: str) -> dict[str, Any]:
        self._check_key(request)
        batch = request.json().get("batch") or {}
        source = batch.get("inputConfig") or {}
        if "fileName" in source:
            file_id = str(source["fileName"]).removeprefix("files/")
            self._file(file_id)
            lines, inline = self.blobs[file_id], None
        elif "requests" in source:
            inline = source["requests"].get("requests") or []
            if len(orjson.dumps(inline)) > INLINE_BYTES_LIMIT:
                raise ApiError(400, f"Inline requests exceed {INLINE_BYTES_LIMIT} bytes; use an input file.")
            lines = None
        else:
            raise ApiError(400, "batch.inputConfig needs a fileName or requests.")
        batch_id = uuid.uuid4().hex[:16]
        op = {
            "name": f"batches/{batch_id}",
            "metadata": {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                "model": f"models/{model.removeprefix('models/')}", "displayName": batch.get("displayName", ""),
                "state": "BATCH_STATE_PENDING", "createTime": _now(), "updateTime": _now(),
                "name": f"batches/{batch_id}",
            },
        }
        with self._lock:
            outcome = self.outcomes.popleft() if self.outcomes else None
            self.batches[batch_id] = op
        thread = threading.Thread(target=self._run_batch, args=(batch_id, model, lines, inline, outcome), daemon=True)
        self._threads.append(thread)
        thread.start()
        return orjson.loads(orjson.dumps(op))

    def _set(self, batch_id: str, **changes: Any) -> bool:
        with self._lock:
            meta = self.batches[batch_id]["metadata"]
            if meta["state"] in TERMINAL:
                return False
            meta.update(changes, updateTime=_now())
            if meta["state"] in TERMINAL:
                meta["endTime"] = _now()
                self.batches[batch_id]["done"] = True
            return True

    def _run_batch(self, batch_id: str, model: str, lines: bytes | None, inline: list | None, outcome: str | None) -> None:
        time.sleep(self.pending_seconds)
        self.running.wait()
        if not self._set(batch_id, state="BATCH_STATE_RUNNING"):
            return
        if outcome and outcome != "RESULTS_GONE":
            self._set(batch_id, state=outcome)
            return
        items = inline if inline is not None else [line for line in (lines or b"").splitlines() if line.strip()]
        out, ok, failed = [], 0, 0
        for item in items:
            result = self._answer_line(item, model, inline is not None)
            ok, failed = (ok + 1, failed) if "response" in result else (ok, failed + 1)
            out.append(result)
        stats = {"requestCount": str(len(items)), "successfulRequestCount": str(ok),
                 "failedRequestCount": str(failed), "pendingRequestCount": "0"}
        if inline is not None:
            output = {"inlinedResponses": {"inlinedResponses": out}}
        else:
            data = b"".join(orjson.dumps(r) + b"\n" for r in out)
            output = {"responsesFile": self._new_file(data, "application/jsonl", None, source="GENERATED",
                                                      file_id=f"batch-{batch_id}")["name"]}
        if outcome == "RESULTS_GONE" and "responsesFile" in output:
            self.expire_file(output["responsesFile"])
        self._set(batch_id, state="BATCH_STATE_SUCCEEDED", output=output, batchStats=stats)

    def _answer_line(self, item: Any, model: str, inline: bool) -> dict[str, Any]:
        key = None
        try:
            line = item if inline else orjson.loads(item)
            key = line.get("metadata", {}).get("key") if inline else line.get("key")
            request = line["request"]
            status = validation_status(orjson.dumps(request).decode())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            status, request = status_text(400, f"Invalid input line: {e}", "INVALID_ARGUMENT"), None
        head = {"metadata": {"key": key}} if inline else {"key": key}
        if status is not None:
            code, message, name = status_error(status)
            return {**head, "error": {"code": code, "message": message, "status": name}}
        return {**head, "response": emulated_response(request, model)}

    def _batch(self, batch: str) -> dict[str, Any]:
        with self._lock:
            op = self.batches.get(batch)
            if op is None:
                raise not_found(f"Batch batches/{batch} not found.")
            return orjson.loads(orjson.dumps(op))

    def get_batch(self, request: Any, batch: str) -> dict[str, Any]:
        self._check_key(request)
        return self._batch(batch)

    def cancel_batch(self, request: Any, batch: str) -> dict[str, Any]:
        self._check_key(request)
        self._batch(batch)
        self._set(batch, state="BATCH_STATE_CANCELLED")
        return {}

    def delete_batch(self, request: Any, batch: str) -> dict[str, Any]:
        self._check_key(request)
        self._batch(batch)
        with self._lock:
            self.batches.pop(batch, None)
        return {}
