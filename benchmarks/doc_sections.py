"""Each benchmark's numbers in docs/benchmarks.md, between its own markers.

A benchmark run with ``--write`` replaces only its section (``<!-- name:start -->`` ...
``<!-- name:end -->``) and keeps the rest of the page: the prose written around the numbers and
the other benchmarks' sections.
"""

from __future__ import annotations

from pathlib import Path


def write_section(
    path: Path, name: str, body: str, *, after: str | None = None, heading: str | None = None
) -> None:
    """Put ``body`` between ``name``'s markers in ``path``. A page without that section gets it
    after the section named ``after`` when there is one, otherwise at the end (under ``heading``
    when given); a missing page is started."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    first, last = text.find(start), text.find(end)
    if 0 <= first < last:
        text = text[:first] + section + text[last + len(end) :]
    elif after is not None and (anchor := text.find(f"<!-- {after}:end -->")) >= 0:
        at = anchor + len(f"<!-- {after}:end -->")
        text = text[:at] + "\n\n" + section + text[at:]
    else:
        top = f"{heading}\n\n" if heading else ""
        text = text.rstrip("\n") + "\n\n" + top + section + "\n"
    path.write_text(text)
