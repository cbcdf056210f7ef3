"""Rewrites one `## heading` section of a Markdown report, keeping every other section as it is."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) the section `## heading` of `path` with `body`; re-reads the file just
    before writing so sections other scripts wrote meanwhile stay."""
    lines = path.read_text().splitlines() if path.exists() else ["# Benchmarks"]
    title = f"## {heading}"
    block = [title, "", *body.strip("\n").splitlines(), ""]
    if title in lines:
        start = lines.index(title)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "# "))),
            len(lines),
        )
        lines[start:end] = block
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *block]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
