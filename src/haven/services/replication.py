"""GRS vaults: copy what a backup stored to the paired region's storage."""

from __future__ import annotations

__all__ = ["Replication"]


class Replication:
    def __init__(self, core):
        self.core = core

    def after_backup(self, vault_id: str, item_id: str, point_id: str) -> None:
        """Called after a backup of a vault was recorded; GRS vaults replicate here."""
        return None
