# The two commands: `make run` and `make test`. Both set everything up first (as root on Debian 12).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-system setup-python setup-node run test test-fast reliability audit bench bench-files bench-scale docs lint clean

setup: setup-system setup-python setup-node

setup-system:
	bash scripts/setup-system.sh

setup-python:
	bash scripts/setup-python.sh

setup-node:
	bash scripts/setup-node.sh

## The server with its dashboard on the embedded default (SQLite, a local vault folder, a sample VM),
## a first backup and a restore checked byte for byte. Ctrl-C stops it.
run: setup-system setup-python
	$(VENV)/bin/haven serve --demo

## The whole suite against real services (PostgreSQL, Azurite, S3, proxies, QEMU, libvirt, Chromium).
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## Without the slow marks: for a quick local loop.
test-fast: setup-python
	$(PY) -m pytest -m "not slow and not vm" -x $(PYTEST_ARGS)

reliability: setup
	HAVEN_RELIABILITY=full $(PY) -m pytest tests/reliability --timeout=10800 $(PYTEST_ARGS)  # the full crash runs take up to an hour each

## pip-audit: needs PyPI's vulnerability service (not reachable from every machine); fails if anything is unaudited.
audit: setup-python
	bash scripts/audit.sh

## Benchmark (not a test): haven serve / haven agent through the CLI against restic, borg and
## virtnbdbackup, the engine alone as the floor (bench/served.py; docs/benchmarks.md). About 25
## minutes on 2 cores; `make bench QUICK=1` takes about 5 (small images, one repetition).
bench: setup
	bash scripts/setup-bench.sh
	$(PY) -m bench.served $(if $(QUICK),--quick,)

## Benchmark of file recovery from the vault through a real haven serve (bench/files.py): a 10,000-entry
## folder listed, a 1 GiB file downloaded, find over 30 points of a 4 GiB disk. About 10 minutes on 2 cores.
bench-files: setup-python
	$(PY) -m bench.files

## Benchmark (not a test): the metadata at fleet scale on PostgreSQL: N protected VMs x M points made through
## the services, list endpoints' p95, a scheduler tick, retention (bench/scale.py). Defaults 1,000 x 400
## (VMS=, POINTS= to change); `make bench-scale QUICK=1` is 100 x 40 (under a minute).
bench-scale: setup-python
	$(PY) -m bench.scale $(if $(QUICK),--quick,) $(if $(VMS),--vms $(VMS),) $(if $(POINTS),--points $(POINTS),)

## Regenerate the committed documents that come from the code (tests check they are current).
docs: setup-python
	$(PY) -m haven.tools.gendocs

clean:
	rm -rf $(VENV) node_modules .pytest_cache
