"""Batch prices of Gemini models, dated: what the cost estimate and the budget guard multiply by.

Batch prediction is billed per token at half the online (standard) list price. The
table below holds those batch prices in USD per million text tokens, as published
for Vertex AI and the Gemini API (the two agree for these models) and checked on
PRICES_AS_OF. Prices change: a project overrides or adds models in
bqbatch_project.yml,

    prices:
      gemini-2.5-flash: {input: 0.15, output: 1.25}
      projects/p/locations/us-central1/models/my-tuned: {input: 0.15, output: 1.25}

and every estimate prints the date of the price it used. Thinking tokens are billed
as output. Context caching, audio/video input rates and regional surcharges are not
modelled: estimates are for text prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PRICES_AS_OF = "2026-11-21"
PRICE_SOURCES = (
    "https://cloud.google.com/vertex-ai/generative-ai/pricing",
    "https://ai.google.dev/gemini-api/docs/pricing",
)


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model in batch mode."""

    input: float
    output: float
    # A prompt above this many tokens is billed at the long rates (per request).
    long_context_above: int | None = None
    long_input: float | None = None
    long_output: float | None = None
    source: str = f"batch price of {PRICES_AS_OF}"

    def cost(self, input_tokens: int, output_tokens: int, long_input_tokens: int = 0,
             long_output_tokens: int = 0) -> float:
        """USD for these tokens; the long_* counts belong to requests above long_context_above."""
        long_in = self.long_input if self.long_input is not None else self.input
        long_out = self.long_output if self.long_output is not None else self.output
        return (input_tokens * self.input + output_tokens * self.output
                + long_input_tokens * long_in + long_output_tokens * long_out) / 1_000_000


# Online list price / 2, text tokens. 2.5 Pro: prompts above 200k tokens bill at 2.50/15.00 online.
BATCH_PRICES: dict[str, Price] = {
    "gemini-2.5-pro": Price(0.625, 5.00, long_context_above=200_000, long_input=1.25, long_output=7.50),
    "gemini-2.5-flash": Price(0.15, 1.25),
    "gemini-2.5-flash-lite": Price(0.05, 0.20),
    "gemini-2.0-flash": Price(0.075, 0.30),
    "gemini-2.0-flash-lite": Price(0.0375, 0.15),
}

# Version suffixes a model id may carry beyond its family name: -001, @001, -preview-06-17 ...
_SUFFIX = re.compile(r"(@.*|-\d{3}|-preview.*|-exp.*|-latest)$")


def price_for(model_id: str, overrides: dict[str, Any] | None = None) -> Price | None:
    """The batch price of a configured model id, or None when neither table knows it.

    The project's `prices:` win over the packaged table; both are looked up by the id
    as written, then by its last path part (publishers/google/models/x -> x), then
    without a version suffix (gemini-2.0-flash-001 -> gemini-2.0-flash).
    """
    table: dict[str, Price] = dict(BATCH_PRICES)
    for key, value in (overrides or {}).items():
        table[key] = _from_config(value)
    for candidate in _candidates(model_id):
        if candidate in table:
            return table[candidate]
    return None


def _candidates(model_id: str) -> list[str]:
    short = model_id.rstrip("/").rsplit("/", 1)[-1]
    out = [model_id, short]
    stripped = short
    while (shorter := _SUFFIX.sub("", stripped)) != stripped:
        stripped = shorter
        out.append(stripped)
    return list(dict.fromkeys(out))


def _from_config(value: Any) -> Price:
    data = value.model_dump() if hasattr(value, "model_dump") else dict(value)
    return Price(
        float(data["input"]), float(data["output"]), data.get("long_context_above"), data.get("long_input"),
        data.get("long_output"), source="price from bqbatch_project.yml",
    )


def known_models() -> list[str]:
    return sorted(BATCH_PRICES)
