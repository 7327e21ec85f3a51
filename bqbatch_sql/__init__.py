"""bqbatch: SQL models in, Gemini batch predictions out."""

__version__ = "0.1.0"
