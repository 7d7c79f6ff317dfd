"""Hostile PDFs for the parsing budget: small files that cost a PDF parser a lot of work."""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

from protocols.synthetic import serialize_pdf


def costly_pdf(pages: int = 8, content_bytes: int = 2**20) -> bytes:
    """``pages`` pages that all share one FlateDecode content stream of ``content_bytes`` of path
    operators (lines drawn and stroked, one empty string shown, no text): a few KB on disk,
    seconds of CPU per page."""
    unit = b"10 10 m 20 20 l 30 10 l h S\n"
    # One (empty) string shown: pypdf (>= 6) skips content without a text operator unparsed.
    content = b"BT /F1 12 Tf () Tj ET\n" + unit * (content_bytes // len(unit))
    stream = zlib.compress(content, 9)
    first_page = 4
    kids = " ".join(f"{first_page + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    objects += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R /Resources "
        b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>"
    ] * pages
    return serialize_pdf(objects, header=b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")


def parsing_children() -> list[int]:
    """Pids of this process's PDF-parsing children (``protocols.pdf_sandbox``)."""
    from protocols import pdf_sandbox

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and pdf_sandbox.__file__.encode() in cmdline:
            found.append(int(entry.name))
    return found


def wait_no_parsing_children(timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while parsing_children():
        assert time.monotonic() < deadline, f"parser children left: {parsing_children()}"
        time.sleep(0.05)
