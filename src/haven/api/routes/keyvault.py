"""Key vaults: management (subscription roles) and keys/secrets (access policies)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field

from haven.api.deps import caller, core
from haven.api.routes.params import Sub
from haven.services.keyvault import decode_bytes, keyvault_service

router = APIRouter(prefix="/subscriptions/{subscription}/keyvaults", tags=["key vault"])
KV = "/{key_vault}"


class KeyVaultIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, examples=["kv-prod-01"])
    region: str = Field(min_length=1, max_length=64, examples=["local"])
    soft_delete_retention_days: int = Field(90, ge=1, le=365)
    purge_protection: bool = False


class KeyVaultPatch(BaseModel):
    purge_protection: Optional[bool] = None


class PolicyIn(BaseModel):
    template: Optional[str] = Field(None, examples=["Haven Backup"])
    key_permissions: Optional[list[str]] = None
    secret_permissions: Optional[list[str]] = None


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=127)
    kty: str = Field("RSA", examples=["RSA", "AES"])
    size: Optional[int] = Field(None, examples=[3072, 256])
    hsm: bool = False
    tags: dict[str, str] = Field(default_factory=dict)


class WrapIn(BaseModel):
    value: str = Field(description="base64 (url-safe or standard) bytes", min_length=1, max_length=4096)
    alg: Optional[str] = Field(None, examples=["RSA-OAEP-256", "A256KW"])
    version: Optional[str] = None


class SecretIn(BaseModel):
    value: str = Field(max_length=32 * 1024)
    content_type: Optional[str] = Field(None, max_length=255)
    tags: dict[str, str] = Field(default_factory=dict)


class BlobIn(BaseModel):
    value: str = Field(min_length=1, max_length=1 << 20, description="A backup blob made by this Haven server")


class VmKeysRestoreIn(BaseModel):
    backup: dict[str, Any] = Field(description="A recovery point's key backup (the object backup_keys made)")
    what: list[str] = Field(default_factory=lambda: ["keys", "secrets"])


class FromPointIn(BaseModel):
    vault: str = Field(min_length=1, max_length=100)
    vm: str = Field(min_length=1, max_length=128)
    recovery_point: str = Field(min_length=1, max_length=64)
    what: list[str] = Field(default_factory=lambda: ["keys", "secrets"])




def svc(app=Depends(core)):
    return keyvault_service(app)


# ---- management plane ----
@router.post("", status_code=status.HTTP_201_CREATED)
def create_key_vault(subscription: Sub, body: KeyVaultIn, kv=Depends(svc), who=Depends(caller)):
    return kv.create(who, subscription, body.name, body.region, body.soft_delete_retention_days, body.purge_protection)


@router.get("")
def list_key_vaults(subscription: Sub, deleted: bool = Query(False), kv=Depends(svc), who=Depends(caller)):
    return kv.list(who, subscription, deleted)


@router.get(KV)
def show_key_vault(subscription: Sub, key_vault: str, kv=Depends(svc), who=Depends(caller)):
    return kv.show(who, subscription, key_vault)


@router.patch(KV)
def update_key_vault(subscription: Sub, key_vault: str, body: KeyVaultPatch, kv=Depends(svc), who=Depends(caller)):
    return kv.update(who, subscription, key_vault, body.purge_protection)


@router.delete(KV)
def delete_key_vault(subscription: Sub, key_vault: str, kv=Depends(svc), who=Depends(caller)):
    return kv.delete(who, subscription, key_vault)


@router.post(KV + "/recover")
def recover_key_vault(subscription: Sub, key_vault: str, kv=Depends(svc), who=Depends(caller)):
    return kv.recover(who, subscription, key_vault)


@router.post(KV + "/purge", status_code=status.HTTP_204_NO_CONTENT)
def purge_key_vault(subscription: Sub, key_vault: str, kv=Depends(svc), who=Depends(caller)):
    kv.purge(who, subscription, key_vault)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(KV + "/access-policies/{principal}")
def set_access_policy(subscription: Sub, key_vault: str, principal: str, body: PolicyIn, kv=Depends(svc), who=Depends(caller)):
    return kv.set_policy(who, subscription, key_vault, principal, body.template, body.key_permissions, body.secret_permissions)


@router.delete(KV + "/access-policies/{principal}", status_code=status.HTTP_204_NO_CONTENT)
def delete_access_policy(subscription: Sub, key_vault: str, principal: str, kv=Depends(svc), who=Depends(caller)):
    kv.delete_policy(who, subscription, key_vault, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- keys and secrets: what both kinds do (one versioned-object core) ----
def _versioned_routes(kind: str, plural: str) -> None:
    """List, restore, show, delete, recover, purge and back up one kind, under ``…/{plural}``."""
    base = KV + f"/{plural}"

    def list_(subscription: Sub, key_vault: str, deleted: bool = Query(False), kv=Depends(svc), who=Depends(caller)):
        return kv.list_objects(kind, who, subscription, key_vault, deleted)

    def restore(subscription: Sub, key_vault: str, body: BlobIn, kv=Depends(svc), who=Depends(caller)):
        return kv.restore_object(kind, who, subscription, key_vault, body.value)

    def show(subscription: Sub, key_vault: str, name: str, version: Optional[str] = Query(None), kv=Depends(svc), who=Depends(caller)):
        return kv.show_object(kind, who, subscription, key_vault, name, version)

    def delete(subscription: Sub, key_vault: str, name: str, kv=Depends(svc), who=Depends(caller)):
        return kv.delete_object(kind, who, subscription, key_vault, name)

    def recover(subscription: Sub, key_vault: str, name: str, kv=Depends(svc), who=Depends(caller)):
        return kv.recover_object(kind, who, subscription, key_vault, name)

    def purge(subscription: Sub, key_vault: str, name: str, kv=Depends(svc), who=Depends(caller)):
        kv.purge_object(kind, who, subscription, key_vault, name)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    def backup(subscription: Sub, key_vault: str, name: str, kv=Depends(svc), who=Depends(caller)):
        return kv.backup_object(kind, who, subscription, key_vault, name)

    router.add_api_route(base, list_, methods=["GET"], name=f"list_{plural}")
    router.add_api_route(base + "/restore", restore, methods=["POST"], status_code=status.HTTP_201_CREATED, name=f"restore_{kind}")
    router.add_api_route(base + "/{name}", show, methods=["GET"], name=f"show_{kind}")
    router.add_api_route(base + "/{name}", delete, methods=["DELETE"], name=f"delete_{kind}")
    router.add_api_route(base + "/{name}/recover", recover, methods=["POST"], name=f"recover_{kind}")
    router.add_api_route(base + "/{name}/purge", purge, methods=["POST"], status_code=status.HTTP_204_NO_CONTENT, name=f"purge_{kind}")
    router.add_api_route(base + "/{name}/backup", backup, methods=["POST"], name=f"backup_{kind}")


# ---- what only keys do ----
@router.post(KV + "/keys", status_code=status.HTTP_201_CREATED)
def create_key(subscription: Sub, key_vault: str, body: KeyIn, kv=Depends(svc), who=Depends(caller)):
    return kv.create_key(who, subscription, key_vault, body.name, body.kty, body.size, body.hsm, body.tags)


_versioned_routes("key", "keys")


@router.post(KV + "/keys/{name}/wrapkey")
def wrap_key(subscription: Sub, key_vault: str, name: str, body: WrapIn, kv=Depends(svc), who=Depends(caller)):
    return kv.wrap(who, subscription, key_vault, name, decode_bytes(body.value), body.alg, body.version)


@router.post(KV + "/keys/{name}/unwrapkey")
def unwrap_key(subscription: Sub, key_vault: str, name: str, body: WrapIn, kv=Depends(svc), who=Depends(caller)):
    return kv.unwrap(who, subscription, key_vault, name, decode_bytes(body.value), body.alg, body.version)


# ---- what only secrets do ----
_versioned_routes("secret", "secrets")


@router.put(KV + "/secrets/{name}")
def set_secret(subscription: Sub, key_vault: str, name: str, body: SecretIn, kv=Depends(svc), who=Depends(caller)):
    return kv.set_secret(who, subscription, key_vault, name, body.value, body.content_type, body.tags)


# ---- a VM's keys, from a recovery point ----
@router.post(KV + "/restore-from-backup", status_code=status.HTTP_201_CREATED)
def restore_vm_keys(subscription: Sub, key_vault: str, body: VmKeysRestoreIn, kv=Depends(svc), who=Depends(caller)):
    return kv.restore_keys_from_backup(body.backup, caller=who, subscription=subscription, key_vault=key_vault, what=body.what)


@router.post(KV + "/restore-from-recovery-point", status_code=status.HTTP_201_CREATED)
def restore_from_point(subscription: Sub, key_vault: str, body: FromPointIn, kv=Depends(svc), who=Depends(caller)):
    return kv.restore_from_recovery_point(who, subscription, body.vault, body.vm, body.recovery_point, body.what, key_vault=key_vault)
