"""The FastAPI application: ``/api/v1`` routes, error mapping, OpenAPI."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from haven import __version__
from haven.api import metrics
from haven.api.errors import ERROR_RESPONSES, install_error_handlers, reject_nul_in_urls
from haven.api.headers import SecurityHeaders
from haven.api.limits import BodyLimits
from haven.api.storage_endpoint import storage_router
from haven.api.routes import account, agent, guard, inventory, jobs, keyvault, prepare, protection, restore, vaults
from haven.api.routes import files as file_routes
from haven.services.core import Haven
from haven.services.objects import ObjectService
from haven.web import mount_dashboard

__all__ = ["create_app"]


def create_app(core: Haven) -> FastAPI:
    app = FastAPI(
        title="Haven",
        version=__version__,
        description="Self-hosted backup for virtual machines: vaults, policies, protected items, jobs, recovery points and restores.",
    )
    app.state.core = core
    install_error_handlers(app)
    reject_nul_in_urls(app)
    api = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
    for module in (account, vaults, protection, jobs, inventory, agent, prepare, keyvault, restore, guard):
        api.include_router(module.router)
    api.include_router(file_routes.router)
    app.include_router(api)
    app.include_router(metrics.router)
    app.include_router(storage_router(ObjectService(core.capabilities.resolve)), include_in_schema=False)
    mount_dashboard(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    # Added last, so they wrap everything else: limits act before any other code sees the request.
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimits)
    return app
