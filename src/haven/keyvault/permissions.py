"""Data-plane permissions, the permission templates, and the backup service's built-in principal."""

from __future__ import annotations

__all__ = ["KEY_PERMISSIONS", "SECRET_PERMISSIONS", "TEMPLATES", "BACKUP_PRINCIPAL", "BACKUP_TEMPLATE", "BACKUP_NEEDS"]

KEY_PERMISSIONS = ("get", "list", "create", "delete", "recover", "backup", "restore", "purge", "wrapKey", "unwrapKey")
SECRET_PERMISSIONS = ("get", "list", "set", "delete", "recover", "backup", "restore", "purge")

#: The built-in principal the backup service acts as (the seed's "Backup Management Service").
BACKUP_PRINCIPAL = "Backup Management Service"
#: The seed's "Azure Backup" template, in Haven's world.
BACKUP_TEMPLATE = "Haven Backup"

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    BACKUP_TEMPLATE: {"keys": ("get", "list", "backup"), "secrets": ("get", "list", "backup")},
    "Key Management": {"keys": ("get", "list", "create", "delete", "recover", "backup", "restore"), "secrets": ()},
    "Secret Management": {"keys": (), "secrets": ("get", "list", "set", "delete", "recover", "backup", "restore")},
    "Key, Secret Management": {"keys": ("get", "list", "create", "delete", "recover", "backup", "restore"),
                               "secrets": ("get", "list", "set", "delete", "recover", "backup", "restore")},
    "Encrypted VM Operator": {"keys": ("get", "list", "wrapKey", "unwrapKey"), "secrets": ("get", "list", "set")},
    "All": {"keys": KEY_PERMISSIONS, "secrets": SECRET_PERMISSIONS},
}

#: What backing up an encrypted VM needs from its key vault.
BACKUP_NEEDS = TEMPLATES[BACKUP_TEMPLATE]
