"""Predictors: who turns a request table into an output table (local emulation, Vertex AI, ...).

The registry maps a profile's `predictor.type` to a class by dotted path, imported
only when chosen: the Vertex predictor pulls in google-genai (about a second of
import), which `--help`, `compile` and local runs must not pay.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from bqbatch_sql.errors import PredictorError, ProfileError, did_you_mean

PREDICTORS: dict[str, str] = {
    "local": "bqbatch_sql.predictors.local:LocalPredictor",
    "vertex": "bqbatch_sql.predictors.vertex:VertexPredictor",
    "gemini_batch": "bqbatch_sql.predictors.gemini_batch:GeminiBatchPredictor",
    "online": "bqbatch_sql.predictors.online:OnlinePredictor",
    "openai_compatible": "bqbatch_sql.predictors.openai_compatible:OpenAICompatiblePredictor",
}


def predictor_class(name: str) -> type:
    """The class registered under `name`; a typo gets the closest registered name."""
    if name not in PREDICTORS:
        raise ProfileError(
            f"Unknown predictor type '{name}'.{did_you_mean(name, PREDICTORS.keys())} "
            f"Known types: {', '.join(sorted(PREDICTORS))}."
        )
    module_name, _, attr = PREDICTORS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PredictorError(f"Predictor '{name}' is not available: cannot import {module_name} ({e}).") from e
    return getattr(module, attr)


def make_predictor(config: Any, context: Any = None, /, **options: Any) -> Any:
    """Build a predictor from a name and options, or from a profile's predictor config and the run context.

    `make_predictor("local", adapter, failure_rate=0.1)` passes positional arguments
    through to the class; `make_predictor(LocalPredictorConfig(...), ctx)` takes the
    options from the config and hands the context to the class's `from_context`.
    """
    if isinstance(config, str):
        name, settings = config, {}
    else:
        name = getattr(config, "type", None)
        if not isinstance(name, str):
            raise ProfileError(f"A predictor config needs a 'type'; got {config!r}.")
        settings = config.model_dump(exclude={"type"}) if hasattr(config, "model_dump") else dict(vars(config))
        settings.pop("type", None)
    settings.update(options)
    cls = predictor_class(name)
    _check_options(name, cls, settings)
    if context is not None and not isinstance(config, str) and hasattr(cls, "from_context"):
        return cls.from_context(context, **settings)
    args = (context,) if context is not None else ()
    return cls(*args, **settings)


def _check_options(name: str, cls: type, settings: dict[str, Any]) -> None:
    """Unknown option names fail with the closest known one, not with a TypeError."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or (n != "self" and p.default is not p.empty)]
    for key in settings:
        if key not in known:
            raise ProfileError(
                f"Predictor '{name}' has no option '{key}'.{did_you_mean(key, known)} "
                f"Its options: {', '.join(known) or '(none)'}."
            )
