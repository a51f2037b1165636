"""Every table of the metadata store, in one ``metadata``: the one place that imports all the table modules.

Nothing imports this back; the migrations' environment (``alembic`` autogenerate and type comparison) uses it.
"""

from __future__ import annotations

import haven.db.files_tables  # noqa: F401  (file recovery's download audit)
import haven.db.guard_tables  # noqa: F401  (multi-user authorization)
import haven.db.models  # noqa: F401  (subscriptions, vaults, VMs, jobs, recovery points, …)
import haven.keyvault.tables  # noqa: F401  (the key vault)
from haven.db.base import Base

__all__ = ["metadata"]

metadata = Base.metadata
