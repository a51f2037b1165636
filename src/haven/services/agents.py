"""The agent API's use cases: remote host agents register, report VMs, and run their host's jobs.

An Owner adds a host (``add_host``) and hands its one-time credential to the agent on that host.
With it the agent may only touch its own host: report its VMs, claim the jobs queued for it, renew
their leases, report progress, ask the server for the data key of the vault a claimed job writes
to (only that vault's own key, read by the server from the vault's ``config``), and complete or
fail those jobs. Its token opens no vault: each claim of a job on a folder vault answers with a
storage capability for that job alone (``services.capabilities``). The server plans each job when
it is claimed and records its outcome when the agent completes it, in the transaction that checks
the agent still holds the lease, after confirming the point's manifest is in the vault's storage.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging

from sqlalchemy import select

from haven.db.models import Host, Job, Vault
from haven.domain.enums import JobStatus, PrincipalKind, Role
from haven.errors import Conflict, Forbidden, HavenError, PreconditionFailed, UserError, error_from_payload
from haven.jobs.queue import Claimed, JobNotFound, LeaseLost
from haven.jobs.runner import commit_under_lease
from haven.services.auth import AgentScopeViolation, Caller
from haven.services.execution import PointNotStored
from haven.services.inventory import host_view
from haven.work import HOST_JOBS

__all__ = ["AgentService", "AGENT_JOB_TYPES", "NotAnAgent", "HostExists", "HostCannotRun", "PointNotStored", "UnwrapNotOwnVault"]

log = logging.getLogger(__name__)

#: the job types a remote agent runs (backup, restore-disks, restore-vm); the rest stay with the server's own agent
AGENT_JOB_TYPES = tuple(t.value for t in HOST_JOBS)


class NotAnAgent(Forbidden):
    code = "UserErrorNotAnAgent"
    message = "Only a host agent's credential may use the agent API; {principal!r} is a user."
    recommendation = "Start 'haven agent' with the token 'haven host add' printed for its host."


class HostExists(Conflict):
    code = "UserErrorHostExists"
    message = "A host named {name!r} is already registered."
    recommendation = "Pick another name, or keep using the agent credential made when the host was added."


class HostCannotRun(PreconditionFailed):
    code = "UserErrorHostCannotRunJob"
    message = "The agent of host {host!r} does not run {operation} jobs (it runs: {types})."
    recommendation = "Restore the disks to that host with 'haven restore restore-disks --host {host}', or pick a host whose agent runs {operation}."


class UnwrapNotOwnVault(Forbidden):
    code = "UserErrorUnwrapNotOwnVault"
    message = "Job {job} may have only the data key of its own vault {vault!r}; the wrapped key sent is not that vault's."
    recommendation = "Nothing was unwrapped. The agent sends the wrapped key from its job's vault's config; upgrade the agent if it sends another."


class AgentService:
    def __init__(self, core):
        self.core = core

    # ---- hosts ----
    def add_host(self, caller: Caller, name: str, region: str, adapter_url: str, shares: list[str] | None = None) -> dict:
        """Register a remote host, shared with ``shares`` only; the answer carries its agent's credential, shown only this once."""
        caller.require_global(Role.OWNER)
        with self.core.db.session() as s:
            if s.query(Host).filter(Host.name == name).first() is not None:
                raise HostExists(name=name)
            for sub in shares or []:
                self.core.subscriptions.find(s, sub)  # each exists, before anything is made
        view, token = self.core.inventory.register_host(caller, name, region, adapter_url)
        with self.core.db.session() as s:
            s.get(Host, view["id"]).job_types = []  # remote: it runs nothing until its agent says what it runs
        for sub in shares or []:
            view = self.core.inventory.share_host(caller, name, sub)
        return {**view, "agent": "remote", "agent_token": token}

    def rotate_token(self, caller: Caller, name: str) -> dict:
        """A new credential for the host's agent; every earlier one stops working at once."""
        caller.require_global(Role.OWNER)
        with self.core.db.session() as s:
            host = s.scalar(select(Host).where(Host.name == name))
            if host is None:
                from haven.services.inventory import HostNotFound

                raise HostNotFound(name=name)
            view = host_view(host)
        return {**view, "agent_token": self.core.auth.agent_token(view["id"], name, revoke_others=True)}

    def hello(self, caller: Caller, adapter_url: str, version: str, job_types: list[str]) -> dict:
        """The agent starts: record what it runs; answer with its host, the lease length to keep and the minimum
        guest-agent version its probes and backups apply (the server's, the one minimum)."""
        host_id = self._host_of(caller)
        with self.core.db.session() as s:
            host = s.get(Host, host_id)
            host.adapter_url, host.agent_version = adapter_url, version
            host.job_types = sorted(set(job_types) & set(AGENT_JOB_TYPES))
            host.last_seen = self.core.clock.now()
            view = {"id": host.id, "name": host.name, "region": host.region, "job_types": host.job_types}
        return {**view, "lease_seconds": self.core.queue.lease.total_seconds(), **self.agent_settings()}

    def agent_settings(self) -> dict:
        """What every agent applies as the server has it configured, sent at hello and with each inventory round."""
        return {"min_guest_agent_version": self.core.settings.min_guest_agent_version}

    def report_vms(self, caller: Caller, vms: list[dict]) -> dict:
        """Record the VMs the agent sees; the answer carries the settings its next round applies."""
        return {"reported": self.core.inventory.report_vms(caller, self._host_of(caller), vms), **self.agent_settings()}

    def storage_targets(self, caller: Caller) -> list[dict]:
        """The vaults of the agent's region and how the agent reaches each (for its connectivity probe)."""
        host_id = self._host_of(caller)
        with self.core.db.session() as s:
            region = s.get(Host, host_id).region
            vaults = s.scalars(select(Vault).where(Vault.region == region).order_by(Vault.name)).all()
            caps = self.core.capabilities
            return [{"vault_id": v.id, "vault": v.name, "storage": self._storage_for(v, lambda: caps.for_probe(caller.principal_id, v.id))}
                    for v in vaults]

    def report_network(self, caller: Caller, config: dict, results: dict[str, dict]) -> None:
        """The agent's proxy configuration (no secrets) and its probe of each vault's storage."""
        host_id = self._host_of(caller)
        with self.core.db.session() as s:
            s.get(Host, host_id).network = {"checked_at": self.core.clock.now().isoformat(), "config": config, "vaults": results}

    def require_runs(self, host: Host, job_type: str, operation: str, secondary: bool = False) -> None:
        """Refuse to queue a job no agent of ``host`` would ever claim.

        A remote agent reads only the vault's primary storage: cross-region restores run on the server's host.
        """
        if host.remote and (secondary or job_type not in host.job_types):
            raise HostCannotRun(host=host.name, operation=f"cross-region {operation}" if secondary else operation,
                                types=", ".join(host.job_types) or "none")

    # ---- jobs ----
    def claim(self, caller: Caller, worker: str, types: list[str]) -> dict | None:
        """The oldest job queued for the caller's host, with the plan the agent carries out."""
        host_id = self._host_of(caller)
        wanted = tuple(t for t in types if t in AGENT_JOB_TYPES)
        while wanted:
            job = self.core.queue.claim(_worker(caller, worker), wanted, host_id, unassigned=False)
            if job is None:
                return None
            try:
                return self._hand_out(job)
            except HavenError as e:  # the server could not plan it (keys gone, point missing): the job fails here
                self._fail(job, _worker(caller, worker), e)
        return None

    def _hand_out(self, job: Claimed) -> dict:
        handler = self.core.job_handlers()[job.type]
        plan = handler.plan(job).to_dict()
        with self.core.db.session() as s:
            row = s.get(Job, job.id)
            row.params = {**row.params, "plan": plan}
            vault = s.get(Vault, job.vault_id)
            capability = self.core.capabilities.for_job(row)
        self.core.storage.open(vault)  # a vault of the first key format is rewrapped bound before the agent reads its config
        return {"id": job.id, "type": job.type, "operation": job.operation, "plan": plan,
                "storage": self._storage_for(vault, lambda: capability)}

    def _storage_for(self, vault: Vault, capability) -> dict:
        """Folder vaults on this server are reached through its storage endpoint, with ``capability()``; the rest directly.

        Direct vaults (Azure Blob, S3) are reached with the agent's own storage credentials: no capability."""
        kek_id = self.core.storage.kek_for(vault).key_id  # a label for the agent's errors; the KEK stays here
        if vault.storage_url.startswith("file:"):
            return {"kind": "endpoint", "vault_id": vault.id, "kek_id": kek_id, "capability": capability()}
        return {"kind": "direct", "url": vault.storage_url, "kek_id": kek_id}

    def heartbeat(self, caller: Caller, job_id: str, worker: str) -> dict:
        self._job(caller, job_id)
        alive = self.core.queue.heartbeat(job_id, _worker(caller, worker))
        return {"lease": alive, "cancel": self.core.queue.cancel_requested(job_id)}

    def progress(self, caller: Caller, job_id: str, worker: str, subtasks: list[dict], warnings: list[str]) -> None:
        self._job(caller, job_id)
        self.core.queue.update_progress(job_id, _worker(caller, worker), subtasks)
        for w in warnings:
            self.core.queue.add_warning(job_id, w)

    def unwrap(self, caller: Caller, job_id: str, worker: str, wrapped: str) -> str:
        """The data key of the vault the caller's running job uses, and no other.

        The server reads that vault's ``config`` itself and answers only when ``wrapped`` is the key
        wrapped there; the key is then unwrapped checked against its binding to the vault and the
        config's MAC. Any other blob (another vault's key, a forged one) is refused unread."""
        from haven.engine.repository import unwrap_config_key

        job = self._running(caller, job_id, worker)
        with self.core.db.session() as s:
            vault = s.get(Vault, job.vault_id)
        kek = self.core.storage.kek_for(vault)
        repo = self.core.storage.open(vault, kek)
        try:
            sent = base64.b64decode(wrapped, validate=True)
        except (binascii.Error, ValueError):
            sent = b""
        if not hmac.compare_digest(sent, base64.b64decode(repo.config["key"]["wrapped"])):
            raise UnwrapNotOwnVault(job=job_id, vault=vault.name)
        return base64.b64encode(unwrap_config_key(kek, repo.config)).decode()

    def complete(self, caller: Caller, job_id: str, worker: str, outcome: dict) -> str:
        """Record what the agent did, through the job type's handler, under the agent's lease."""
        job = self._running(caller, job_id, worker)
        claimed = Claimed.of(job)
        owner = _worker(caller, worker)
        handler = self.core.job_handlers()[job.type]
        plan, result = handler.plan_from(job.params), handler.outcome_from(outcome)
        handler.record(lambda record: commit_under_lease(self.core.queue, job_id, owner, record), claimed, plan, result, remote=True)
        return self.core.queue.get(job_id).status

    def fail(self, caller: Caller, job_id: str, worker: str, error: dict, cancelled: bool) -> None:
        job = self._running(caller, job_id, worker)  # only the lease holder says how its job ended
        self._fail(Claimed.of(job), _worker(caller, worker), error_from_payload({"error": error}, 500), cancelled)

    # ---- internals ----
    def _fail(self, job: Claimed, worker: str, error: HavenError, cancelled: bool = False) -> None:
        self.core.queue.fail(job.id, worker, error, cancelled=cancelled)
        self.core.job_handlers()[job.type].failed(job, cancelled)
        if not cancelled:
            self.core.alerts.job_failed(job.id)

    def _host_of(self, caller: Caller) -> str:
        if caller.kind != PrincipalKind.AGENT.value or not caller.host_id:
            raise NotAnAgent(principal=caller.name)
        return caller.host_id

    def _job(self, caller: Caller, job_id: str) -> Job:
        host_id = self._host_of(caller)
        with self.core.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id=job_id)
            if job.host_id != host_id:
                raise AgentScopeViolation(principal=caller.name)
            return job

    def _running(self, caller: Caller, job_id: str, worker: str) -> Job:
        job = self._job(caller, job_id)
        if job.lease_owner != _worker(caller, worker) or job.status not in (JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value):
            raise LeaseLost(job_id=job_id)
        return job


def _worker(caller: Caller, worker: str) -> str:
    """Lease owners are namespaced by principal, so no agent can renew or finish another's lease."""
    if not worker or len(worker) > 24:
        raise UserError("A worker id of 1 to 24 characters is required.", "The agent sends its own worker id; upgrade the agent.")
    return f"{caller.principal_id}:{worker}"
