"""Restore beyond restore-disks: a new VM from a point, replacing a VM's disks, file recovery over
NBD, cross-region restore for GRS vaults, and importing a vault without the old database."""

from __future__ import annotations

__all__ = ["RestoreService", "restore_handlers"]


class RestoreService:
    def __init__(self, core):
        self.core = core


def restore_handlers(core) -> dict:
    """Job handlers this module adds (job type -> handler)."""
    return {}
