"""Error messages of bounded length: a message may quote input (a tensor name, a header, a value),
and input can be megabytes long."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 1000
MAX_DETAIL_CHARS = 200


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to at most `limit` characters: its start and its end (where a message quoting
    a long name still says what is wrong), with how much was cut in between."""
    if len(text) <= limit:
        return text
    note = f" ... ({len(text) - limit} characters cut) ... "
    keep = max(limit - len(note), 0)
    return text[: keep - keep // 2] + note + text[len(text) - keep // 2 :]
