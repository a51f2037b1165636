"""The key vault's errors, including the five rows of the encrypted-VM troubleshooting table
(seed 003): each with a stable code, the seed's message and its fix, in Haven's words."""

from __future__ import annotations

from haven.errors import Conflict, Forbidden, NotFound, PreconditionFailed, UserError

#: The restore errors name where the restore was going (``RestoreWhere``) so that every command they print
#: runs as printed; raised without one, the fields read ``<subscription>``, ``<backup-vault>``, ``<vm>``, ``<point>``.
#: The same fix in the dashboard's words (its pages and buttons).
_RESTORE_KEYS_FIX_UI = ("Bring them back from the recovery point: on the protected item's page choose the point, then "
                        "Restore keys and secrets into key vault {key_vault}; then run the restore again.")
_RESTORE_KEYS_FIX = (
    "Bring them back from the recovery point: "
    "'haven keyvault restore-key -s {subscription} --vault-name {key_vault} --vault {vault} --vm {vm} --rp-name {point}' and "
    "'haven keyvault restore-secret -s {subscription} --vault-name {key_vault} --vault {vault} --vm {vm} --rp-name {point}' "
    "restore the KEK and the BEK into the key vault (API: POST /api/v1/subscriptions/{subscription}/keyvaults/{key_vault}/"
    "restore-from-recovery-point); then run the restore again."
)
UNKNOWN_WHERE = {"subscription": "<subscription>", "vault": "<backup-vault>", "vm": "<vm>", "point": "<point>", "region": "<region>"}

# ---- the troubleshooting table of seed 003 ----


class BekOnlyEncryption(UserError):
    """Row 1 (backup)."""

    code = "UserErrorEncryptedVmBekOnly"
    message = ("Validation failed because the VM{vm} is encrypted with BEK alone. "
               "Backup can be enabled only for VMs encrypted with both BEK and KEK.")
    recommendation = ("The VM should be encrypted with both BEK and KEK. Decrypt the VM first, then encrypt it again with a BEK "
                      "wrapped by a KEK: create the KEK with 'haven keyvault key create --vault-name <key-vault> --name <kek> --kty RSA', "
                      "store the LUKS key wrapped by it as the BEK secret, and name both in the VM's definition "
                      "(\"encryption\": {{\"key_vault\": …, \"bek_secret\": …, \"kek_key\": …}}). "
                      "Once the VM is encrypted with BEK and KEK, enable backup. See docs/keyvault.md (Encrypting a VM).")


class KeyVaultMissingForRestore(NotFound):
    """Row 2 (restore)."""

    code = "UserErrorKeyVaultNotFoundForRestore"
    message = "You cannot restore this encrypted VM because the key vault {key_vault!r} associated with this VM does not exist."
    recommendation = ("Create a key vault: 'haven keyvault create -s {subscription} --name {key_vault} --region {region}' "
                      "(or, if it was deleted less than its retention period ago, recover it with "
                      "'haven keyvault recover -s {subscription} --name {key_vault}'). "
                      "Then restore the keys and secrets if they do not exist. " + _RESTORE_KEYS_FIX)
    recommendation_ui = ("Create key vault {key_vault} on the Key vault page (or restore into another key vault of the subscription). "
                         + _RESTORE_KEYS_FIX_UI)


class KeysMissingForRestore(NotFound):
    """Row 3 (restore)."""

    code = "UserErrorKeysAndSecretsNotFoundForRestore"
    message = ("You cannot restore this encrypted VM because the keys and secrets associated with this VM do not exist "
               "in key vault {key_vault!r} (missing: {missing}).")
    recommendation = "Restore the keys and secrets if they do not exist. " + _RESTORE_KEYS_FIX
    recommendation_ui = "Restore the keys and secrets if they do not exist. " + _RESTORE_KEYS_FIX_UI


class BackupServiceNoAccessForRestore(Forbidden):
    """Row 4 (restore): the backup service cannot create the VM for you."""

    code = "UserErrorBackupServiceNoAccessToSubscription"
    message = "The backup service does not have access to resources in your subscription {subscription!r}, so it cannot create the VM."
    recommendation = ("As described above, first restore the disks: 'haven restore restore-disks -s {subscription} --vault {vault} "
                      "--vm {vm} --rp-name {point} --target-folder \"$HOME/{vm}-restored\" --wait' "
                      "(API: POST …/items/{vm}/recovery-points/{point}/restore-disks). "
                      "Then create the VM from the restored disks yourself with the CLI or the API, from the VM definition generated "
                      "with the restored disks (libvirt domain XML: 'virsh define <folder>/<vm>.xml'; image-folder VM: its vm.json).")


class BackupServiceKeyVaultAccessDenied(Forbidden):
    """Row 5 (backup)."""

    code = "UserErrorKeyVaultPermissionsNotConfigured"
    message = ("The Haven backup service does not have sufficient key vault permissions to back up encrypted VMs "
               "(key vault {key_vault!r}; missing: {missing}).")
    recommendation = ("The VM should be encrypted with BEK and KEK; then enable backup. Give the backup service the permissions it needs: "
                      "'haven keyvault set-policy --name {key_vault} --principal \"Backup Management Service\" --template \"Haven Backup\"' "
                      "(keys: get, list, backup; secrets: get, list, backup), or the API: PUT "
                      "/api/v1/subscriptions/{{subscription}}/keyvaults/{key_vault}/access-policies/Backup%20Management%20Service "
                      "with {{\"template\": \"Haven Backup\"}}. A VM protected before it was encrypted goes on backing up once the permission is given.")


# ---- the key vault itself ----


class KeyVaultNameInvalid(UserError):
    code = "UserErrorKeyVaultNameInvalid"
    message = "The key vault name {name!r} is invalid: use 3 to 24 letters, digits and hyphens, starting with a letter, ending with a letter or digit, without consecutive hyphens."
    recommendation = "Choose a name such as 'kv-prod-01'."


class ObjectNameInvalid(UserError):
    code = "UserErrorKeyVaultObjectNameInvalid"
    message = "The {kind} name {name!r} is invalid: use 1 to 127 letters, digits and hyphens."
    recommendation = "Choose a name such as 'disk-kek'."


class KeyVaultExists(Conflict):
    code = "UserErrorKeyVaultAlreadyExists"
    message = "A key vault named {name!r} already exists in this subscription{state}."
    recommendation = "Pick another name; a soft-deleted key vault keeps its name until it is purged ('haven keyvault recover' or 'haven keyvault purge')."


class KeyVaultNotFound(NotFound):
    code = "UserErrorKeyVaultNotFound"
    message = "Key vault {name!r} does not exist in subscription {subscription!r}."
    recommendation = "List the key vaults with 'haven keyvault list' (deleted ones with 'haven keyvault list-deleted')."


class KeyVaultDeletedNotFound(NotFound):
    code = "UserErrorDeletedKeyVaultNotFound"
    message = "No soft-deleted key vault named {name!r} exists in subscription {subscription!r}."
    recommendation = "List deleted key vaults with 'haven keyvault list-deleted'."


class KeyNotFound(NotFound):
    code = "UserErrorKeyNotFound"
    message = "Key {name!r} does not exist in key vault {vault!r}."
    recommendation = "List the keys with 'haven keyvault key list --vault-name {vault}' (deleted ones with --deleted)."


class SecretNotFound(NotFound):
    code = "UserErrorSecretNotFound"
    message = "Secret {name!r} does not exist in key vault {vault!r}."
    recommendation = "List the secrets with 'haven keyvault secret list --vault-name {vault}' (deleted ones with --deleted)."


class ObjectDeletedConflict(Conflict):
    code = "UserErrorKeyVaultObjectDeleted"
    message = "The {kind} {name!r} is in the deleted state in key vault {vault!r}; its name stays taken until it is recovered or purged."
    recommendation = "Recover it ('haven keyvault {kind} recover --name {name}') or, unless purge protection is on, purge it ('haven keyvault {kind} purge --name {name}')."


class ObjectExists(Conflict):
    code = "UserErrorKeyVaultObjectExists"
    message = "A different {kind} named {name!r} already exists in key vault {vault!r}; a backup restores only into an empty name or onto the same object."
    recommendation = "Delete and purge the existing {kind}, or restore into another key vault."


class PurgeProtected(Conflict):
    code = "UserErrorKeyVaultPurgeProtected"
    message = "Purge protection is on for key vault {vault!r}: {what} cannot be purged before {purge_at}."
    recommendation = "Wait until the retention period ends (it is purged then), or recover it."


class PurgeProtectionIrreversible(Conflict):
    code = "UserErrorKeyVaultPurgeProtectionIrreversible"
    message = "Purge protection cannot be turned off once it is on (key vault {vault!r})."
    recommendation = "Keep it on; it protects deleted keys and secrets for the retention period."


class RetentionInvalid(UserError):
    code = "UserErrorKeyVaultRetentionInvalid"
    message = "The soft-delete retention must be 7 to 90 days; got {days}."
    recommendation = "Pass --retention-days between 7 and 90 (90 by default)."


class KeyTypeInvalid(UserError):
    code = "UserErrorKeyTypeInvalid"
    message = "Unsupported key {what}: {value!r}. Keys are RSA (3072 or 4096 bits) or AES (256 bits); HSM keys are AES-256."
    recommendation = "Use --kty RSA --size 3072, or --kty AES --size 256 (add --hsm for a key in the PKCS#11 token)."


class AlgorithmInvalid(UserError):
    code = "UserErrorKeyAlgorithmInvalid"
    message = "Algorithm {alg!r} does not apply to {kty} key {name!r}; use one of {allowed}."
    recommendation = "RSA keys wrap with RSA-OAEP-256 (or RSA-OAEP); AES keys with A256KW."


class KeyDisabled(Conflict):
    code = "UserErrorKeyDisabled"
    message = "Key {name!r} in key vault {vault!r} is disabled."
    recommendation = "Enable it again, or use another key."


class UnwrapFailed(Forbidden):
    """A wrong KEK, or altered bytes: nothing is returned (fail closed)."""

    code = "UserErrorKeyUnwrapFailed"
    message = "Key {kid} could not unwrap the given value: it was wrapped by another key, or altered."
    recommendation = "Unwrap with the key (and version) that wrapped it; the BEK secret's tags name its KEK."


class WrapInputInvalid(UserError):
    code = "UserErrorKeyWrapInputInvalid"
    message = "The value to wrap must be 1 to {limit} bytes (base64 in the API); got {size}."
    recommendation = "Wrap a data key or a disk key (such as a 32- or 64-byte LUKS key), not bulk data."


class AccessDenied(Forbidden):
    code = "UserErrorKeyVaultAccessDenied"
    message = "Principal {principal!r} has no access policy in key vault {vault!r} granting {kind} permission {permission!r}."
    recommendation = ("Ask a Contributor of the subscription to grant it: 'haven keyvault set-policy --name {vault} --principal \"{principal}\" "
                      "--{kind}-permissions {permission}'.")
    recommendation_ui = ("Ask a Contributor of the subscription to add an access policy for {principal} on key vault {vault} granting "
                         "{kind} permission {permission} (Key vault page: Add access policy).")


class PermissionInvalid(UserError):
    code = "UserErrorKeyVaultPermissionInvalid"
    message = "Unknown {kind} permission(s) {bad}; allowed: {allowed}."
    recommendation = "Use the permissions listed, or a template (--template \"Haven Backup\")."


class TemplateInvalid(UserError):
    code = "UserErrorKeyVaultTemplateInvalid"
    message = "Unknown permission template {name!r}; templates: {known}."
    recommendation = "Use --template \"Haven Backup\" for the backup service, or pass explicit permissions."


class PrincipalNotFound(NotFound):
    code = "UserErrorKeyVaultPrincipalNotFound"
    message = "Principal {name!r} does not exist."
    recommendation = "Use the built-in principal \"Backup Management Service\", or a principal made with 'haven token create'."


class PolicyNotFound(NotFound):
    code = "UserErrorKeyVaultAccessPolicyNotFound"
    message = "Key vault {vault!r} has no access policy for principal {principal!r}."
    recommendation = "List the policies with 'haven keyvault show --name {vault}'."


class BackupBlobInvalid(UserError):
    code = "UserErrorKeyVaultBackupInvalid"
    message = "The backup blob cannot be restored here: {reason}."
    recommendation = "Restore a blob made by 'haven keyvault key backup' / 'secret backup' (or a recovery point's key backup) on this Haven server, whose master key sealed it."
    recommendation_ui = "Choose a recovery point made while the VM was encrypted on this Haven server: each such point holds the VM's keys."


class EncryptionSettingsInvalid(UserError):
    code = "UserErrorVmEncryptionSettingsInvalid"
    message = "The VM's encryption settings are invalid: {reason}."
    recommendation = "Name the key vault, the BEK secret and the KEK in the VM's definition: \"encryption\": {{\"method\": \"luks\", \"key_vault\": \"kv1\", \"bek_secret\": \"vm1-bek\", \"kek_key\": \"vm1-kek\"}}."


class KeyVaultAmbiguous(Conflict):
    code = "UserErrorKeyVaultAmbiguous"
    message = "Key vault name {name!r} exists in several subscriptions ({subscriptions})."
    recommendation = "Name the subscription in the VM's encryption settings (\"subscription\": …)."


class HsmNotConfigured(PreconditionFailed):
    code = "UserErrorHsmNotConfigured"
    message = "No PKCS#11 HSM is configured on this server, so an HSM-protected key cannot be {what}."
    recommendation = "Set HAVEN_PKCS11_MODULE, HAVEN_PKCS11_TOKEN_LABEL and HAVEN_PKCS11_PIN (or HAVEN_PKCS11_PIN_FILE) for the server and restart it."


class HsmError(PreconditionFailed):
    code = "UserErrorHsmOperationFailed"
    message = "The PKCS#11 token {token!r} failed: {reason}."
    recommendation = "Check that the token is present and its PIN is right (softhsm2-util --show-slots); HSM keys live only in their token."
