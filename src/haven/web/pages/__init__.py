"""The dashboard's pages: each one authenticates the session and calls the same service methods as the API.

URLs use the subscription's *name* (services accept a name or an id)::

    /ui/                                    vaults of every visible subscription, with status and health
    /ui/vaults/new                          quick create (name, subscription, region)
    /ui/s/{sub}/v/{vault}                   the vault: quick start, storage redundancy, usage, items, policies
    /ui/s/{sub}/v/{vault}/configure         configure backup: goal -> policy -> VMs -> enable backup
    /ui/s/{sub}/v/{vault}/items/{vm}        a protected item: recovery points (timeline), restore disks, restore VM,
                                            replace disks (with a confirmation step), file recovery mounts
    POST …/items/{vm}/restore-vm|replace-disks|mount|unmount   -> core.restore (as the API's restore routes)
    POST /ui/s/{sub}/v/{vault}/alerts       alert webhook/e-mail -> core.alerts.configure
    /ui/jobs                                jobs of every visible vault, with filters and live progress
    /ui/s/{sub}/jobs/{id}                   a job: subtasks, warnings, error with its fix (live)
    /ui/readiness, /ui/keyvault             guest-agent readiness and prepare check; key vaults and access policies
"""

from __future__ import annotations

from haven.web.pages import files, items, jobs, keyvault, network, readiness, signin, vaults  # noqa: F401 (each adds its pages to the router)
from haven.web.pages.base import router, templates

__all__ = ["router", "templates"]
