"""The libvirt domain of Haven's test guest (tests/services/testvm.py), written in one place.

Tests and benchmarks define the guest as an operator would: the guest's kernel and initramfs, virtio
disks ``vda``, ``vdb`` … in the order given, a file-backed serial console, a guest-agent channel, and
optionally a user-mode NIC with a fixed MAC and a VNC display with an automatic port.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.services.testvm import GuestImages

__all__ = ["domain_xml"]


def domain_xml(name: str, images: GuestImages, disks: Path | Sequence[Path], console: Path, *,
               mac: str | None = "52:54:00:aa:bb:01", vnc: bool = False, memory_mib: int = 256,
               kvm: bool = False, fmt: str = "qcow2") -> str:
    """The test guest as a libvirt domain named ``name``; ``disks`` become vda, vdb, … in order."""
    paths = [disks] if isinstance(disks, (str, Path)) else list(disks)
    disk_xml = "".join(
        f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file='{path}'/>
      <target dev='vd{chr(ord("a") + i)}' bus='virtio'/>
    </disk>""" for i, path in enumerate(paths))
    nic = f"\n    <interface type='user'><mac address='{mac}'/><model type='virtio'/></interface>" if mac else ""
    display = "\n    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>" if vnc else ""
    return f"""
<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{images.kernel}</kernel>
    <initrd>{images.initrd}</initrd>
    <cmdline>console=ttyS0 root=/dev/vda rw quiet panic=-1</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_reboot>destroy</on_reboot>
  <devices>{disk_xml}{nic}
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>{display}
  </devices>
</domain>"""
