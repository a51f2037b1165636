"""The web dashboard, served by ``haven serve`` on the same port as the API."""

from fastapi import FastAPI

__all__ = ["mount_dashboard"]


def mount_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to the application (filled in by the dashboard module)."""
    return None
