"""Distillation methods, one module each, looked up by the name users put in a job spec."""

from core.methods import lopes, zskt

METHODS = {"zskt": zskt, "lopes": lopes}

__all__ = ["METHODS", "lopes", "zskt"]
