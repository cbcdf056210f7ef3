"""Distillation methods, one module each, looked up by the name users put in a job spec."""

from core.methods import zskt

METHODS = {"zskt": zskt}

__all__ = ["METHODS", "zskt"]
