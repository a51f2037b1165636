"""Settings: an optional TOML file (``$HAVEN_HOME/haven.toml``) overridden by ``HAVEN_*`` variables.

Defaults are the embedded single-machine setup: SQLite and a local vault folder under ``HAVEN_HOME``
(``~/.haven``), one region ``local``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from haven.domain.guest import DEFAULT_MIN_AGENT_VERSION, FLOOR_AGENT_VERSION, parse_version
from haven.errors import UserError

__all__ = ["RegionConfig", "Settings", "load_settings", "default_home", "SHARE_OWN_HOST", "SettingInvalid", "SettingNotPositive",
           "RegionStorage", "SecretSource", "StorageSettingInvalid", "region_storage"]

#: ``[server] share_own_host``: "all" shares the server's own host with every subscription (when either
#: is created); "none" leaves it to 'haven host share' like any remote host.
SHARE_OWN_HOST = ("all", "none")


class SettingInvalid(UserError):
    code = "UserErrorSettingInvalid"
    message = "The setting {key} = {value!r} is invalid: it must be one of {allowed}."
    recommendation = "Fix {key} in {where} and start the server again."


class SettingNotPositive(UserError):
    code = "UserErrorSettingNotPositive"
    message = "The setting {key} = {value!r} is invalid: it must be a positive number of days."
    recommendation = "Fix {key} in {where} (for example {key} = 90) and start the server again."


def default_home() -> Path:
    return Path(os.environ.get("HAVEN_HOME", Path.home() / ".haven")).expanduser().resolve()


@dataclass(frozen=True)
class RegionConfig:
    """A named site. ``storage_url`` is where vaults of the region keep their data by default;
    ``paired_region`` receives GRS vaults' replicas; ``ip_ranges`` are the published address
    ranges of its storage endpoints (for allow-list network setups)."""

    name: str
    storage_url: str
    paired_region: str | None = None
    ip_ranges: tuple[str, ...] = ("127.0.0.0/8",)
    #: ``[regions.storage]``: endpoint and credentials of an S3 or Azure Blob ``storage_url`` (see below)
    storage: RegionStorage | None = None


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    regions: tuple[RegionConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8733
    vms_root: Path | None = None
    local_region: str = "local"
    #: the one minimum version of the guest agent (seed 001's minimum-version rule), never below the floor Haven needs
    min_guest_agent_version: str = DEFAULT_MIN_AGENT_VERSION
    job_lease_seconds: float = 60.0
    job_workers: int = 2
    max_backups_per_host: int = 2
    max_backups_per_vault: int = 4
    #: Garbage collection of each vault: every ``gc_interval_hours``, and ``gc_delay_minutes`` after
    #: retention or a user deleted points or a backup failed (its chunks are reclaimed then).
    gc_interval_hours: float = 24.0
    gc_delay_minutes: float = 5.0
    #: Finished jobs and alerts older than this many days are deleted (jobs a recovery point or an open
    #: file-recovery session still names are kept); the scheduler prunes at most once an hour.
    job_history_days: float = 90.0
    alert_history_days: float = 90.0
    #: Folders restores may write into (a target must be one of them or inside one); empty: any absolute folder.
    restore_roots: tuple[Path, ...] = ()
    #: which subscriptions the server's own host is shared with when it registers or a subscription is created
    share_own_host: str = "all"
    #: ``[folder] allowed_disk_roots``: folders besides each VM's own that image-folder VMs' disks may live in.
    allowed_disk_roots: tuple[Path, ...] = ()
    #: ``[server] hypervisors``: the adapters of the server's own host agent; None: the VM folder, plus
    #: ``qemu:///system`` when libvirtd answers there
    hypervisors: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def master_key_path(self) -> Path:
        return self.home / "master.key"

    @property
    def credentials_path(self) -> Path:
        return self.home / "credentials.json"

    @property
    def server_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def region(self, name: str) -> RegionConfig | None:
        return next((r for r in self.regions if r.name == name), None)


def load_settings(home: Path | None = None, **overrides) -> Settings:
    home = (home or default_home()).resolve()
    data: dict = {}
    cfg = home / "haven.toml"
    if cfg.exists():
        data = tomllib.loads(cfg.read_text())
    env = os.environ
    regions = tuple(
        RegionConfig(
            name=r["name"],
            storage_url=r.get("storage_url", f"file://{home / 'storage' / r['name']}"),
            paired_region=r.get("paired_region"),
            ip_ranges=tuple(r.get("ip_ranges", ("127.0.0.0/8",))),
            storage=region_storage(r, cfg),
        )
        for r in data.get("regions", [{"name": "local"}])
    )
    vms_root = env.get("HAVEN_VMS_ROOT") or data.get("vms_root") or str(home / "vms")
    values = dict(
        home=home,
        database_url=env.get("HAVEN_DATABASE_URL") or data.get("database_url") or f"sqlite:///{home / 'haven.db'}",
        regions=regions,
        host=env.get("HAVEN_HOST") or data.get("host", "127.0.0.1"),
        port=int(env.get("HAVEN_PORT") or data.get("port", 8733)),
        vms_root=Path(vms_root),
        local_region=env.get("HAVEN_REGION") or data.get("local_region", regions[0].name),
        min_guest_agent_version=_min_agent_version(env, data, cfg),
        job_lease_seconds=float(data.get("job_lease_seconds", 60.0)),
        job_workers=int(data.get("job_workers", 2)),
        max_backups_per_host=int(data.get("max_backups_per_host", 2)),
        max_backups_per_vault=int(data.get("max_backups_per_vault", 4)),
        gc_interval_hours=float(data.get("gc_interval_hours", 24.0)),
        gc_delay_minutes=float(data.get("gc_delay_minutes", 5.0)),
        job_history_days=_days("job_history_days", env, data, cfg),
        alert_history_days=_days("alert_history_days", env, data, cfg),
        restore_roots=tuple(Path(p) for p in (env["HAVEN_RESTORE_ROOTS"].split(os.pathsep) if env.get("HAVEN_RESTORE_ROOTS")
                                              else data.get("restore_roots", [])) if p),
        allowed_disk_roots=tuple(Path(p) for p in (data.get("folder") or {}).get("allowed_disk_roots", []) if p),
    )
    share_own_host = env.get("HAVEN_SHARE_OWN_HOST") or data.get("server", {}).get("share_own_host", "all")
    if share_own_host not in SHARE_OWN_HOST:
        raise SettingInvalid(key="[server] share_own_host", value=share_own_host, allowed=" or ".join(map(repr, SHARE_OWN_HOST)),
                             where="HAVEN_SHARE_OWN_HOST" if env.get("HAVEN_SHARE_OWN_HOST") else str(cfg))
    values["share_own_host"] = share_own_host
    values["hypervisors"] = _hypervisors(env, data.get("server", {}), cfg)
    values.update(overrides)
    return Settings(**values)


def _min_agent_version(env, data: dict, cfg: Path) -> str:
    """``HAVEN_MIN_GUEST_AGENT_VERSION`` or ``min_guest_agent_version``: a version, at least the floor Haven needs."""
    var = "HAVEN_MIN_GUEST_AGENT_VERSION"
    raw = env.get(var) or data.get("min_guest_agent_version") or DEFAULT_MIN_AGENT_VERSION
    parsed = parse_version(str(raw))
    if not parsed or parsed < parse_version(FLOOR_AGENT_VERSION):
        raise SettingInvalid(key="min_guest_agent_version", value=raw,
                             allowed=f"a version such as 5.2.0, at least {FLOOR_AGENT_VERSION} (the oldest agent Haven works with)",
                             where=var if env.get(var) else str(cfg))
    return str(raw)


def _hypervisors(env, server: dict, cfg: Path) -> tuple[str, ...] | None:
    """``HAVEN_HYPERVISORS`` (separated by spaces or commas) or ``[server] hypervisors``: adapter URIs, or None (the default)."""
    var = "HAVEN_HYPERVISORS"
    raw = env.get(var)
    uris = raw.replace(",", " ").split() if raw else server.get("hypervisors")
    if uris is None:
        return None
    where = var if raw else str(cfg)
    allowed = 'a list of adapter URIs such as ["folder:///var/lib/haven/vms", "qemu:///system"]'
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and "://" in u for u in uris):
        raise SettingInvalid(key="[server] hypervisors", value=uris, allowed=allowed, where=where)
    if len(set(uris)) != len(uris):
        raise SettingInvalid(key="[server] hypervisors", value=uris, allowed=allowed + ", each once", where=where)
    return tuple(uris)


def _days(key: str, env, data: dict, cfg: Path) -> float:
    """A history period: ``HAVEN_<KEY>`` or ``<key>`` in haven.toml, a positive number of days (default 90)."""
    var = f"HAVEN_{key.upper()}"
    raw = env.get(var) or data.get(key, 90)
    try:
        days = float(raw)
    except (TypeError, ValueError):
        days = -1.0
    if not days > 0 or days != days or days == float("inf"):
        raise SettingNotPositive(key=key, value=raw, where=var if env.get(var) else str(cfg))
    return days


# ---- [regions.storage]: an object store's endpoint and credentials (S3, Azure Blob) ----
#
# Secrets are never written in haven.toml: each is named by a file (``<key>_file``) or by an environment
# variable (``<key>_env``) and read when the storage is opened (``haven.transport.credentials``), so a
# rotated secret is used without a restart and no settings view can hold it.

#: secret settings: each is given as ``<key>_file`` or ``<key>_env``, never as ``<key>`` itself
SECRET_KEYS = {"s3": ("secret_access_key", "session_token"), "azure": ("connection_string", "account_key")}
#: plain settings of each kind of storage URL
PLAIN_KEYS = {"s3": ("endpoint_url", "region", "addressing_style", "access_key_id"),
              "azure": ("endpoint_url", "account_name")}
ADDRESSING_STYLES = ("path", "virtual", "auto")


class StorageSettingInvalid(UserError):
    code = "UserErrorStorageSettingInvalid"
    message = "The storage setting {key} of region {region!r} is invalid: {reason}."
    recommendation = ("Fix [regions.storage] of region {region!r} in {where} (docs/guides/object-storage.md lists the settings), "
                      "then start the server again.")


@dataclass(frozen=True)
class SecretSource:
    """Where a secret is read from: a file (its whole content, surrounding white space removed) or an environment variable."""

    key: str  # e.g. "secret_access_key"
    file: str | None = None
    env: str | None = None

    def describe(self) -> str:
        return f"{self.key}_file = {self.file!r}" if self.file else f"{self.key}_env = {self.env!r}"


@dataclass(frozen=True)
class RegionStorage:
    """``[regions.storage]`` of one region: plain settings, and where each secret is read from (never its value)."""

    region: str
    kind: str  # s3 | azure
    where: str  # the file it was read from, for messages
    plain: tuple[tuple[str, str], ...] = ()
    secrets: tuple[SecretSource, ...] = ()

    def get(self, key: str) -> str | None:
        return dict(self.plain).get(key)

    def secret(self, key: str) -> SecretSource | None:
        return next((s for s in self.secrets if s.key == key), None)

    def describe(self) -> dict:
        """What is configured, safe to show anywhere: plain values, and for each secret only where it comes from."""
        return {**dict(self.plain), **{s.key: (f"file {s.file}" if s.file else f"environment variable {s.env}") for s in self.secrets}}


def region_storage(region: dict, cfg: Path) -> RegionStorage | None:
    """Parse and check ``[regions.storage]`` of one ``[[regions]]`` entry (None when absent)."""
    raw = region.get("storage")
    if raw is None:
        return None
    name, where = str(region.get("name")), str(cfg)
    kind = str(region.get("storage_url", "")).split("://", 1)[0].lower()

    def bad(key: str, reason: str) -> StorageSettingInvalid:
        return StorageSettingInvalid(key=key, region=name, reason=reason, where=where)

    if not isinstance(raw, dict):
        raise bad("[regions.storage]", "it must be a table of settings")
    if kind not in SECRET_KEYS:
        raise bad("[regions.storage]", f"only an s3:// or azure:// storage_url takes storage settings, not {kind or 'a default'}://")
    plain, secrets = [], []
    for key, value in raw.items():
        if key in SECRET_KEYS[kind]:
            raise bad(key, f"a secret is never written in haven.toml; give {key}_file = \"<path>\" or {key}_env = \"<VARIABLE>\"")
        base, _, how = key.rpartition("_")
        if how in ("file", "env") and base in SECRET_KEYS[kind]:
            if not isinstance(value, str) or not value.strip():
                raise bad(key, "it must name a file or an environment variable")
            if raw.get(f"{base}_file") and raw.get(f"{base}_env"):
                raise bad(key, f"give {base}_file or {base}_env, not both")
            if base not in (s.key for s in secrets):
                secrets.append(SecretSource(base, file=raw.get(f"{base}_file"), env=raw.get(f"{base}_env")))
            continue
        if key not in PLAIN_KEYS[kind]:
            known = ", ".join([*PLAIN_KEYS[kind], *(f"{k}_file/_env" for k in SECRET_KEYS[kind])])
            raise bad(key, f"it is not a setting of {kind}:// storage (known: {known})")
        if not isinstance(value, str) or not value.strip():
            raise bad(key, "it must be a non-empty string")
        plain.append((key, value.strip()))
    storage = RegionStorage(name, kind, where, tuple(plain), tuple(secrets))
    style = storage.get("addressing_style")
    if style is not None and style not in ADDRESSING_STYLES:
        raise bad("addressing_style", f"{style!r} is not one of {', '.join(ADDRESSING_STYLES)}")
    endpoint = storage.get("endpoint_url")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise bad("endpoint_url", "it must be an http:// or https:// URL")
    if kind == "s3" and bool(storage.get("access_key_id")) != bool(storage.secret("secret_access_key")):
        raise bad("access_key_id", "access_key_id and secret_access_key_file (or _env) go together")
    if kind == "azure":
        if storage.secret("account_key") and not storage.get("account_name"):
            raise bad("account_name", "account_key_file (or _env) needs account_name")
        if storage.secret("account_key") and storage.secret("connection_string"):
            raise bad("connection_string_file", "give a connection string or an account key, not both")
        if storage.get("account_name") and not storage.secret("account_key"):
            raise bad("account_key_file", "account_name needs account_key_file (or account_key_env)")
        if storage.secret("connection_string") and storage.get("endpoint_url"):
            raise bad("endpoint_url", "a connection string names its own BlobEndpoint; endpoint_url goes with account_name")
        if not storage.secret("connection_string") and not storage.get("account_name"):
            raise bad("[regions.storage]", "an azure:// region needs connection_string_file (or _env), or account_name "
                      "with account_key_file (or _env)")
    return storage
