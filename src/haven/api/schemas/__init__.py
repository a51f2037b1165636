"""Request and response bodies of the REST API (they make the OpenAPI document), one module a resource."""

from haven.api.schemas.errors import *  # noqa: F401,F403
from haven.api.schemas.account import *  # noqa: F401,F403
from haven.api.schemas.vaults import *  # noqa: F401,F403
from haven.api.schemas.policies import *  # noqa: F401,F403
from haven.api.schemas.inventory import *  # noqa: F401,F403
from haven.api.schemas.protection import *  # noqa: F401,F403
from haven.api.schemas.jobs import *  # noqa: F401,F403
from haven.api.schemas.points import *  # noqa: F401,F403
from haven.api.schemas.guard import *  # noqa: F401,F403
from haven.api.schemas.base import APPROVAL_FIELD, POLICY_NAME, SUBSCRIPTION_NAME, VAULT_NAME, Name, Strict, documented_pattern

__all__ = [
    "Strict", "Name", "documented_pattern", "SUBSCRIPTION_NAME", "VAULT_NAME", "POLICY_NAME", "APPROVAL_FIELD",
    "ErrorDetail", "ErrorBody",
    "RegionOut", "IpRangesOut", "SubscriptionIn", "SubscriptionOut", "TokenIn", "TokenCreated", "TokenOut", "WhoAmI",
    "VaultIn", "BackupPropertiesIn", "VerifyIn", "EncryptionKeyIn", "AlertSettingsIn", "AlertSettingsOut", "AlertOut", "VaultOut",
    "ScheduleBody", "RetentionBody", "PolicyIn", "PolicyUpdate", "PolicyOut", "AssociatedItem",
    "HostOut", "HostIn", "HostAddedOut", "VmOut",
    "EnableProtectionIn", "SetPolicyIn", "DisableProtectionIn", "BackupNowIn", "ItemOut", "EnableResultOut", "EnableManyOut", "CheckVmOut",
    "JobError", "JobOut",
    "PointOut", "RestoreDisksIn",
    "ResourceGuardIn", "ResourceGuardOut", "VaultGuardIn", "VaultGuardOut", "GuardDecisionIn", "GuardRequestOut", "GuardAuditOut",
]
