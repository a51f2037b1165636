"""Preparing the environment for VM backup: ``haven prepare check`` and the firewall rules.

``PrepareService.check`` walks every prerequisite the seeds name, each answered with pass, warn or
fail, the reason and the fix:

==========================  ===================================================================
check                        what
==========================  ===================================================================
``vault``                    a vault of the subscription is in the VM's region (and which, when several)
``guest-agent``              qemu-guest-agent is installed and answering (the seeds' VM agent)
``guest-agent-version``      ... at least the minimum version
``backup-extension``         the backup extension can be installed/upgraded through the agent
``key-vault``                an encrypted VM's key vault: exists (not soft-deleted), the backup service's access
``agent-proxy``              the host agent's outbound path (direct / proxy) and its configuration
``storage-credentials``      where the server takes an S3 / Azure Blob vault's credentials from ([regions.storage])
``storage-connectivity``     DNS, TCP, proxy, TLS and an authenticated request to the vault's storage
``support:<rule>``           the support-matrix rules (data disks, guest OS, …) of ``SupportRules``
==========================  ===================================================================

``nftables_rules`` renders the allow-list / proxy-only rules from a region's published ranges.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from haven.db.models import ProtectedItem, Vault
from haven.domain.enums import Role
from haven.domain.vault import vault_name_key
from haven.errors import HavenError, PreconditionFailed, UserError
from haven.services.auth import Caller
from haven.transport.firewall import FirewallOptionInvalid, nftables_rules

__all__ = ["PrepareService", "nftables_rules", "FirewallOptionInvalid", "KeyVaultSoftDeleted", "NoVaultInRegion", "GUIDE_AGENT", "GUIDE_PROXY"]

GUIDE_AGENT = "docs/guides/guest-agent.md"
GUIDE_PROXY = "docs/guides/agent-proxy.md"
STATUSES = ("pass", "warn", "fail")


class NoVaultInRegion(UserError):
    code = "UserErrorNoVaultInRegion"
    message = "No vault of subscription {subscription!r} is in region {region!r}, the region of VM {vm!r}{others}."
    recommendation = ("Create a vault in the VM's region: haven vault create -s {subscription} --name <name> --region {region} "
                      "(a vault protects only VMs of its own region; create one vault per region).")


class KeyVaultSoftDeleted(PreconditionFailed):
    code = "UserErrorKeyVaultSoftDeleted"
    message = "Key vault {name!r}, which holds the encrypted VM's keys, is soft-deleted: backups of the VM fail until it is recovered."
    recommendation = "Recover it: haven keyvault recover -s {subscription} --name {name}"


def _check(check: str, status: str, reason: str, fix: str | None = None, code: str | None = None, **details: Any) -> dict:
    assert status in STATUSES
    return {"check": check, "status": status, "reason": reason, "fix": fix, "code": code, "details": details}


def _from_error(check: str, err: HavenError, status: str = "fail", **details: Any) -> dict:
    return _check(check, status, err.text, err.fix, err.code, **details)


class PrepareService:
    def __init__(self, core):
        self.core = core

    # ---- haven prepare check ----
    def check(self, caller: Caller, subscription: str, vm: str, vault: str | None = None, host: str | None = None,
              timeout: float = 10.0, probe: bool = True) -> dict:
        """``probe``: ask the guest agent afresh first (the server's own hosts); False judges the facts last reported."""
        from haven.domain.guest import parse_version
        from haven.services.protection import VmRegionMismatch
        from haven.services.vaults import VaultNotFound

        checks: list[dict] = []
        if probe:
            checks += self._fresh_probe(caller, subscription, vm, host)
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription, Role.READER)
            sub_id = sub.id
            machine = self.core.inventory.find_vm(s, vm, host, shared_with=sub.id)
            region, host_name = machine.host.region, machine.host.name
            remote = dict(machine.host.network or {}) if machine.host.remote else None
            info = dict(machine.info or {})
            info.setdefault("name", machine.name)
            power_state = machine.power_state
            vaults = s.scalars(select(Vault).where(Vault.subscription_id == sub.id).order_by(Vault.name)).all()
            item = s.scalar(select(ProtectedItem).where(ProtectedItem.vm_id == machine.id))
            protecting = next((v for v in vaults if item is not None and v.id == item.vault_id), None)
            chosen: Vault | None = None
            in_region = [v for v in vaults if v.region == region]
            if vault:
                chosen = next((v for v in vaults if v.name_key == vault_name_key(vault)), None)
                if chosen is None:
                    checks.append(_from_error("vault", VaultNotFound(name=vault, subscription=subscription)))
                elif chosen.region != region:
                    checks.append(_from_error("vault", VmRegionMismatch(vm=vm, vm_region=region, vault=chosen.name, vault_region=chosen.region),
                                              vaults_in_region=[v.name for v in in_region]))
                    chosen = None
                else:
                    checks.append(_check("vault", "pass", f"vault {chosen.name!r} is in region {region!r}, the VM's region",
                                         vault=chosen.name))
            elif protecting is not None:
                chosen = protecting
                checks.append(_check("vault", "pass", f"the VM is protected by vault {chosen.name!r} in region {region!r} "
                                     f"(state {item.state})", vault=chosen.name))
            elif not in_region:
                others = sorted({v.region for v in vaults})
                err = NoVaultInRegion(subscription=subscription, region=region, vm=vm,
                                      others=f" (its vaults are in: {', '.join(others)})" if others else "")
                checks.append(_from_error("vault", err))
            elif len(in_region) == 1:
                chosen = in_region[0]
                checks.append(_check("vault", "pass", f"vault {chosen.name!r} is in region {region!r}, the VM's region",
                                     vault=chosen.name))
            else:
                chosen = in_region[0]
                names = [v.name for v in in_region]
                checks.append(_check("vault", "warn", f"{len(names)} vaults are in region {region!r}: {', '.join(names)}; "
                                     f"the checks below use {chosen.name!r}",
                                     "Name the vault that will protect the VM with --vault NAME.", None, choices=names, vault=chosen.name))
            vault_view = ({"id": chosen.id, "name": chosen.name, "region": chosen.region, "storage_url": chosen.storage_url}
                          if chosen else None)

        checks += self._agent_checks(info, power_state, parse_version)
        checks += self._keyvault_checks(info, sub_id)
        checks += self._support_checks(info)
        if vault_view is not None and remote is not None:
            credentials = self._credentials_check(vault_view["storage_url"], request_timeout=timeout)
            checks += [credentials] if credentials is not None else []
            checks += _reported_network_checks(host_name, vault_view, remote)
        elif vault_view is not None:
            checks += self._network_checks(vault_view["storage_url"], timeout)
        else:
            checks.append(_check("storage-connectivity", "warn", "not checked: no vault to check the storage endpoint of",
                                 "Fix the vault check first."))
        verdict = "fail" if any(c["status"] == "fail" for c in checks) else (
            "warn" if any(c["status"] == "warn" for c in checks) else "pass")
        return {"vm": vm, "host": host_name, "region": region, "power_state": power_state,
                "vault": vault_view["name"] if vault_view else None, "verdict": verdict, "ok": verdict != "fail",
                "checks": checks}

    def _fresh_probe(self, caller: Caller, subscription: str, vm: str, host: str | None) -> list[dict]:
        """Ask the VM's guest agent now when the server's own agent runs its host; a probe that cannot run is a warning."""
        with self.core.db.session() as s:
            sub = self.core.subscriptions.get_visible(s, caller, subscription, Role.READER)
            machine = self.core.inventory.find_vm(s, vm, host, shared_with=sub.id)
            where = (machine.host.id, machine.host.adapter_url, bool(machine.host.remote), machine.name)
        try:
            self.core.inventory.refresh_guest(*where)
        except HavenError as exc:
            return [_from_error("guest-probe", exc, "warn")]
        return []

    def _keyvault_checks(self, info: dict, subscription_id: str) -> list[dict]:
        """Seed 003's notice at VM selection: an encrypted VM's key vault exists (not soft-deleted) and the backup
        service has the access it needs to its keys (the checks ``enable-for-vm`` and every backup make)."""
        from haven.db.models import Subscription
        from haven.keyvault.tables import KeyVault
        from haven.services.keyvault import parse_encryption

        try:
            enc = parse_encryption(info.get("encryption"))
        except HavenError as exc:
            return [_from_error("key-vault", exc)]
        if enc is None:
            return []
        name = enc["key_vault"]
        with self.core.db.session() as s:
            rows = s.scalars(select(KeyVault).where(KeyVault.name == name, KeyVault.subscription_id == subscription_id)).all()
            sub_name = s.get(Subscription, subscription_id).name
        if rows and all(r.deleted_at is not None for r in rows):
            return [_from_error("key-vault", KeyVaultSoftDeleted(name=name, subscription=sub_name), key_vault=name,
                                state="soft-deleted")]
        try:
            self.core.keyvault.check_backup_access(info.get("encryption"), subscription_id)
        except HavenError as exc:
            return [_from_error("key-vault", exc, key_vault=name, state="exists" if rows else "missing")]
        return [_check("key-vault", "pass", f"key vault {name!r} exists and the backup service (Backup Management Service) "
                       "has the keys and secrets permissions it needs (get, list, backup)", key_vault=name, state="exists")]

    def _agent_checks(self, info: dict, power_state: str, parse_version) -> list[dict]:
        from haven.hypervisor.errors import GuestAgentNotConfigured, GuestAgentNotResponding, GuestAgentVersionUnsupported

        out: list[dict] = []
        name = info.get("name")
        ga = info.get("guest_agent") or {}
        minimum = self.core.settings.min_guest_agent_version  # the one minimum, whatever the host agent assumed
        seen = f", seen {ga['checked_at']}" if ga.get("checked_at") else ""
        guide = f" (see {GUIDE_AGENT})"
        running = power_state == "running"
        if not ga.get("present"):
            err = GuestAgentNotConfigured(name=name)
            out.append(_check("guest-agent", "warn", f"{err.text} Backups still run but are crash-consistent only.",
                              err.fix + guide, ga.get("problem_code") or err.code))
        elif not running:
            out.append(_check("guest-agent", "warn",
                              f"the VM is {power_state}: its guest agent is checked when it runs. A stopped (offline) VM is still "
                              "backed up, crash-consistent.", "Start the VM to check the agent and get application-consistent points."))
        elif not ga.get("answering"):
            err = GuestAgentNotResponding(name=name, timeout=30, reason=ga.get("problem") or "no answer")
            out.append(_check("guest-agent", "fail", ga.get("problem") or err.text, (ga.get("recommendation") or err.fix) + guide,
                              ga.get("problem_code") or err.code))
        else:
            out.append(_check("guest-agent", "pass", f"qemu-guest-agent is installed and answering (version {ga.get('version')}{seen})",
                              checked_at=ga.get("checked_at")))

        version = ga.get("version")
        if not version:
            out.append(_check("guest-agent-version", "warn" if ga.get("present") else "warn",
                              f"not checked: the agent did not report its version (minimum {minimum})",
                              f"Make sure qemu-guest-agent {minimum} or newer runs in the guest{guide}.", minimum=minimum))
        elif parse_version(version) < parse_version(minimum):
            err = GuestAgentVersionUnsupported(name=name, version=version, minimum=minimum)
            out.append(_from_error("guest-agent-version", err, version=version, minimum=minimum))
            out[-1]["fix"] += guide
        else:
            out.append(_check("guest-agent-version", "pass", f"version {version} is at least the minimum {minimum}",
                              version=version, minimum=minimum))

        usable = ga.get("present") and ga.get("answering") and running and version and parse_version(version) >= parse_version(minimum)
        commands = set(ga.get("supported_commands") or [])
        missing = [c for c in ("guest-exec", "guest-file-open", "guest-file-write") if commands and c not in commands]
        ext = info.get("extension") or {}  # the extension's state as the last probe or backup saw it
        if ext.get("error_code") or (ext.get("status") and ext.get("status") not in ("installed", "upgraded", "current",
                                                                                      "missing", "outdated")):
            out.append(_check("backup-extension", "warn", f"the backup extension is {ext.get('status')}: {ext.get('message') or 'no detail'}; "
                              "backups fall back to file-system or crash consistency until it works",
                              "Check that the guest agent allows guest-exec and guest-file-* and that /var/lib in the guest is "
                              "writable; Haven retries the installation at the next backup.", ext.get("error_code"), extension=ext))
        elif not usable:
            out.append(_check("backup-extension", "warn", "the backup extension cannot be installed now (offline VM or no usable "
                              "guest agent): the VM is still backed up, and its recovery points are crash-consistent",
                              "Run the VM with a current qemu-guest-agent; Haven installs and upgrades the extension by itself."))
        elif missing:
            out.append(_check("backup-extension", "warn", f"the guest agent blocks {', '.join(missing)}: the extension (pre/post "
                              "snapshot scripts) cannot be installed; points are file-system consistent at best",
                              f"Allow {', '.join(missing)} in /etc/qemu/qemu-ga.conf (block-rpcs) and restart qemu-guest-agent.",
                              "UserErrorGuestAgentCommandDisabled"))
        else:
            version = f" (version {ext['version']} is {ext['status']})" if ext.get("version") else (
                f" ({ext['message']})" if ext.get("status") == "missing" else "")
            out.append(_check("backup-extension", "pass", "the guest agent can run the backup extension: Haven installs and "
                              f"upgrades it at each backup, without user action{version}", extension=ext or None))
        return out

    def _support_checks(self, info: dict) -> list[dict]:
        return [_check(f"support:{r['rule']}", r["status"], r["reason"], r["fix"], r["code"])
                for r in self.core.support.evaluate(info)]

    def _network_checks(self, storage_url: str, timeout: float) -> list[dict]:
        from haven.transport import agent_config_path, load_agent_config, probe_endpoint

        home = self.core.settings.home
        cfg_path = str(agent_config_path(home))
        try:
            config = load_agent_config(home)
        except HavenError as exc:
            return [_from_error("agent-proxy", exc)]
        desc = config.describe()
        out = []
        if config.has_proxy:
            out.append(_check("agent-proxy", "pass", f"the host agent goes out through the proxy {desc['proxy']} "
                              f"(from {config.source})", None, None, **desc))
        else:
            out.append(_check("agent-proxy", "pass", "the host agent goes to the storage endpoint directly (no proxy configured)",
                              None, None, **desc))
        credentials = self._credentials_check(storage_url)
        if credentials is not None:
            out.append(credentials)
            if credentials["status"] == "fail":
                return out
        options = {k: v for k, v in self.core.storage.options_for(storage_url).items() if k not in ("retry", "retry_attempts")}
        result = probe_endpoint(storage_url, options, config, timeout=timeout, config_path=cfg_path)
        details = result.to_dict()
        failed = result.failed
        if failed is None:
            where = f" through the proxy {desc['proxy']}" if result.proxy else ""
            out.append(_check("storage-connectivity", "pass", f"the host agent reaches {result.endpoint or storage_url}{where}: "
                              + "; ".join(s.reason for s in result.steps), None, None, **details))
        else:
            out.append(_check("storage-connectivity", "fail", f"{failed.step}: {failed.reason}", failed.fix, failed.code, **details))
        return out

    def _credentials_check(self, storage_url: str, request_timeout: float | None = None) -> dict | None:
        """``storage-credentials``: where the server takes the credentials of an S3 or Azure Blob vault from (never their
        value) and, with ``request_timeout``, whether the storage answers the server's own request made with them (for a
        VM on a remote host, whose agent's report says nothing of the server's settings); None for other storage."""
        scheme = storage_url.split("://", 1)[0].lower()
        if scheme not in ("s3", "azure"):
            return None
        storage = self.core.storage.region_storage(storage_url)
        if storage is None:
            return _check("storage-credentials", "warn", "no [regions.storage] settings for this vault's region in haven.toml: "
                          "the storage SDK's own configuration (its environment variables and files) is used",
                          "Give the region its endpoint and credentials under [regions.storage] in haven.toml "
                          "(docs/guides/object-storage.md).")
        try:
            options = self.core.storage.options_for(storage_url)
            if request_timeout is not None:
                self._ask_storage(storage_url, options, request_timeout)
        except HavenError as exc:
            return _from_error("storage-credentials", exc, **storage.describe())
        return _check("storage-credentials", "pass", f"region {storage.region!r} has {scheme}:// settings in {storage.where}: "
                      + ", ".join(f"{k} from {v}" if k in {s.key for s in storage.secrets} else f"{k} = {v}"
                                  for k, v in storage.describe().items())
                      + ("; the storage answered the server's request made with them" if request_timeout is not None else ""),
                      None, None, **storage.describe())


    def _ask_storage(self, storage_url: str, options: dict, timeout: float) -> None:
        """One authenticated request (does the vault's ``config`` exist?), without retries: the storage's typed error if refused."""
        from haven.transport import open_agent_backend

        opts = {**options, "retry": False, "timeout": timeout, "sdk_retries": 0}
        backend = open_agent_backend(storage_url, opts, home=self.core.settings.home)
        try:
            backend.exists("config")
        finally:
            backend.close()


def _reported_network_checks(host: str, vault: dict, report: dict) -> list[dict]:
    """A remote host's path to the vault, as its agent last probed it (the server's own path says nothing of it)."""
    probe = (report.get("vaults") or {}).get(vault["id"])
    if probe is None:
        return [_check("storage-connectivity", "warn", f"the agent of host {host!r} has not reported its path to vault "
                       f"{vault['name']!r} yet", f"Start 'haven agent' on {host}: it probes every vault of its region when it "
                       "starts and at every inventory round.")]
    config, when = report.get("config") or {}, report.get("checked_at")
    via = f"the proxy {config['proxy']} (from {config.get('proxy_source')})" if config.get("proxy") else "no proxy (direct)"
    out = [_check("agent-proxy", "pass", f"the agent of host {host!r} goes out through {via}, as it reported at {when}",
                  None, None, **config)]
    failed = probe.get("failed")
    if failed is None:
        out.append(_check("storage-connectivity", "pass", f"the agent of host {host!r} reached {probe.get('endpoint') or vault['name']} "
                          f"at {when}: " + "; ".join(s["reason"] for s in probe.get("steps", [])), None, None, **probe))
    else:
        out.append(_check("storage-connectivity", "fail", f"host {host!r}, {failed['step']}: {failed['reason']} (probed at {when})",
                          failed.get("fix"), failed.get("code"), **probe))
    return out
