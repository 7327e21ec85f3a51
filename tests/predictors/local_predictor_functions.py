"""Response functions the local predictor's tests plug in by dotted path (a user's would live in their project)."""

from __future__ import annotations

import threading

CALLS: list[dict] = []
# Rows whose prompt says "wait" block here until a test sets the gate: lets a test
# observe a job mid-run (progress, cancel) without sleeping and hoping.
GATE = threading.Event()
REACHED = threading.Event()


def prompt_of(request: dict) -> str:
    return request["contents"][0]["parts"][0]["text"]


def echo(request: dict) -> str:
    CALLS.append(request)
    return f"echo: {prompt_of(request)}"


def full(request: dict) -> dict:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": prompt_of(request).upper()}]},
                        "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10},
    }


def flaky(request: dict) -> str:
    if "boom" in prompt_of(request):
        raise ValueError(f"cannot answer {prompt_of(request)!r}")
    return "fine"


def wrong_type(request: dict) -> int:
    return 42


def gated(request: dict) -> str:
    if "wait" in prompt_of(request):
        REACHED.set()
        if not GATE.wait(30):
            raise TimeoutError("the test never opened the gate")
    return "passed"
