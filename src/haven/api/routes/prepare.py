"""API routes for prepare."""

from fastapi import APIRouter

router = APIRouter()
