"""The key vault service: :class:`KeyVaultService` (see :mod:`.service` for how its modules divide the work)."""

from haven.keyvault.permissions import BACKUP_PRINCIPAL, BACKUP_TEMPLATE, TEMPLATES
from haven.services.keyvault.encryption import parse_encryption
from haven.services.keyvault.keyops import KeyVaultKeyWrapper
from haven.services.keyvault.service import KeyVaultService, keyvault_service
from haven.services.keyvault.vmkeys import VM_KEYS_FORMAT
from haven.services.keyvault.wire import decode_bytes

__all__ = ["KeyVaultService", "keyvault_service", "KeyVaultKeyWrapper", "parse_encryption", "VM_KEYS_FORMAT", "decode_bytes",
           "BACKUP_PRINCIPAL", "BACKUP_TEMPLATE", "TEMPLATES"]
