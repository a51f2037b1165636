"""Real disk images made with the file systems' own tools (no mount, no root needed except NTFS,
which ntfs-3g populates through FUSE when it can): a source tree per version, and the images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.services._util import require, require_binary

MiB = 1 << 20


def need(*tools: str) -> None:
    for tool in tools:
        require_binary(tool)  # fails in CI, skips elsewhere


def run(*cmd, **kw) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, **kw)


def make_tree(root: Path, version: int, links: bool = True, unicode: bool = True) -> Path:
    """Nested folders, unicode names, a symlink and a hard link, a sparse and a large file, and
    etc/app.conf whose content depends on ``version`` (plus a file only version 2 has)."""
    root.mkdir(parents=True)
    (root / "etc" / "nginx" / "conf.d").mkdir(parents=True)
    (root / "etc" / "nginx" / "nginx.conf").write_text("worker_processes 4;\nevents {}\n")
    (root / "etc" / "nginx" / "conf.d" / "site.conf").write_text("server { listen 80; }\n")
    (root / "etc" / "app.conf").write_text(f"version = {version}\n" + "x" * (100 * version))
    (root / "etc" / "nginx" / "nginx.conf").chmod(0o640)
    if version == 2:
        (root / "etc" / "new-in-2.txt").write_text("only in the second point\n")
    deep = root / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("deep\n")
    if unicode:
        (root / "données" / "Ünïcödé Ordner").mkdir(parents=True)
        (root / "données" / "Ünïcödé Ordner" / "fïchier ☃.txt").write_text("snow ☃\n")
    big = root / "data"
    big.mkdir()
    (big / "large.bin").write_bytes(os.urandom(6 * MiB + 123))
    with open(big / "sparse.img", "wb") as fh:
        fh.truncate(24 * MiB)
        fh.seek(5 * MiB)
        fh.write(b"middle" * 1000)
        fh.seek(24 * MiB - 10)
        fh.write(b"end-of-it!")
    (big / "empty").write_bytes(b"")
    if links:
        os.symlink("nginx/nginx.conf", root / "etc" / "main.conf")
        os.symlink("/etc/nginx", root / "etc-nginx")
        os.link(root / "etc" / "nginx" / "nginx.conf", root / "etc" / "nginx.conf.hard")
    for p in sorted(root.rglob("*"), reverse=True):
        if not p.is_symlink():
            os.utime(p, (1_700_000_000 + version, 1_700_000_000 + version))
    return root


def ext4(src: Path, out: Path, size: int = 96 * MiB) -> Path:
    need("mkfs.ext4")
    with open(out, "wb") as fh:
        fh.truncate(size)
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, out)
    return out


def btrfs(src: Path, out: Path, size: int = 128 * MiB) -> Path:
    need("mkfs.btrfs")
    with open(out, "wb") as fh:
        fh.truncate(size)
    run("mkfs.btrfs", "-q", "-f", "--rootdir", src, out)
    return out


def _proto(src: Path, lines: list[str], depth: int = 0) -> None:
    for p in sorted(src.iterdir()):
        name = p.name
        st = p.lstat()
        mode = oct(st.st_mode & 0o777)[2:].rjust(3, "0")
        if p.is_symlink():
            lines.append(f"{name} l--{mode} 0 0 {os.readlink(p)}")
        elif p.is_dir():
            lines.append(f"{name} d--{mode} 0 0")
            _proto(p, lines, depth + 1)
            lines.append("$")
        else:
            lines.append(f"{name} ---{mode} 0 0 {p}")


def xfs(src: Path, out: Path, size: int = 320 * MiB) -> Path:
    """XFS from a protofile (names without spaces only; no hard links: a protofile cannot say them)."""
    need("mkfs.xfs")
    lines = ["/dev/null", "0 0", "d--755 0 0"]
    _proto(src, lines)
    lines.append("$")
    proto = out.with_suffix(".proto")
    proto.write_text("\n".join(lines) + "\n")
    with open(out, "wb") as fh:
        fh.truncate(size)
    run("mkfs.xfs", "-q", "-f", "-p", proto, out)
    return out


def fat(src: Path, out: Path, size: int = 64 * MiB) -> Path:
    need("mkfs.fat", "mcopy")
    with open(out, "wb") as fh:
        fh.truncate(size)
    run("mkfs.fat", "-F", "32", out)
    run("mcopy", "-s", "-m", "-i", out, *sorted(src.iterdir()), "::/")
    return out


def ntfs(src: Path, out: Path, size: int = 64 * MiB) -> Path:
    need("mkntfs", "ntfs-3g")
    with open(out, "wb") as fh:
        fh.truncate(size)
    run("mkntfs", "-F", "-q", "-Q", out)
    mnt = out.with_suffix(".mnt")
    mnt.mkdir()
    try:
        run("ntfs-3g", out, mnt)
    except subprocess.CalledProcessError as exc:
        require(False, f"ntfs-3g mounting an image (FUSE): {exc.stderr.decode()[:200]}")
    try:
        for p in src.iterdir():
            run("cp", "-r", "--preserve=timestamps", p, mnt)
    finally:
        run("umount", mnt)
    return out


def partitioned(out: Path, label: str, parts: list[Path]) -> list[int]:
    """A disk with an MBR ('dos') or GPT table holding ``parts`` (file-system images) in order; the offsets."""
    need("sfdisk")
    offsets, pos = [], MiB
    for p in parts:
        offsets.append(pos)
        pos += (os.path.getsize(p) + MiB - 1) // MiB * MiB
    with open(out, "wb") as fh:
        fh.truncate(pos + MiB)
    table = f"label: {label}\n" + "".join(f"start={o // 512}, size={os.path.getsize(p) // 512}, type={'L' if label == 'gpt' else '83'}\n"
                                          for o, p in zip(offsets, parts))
    run("sfdisk", "-q", out, input=table.encode())
    with open(out, "r+b") as disk:
        for o, p in zip(offsets, parts):
            with open(p, "rb") as fs:
                disk.seek(o)
                while block := fs.read(4 * MiB):
                    if block.count(0) == len(block):
                        disk.seek(len(block), os.SEEK_CUR)  # keep holes holes
                    else:
                        disk.write(block)
    return offsets


def luks2(inner: Path, out: Path, key: bytes) -> Path:
    """A LUKS2 volume holding the file-system image ``inner``, encrypted by cryptsetup itself with ``key``
    as its key file (what a BEK is). cryptsetup's offline encryption ('reencrypt --encrypt' of an unmounted
    file) writes the data in user space: no dm-crypt, no loop device, no root. argon2id with a tiny cost
    (the kind real volumes use, fast here)."""
    need("cryptsetup")
    header = 16 * MiB  # made room for by --reduce-device-size; LUKS2 keeps half of it as its header
    with open(out, "wb") as fh:
        fh.truncate(os.path.getsize(inner) + header)
    with open(inner, "rb") as src, open(out, "r+b") as dst:
        while block := src.read(4 * MiB):
            if block.count(0) == len(block):
                dst.seek(len(block), os.SEEK_CUR)
            else:
                dst.write(block)
    key_file = out.with_suffix(".key")
    key_file.write_bytes(key)
    try:
        run("cryptsetup", "reencrypt", "--encrypt", "--batch-mode", "--type", "luks2", "--reduce-device-size", f"{header // MiB}M",
            "--key-file", key_file, "--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4",
            "--pbkdf-parallel", "1", out)
    finally:
        key_file.unlink()
    return out


EXTENT = 4 * MiB


def lvm(out: Path, vg: str, volumes: list[tuple[str, Path]]) -> Path:
    """An LVM2 physical volume (a file) whose volume group ``vg`` holds one logical volume per (name,
    file-system image). The metadata is written by the lvm2 tools themselves on a loop device over the
    file (pvcreate needs a block device); the LVs are never activated (no device-mapper here:
    ``--driverloaded n``), so each image is copied to the extents ``lvs`` reports. The first LV is
    made of two segments with another LV's extent between them, as an extended LV is."""
    need("losetup", "pvcreate", "vgcreate", "lvcreate", "lvextend", "lvs", "pvs")
    sizes = [(os.path.getsize(img) + EXTENT - 1) // EXTENT for _, img in volumes]
    with open(out, "wb") as fh:
        fh.truncate(MiB + (sum(sizes) + 2) * EXTENT)
    attached = subprocess.run(["losetup", "-f", "--show", str(out)], capture_output=True, text=True)
    require(attached.returncode == 0, f"a loop device for lvm2's pvcreate: {attached.stderr.strip()[:200]}")
    dev = attached.stdout.strip()
    config = (f'devices {{ filter = [ "a|^{dev}$|", "r|.*|" ] use_devicesfile = 0 }} backup {{ backup = 0 archive = 0 }} '
              "activation { udev_sync = 0 udev_rules = 0 }")
    env = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}

    def lvm_tool(*args) -> str:
        return subprocess.run([*map(str, args), "--config", config], check=True, capture_output=True, text=True, env=env).stdout

    try:
        lvm_tool("pvcreate", "-ff", "-y", dev)
        lvm_tool("vgcreate", "-s", f"{EXTENT // MiB}M", vg, dev)
        for i, ((name, _), extents) in enumerate(zip(volumes, sizes)):
            lv = ["lvcreate", "--driverloaded", "n", "-an", "-Zn", "-y"]
            if i == 0 and extents > 1:
                lvm_tool(*lv, "-l", extents - 1, "-n", name, vg)
                lvm_tool(*lv, "-l", 1, "-n", "gap", vg)
                lvm_tool("lvextend", "--driverloaded", "n", "-l", extents, f"{vg}/{name}")
            else:
                lvm_tool(*lv, "-l", extents, "-n", name, vg)
        pe_start = int(lvm_tool("pvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "pe_start", dev).split()[0])
        segments = lvm_tool("lvs", "--noheadings", "--separator", ";", "-o", "lv_name,seg_start_pe,seg_pe_ranges", vg)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)
    images = dict(volumes)
    with open(out, "r+b") as pv:
        for line in segments.split():
            name, le, ranges = line.strip().split(";")
            if name not in images:
                continue
            first, last = (int(x) for x in ranges.rsplit(":", 1)[1].split("-"))
            with open(images[name], "rb") as fs:
                fs.seek(int(le) * EXTENT)
                data = fs.read((last - first + 1) * EXTENT)
            pv.seek(pe_start + first * EXTENT)
            pv.write(data)
    return out
