"""The concurrency limits' lock: a claim counts the backups running on a host (in a vault) and claims one in one
transaction that holds the host's (vault's) row, so two workers claiming at the same instant take turns and a limit
is never exceeded (issue 23, finding 7: three backups on a host allowed two)."""

from __future__ import annotations

from sqlalchemy import update

from haven.db.models import Host, Vault

__all__ = ["hold_limit_row"]

_ROWS = {"host_id": Host, "vault_id": Vault}


def hold_limit_row(s, column: str, key: str) -> None:
    """Write-lock the row a limit counts against until the claim's transaction ends. A no-op UPDATE rather than
    SELECT ... FOR UPDATE: SQLite ignores FOR UPDATE, but an UPDATE takes its write lock there too. Callers lock
    hosts before vaults (the order of ``JobQueue.limits``), so two claims never wait for each other in a circle."""
    table = _ROWS[column]
    s.execute(update(table).where(table.id == key).values(id=table.id))
