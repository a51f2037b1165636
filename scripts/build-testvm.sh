#!/usr/bin/env bash
# Build the test guest (kernel + busybox initramfs + ext4 root with qemu-guest-agent, from Debian
# packages), or find it in the cache (/var/tmp/haven-testvm/<recipe hash>), and print where it is.
#   scripts/build-testvm.sh                  build / check the cache
#   scripts/build-testvm.sh boot DISK RUNDIR boot a disk; QMP and guest-agent sockets in RUNDIR
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m haven.testguest "${@:-build}"
