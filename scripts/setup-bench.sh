#!/usr/bin/env bash
# Installs what `make bench` compares Haven with, from Debian's own archive: restic, borg,
# virtnbdbackup (live libvirt backups over NBD), and the tools the workloads are built with.
# Idempotent: with everything present it only checks dpkg. Checks that the page cache can be dropped.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(restic borgbackup virtnbdbackup e2fsprogs qemu-utils libvirt-clients)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench packages: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "run as root to install Debian packages" >&2; exit 1; fi
  apt-get update -q
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}"
else
  echo "bench packages: all present"
fi

# The benchmark drops the page cache before every timed step; say so when it cannot.
if sync && (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
  echo "page cache: can be dropped"
else
  echo "page cache: cannot be dropped here (not root, or /proc/sys is read-only); the benchmark falls back to" \
       "evicting its own files with posix_fadvise(DONTNEED)" >&2
fi
