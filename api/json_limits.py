"""Bounds on free-form JSON a client stores with an object (job `metadata`): how deep and how big.

Checked before anything recurses into the value: the depth walk is iterative and stops at the
limit, so a value nested thousands deep is refused without a RecursionError (a 500).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels (a flat object is one level)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


def bounded_json(field: str, max_bytes: int, max_depth: int) -> Callable[[Any], Any]:
    """A pydantic before-validator refusing values past the limits, naming them."""

    def check(value: Any) -> Any:
        if deeper_than(value, max_depth):
            raise ValueError(f"{field} is nested deeper than {max_depth} levels, the most allowed")
        size = len(json.dumps(value, separators=(",", ":"), default=str))
        if size > max_bytes:
            raise ValueError(
                f"{field} takes {size} bytes as JSON, more than the {max_bytes} allowed"
            )
        return value

    return check
