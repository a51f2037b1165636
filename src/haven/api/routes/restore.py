"""API routes for restore beyond restore-disks: restore-vm, replace-disks, cross-region restore,
file recovery (mount/unmount a recovery point over NBD) and importing a vault from its storage."""

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, Field

from haven.api.deps import caller, core
from haven.api.routes.params import Id, Sub, VaultName, VmName
from haven.api.schemas import JobOut, Strict, VaultOut

router = APIRouter(prefix="/subscriptions/{subscription}")
ITEMS = "/vaults/{vault}/items"
POINT = ITEMS + "/{vm}/recovery-points/{point}"


class RestoreVmIn(Strict):
    target_vm_name: str = Field(min_length=1, max_length=63, description="Name of the new VM (must not exist on the host).")
    host: str | None = Field(default=None, min_length=1, max_length=128, description="Host to define the VM on (default: the original VM's host, or a host of the region).")
    target: str | None = Field(default=None, min_length=1, max_length=4096, description="Absolute folder for the restored disks (default: chosen by the host's adapter).")
    format: Literal["raw", "qcow2"] = "raw"
    use_secondary_region: bool = False


class ReplaceDisksIn(Strict):
    disks: list[str] | None = Field(default=None, max_length=64)


class CrossRegionRestoreIn(Strict):
    target: str = Field(min_length=1, max_length=4096)
    disks: list[str] | None = Field(default=None, max_length=64)
    format: Literal["raw", "qcow2"] = "raw"


class MountIn(Strict):
    disks: list[str] | None = Field(default=None, max_length=64)
    hours: float = Field(default=12.0, gt=0, le=168, description="Close the export after this many hours.")
    use_secondary_region: bool = False


class UnmountOut(BaseModel):
    vm: str
    recovery_point: str
    closed: list[str]


class MountOut(BaseModel):
    session_id: str
    point_id: str
    expires_at: str
    exports: list[dict[str, Any]]


class SecondaryPointOut(BaseModel):
    id: str
    vm: str
    time: datetime
    region: str
    disks: list[dict[str, Any]]


class VaultImportIn(Strict):
    storage_url: str = Field(min_length=3, max_length=4096, description="The vault's storage, e.g. file:///srv/haven/storage/local/<vault id>.")
    master_key: str | None = Field(default=None, max_length=200, description="Base64 of the old server's master key file (omit if it is this server's).")
    name: str | None = Field(default=None, min_length=2, max_length=50, description="Vault name on this server (default: its old name).")
    region: str | None = Field(default=None, min_length=1, max_length=64)


class VaultImportOut(VaultOut):
    imported_items: int
    imported_recovery_points: int
    storage_url: str
    key_rewrapped: bool


@router.post(POINT + "/restore-vm", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["restore"])
def restore_vm(subscription: Sub, vault: VaultName, vm: VmName, point: Id, body: RestoreVmIn, app=Depends(core), who=Depends(caller)):
    """Create a new VM from a recovery point (refused if the name is in use on the host)."""
    return app.restore.restore_vm(who, subscription, vault, vm, point, body.target_vm_name, body.host, body.target, body.format,
                                  body.use_secondary_region)


@router.post(POINT + "/replace-disks", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["restore"])
def replace_disks(subscription: Sub, vault: VaultName, vm: VmName, point: Id, body: ReplaceDisksIn, app=Depends(core), who=Depends(caller)):
    """Overwrite the stopped original VM's disks with the point's; the current disks are first kept as a recovery point."""
    return app.restore.replace_disks(who, subscription, vault, vm, point, body.disks)


@router.post(POINT + "/cross-region-restore-disks", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["restore"])
def cross_region_restore_disks(subscription: Sub, vault: VaultName, vm: VmName, point: Id, body: CrossRegionRestoreIn,
                               app=Depends(core), who=Depends(caller)):
    """Restore disks from the GRS vault's copy in the paired (secondary) region."""
    return app.restore.restore_disks_secondary(who, subscription, vault, vm, point, body.target, body.disks, body.format)


@router.get(ITEMS + "/{vm}/secondary-recovery-points", response_model=list[SecondaryPointOut], tags=["restore"])
def secondary_points(subscription: Sub, vault: VaultName, vm: VmName, app=Depends(core), who=Depends(caller)):
    """The recovery points the secondary region holds for this item."""
    return app.restore.list_secondary_points(who, subscription, vault, vm)


@router.post(POINT + "/mount", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["restore"])
def mount_rp(subscription: Sub, vault: VaultName, vm: VmName, point: Id, body: MountIn, app=Depends(core), who=Depends(caller)):
    """File recovery: serve the point's disks as read-only NBD exports for ``hours`` (12 by default)."""
    return app.restore.mount(who, subscription, vault, vm, point, body.disks, body.hours, body.use_secondary_region)


@router.post(POINT + "/unmount", response_model=UnmountOut, tags=["restore"])
def unmount_rp(subscription: Sub, vault: VaultName, vm: VmName, point: Id, app=Depends(core), who=Depends(caller)):
    """Close the point's file-recovery exports now."""
    return app.restore.unmount(who, subscription, vault, vm, point)


@router.get(ITEMS + "/{vm}/mounts", response_model=list[MountOut], tags=["restore"])
def list_mounts(subscription: Sub, vault: VaultName, vm: VmName, app=Depends(core), who=Depends(caller)):
    """Open file-recovery exports of the item's recovery points."""
    return app.restore.list_mounts(who, subscription, vault, vm)


@router.post("/vaults/import", response_model=VaultImportOut, status_code=status.HTTP_201_CREATED, tags=["vaults"])
def import_vault(subscription: Sub, body: VaultImportIn, app=Depends(core), who=Depends(caller)):
    """Rebuild a vault, its items and recovery points from its storage alone (no old database)."""
    return app.restore.import_vault(who, subscription, body.storage_url, body.master_key, body.name, body.region)


# ---- instant restore (services.instant) ----


class InstantRestoreIn(Strict):
    target_vm_name: str = Field(min_length=1, max_length=63, description="Name of the new VM (must not exist on the host).")
    host: str | None = Field(default=None, min_length=1, max_length=128, description="Host to start the VM on (default: the original VM's host).")
    target: str | None = Field(default=None, min_length=1, max_length=4096,
                               description="Absolute folder for the VM's own folder of overlays (default: /var/lib/libvirt/images/haven-instant).")


@router.post(POINT + "/instant-restore", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["restore"])
def instant_restore(subscription: Sub, vault: VaultName, vm: VmName, point: Id, body: InstantRestoreIn, app=Depends(core),
                    who=Depends(caller)):
    """Start a new VM in seconds on local overlays over the point's disks, served read-only from the vault."""
    from haven.services.instant import instant_service

    return instant_service(app).start(who, subscription, vault, vm, point, body.target_vm_name, body.host, body.target)


@router.post("/instant-restores/{name}/commit", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["restore"])
def instant_commit(subscription: Sub, name: VmName, app=Depends(core), who=Depends(caller)):
    """Move an instant-restored VM to local disks while it runs; then nothing depends on the vault."""
    from haven.services.instant import instant_service

    return instant_service(app).commit(who, subscription, name)


@router.post("/instant-restores/{name}/discard", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, tags=["restore"])
def instant_discard(subscription: Sub, name: VmName, app=Depends(core), who=Depends(caller)):
    """Stop and remove an instant-restored VM, its NBD server and every file it had."""
    from haven.services.instant import instant_service

    return instant_service(app).discard(who, subscription, name)
