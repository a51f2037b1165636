"""Protecting a VM describes that VM only (issue 23: protecting 100 VMs of a 100-VM host took 5 minutes, every
enable listing and describing every VM of the host): enable-for-vm's cost does not grow with the host's VMs, and
the VMs it did not look at keep what was last seen of them."""

from __future__ import annotations

from haven.hypervisor.folder import ImageFolderAdapter
from tests.foundation.helpers import make_folder_vm, register_local_host

ITEMS = "/api/v1/subscriptions/prod/vaults/v1/items"


def test_protecting_vms_describes_only_them(core, api, home, monkeypatch):
    api.post("/api/v1/subscriptions", json={"name": "prod"}).raise_for_status()
    api.post("/api/v1/subscriptions/prod/vaults", json={"name": "v1", "region": "local"}).raise_for_status()
    for i in range(8):
        make_folder_vm(home / "vms", f"vm{i}", size=1 << 16)
    register_local_host(core, home / "vms")
    before = {v["name"]: v["power_state"] for v in api.get("/api/v1/vms").json()}
    described: list[str] = []
    real = ImageFolderAdapter.describe
    monkeypatch.setattr(ImageFolderAdapter, "describe", lambda self, name, *a, **kw: described.append(name) or real(self, name, *a, **kw))
    r = api.post(ITEMS, json={"vms": ["vm1", "vm2", "vm3"]})
    assert r.status_code == 200 and r.json()["protected"] == 3, r.text
    assert sorted(described) == ["vm1", "vm2", "vm3"], described
    assert {v["name"]: v["power_state"] for v in api.get("/api/v1/vms").json()} == before
