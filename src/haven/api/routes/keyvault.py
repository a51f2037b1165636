"""API routes for keyvault."""

from fastapi import APIRouter

router = APIRouter()
