"""Restore a new VM from a recovery point; the generated VM definition; names in use are refused."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from haven.services.restore import RestoreVmNameInUse, domain_xml_for_point, write_vm_definition
from tests.restore.conftest import DISKS, NICS, same_bytes


def test_restore_vm_defines_a_new_folder_vm_with_identical_disks_and_the_original_nics(world):
    world.setup()
    assert world.backup()["status"] in ("Completed", "CompletedWithWarnings")
    point = world.points()[0]
    job = world.ok(world.core.restore.restore_vm(world.owner, "prod", "v1", "web1", point["id"], "web1-restored"))
    folder = world.vms / "web1-restored"
    definition = json.loads((folder / "vm.json").read_text())
    assert definition["name"] == "web1-restored" and definition["nics"] == NICS
    assert definition["uuid"] and definition["vcpus"] == 2 and definition["memory_mib"] == 256
    for d in definition["disks"]:
        assert "/" not in d["file"]  # the disks live in the VM's folder
        assert same_bytes(folder / d["file"], world.vm_folder / f"{d['name']}.raw"), d
    assert {d["name"] for d in definition["disks"]} == set(DISKS)
    assert not list(world.vms.glob(".web1-restored.restoring*"))
    # the seeds' rule for special network configurations: kept as they were, and said so
    assert any("2 NICs" in w["message"] if isinstance(w, dict) else "2 NICs" in w for w in job["warnings"]), job["warnings"]
    assert job["result"]["notes"] and job["result"]["nics"] == NICS
    # the generated libvirt domain and JSON template are next to the disks
    dom = ET.parse(folder / "vm-definition.xml").getroot()
    assert dom.findtext("name") == "web1-restored"
    sources = {d.find("target").get("dev"): d.find("source").get("file") for d in dom.iter("disk")}
    assert set(sources) == set(DISKS) and all(str(folder) in p for p in sources.values())
    macs = [i.find("mac").get("address") for i in dom.iter("interface")]
    nets = [i.find("source").get("network") for i in dom.iter("interface")]
    # networks as they were, new MAC addresses: the new VM can start next to its original (issue 18, item 4)
    assert nets == ["default", "storage-net"] and len(set(macs)) == 2 and not set(macs) & {n["mac"] for n in NICS}
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs), macs
    template = json.loads((folder / "vm-template.json").read_text())
    assert template["recovery_point"] == point["id"] and template["nics"] == NICS
    # the inventory sees the new VM (stopped), and it can be protected like any other
    vms = {v["name"]: v for v in world.core.inventory.list_vms(world.owner)}
    assert vms["web1-restored"]["power_state"] == "stopped"
    res = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(folder / "vda.raw"), str(world.vm_folder / "vda.raw")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_restore_vm_as_qcow2_into_a_chosen_folder(world, tmp_path):
    world.setup(disks={"vda": (3 << 20) + 4096}, nics=[])
    world.backup()
    point = world.points()[0]
    target = tmp_path / "restored"
    job = world.ok(world.core.restore.restore_vm(world.owner, "prod", "v1", "web1", point["id"], "web1-q", target=str(target), fmt="qcow2"))
    assert job["warnings"] == [] and job["result"]["notes"] == []
    res = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(target / "vda.qcow2"), str(world.vm_folder / "vda.raw")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    definition = json.loads((world.vms / "web1-q" / "vm.json").read_text())
    assert definition["disks"][0]["file"] == str(target / "vda.qcow2") and definition["disks"][0]["format"] == "qcow2"
    assert (target / "vm-definition.xml").exists()


def test_a_name_in_use_is_refused_with_the_seeds_advice(world):
    world.setup(disks={"vda": 1 << 20}, nics=[])
    world.backup()
    point = world.points()[0]
    with pytest.raises(RestoreVmNameInUse) as err:
        world.core.restore.restore_vm(world.owner, "prod", "v1", "web1", point["id"], "web1")
    assert "not supported during restore" in err.value.text
    assert "Delete the existing VM first, or restore under a new name" in err.value.fix
    # a VM the inventory does not know yet is refused by the host at restore time, leaving nothing behind
    (world.vms / "sneaky").mkdir()
    (world.vms / "sneaky" / "vm.json").write_text(json.dumps({"name": "sneaky", "disks": []}))
    job = world.run(world.core.restore.restore_vm(world.owner, "prod", "v1", "web1", point["id"], "sneaky")["id"])
    assert job["status"] == "Failed" and job["error"]["code"] == "UserErrorRestoreVmNameInUse"
    assert json.loads((world.vms / "sneaky" / "vm.json").read_text())["disks"] == []
    assert not list(world.vms.glob(".sneaky.restoring*"))


def test_domain_xml_from_a_libvirt_definition_keeps_devices_and_points_at_the_restored_disks(tmp_path):
    source = """<domain type='kvm'><name>db1</name><uuid>6f0c0bc4-0000-4000-8000-000000000001</uuid>
      <memory unit='KiB'>1048576</memory><vcpu>2</vcpu><os><type arch='x86_64'>hvm</type></os>
      <devices><disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg/db1'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
      <interface type='bridge'><mac address='52:54:00:01:02:03'/><source bridge='br0'/><model type='virtio'/></interface>
      <interface type='network'><mac address='52:54:00:01:02:04'/><source network='backend'/></interface></devices></domain>"""
    meta = {"vm": "db1", "definition": source, "time": "2026-11-02T09:00:00+00:00", "consistency": "CrashConsistent",
            "nics": [{"mac": "52:54:00:01:02:03"}, {"mac": "52:54:00:01:02:04"}]}
    files = write_vm_definition(tmp_path, meta, {"vda": str(tmp_path / "vda.qcow2")}, "p1", name="db1-copy")
    dom = ET.parse(files[0]).getroot()
    assert dom.findtext("name") == "db1-copy" and dom.findtext("uuid") not in (None, "6f0c0bc4-0000-4000-8000-000000000001")
    disk = next(d for d in dom.iter("disk") if d.get("device") == "disk")
    assert disk.get("type") == "file" and disk.find("source").get("file") == str(tmp_path / "vda.qcow2")
    assert disk.find("driver").get("type") == "qcow2"
    macs = [i.find("mac").get("address") for i in dom.iter("interface")]
    assert len(set(macs)) == 2 and not set(macs) & {"52:54:00:01:02:03", "52:54:00:01:02:04"}  # new addresses
    assert [i.find("source").attrib for i in dom.iter("interface")] == [{"bridge": "br0"}, {"network": "backend"}]
    assert "p1" in dom.findtext("description")
    template = json.loads((tmp_path / "vm-template.json").read_text())
    assert template["notes"] and "2 NICs" in template["notes"][0]
    # folder-VM disk names that are not devices get device targets
    xml = domain_xml_for_point("x", {"definition": {"disks": []}}, {"data": "/a/data.raw", "vda": "/a/vda.raw"})
    targets = sorted(t.get("dev") for t in ET.fromstring(xml).iter("target") if t.get("dev"))
    assert targets == ["vda", "vdb"]


def test_a_large_sparse_disk_restores_sparse_and_identical(world, tmp_path):
    size = 4 << 30
    world.setup(disks={"vda": size}, nics=[])
    with open(world.vm_folder / "vda.raw", "r+b") as fh:  # data at the start, the middle and the very end
        for off in (0, size // 2 + 12345 * 512, size - 4096):
            fh.seek(off)
            fh.write(b"\x5a" * 4096)
    world.backup()
    point = world.points()[0]
    world.ok(world.core.restore.restore_vm(world.owner, "prod", "v1", "web1", point["id"], "big"))
    restored = world.vms / "big" / "vda.raw"
    assert restored.stat().st_size == size
    assert restored.stat().st_blocks * 512 < 16 << 20  # holes stay holes
    res = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(restored), str(world.vm_folder / "vda.raw")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
