"""Definitions of restored VMs: a libvirt domain recreating a backed-up VM with its restored disks,
clean of the original's runtime state, so that it starts next to the original (issue 18, item 4).

A definition stored with a recovery point is often a running domain's XML (``virsh dumpxml``): it
carries the domain ``id``, device ``alias``es, a dynamic ``seclabel`` with the labels libvirt chose,
generated channel socket paths, the tap device and bridge of each NIC, the pty of each console, VNC
ports, and the UUID, MAC addresses and file-backed console/serial log paths of the original. A
restored domain gets none of the runtime state, a new UUID, new MAC addresses, its new name, and its
own log files under the restore target.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from haven.hypervisor.errors import VmDefinitionInvalid

HAVEN_NS = "https://haven.dev/xmlns/libvirt/vm/1"
AGENT_CHANNEL = "org.qemu.guest_agent.0"

__all__ = ["HAVEN_NS", "AGENT_CHANNEL", "disks_of", "nics_of", "encryption_of", "domain_xml_from_definition", "rewrite_domain", "DOMAIN_XML", "TEMPLATE_JSON", "clean_domain", "restored_domain_xml", "domain_xml_for_point",
           "write_vm_definition", "nic_notes", "new_mac"]

DOMAIN_XML = "vm-definition.xml"
TEMPLATE_JSON = "vm-template.json"
_DEV = re.compile(r"^(vd|sd|hd|xvd)[a-z]{1,3}$")
#: character devices whose ``<source path>`` is a file the VM writes (or a socket it binds)
_CHARDEVS = ("serial", "console", "parallel", "channel")


def new_mac() -> str:
    """A random address in QEMU's locally administered range, as libvirt itself picks them."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def clean_domain(xml: ET.Element, name: str, files_dir: Path | str | None) -> ET.Element:
    """Make ``xml`` (a domain, perhaps a running one's) definable next to its original, in place.

    Runtime state goes (``id``, ``alias``es, dynamic and per-image seclabels, generated socket and
    pty paths, tap devices, VNC/SPICE ports); the domain gets ``name``, a new UUID and new MAC
    addresses; file-backed consoles, serial ports and their logs write to new files in ``files_dir``.
    """
    xml.attrib.pop("id", None)
    _set_child(xml, "name", name, index=0)
    _set_child(xml, "uuid", str(uuid.uuid4()), index=1)
    for parent in list(xml.iter()):
        for child in list(parent):
            if child.tag == "alias" or (child.tag == "seclabel" and _runtime_seclabel(parent is xml, child)):
                parent.remove(child)
    devices = xml.find("devices")
    if devices is None:
        return xml
    for iface in devices.findall("interface"):
        mac = iface.find("mac")
        if mac is None:
            mac = ET.Element("mac")
            iface.insert(0, mac)
        mac.attrib = {"address": new_mac()}
        target = iface.find("target")
        if target is not None and iface.get("type") in ("network", "bridge", "direct", "ethernet"):
            iface.remove(target)  # vnetN: the tap device of the running original
        src = iface.find("source")
        if src is not None and iface.get("type") == "network":
            for runtime in ("portid", "bridge"):
                src.attrib.pop(runtime, None)
    for graphics in devices.findall("graphics"):
        if graphics.get("autoport", "yes") == "yes":
            for port in ("port", "tlsPort", "websocket"):
                if port in graphics.attrib:
                    graphics.set(port, "-1")
    taken: set[str] = set()
    for dev in [d for tag in _CHARDEVS for d in devices.findall(tag)]:
        dev.attrib.pop("tty", None)
        src = dev.find("source")
        kind = dev.get("type")
        if src is not None and kind == "pty":
            src.attrib.pop("path", None)
        elif src is not None and kind == "unix" and src.get("path"):
            if dev.tag == "channel":
                src.attrib.pop("path", None)  # libvirt makes one under the new domain's channel folder
            elif src.get("mode", "bind") == "bind":
                src.set("path", _new_file(files_dir, src.get("path", ""), taken))
        elif src is not None and kind == "file" and src.get("path"):
            src.set("path", _new_file(files_dir, src.get("path", ""), taken))
        log = dev.find("log")
        if log is not None and log.get("file"):
            log.set("file", _new_file(files_dir, log.get("file", ""), taken))
    return xml


def _runtime_seclabel(domain_level: bool, el: ET.Element) -> bool:
    if domain_level:
        return el.get("type", "dynamic") == "dynamic"  # a label libvirt picked for the original's process
    return "labelskip" in el.attrib  # libvirt's note on a shared image of the running original


def _set_child(xml: ET.Element, tag: str, text: str, index: int) -> None:
    el = xml.find(tag)
    if el is None:
        el = ET.Element(tag)
        xml.insert(index, el)
    el.text = text


def _new_file(files_dir: Path | str | None, old: str, taken: set[str]) -> str:
    """The restored VM's own file for the original's ``old`` (a console log, a serial socket): same
    base name, in ``files_dir``, never one another device of this VM already writes."""
    folder = Path(files_dir) if files_dir is not None else Path(old).parent
    base = Path(old).name or "console.log"
    stem, suffix = os.path.splitext(base)
    candidate, n = folder / base, 1
    while str(candidate) in taken or (files_dir is None and str(candidate) == old):
        candidate, n = folder / f"{stem}-{n}{suffix}", n + 1
    taken.add(str(candidate))
    return str(candidate.absolute())


def _formats(disk_files: dict[str, str]) -> dict[str, str]:
    return {name: "qcow2" if str(path).endswith(".qcow2") else "raw" for name, path in disk_files.items()}


def _targets(names: list[str]) -> dict[str, str]:
    """Disk name -> libvirt target dev (vda…): names that are devices keep theirs; others get the next free vdX."""
    used = {n for n in names if _DEV.match(n)}
    out, letter = {}, 0
    for n in names:
        if _DEV.match(n):
            out[n] = n
            continue
        while f"vd{chr(ord('a') + letter)}" in used:
            letter += 1
        out[n] = f"vd{chr(ord('a') + letter)}"
        used.add(out[n])
    return out


def _with_disks(xml: ET.Element, disk_files: dict[str, str], formats: dict[str, str]) -> None:
    """Point the domain's disks at the restored files; drop the disks that were not restored."""
    devices = xml.find("devices")
    if devices is None:
        devices = ET.SubElement(xml, "devices")
    for disk in list(devices.findall("disk")):
        if disk.get("device", "disk") != "disk":
            continue
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev not in disk_files:
            devices.remove(disk)
            continue
        disk.set("type", "file")
        for tag in ("source", "backingStore"):
            old = disk.find(tag)
            if old is not None:
                disk.remove(old)
        disk.insert(1, ET.Element("source", file=os.path.abspath(disk_files[dev])))
        drv = disk.find("driver")
        if drv is None:
            drv = ET.SubElement(disk, "driver", name="qemu")
        drv.set("type", formats[dev])


def restored_domain_xml(name: str, definition: Any, disk_files: dict[str, str], files_dir: Path | str | None = None,
                        nics: list | None = None) -> str:
    """A clean libvirt domain named ``name`` from a stored definition (domain XML, or a folder VM's
    ``vm.json``) with ``disk_files`` (disk name -> restored image) as its disks."""

    formats = _formats(disk_files)
    if files_dir is None and disk_files:
        files_dir = Path(os.path.abspath(next(iter(disk_files.values())))).parent
    if isinstance(definition, str) and definition.strip().startswith("<"):
        xml = ET.fromstring(definition)
        _with_disks(xml, disk_files, formats)
    else:
        definition = dict(definition) if isinstance(definition, dict) else {}
        definition.setdefault("nics", nics or [])
        targets = _targets(list(disk_files))
        xml = ET.fromstring(domain_xml_from_definition(
            name, {targets[n]: (os.path.abspath(p), formats[n]) for n, p in disk_files.items()}, definition))
    return ET.tostring(clean_domain(xml, name, files_dir), encoding="unicode")


def domain_xml_for_point(name: str, meta: dict, disk_files: dict[str, str], point_id: str | None = None,
                         files_dir: Path | str | None = None) -> str:
    """A libvirt domain recreating the VM of a recovery point (``meta``: its manifest meta) with the
    restored disks, clean for a start next to the original, described as Haven's restore."""
    xml = ET.fromstring(restored_domain_xml(name, meta.get("definition"), disk_files, files_dir, meta.get("nics") or []))
    desc = xml.find("description")
    if desc is None:
        desc = ET.Element("description")
        xml.insert(2, desc)
    desc.text = (f"Restored by Haven from recovery point {point_id or '?'} of VM {meta.get('vm')!r} "
                 f"taken {meta.get('time')} ({meta.get('consistency')}).")
    return ET.tostring(xml, encoding="unicode")


def write_vm_definition(target: Path | str, meta: dict, disk_files: dict[str, str], point_id: str,
                        name: str | None = None, domain_xml: str | None = None) -> list[str]:
    """Write the libvirt domain XML (``vm-definition.xml``; ``domain_xml`` when the VM was defined
    from it) and the JSON template (``vm-template.json``) recreating the VM of ``meta`` with
    ``disk_files`` next to the restored disks. Returns the paths."""
    target = Path(target)
    vm_name = name or meta.get("vm") or "restored-vm"
    xml_path = target / DOMAIN_XML
    xml_path.write_text((domain_xml or domain_xml_for_point(vm_name, meta, disk_files, point_id, files_dir=target)) + "\n")
    template = target / TEMPLATE_JSON
    nics = meta.get("nics") or []
    template.write_text(json.dumps({
        "vm": meta.get("vm"), "name": vm_name, "definition": meta.get("definition"), "nics": nics,
        "disks": {k: os.path.abspath(v) for k, v in disk_files.items()},
        "recovery_point": point_id, "time": meta.get("time"), "consistency": meta.get("consistency"),
        "domain_xml": DOMAIN_XML, "notes": nic_notes(meta.get("vm"), nics),
    }, indent=2, default=str))
    return [str(xml_path), str(template)]


def nic_notes(vm: str | None, nics: list) -> list[str]:
    """The seeds' rule: special network configurations are restored as they were, through the CLI/API."""
    if not nics or len(nics) < 2:
        return []
    desc = ", ".join(f"{n.get('network') or n.get('type') or '?'}/{n.get('mac') or 'auto'}" for n in nics if isinstance(n, dict))
    return [f"VM {vm!r} has a special network configuration ({len(nics)} NICs: {desc}). The dashboard cannot recreate it, "
            "so this restore is offered through the CLI/API and keeps the original NIC configuration (networks, models). "
            "The libvirt definition gives the NICs new MAC addresses so the VM can start next to its original; "
            "give them the original addresses (listed here) only once the original is gone."]


def domain_xml_from_definition(name: str, disks: dict[str, tuple[str, str]], definition: dict[str, Any]) -> str:
    """A libvirt domain for a folder VM's definition (``disks``: target -> (path, format))."""
    dom = ET.Element("domain", type=definition.get("domain_type", "qemu"))
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(definition.get("memory_mib", 512))
    ET.SubElement(dom, "vcpu").text = str(definition.get("vcpus", 1))
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine=definition.get("machine", "q35")).text = "hvm"
    for key in ("kernel", "initrd", "cmdline"):
        if definition.get(key):
            ET.SubElement(os_el, key).text = str(definition[key])
    if not definition.get("kernel"):
        ET.SubElement(os_el, "boot", dev="hd")
    if definition.get("encryption"):
        md = ET.SubElement(dom, "metadata")
        ET.SubElement(md, f"{{{HAVEN_NS}}}encryption", {k: str(v) for k, v in definition["encryption"].items()
                                                          if isinstance(v, (str, int))})
    ET.SubElement(dom, "on_reboot").text = "restart"
    dev = ET.SubElement(dom, "devices")
    for target, (path, fmt) in disks.items():
        d = ET.SubElement(dev, "disk", type="file", device="disk")
        ET.SubElement(d, "driver", name="qemu", type=fmt)
        ET.SubElement(d, "source", file=path)
        ET.SubElement(d, "target", dev=target, bus="virtio" if target.startswith("vd") else "sata")
    for nic in definition.get("nics", []):
        i = ET.SubElement(dev, "interface", type="network" if nic.get("network") else "user")
        if nic.get("network"):
            ET.SubElement(i, "source", network=nic["network"])
        ET.SubElement(i, "model", type=nic.get("model", "virtio"))
    ch = ET.SubElement(dev, "channel", type="unix")
    ET.SubElement(ch, "target", type="virtio", name=AGENT_CHANNEL)
    ET.register_namespace("haven", HAVEN_NS)
    return ET.tostring(dom, encoding="unicode")


def rewrite_domain(name: str, text: str, disk_paths: dict[str, str], formats: dict[str, str]) -> str:
    """The source domain's XML with a new name, no uuid, no MACs, and the restored disks."""
    try:
        xml = ET.fromstring(text)
    except ET.ParseError as exc:
        raise VmDefinitionInvalid(name=name, reason=f"not XML ({exc})", path="(domain XML)") from exc
    xml.find("name").text = name  # type: ignore[union-attr]
    for tag in ("uuid",):
        el = xml.find(tag)
        if el is not None:
            xml.remove(el)
    devices = xml.find("devices")
    if devices is None:
        raise VmDefinitionInvalid(name=name, reason="no <devices>", path="(domain XML)")
    for disk in list(devices.findall("disk")):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if disk.get("device", "disk") != "disk":
            continue
        if dev not in disk_paths:
            devices.remove(disk)  # not restored (excluded from protection)
            continue
        disk.set("type", "file")
        src = disk.find("source")
        if src is not None:
            disk.remove(src)
        src = ET.Element("source", file=os.path.abspath(disk_paths[dev]))
        disk.insert(1, src)
        drv = disk.find("driver")
        if drv is None:
            drv = ET.SubElement(disk, "driver", name="qemu")
        drv.set("type", formats[dev])
        for stale in ("backingStore",):
            el = disk.find(stale)
            if el is not None:
                disk.remove(el)
    for iface in devices.findall("interface"):
        mac = iface.find("mac")
        if mac is not None:
            iface.remove(mac)  # a new VM gets new addresses
    for ch in devices.findall("channel"):
        src = ch.find("source")
        if src is not None and ch.get("type") == "unix":
            ch.remove(src)  # libvirt picks a fresh socket path
    return ET.tostring(xml, encoding="unicode")


# ---- reading a domain's XML ----


def disks_of(xml: ET.Element) -> list[dict[str, Any]]:
    out = []
    for d in xml.findall("./devices/disk"):
        if d.get("device", "disk") != "disk":
            continue
        target = d.find("target")
        source = d.find("source")
        driver = d.find("driver")
        if target is None or source is None:
            continue
        path = source.get("file") or source.get("dev") or source.get("name")
        enc = d.find("./source/encryption")
        if enc is None:
            enc = d.find("encryption")
        out.append({
            "name": target.get("dev"),
            "path": path,
            "format": driver.get("type", "raw") if driver is not None else "raw",
            "type": d.get("type", "file"),
            "encryption": None if enc is None else {
                "format": enc.get("format"),
                "secrets": [dict(s.attrib) for s in enc.findall("secret")],
            },
        })
    return out


def nics_of(xml: ET.Element) -> list[dict[str, Any]]:
    out = []
    for i in xml.findall("./devices/interface"):
        nic: dict[str, Any] = {"type": i.get("type")}
        mac, src, model = i.find("mac"), i.find("source"), i.find("model")
        if mac is not None:
            nic["mac"] = mac.get("address")
        if src is not None:
            nic.update({k: v for k, v in src.attrib.items() if k in ("network", "bridge", "dev")})
        if model is not None:
            nic["model"] = model.get("type")
        out.append(nic)
    return out


def encryption_of(xml: ET.Element, disks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Haven's encryption settings: ``<metadata><haven:encryption .../>`` plus the disks' LUKS secrets."""
    enc: dict[str, Any] = {}
    meta = xml.find(f"./metadata/{{{HAVEN_NS}}}encryption")
    if meta is not None:
        enc.update(meta.attrib)
    luks = {d["name"]: d["encryption"] for d in disks if d.get("encryption")}
    if luks:
        enc["disks"] = luks
    return enc or None
