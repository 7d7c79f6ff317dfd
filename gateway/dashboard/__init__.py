"""The admin dashboard: a static page (HTML, CSS, plain JS split by view, a vendored Chart.js)
that the gateway serves at ``/dashboard``; its data comes from the admin JSON API."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
INDEX_HTML = STATIC_DIR / "index.html"
