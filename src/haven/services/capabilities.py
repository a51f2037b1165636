"""Storage capabilities: the only credentials the storage endpoint (``/storage/v1``) accepts.

A host agent's own token opens no vault. When it claims a job for a folder vault, the server gives
it a capability naming that job (``for_job``); for its connectivity probe, one that may only ask
whether each vault's ``config`` exists (``for_probe``, an hour long). A capability is a token
signed by the server (a keyed BLAKE3 MAC with a key derived from the master key), so nothing is
stored; ``resolve`` checks it on *every* request against the job row — still running, its lease
held by the same agent and attempt — and answers with the vault's folder backend wrapped in the
``GrantedBackend`` of what the job may do (``haven.engine.grant``). A user's token (any role)
gets no raw object access: the API is the way to a vault.

A vault in S3 or Azure Blob is reached directly, not through the endpoint: the claim of a job on it
answers instead with its region's endpoint and credentials (``with_direct_storage``), for that job alone.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from datetime import timedelta
from urllib.parse import urlparse

import blake3

from haven.engine.grant import GrantedBackend, GrantMode, StorageGrant
from haven.errors import Forbidden, HavenError, NotFound, Unauthenticated

__all__ = ["StorageCapabilities", "CAPABILITY_PREFIX", "PROBE_TTL", "CapabilityInvalid", "CapabilityExpired",
           "StorageUserRefused", "CapabilityRequired", "CapabilityOtherVault", "VaultNotServed"]

CAPABILITY_PREFIX = "hvcap1."
PROBE_TTL = timedelta(hours=1)
_CTX = "haven 2026-12 storage endpoint capability key"
_MAX_TOKEN = 1024

log = logging.getLogger(__name__)


class CapabilityInvalid(Unauthenticated):
    code = "UserErrorStorageCapabilityInvalid"
    message = "The storage capability is malformed, forged or from another server."
    recommendation = "Let the agent claim its job again: the server hands out a fresh capability with every claim."


class CapabilityExpired(Unauthenticated):
    code = "UserErrorStorageCapabilityExpired"
    message = "The storage capability is no longer valid: {reason}."
    recommendation = "Nothing was changed. A capability lives as long as its job's lease; the agent gets a new one with its next claim."


class StorageUserRefused(Forbidden):
    code = "UserErrorStorageEndpointUsersRefused"
    message = "Principal {principal!r} is a user: users have no raw object access to vault storage."
    recommendation = "Use the API or the CLI (haven point list, haven restore ...); the storage endpoint serves host agents' jobs only."


class CapabilityRequired(Forbidden):
    code = "UserErrorStorageCapabilityRequired"
    message = "Host agent {principal!r} presented its own token; the storage endpoint takes only a job's capability."
    recommendation = "Upgrade the agent: it must use the capability its job claim answers with (storage.capability)."


class CapabilityOtherVault(Forbidden):
    code = "UserErrorStorageCapabilityOtherVault"
    message = "This storage capability opens only the vault of its job, not vault {vault_id!r}."
    recommendation = "Nothing was read or changed. Use the capability on the vault its job names."


class VaultNotServed(NotFound):
    code = "UserErrorStorageVaultNotServed"
    message = "Vault {vault_id!r} is not served by this storage endpoint."
    recommendation = "Point the agent at the vault its job names; only folder vaults on this server are served here."


class StorageCapabilities:
    def __init__(self, core):
        self.core = core
        self._key: bytes | None = None

    # ---- issuing ----
    def for_job(self, job) -> str:
        """The capability of a job just claimed (``job``: its row, with its lease owner and attempt)."""
        return self._sign({"k": "job", "j": job.id, "o": job.lease_owner, "a": job.attempts, "v": job.vault_id})

    def for_probe(self, principal_id: str, vault_id: str) -> str:
        expires = self.core.clock.now() + PROBE_TTL
        return self._sign({"k": "probe", "h": principal_id, "v": vault_id, "e": expires.timestamp()})

    def with_direct_storage(self, claimed: dict) -> dict:
        """A job claim's answer, with the endpoint and credentials of its vault's region when the vault is reached
        directly (S3, Azure Blob): ``storage.options``, the server's own backend options for that URL.

        Only a claim carries them, and only while its job runs under the lease that claim took: an agent gets a
        region's credentials for a job it holds, never for a probe, another host's job or a finished one. A secret
        that cannot be read leaves them out (the agent then fails with the storage's typed error;
        ``haven prepare check`` names the setting)."""
        storage = claimed.get("storage") or {}
        if storage.get("kind") != "direct":
            return claimed
        from haven.db.models import Job, Vault
        from haven.domain.enums import JobStatus

        with self.core.db.session() as s:
            job = s.get(Job, claimed.get("id"))
            vault = s.get(Vault, job.vault_id) if job is not None else None
            if job is None or vault is None or job.status != JobStatus.IN_PROGRESS.value or vault.storage_url != storage.get("url"):
                return claimed
            url = vault.storage_url
        try:
            options = {k: v for k, v in self.core.storage.options_for(url).items() if k not in ("retry", "retry_attempts")}
        except HavenError as exc:
            log.warning("job %s: the storage settings of %s are not passed to the agent: %s", claimed.get("id"), url, exc.code)
            return claimed
        return {**claimed, "storage": {**storage, "options": options}} if options else claimed

    # ---- checking (the storage endpoint's resolver) ----
    def resolve(self, token: str, vault_id: str):
        """The backend this bearer token may use for ``vault_id``, or a typed refusal."""
        if not token.startswith(CAPABILITY_PREFIX):
            caller = self.core.auth.authenticate(token)  # 401 for a bad token, before anything else
            from haven.domain.enums import PrincipalKind

            if caller.kind == PrincipalKind.AGENT.value:
                raise CapabilityRequired(principal=caller.name)
            raise StorageUserRefused(principal=caller.name)
        claims = self._verify(token)
        if claims.get("v") != vault_id:
            raise CapabilityOtherVault(vault_id=vault_id)
        grant = self._job_grant(claims) if claims.get("k") == "job" else self._probe_grant(claims)
        return GrantedBackend(self._folder(vault_id), grant, self.core.clock)

    def _job_grant(self, claims: dict) -> StorageGrant:
        from haven.work.plans import BackupPlan
        from haven.db.models import Job
        from haven.domain.enums import JobStatus, JobType

        with self.core.db.session() as s:
            job = s.get(Job, claims.get("j"))
            if job is None or job.vault_id != claims["v"]:
                raise CapabilityExpired(reason="its job no longer exists")
            if job.status not in (JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value):
                raise CapabilityExpired(reason=f"its job is {job.status}")
            if job.lease_owner != claims.get("o") or job.attempts != claims.get("a"):
                raise CapabilityExpired(reason="its job's lease is held by another claim")
            job_type, plan = job.type, dict(job.params.get("plan") or {})
        if job_type == JobType.BACKUP.value:
            backup = BackupPlan.from_dict(plan)
            return StorageGrant(claims["v"], GrantMode.BACKUP, claims["j"], backup.item_id, backup.point_id)
        return StorageGrant(claims["v"], GrantMode.READ, claims["j"])

    def _probe_grant(self, claims: dict) -> StorageGrant:
        from haven.db.models import Host, Principal, Vault

        if claims.get("k") != "probe" or not isinstance(claims.get("e"), (int, float)):
            raise CapabilityInvalid()
        if claims["e"] <= self.core.clock.now().timestamp():
            raise CapabilityExpired(reason="the probe capability is older than an hour")
        with self.core.db.session() as s:
            principal = s.get(Principal, claims.get("h"))
            host = s.get(Host, principal.host_id) if principal is not None and principal.host_id else None
            vault = s.get(Vault, claims["v"])
            if host is None or vault is None or host.region != vault.region:
                raise CapabilityExpired(reason="its host or vault changed")
        return StorageGrant(claims["v"], GrantMode.PROBE)

    def _folder(self, vault_id: str):
        from haven.db.models import Vault
        from haven.engine import LocalBackend

        with self.core.db.session() as s:
            vault = s.get(Vault, vault_id)
            url = urlparse(vault.storage_url) if vault is not None else None
        if url is None or url.scheme != "file":
            raise VaultNotServed(vault_id=vault_id)
        return LocalBackend(url.path)

    # ---- the token ----
    def _mac_key(self) -> bytes:
        if self._key is None:
            self._key = blake3.blake3(self.core.storage.master_key(), derive_key_context=_CTX).digest()
        return self._key

    def _sign(self, claims: dict) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()).decode().rstrip("=")
        mac = blake3.blake3(body.encode(), key=self._mac_key()).hexdigest()
        return f"{CAPABILITY_PREFIX}{body}.{mac}"

    def _verify(self, token: str) -> dict:
        body, _, mac = token[len(CAPABILITY_PREFIX):].partition(".")
        if len(token) > _MAX_TOKEN or not body or not mac:
            raise CapabilityInvalid()
        if not hmac.compare_digest(blake3.blake3(body.encode(), key=self._mac_key()).hexdigest(), mac):
            raise CapabilityInvalid()
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            raise CapabilityInvalid() from None
        if not isinstance(claims, dict) or not isinstance(claims.get("v"), str):
            raise CapabilityInvalid()
        return claims
