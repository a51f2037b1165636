"""Request and response bodies of the REST API (they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Name = Field(min_length=1, max_length=150)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


# ---- errors ----
class ErrorDetail(BaseModel):
    code: str
    message: str
    recommendation: str
    details: dict[str, Any] = {}


class ErrorBody(BaseModel):
    error: ErrorDetail


# ---- regions, subscriptions, tokens ----
class RegionOut(BaseModel):
    name: str
    paired_region: str | None


class IpRangesOut(BaseModel):
    region: str
    storage_endpoints: list[str]
    ip_ranges: list[str]


# Name rules are documented as patterns but checked by the services, so that a wrong name gets the
# seeds' error (code, message and fix) rather than a generic validation answer.
SUBSCRIPTION_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
VAULT_NAME = r"^[A-Za-z][A-Za-z0-9-]{1,49}$"
POLICY_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,149}$"


def documented_pattern(pattern: str, **kw):
    return Field(json_schema_extra={"pattern": pattern}, **kw)


class SubscriptionIn(Strict):
    name: str = documented_pattern(SUBSCRIPTION_NAME, min_length=1, max_length=64)


class SubscriptionOut(BaseModel):
    id: str
    name: str
    created_at: datetime


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    role: Literal["Reader", "Operator", "Contributor", "Owner"]
    subscription: str | None = Field(default=None, min_length=1, max_length=64)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    principal: str | None = Field(default=None, min_length=1, max_length=128)


class TokenCreated(BaseModel):
    id: str
    name: str
    principal: str
    role: str
    scope: str
    expires_at: datetime | None
    token: str


class TokenOut(BaseModel):
    id: str
    name: str
    principal: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


class WhoAmI(BaseModel):
    principal: str
    kind: str
    roles: dict[str, str]


# ---- vaults ----
APPROVAL_FIELD = Field(default=None, min_length=1, max_length=64,
                       description="On a vault under a resource guard: the id of the approved request for exactly this call.")

class VaultIn(Strict):
    name: str = documented_pattern(VAULT_NAME, min_length=1, max_length=100)
    region: str = Field(min_length=1, max_length=64)
    storage_redundancy: Literal["LRS", "GRS"] | None = None


class BackupPropertiesIn(Strict):
    storage_redundancy: Literal["LRS", "GRS"] | None = None
    soft_delete_days: int | None = Field(default=None, ge=14, le=180)
    immutability: Literal["Disabled", "Enabled", "Locked"] | None = None
    approval_id: str | None = APPROVAL_FIELD


class VerifyIn(Strict):
    read_data: bool = False
    read_data_subset: str | None = Field(default=None, min_length=1, max_length=16, description="n/m (e.g. 1/30) or p% (e.g. 5%)")


class EncryptionKeyIn(Strict):
    key_vault: str | None = Field(default=None, min_length=1, max_length=24)
    key: str | None = Field(default=None, min_length=1, max_length=127)


class AlertSettingsIn(Strict):
    webhook: str | None = Field(default=None, max_length=2048)
    email: str | None = Field(default=None, max_length=320)


class AlertSettingsOut(BaseModel):
    webhook: str | None
    email: str | None


class AlertOut(BaseModel):
    id: str
    kind: str
    severity: str
    message: str
    item_id: str | None
    job_id: str | None
    created_at: datetime
    delivered: list[str]


class VaultOut(BaseModel):
    id: str
    name: str
    subscription_id: str
    region: str
    state: str
    storage_redundancy: str
    storage_redundancy_locked: bool
    soft_delete_days: int
    immutability: str
    encryption_key: str
    alert_webhook: str | None
    alert_email: str | None
    protected_items: int
    recovery_points: int
    policies: int
    stored_bytes: int
    resource_guard: str | None = None
    created_at: datetime


# ---- policies ----
class ScheduleBody(Strict):
    frequency: Literal["daily", "weekly", "hourly"]
    times: list[str] = Field(min_length=1, max_length=3)
    weekdays: list[int] = Field(default=[], max_length=7)
    hourly_interval: int | None = None
    hourly_window_hours: int | None = None
    timezone: str = Field(default="UTC", min_length=1, max_length=64)


class RetentionBody(Strict):
    daily_days: int | None = None
    weekly_weeks: int | None = None
    weekly_days: list[int] = Field(default=[6], max_length=7)
    monthly_months: int | None = None
    yearly_years: int | None = None


class PolicyIn(Strict):
    name: str = documented_pattern(POLICY_NAME, min_length=1, max_length=150)
    schedule: ScheduleBody
    retention: RetentionBody


class PolicyUpdate(Strict):
    schedule: ScheduleBody | None = None
    retention: RetentionBody | None = None
    approval_id: str | None = APPROVAL_FIELD


class PolicyOut(BaseModel):
    id: str
    name: str
    vault_id: str
    schedule: dict[str, Any]
    retention: dict[str, Any]
    next_run: datetime | None
    protected_items: int
    created_at: datetime


class AssociatedItem(BaseModel):
    item_id: str
    vm: str
    state: str


# ---- inventory ----
class HostOut(BaseModel):
    id: str
    name: str
    region: str
    adapter: str
    adapter_uri: str = Field(description="The adapter's URI (folder:///path, qemu:///system …); a password in it is shown as ***.")
    last_seen: datetime | None
    agent: Literal["server", "remote"] = "server"
    agent_version: str | None = None
    shares: list[str] = Field(default_factory=list, description="The subscriptions the host is shared with (those the caller sees).")
    network: dict[str, Any] | None = Field(None, description="The host agent's last network report: its proxy settings (no secrets) "
                                                                "and its probe of each vault's storage (remote agents only).")


class HostIn(Strict):
    name: str = Field(min_length=1, max_length=63, description="The host's name (DNS-style).")
    region: str = Field(min_length=1, max_length=64)
    adapter: str = Field(default="folder:///var/lib/haven/vms", min_length=1, max_length=1024,
                         description="The hypervisor adapter the agent will use on that host (it reports its own when it starts).")
    shares: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=100,
                              description="Subscriptions (names or ids) to share the host with; none: shared with none until 'haven host share'.")


class HostAddedOut(HostOut):
    agent_token: str = Field(description="The agent's credential: shown once; give it to 'haven agent --token-file'.")


class VmOut(BaseModel):
    id: str
    name: str
    host: str
    region: str
    power_state: str
    uuid: str | None
    disks: list[dict[str, Any]]
    guest_agent: dict[str, Any] | None
    last_seen: datetime


# ---- protection ----
class EnableProtectionIn(Strict):
    """One VM (``vm``: the answer is its item) or several (``vms``: the answer is one result per VM)."""

    vm: str | None = Field(default=None, min_length=1, max_length=128)
    vms: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(default=None, min_length=1, max_length=1000)
    policy: str | None = Field(default=None, min_length=1, max_length=150)
    host: str | None = Field(default=None, min_length=1, max_length=128)
    include_disks: list[str] | None = Field(default=None, max_length=64)
    exclude_disks: list[str] | None = Field(default=None, max_length=64)
    approval_id: str | None = APPROVAL_FIELD

    @model_validator(mode="after")
    def _one_form(self) -> "EnableProtectionIn":
        if (self.vm is None) == (self.vms is None):
            raise ValueError("give either vm (one VM) or vms (a list of VMs), not both and not neither")
        if self.vms is not None and len(set(self.vms)) != len(self.vms):
            raise ValueError("vms must not name a VM twice")
        return self


class SetPolicyIn(Strict):
    policy: str = Name
    approval_id: str | None = APPROVAL_FIELD


class DisableProtectionIn(Strict):
    delete_backup_data: bool = False
    approval_id: str | None = APPROVAL_FIELD


class BackupNowIn(Strict):
    retain_until: AwareDatetime | None = None


class ItemOut(BaseModel):
    id: str
    vm: str
    host: str
    vault_id: str
    policy: str | None
    protection_state: str
    last_backup_status: str | None
    last_backup_time: datetime | None
    latest_recovery_point: datetime | None
    latest_consistency: str | None
    next_scheduled_backup: datetime | None
    include_disks: list[str] | None
    exclude_disks: list[str] | None
    deleted_at: datetime | None
    purge_at: datetime | None
    created_at: datetime


class EnableResultOut(BaseModel):
    vm: str
    status: Literal["Protected", "Failed"]
    item: ItemOut | None = None
    error: ErrorDetail | None = None


class EnableManyOut(BaseModel):
    protected: int
    failed: int
    results: list[EnableResultOut]


class CheckVmOut(BaseModel):
    vm: str
    protected: bool
    state: str | None = None
    vault: str | None
    vault_id: str | None = None
    other_subscription: bool = Field(default=False, description="Protected by a vault of a subscription the caller has no role on (not named).")


# ---- jobs ----
class JobError(BaseModel):
    code: str
    message: str | None
    recommendation: str | None


class JobOut(BaseModel):
    id: str
    operation: str
    type: str
    status: str
    vm: str | None
    vault_id: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    subtasks: list[dict[str, Any]]
    warnings: list[str]
    error: JobError | None
    result: dict[str, Any]


# ---- recovery points, restore ----
class PointOut(BaseModel):
    id: str
    vm: str
    time: datetime
    consistency: str
    size_bytes: int
    stored_bytes: int
    disks: list[dict[str, Any]]
    expires_at: datetime | None
    retain_until: datetime | None
    state: str


class RestoreDisksIn(Strict):
    target: str = Field(min_length=1, max_length=4096)
    disks: list[str] | None = Field(default=None, max_length=64)
    format: Literal["raw", "qcow2"] = "raw"
    host: str | None = Field(default=None, min_length=1, max_length=128,
                             description="Host of the vault's region whose agent writes the disks (default: this server).")


# ---- resource guards (multi-user authorization) ----
class ResourceGuardIn(Strict):
    name: str = Field(min_length=1, max_length=50)
    approval_window_minutes: int | None = Field(default=None, description="How long a request may wait for approval, and an approval stays usable (5-1440; default 240).")


class ResourceGuardOut(BaseModel):
    id: str
    name: str
    subscription_id: str
    approval_window_minutes: int
    approver_role: str
    approvers: list[str]
    protected_vaults: int
    protected_operations: list[str]
    created_at: datetime


class VaultGuardIn(Strict):
    guard: str = Field(min_length=1, max_length=64, description="The guard's name (in guard_subscription) or id.")
    guard_subscription: str | None = Field(default=None, min_length=1, max_length=64,
                                           description="The guard's subscription (default: the vault's).")
    approval_id: str | None = APPROVAL_FIELD


class VaultGuardOut(BaseModel):
    vault: str
    vault_id: str
    guarded: bool
    guard_id: str | None
    guard: str | None
    guard_subscription_id: str | None
    since: datetime | None
    protected_operations: list[str]


class GuardDecisionIn(Strict):
    comment: str | None = Field(default=None, max_length=1000)


class GuardRequestOut(BaseModel):
    id: str
    guard_id: str
    guard: str | None
    vault_id: str
    vault: str
    subscription_id: str
    operation: str
    parameters: dict[str, Any]
    parameters_digest: str
    requester: str
    status: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None
    used_at: datetime | None


class GuardAuditOut(BaseModel):
    id: int
    time: datetime
    event: str
    principal: str
    guard_id: str | None
    vault_id: str | None
    vault: str | None
    request_id: str | None
    operation: str | None
    code: str | None
    detail: str | None
