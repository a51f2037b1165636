"""The web dashboard, served by ``haven serve`` on the same port as the API.

Server-rendered pages (Jinja2) under ``/ui``, a little JavaScript of our own for live parts, and
static files from ``haven/web/static`` — nothing from a CDN. Every page resolves the session cookie
(a server-side session id, HttpOnly, SameSite=Strict; ``web.session``) to the token it was made
from and checks that token again; every form post is checked for its origin and CSRF token and
calls the same service method the API route calls, so an action has the same effect as the CLI.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["mount_dashboard"]

STATIC_DIR = Path(__file__).parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to the application."""
    from haven.web.pages import router

    # Signs the CSRF tokens and notices; a restart only invalidates open forms.
    app.state.web_secret = secrets.token_bytes(32)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)
