#!/usr/bin/env bash
# Installs the Debian packages Haven and its test suite use. Idempotent: a second run
# with everything present only checks dpkg and returns.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  # Python toolchain for the virtualenv and packages that compile
  python3 python3-venv python3-dev build-essential pkg-config
  # metadata store (tests start a throwaway cluster)
  postgresql
  # VMs: QEMU, libvirt, NBD, the test guest's builder
  qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs python3-libnbd libnbd-bin nbdkit nbdkit-plugin-python
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  # encrypted guests, key vault HSM
  cryptsetup-bin softhsm2
  # proxies, and nftables to check the firewall rules `haven prepare firewall-rules` prints
  tinyproxy squid openssl nftables
  # Azure Blob emulator runs on Node.js
  nodejs npm
  # dashboard end-to-end tests
  chromium chromium-driver
  # benchmark peers
  restic borgbackup
  xfsprogs btrfs-progs ntfs-3g dosfstools mtools fdisk lvm2  # file recovery tests: real file systems, partitions, LVM
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The image may ship Node.js outside dpkg; then npm/nodejs from Debian are not needed.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs/}"); missing=("${missing[@]/npm/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
echo "system packages: installing ${missing[*]}"
if [ "$(id -u)" != 0 ]; then echo "run as root to install Debian packages" >&2; exit 1; fi
apt-get update -q
apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}"
