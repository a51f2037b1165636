"""``GET /metrics`` for Prometheus: time since the last good backup per item, job counts and durations,
bytes stored per vault. Values come from ``services.metrics`` at scrape time (a custom collector). Needs a token with a role on every subscription."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from haven.api.deps import caller, core
from haven.domain.enums import Role
from haven.services.metrics import MetricsService

__all__ = ["router", "HavenCollector"]

router = APIRouter(include_in_schema=False)


class HavenCollector:
    def __init__(self, app_core):
        self.metrics = MetricsService(app_core)

    def collect(self):
        figures = self.metrics.figures()
        since = GaugeMetricFamily("haven_seconds_since_last_good_backup", "Seconds since the item's last successful backup",
                                  labels=["vault", "vm"])
        jobs = CounterMetricFamily("haven_jobs", "Jobs by type and status", labels=["type", "status"])
        durations = CounterMetricFamily("haven_job_duration_seconds", "Total run time of finished jobs by type", labels=["type"])
        stored = GaugeMetricFamily("haven_vault_stored_bytes", "Bytes stored by the vault's recovery points", labels=["vault"])
        for vault, vm, seconds in figures.seconds_since_good_backup:
            since.add_metric([vault, vm], seconds)
        for jtype, status, count in figures.jobs:
            jobs.add_metric([jtype, status], count)
        for jtype, total in figures.job_seconds.items():
            durations.add_metric([jtype], total)
        for vault, total in figures.stored_bytes:
            stored.add_metric([vault], total)
        yield from (since, jobs, durations, stored)


@router.get("/metrics")
def metrics(app=Depends(core), who=Depends(caller)) -> Response:
    who.require_global(Role.READER)
    registry = CollectorRegistry()
    registry.register(HavenCollector(app))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
