#!/usr/bin/env bash
# Creates .venv with Debian's Python and installs Haven with its test extras.
# Re-runs pip only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${HAVEN_PYTHON:-/usr/bin/python3}
EXTRAS=${HAVEN_EXTRAS:-test,libvirt}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip wheel setuptools
fi
stamp=.venv/.haven-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
# Debian's libnbd binding is not on PyPI: link its module into the venv (same Python ABI).
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for f in /usr/lib/python3/dist-packages/nbd.py /usr/lib/python3/dist-packages/libnbdmod*.so; do
  [ -e "$f" ] && ln -sf "$f" "$site/"
done
true
