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


def varied(request: dict):
    """Answers by the prompt's first word: a full response dict, an exception, a wrong type, or text."""
    prompt = prompt_of(request)
    if prompt.startswith("dict"):
        return {
            "candidates": [{"content": {"role": "model", "parts": [{"text": prompt.upper()}]},
                            "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10},
        }
    if prompt.startswith("boom"):
        raise ValueError(f"cannot answer {prompt!r}")
    if prompt.startswith("number"):
        return 42
    return "fine"


def gated(request: dict) -> str:
    if "wait" in prompt_of(request):
        REACHED.set()
        if not GATE.wait(30):
            raise TimeoutError("the test never opened the gate")
    return "passed"
