"""Distillation methods, one module each, looked up by the name users put in a job spec."""

from core.methods import dfad, lopes, zskt

METHODS = {"zskt": zskt, "dfad": dfad, "lopes": lopes}

__all__ = ["METHODS", "dfad", "lopes", "zskt"]
