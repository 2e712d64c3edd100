"""The service's routers, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from cds.service.api.routes import admin, discovery, feedback, services, why

__all__ = ["api_router"]

api_router = APIRouter()
api_router.include_router(discovery.router)
api_router.include_router(feedback.router)
api_router.include_router(services.router)
api_router.include_router(admin.router)
api_router.include_router(why.router)  # issue 12: the "Why this card" page
