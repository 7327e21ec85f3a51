"""Predictors: who turns a request table into an output table (local emulation, Vertex AI, ...)."""
