"""haven keyvault … — key vaults, keys (KEKs), secrets (BEKs), access policies, restores from recovery points."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from haven.cli.state import SubOpt, handled, state
from haven.files import write_private

app = typer.Typer(help="Key vaults: keys (KEKs), secrets (BEKs), access policies.", no_args_is_help=True)
key = typer.Typer(help="Keys (KEKs): wrap and unwrap, never leave the key vault.", no_args_is_help=True)
secret = typer.Typer(help="Secrets (BEKs and other values), sealed at rest.", no_args_is_help=True)
app.add_typer(key, name="key")
app.add_typer(secret, name="secret")

KvOpt = Annotated[str, typer.Option("--vault-name", "--key-vault", help="Key vault name.")]
NameOpt = Annotated[str, typer.Option("--name", "-n")]
KV_COLUMNS = ["name", "region", "soft_delete_retention_days", "purge_protection", "deleted_at"]
KEY_COLUMNS = ["name", "kty", "size", "protection", "version", "enabled", "deleted_at"]
SECRET_COLUMNS = ["name", "content_type", "version", "deleted_at"]


def _kv(subscription: str, name: str = "") -> str:
    return f"/subscriptions/{subscription}/keyvaults" + (f"/{name}" if name else "")


def _read(value: Optional[str], file: Optional[Path]) -> str:
    if file is not None:
        return file.read_text().strip()
    if value is None:
        raise typer.BadParameter("pass --value or --file")
    return value


@app.command("create")
@handled
def kv_create(ctx: typer.Context, subscription: SubOpt, name: NameOpt,
              region: Annotated[str, typer.Option("--region", "--location", "-l")],
              retention: Annotated[int, typer.Option("--retention-days", help="Soft-delete retention, 7-90 days.")] = 90,
              purge_protection: Annotated[bool, typer.Option("--enable-purge-protection")] = False):
    st = state(ctx)
    st.show(st.client.post(_kv(subscription), {"name": name, "region": region, "soft_delete_retention_days": retention,
                                               "purge_protection": purge_protection}))


@app.command("list")
@handled
def kv_list(ctx: typer.Context, subscription: SubOpt):
    st = state(ctx)
    st.show(st.client.get(_kv(subscription)), KV_COLUMNS)


@app.command("list-deleted")
@handled
def kv_list_deleted(ctx: typer.Context, subscription: SubOpt):
    st = state(ctx)
    st.show(st.client.get(_kv(subscription), deleted="true"), KV_COLUMNS)


@app.command("show")
@handled
def kv_show(ctx: typer.Context, subscription: SubOpt, name: NameOpt):
    st = state(ctx)
    st.show(st.client.get(_kv(subscription, name)))


@app.command("update")
@handled
def kv_update(ctx: typer.Context, subscription: SubOpt, name: NameOpt,
              purge_protection: Annotated[bool, typer.Option("--enable-purge-protection")] = True):
    st = state(ctx)
    st.show(st.client.patch(_kv(subscription, name), {"purge_protection": purge_protection}))


@app.command("delete")
@handled
def kv_delete(ctx: typer.Context, subscription: SubOpt, name: NameOpt):
    st = state(ctx)
    st.show(st.client.delete(_kv(subscription, name)))


@app.command("recover")
@handled
def kv_recover(ctx: typer.Context, subscription: SubOpt, name: NameOpt):
    st = state(ctx)
    st.show(st.client.post(_kv(subscription, name) + "/recover"))


@app.command("purge")
@handled
def kv_purge(ctx: typer.Context, subscription: SubOpt, name: NameOpt):
    state(ctx).client.post(_kv(subscription, name) + "/purge")


@app.command("set-policy")
@handled
def kv_set_policy(ctx: typer.Context, subscription: SubOpt, name: NameOpt,
                  principal: Annotated[str, typer.Option("--principal", help="A principal's name, e.g. \"Backup Management Service\".")],
                  template: Annotated[Optional[str], typer.Option("--template", help="e.g. \"Haven Backup\"")] = None,
                  key_permissions: Annotated[Optional[list[str]], typer.Option("--key-permissions")] = None,
                  secret_permissions: Annotated[Optional[list[str]], typer.Option("--secret-permissions")] = None):
    st = state(ctx)
    body: dict = {"template": template}
    if key_permissions is not None:
        body["key_permissions"] = [p for x in key_permissions for p in x.replace(",", " ").split()]
    if secret_permissions is not None:
        body["secret_permissions"] = [p for x in secret_permissions for p in x.replace(",", " ").split()]
    st.show(st.client.put(_kv(subscription, name) + f"/access-policies/{principal}", body))


@app.command("delete-policy")
@handled
def kv_delete_policy(ctx: typer.Context, subscription: SubOpt, name: NameOpt, principal: Annotated[str, typer.Option("--principal")]):
    state(ctx).client.delete(_kv(subscription, name) + f"/access-policies/{principal}")


def _from_point(ctx, subscription, key_vault, vault, vm, point, what):
    st = state(ctx)
    st.show(st.client.post(_kv(subscription, key_vault) + "/restore-from-recovery-point",
                           {"vault": vault, "vm": vm, "recovery_point": point, "what": what}))


PointOpt = Annotated[str, typer.Option("--recovery-point", "--rp-name", help="Recovery point id.")]
BVaultOpt = Annotated[str, typer.Option("--vault", help="The backup vault holding the recovery point.")]
VmOpt = Annotated[str, typer.Option("--vm", "--item-name")]


@app.command("restore-key")
@handled
def kv_restore_key(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, vault: BVaultOpt, vm: VmOpt, point: PointOpt):
    """Restore an encrypted VM's KEK from a recovery point into the key vault."""
    _from_point(ctx, subscription, key_vault, vault, vm, point, ["keys"])


@app.command("restore-secret")
@handled
def kv_restore_secret(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, vault: BVaultOpt, vm: VmOpt, point: PointOpt):
    """Restore an encrypted VM's BEK secret(s) from a recovery point into the key vault."""
    _from_point(ctx, subscription, key_vault, vault, vm, point, ["secrets"])


# ---- keys and secrets ----
@key.command("create")
@handled
def key_create(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt,
               kty: Annotated[str, typer.Option("--kty", help="RSA or AES")] = "RSA",
               size: Annotated[Optional[int], typer.Option("--size")] = None,
               hsm: Annotated[bool, typer.Option("--hsm", help="Generate the key in the PKCS#11 token (AES-256).")] = False):
    st = state(ctx)
    st.show(st.client.post(_kv(subscription, key_vault) + "/keys", {"name": name, "kty": kty, "size": size, "hsm": hsm}))


BlobOutOpt = Annotated[Path, typer.Option("--file", "-f", help="Where to write the backup blob.")]
BlobInOpt = Annotated[Path, typer.Option("--file", "-f", help="A backup blob from 'key backup' or 'secret backup'.")]


def _versioned_commands(group: typer.Typer, plural: str, columns: list[str]) -> None:
    """list, show, delete, recover, purge, backup and restore: what keys and secrets both do."""

    def path(subscription: str, key_vault: str, name: str = "") -> str:
        return _kv(subscription, key_vault) + f"/{plural}" + (f"/{name}" if name else "")

    @group.command("list")
    @handled
    def list_(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, deleted: Annotated[bool, typer.Option("--deleted")] = False):
        st = state(ctx)
        st.show(st.client.get(path(subscription, key_vault), deleted="true" if deleted else None), columns)

    @group.command("show")
    @handled
    def show(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt,
             version: Annotated[Optional[str], typer.Option("--version")] = None):
        st = state(ctx)
        st.show(st.client.get(path(subscription, key_vault, name), version=version))

    @group.command("delete")
    @handled
    def delete(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt):
        st = state(ctx)
        st.show(st.client.delete(path(subscription, key_vault, name)))

    @group.command("recover")
    @handled
    def recover(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt):
        st = state(ctx)
        st.show(st.client.post(path(subscription, key_vault, name) + "/recover"))

    @group.command("purge")
    @handled
    def purge(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt):
        state(ctx).client.post(path(subscription, key_vault, name) + "/purge")

    @group.command("backup")
    @handled
    def backup(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt,
               file: BlobOutOpt):
        out = state(ctx).client.post(path(subscription, key_vault, name) + "/backup")
        write_private(file, out["value"].encode())  # sealed, but a key backup is still nobody else's business

    @group.command("restore")
    @handled
    def restore(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt,
                file: BlobInOpt):
        st = state(ctx)
        st.show(st.client.post(path(subscription, key_vault) + "/restore", {"value": file.read_text().strip()}))


_versioned_commands(key, "keys", KEY_COLUMNS)


def _b64(value: Optional[str], file: Optional[Path]) -> str:
    if file is not None:
        return base64.b64encode(file.read_bytes()).decode()
    if value is None:
        raise typer.BadParameter("pass --value (base64) or --file")
    return value


@key.command("wrap")
@handled
def key_wrap(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt,
             value: Annotated[Optional[str], typer.Option("--value", help="base64 bytes to wrap")] = None,
             file: Annotated[Optional[Path], typer.Option("--file", help="a file whose bytes to wrap")] = None,
             alg: Annotated[Optional[str], typer.Option("--algorithm", "--alg")] = None):
    st = state(ctx)
    st.show(st.client.post(_kv(subscription, key_vault) + f"/keys/{name}/wrapkey", {"value": _b64(value, file), "alg": alg}))


@key.command("unwrap")
@handled
def key_unwrap(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt,
               value: Annotated[str, typer.Option("--value", help="the wrapped value (base64)")],
               alg: Annotated[Optional[str], typer.Option("--algorithm", "--alg")] = None,
               version: Annotated[Optional[str], typer.Option("--version")] = None):
    st = state(ctx)
    st.show(st.client.post(_kv(subscription, key_vault) + f"/keys/{name}/unwrapkey", {"value": value, "alg": alg, "version": version}))


# ---- secrets ----
@secret.command("set")
@handled
def secret_set(ctx: typer.Context, subscription: SubOpt, key_vault: KvOpt, name: NameOpt,
               value: Annotated[Optional[str], typer.Option("--value")] = None,
               file: Annotated[Optional[Path], typer.Option("--file")] = None,
               content_type: Annotated[Optional[str], typer.Option("--content-type")] = None,
               tags: Annotated[Optional[str], typer.Option("--tags", help="JSON object")] = None):
    st = state(ctx)
    st.show(st.client.put(_kv(subscription, key_vault) + f"/secrets/{name}",
                          {"value": _read(value, file), "content_type": content_type, "tags": json.loads(tags) if tags else {}}))


_versioned_commands(secret, "secrets", SECRET_COLUMNS)
