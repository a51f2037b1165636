"""Haven's key vault: keys (KEKs) that wrap and unwrap but never leave, secrets (BEKs) sealed at
rest by the server's master key, access policies per principal, soft delete and purge protection,
single-object backups only Haven can restore, and an optional PKCS#11 HSM for KEKs.

The service is :class:`haven.services.keyvault.KeyVaultService`.
"""

from haven.keyvault.permissions import BACKUP_PRINCIPAL, BACKUP_TEMPLATE, KEY_PERMISSIONS, SECRET_PERMISSIONS, TEMPLATES

__all__ = ["BACKUP_PRINCIPAL", "BACKUP_TEMPLATE", "KEY_PERMISSIONS", "SECRET_PERMISSIONS", "TEMPLATES"]
