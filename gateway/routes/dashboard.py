"""``/dashboard``: the admin dashboard's page and its static assets, public (they hold no data);
every number on the page comes from the admin API, with the key the operator signs in with."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from gateway.dashboard import INDEX_HTML, STATIC_DIR

router = APIRouter(include_in_schema=False)

# Everything the page loads is the gateway's own: no CDN, no inline script. Chart.js sizes its
# canvas through style attributes, hence 'unsafe-inline' for styles only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/dashboard")
async def dashboard() -> FileResponse:
    return FileResponse(INDEX_HTML, media_type="text/html", headers=SECURITY_HEADERS)


def mount_static(app: FastAPI) -> None:
    """The page's CSS, JS and vendored Chart.js under ``/dashboard/static``."""
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
