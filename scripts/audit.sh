#!/usr/bin/env bash
# pip-audit of the virtualenv. It needs PyPI's vulnerability service: where that is unreachable,
# pip-audit still exits 0 with every dependency "skipped"; this script fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(.venv/bin/pip-audit -f json --progress-spinner off)
echo "$out" | .venv/bin/python -c '
import json, sys
doc = json.load(sys.stdin)
deps = doc.get("dependencies", [])
vulnerable = [d for d in deps if d.get("vulns")]
skipped = [d for d in deps if d.get("skip_reason")]
for d in vulnerable:
    print("VULNERABLE", d["name"], d.get("version"), [v["id"] for v in d["vulns"]])
if skipped:
    print(f"{len(skipped)} of {len(deps)} dependencies could not be audited (vulnerability service unreachable?)")
sys.exit(1 if vulnerable or skipped else 0)
'
