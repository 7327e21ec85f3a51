"""Errors the emulator answers with, in Google's JSON error format.

Both APIs wrap errors as {"error": {"code", "message", "status"}}; BigQuery adds
"errors": [{"reason", "message", "domain"}], and its client picks the exception
class (NotFound, BadRequest, Conflict, ...) from the HTTP status and the reason.
An ApiError never reaches a bqbatch user as a Python exception: the HTTP layer
turns it into the response the real service would send.
"""

from __future__ import annotations

from typing import Any

from bqbatch_sql.errors import BqbatchError

# HTTP status -> google.rpc canonical status name.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# google.rpc.Code numbers, used inside long-running job resources (job.error.code).
RPC_CODES = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
}

# BigQuery's error reasons -> HTTP status (as the service pairs them).
BQ_REASON_STATUS = {
    "notFound": 404,
    "duplicate": 409,
    "invalid": 400,
    "invalidQuery": 400,
    "resourceInUse": 400,
    "accessDenied": 403,
    "rateLimitExceeded": 429,
    "backendError": 500,
    "internalError": 500,
    "stopped": 400,
    "notImplemented": 501,
    "jobBackendError": 400,
}


class ApiError(BqbatchError):
    """An error answer: HTTP status, message, BigQuery reason, canonical status name."""

    def __init__(self, code: int, message: str, *, reason: str | None = None, status: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")

    def body(self, api: str) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if api == "bigquery":
            error["errors"] = [{"message": self.message, "domain": "global", "reason": self.reason or _default_reason(self.code)}]
        return {"error": error}

    def error_proto(self) -> dict[str, Any]:
        """The BigQuery ErrorProto of a failed job (status.errorResult)."""
        return {"reason": self.reason or _default_reason(self.code), "message": self.message, "location": ""}


def _default_reason(code: int) -> str:
    for reason, status in BQ_REASON_STATUS.items():
        if status == code:
            return reason
    return "backendError" if code >= 500 else "invalid"


def not_found(message: str) -> ApiError:
    return ApiError(404, message, reason="notFound")


def bad_request(message: str, reason: str = "invalid") -> ApiError:
    return ApiError(400, message, reason=reason)


def invalid_query(message: str) -> ApiError:
    return ApiError(400, message, reason="invalidQuery")


def conflict(message: str) -> ApiError:
    return ApiError(409, message, reason="duplicate")
