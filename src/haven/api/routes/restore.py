"""API routes for restore beyond restore-disks."""

from fastapi import APIRouter

router = APIRouter()
