"""Fault injection for the emulator: the failures a production pipeline must survive.

Set per emulator instance (`Emulator.faults`), changeable while it runs:

    emu.faults.fail_call(503, nth=2)                      # the 2nd matching call answers 503
    emu.faults.fail_call(429, fraction=0.3, api="vertex")  # ~30% of Vertex calls answer 429
    emu.faults.slow(0.5, path="/queries/")                # these calls take 0.5 s longer
    emu.faults.job_outcome("FAILED", message="quota")     # the next batch job ends FAILED
    emu.faults.job_outcome("PARTIALLY_SUCCEEDED", failed_fraction=0.5)
    emu.faults.hold_pending()                             # batch jobs stay PENDING
    emu.faults.clear()

HTTP faults answer in the API's own error format, so the real clients see what
they would see from Google (and retry where their policy says so).
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

_HTTP_MESSAGES = {
    429: "Quota exceeded: too many requests (injected by the bqbatch emulator).",
    500: "Internal error encountered (injected by the bqbatch emulator).",
    502: "Bad gateway (injected by the bqbatch emulator).",
    503: "The service is currently unavailable (injected by the bqbatch emulator).",
    504: "Deadline exceeded (injected by the bqbatch emulator).",
}

JOB_OUTCOMES = ("FAILED", "PARTIALLY_SUCCEEDED")


@dataclass
class HttpFault:
    """One rule: which calls it matches, and what it does to them."""

    status: int | None = None  # answer this HTTP status instead of the real answer
    delay: float = 0.0  # seconds to wait before answering (slow responses)
    nth: int | None = None  # only the Nth matching call (1-based) ...
    fraction: float | None = None  # ... or this share of matching calls
    times: int | None = None  # stop after acting this many times
    api: str | None = None  # "bigquery" | "vertex" | None for both
    method: str | None = None  # "GET", "POST", ...
    path: str | None = None  # regular expression searched in the URL path
    seen: int = 0
    acted: int = 0

    def matches(self, api: str, method: str, path: str) -> bool:
        if self.api and self.api != api:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path and not re.search(self.path, path))


@dataclass
class JobFault:
    outcome: str | None = None  # FAILED | PARTIALLY_SUCCEEDED
    hold_pending: bool = False
    message: str = "Batch prediction job failed (injected by the bqbatch emulator)."
    failed_fraction: float = 0.5  # PARTIALLY_SUCCEEDED: share of rows that fail
    display_name: str | None = None  # only jobs with this display name (regex); None = any
    jobs: int | None = 1  # how many jobs it applies to; None = every job from now on
    applied: int = 0


@dataclass
class Decision:
    delay: float = 0.0
    status: int | None = None
    message: str = ""


@dataclass
class Faults:
    seed: int = 0
    http: list[HttpFault] = field(default_factory=list)
    jobs: list[JobFault] = field(default_factory=list)
    calls: int = 0  # every API call the emulator answered or failed, for assertions

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)

    # -- configuring -------------------------------------------------------------

    def fail_call(
        self,
        status: int,
        *,
        nth: int | None = None,
        fraction: float | None = None,
        times: int | None = None,
        api: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> HttpFault:
        """Answer `status` (429, 500, 503, ...) on the Nth matching call or on a fraction of them."""
        if status not in _HTTP_MESSAGES and not 400 <= status < 600:
            raise ValueError(f"fail_call needs an HTTP error status (429, 500, 503, ...), got {status}.")
        if nth is None and fraction is None and times is None:
            times = 1  # "fail a call" without saying which: fail the next one
        return self._add(HttpFault(status=status, nth=nth, fraction=fraction, times=times, api=api, method=method, path=path))

    def slow(
        self, seconds: float, *, api: str | None = None, method: str | None = None, path: str | None = None,
        nth: int | None = None, times: int | None = None,
    ) -> HttpFault:
        """Delay matching answers by `seconds` (every matching call unless nth/times say otherwise)."""
        return self._add(HttpFault(delay=seconds, api=api, method=method, path=path, nth=nth, times=times))

    def job_outcome(
        self,
        state: str,
        *,
        message: str | None = None,
        failed_fraction: float = 0.5,
        display_name: str | None = None,
        jobs: int | None = 1,
    ) -> JobFault:
        """Make the next batch job(s) end FAILED or PARTIALLY_SUCCEEDED."""
        state = state.upper().removeprefix("JOB_STATE_")
        if state not in JOB_OUTCOMES:
            raise ValueError(f"job_outcome is one of {', '.join(JOB_OUTCOMES)}, got {state!r}.")
        fault = JobFault(outcome=state, failed_fraction=failed_fraction, display_name=display_name, jobs=jobs)
        if message:
            fault.message = message
        with self._lock:
            self.jobs.append(fault)
        return fault

    def hold_pending(self, *, display_name: str | None = None, jobs: int | None = None) -> JobFault:
        """Batch jobs stay PENDING (capacity never arrives) until clear() or cancel."""
        fault = JobFault(hold_pending=True, display_name=display_name, jobs=jobs)
        with self._lock:
            self.jobs.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.http.clear()
            self.jobs.clear()

    def _add(self, fault: HttpFault) -> HttpFault:
        with self._lock:
            self.http.append(fault)
        return fault

    # -- consulted by the server ---------------------------------------------------------

    def decide(self, api: str, method: str, path: str) -> Decision:
        decision = Decision()
        with self._lock:
            self.calls += 1
            for fault in self.http:
                if not fault.matches(api, method, path):
                    continue
                fault.seen += 1
                if fault.times is not None and fault.acted >= fault.times:
                    continue
                if fault.nth is not None and fault.seen != fault.nth:
                    continue
                if fault.fraction is not None and self._random.random() >= fault.fraction:
                    continue
                fault.acted += 1
                decision.delay += fault.delay
                if fault.status is not None and decision.status is None:
                    decision.status = fault.status
                    decision.message = _HTTP_MESSAGES.get(fault.status, "Injected error (bqbatch emulator).")
        return decision

    def job_fault(self, display_name: str) -> JobFault | None:
        """The job fault that applies to a new job (consumes one use of it)."""
        with self._lock:
            for fault in self.jobs:
                if fault.jobs is not None and fault.applied >= fault.jobs:
                    continue
                if fault.display_name and not re.search(fault.display_name, display_name or ""):
                    continue
                fault.applied += 1
                return fault
        return None

    def is_held(self, fault: JobFault | None) -> bool:
        """Whether a held job is still held (clear() releases it)."""
        with self._lock:
            return fault is not None and fault.hold_pending and any(f is fault for f in self.jobs)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"http": [vars(f).copy() for f in self.http], "jobs": [vars(f).copy() for f in self.jobs], "calls": self.calls}
