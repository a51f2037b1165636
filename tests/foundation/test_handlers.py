"""The job handler registry: keyed by complete ``JobType`` members, one handler per type with ``plan``,
``run``, ``record`` and ``failed``; the host's side (``work.HOST_JOBS``) covers exactly the types a host
agent may claim."""

from __future__ import annotations

from haven.domain.enums import JobType
from haven.jobs.runner import JobHandler
from haven.services.agents import AGENT_JOB_TYPES
from haven.services.handlers import handlers
from haven.work.registry import HOST_JOBS


def test_every_handler_is_one_class_with_plan_run_record_failed(core):
    registry = handlers(core)
    assert registry and all(isinstance(key, JobType) for key in registry)
    for key, handler in registry.items():
        assert isinstance(handler, JobHandler), f"{key}: {type(handler).__name__} is not a plan/run/record handler"
        assert handler.job_type == key
        assert registry[key.value] is handler  # a job's stored type string finds the same handler


def test_the_host_jobs_are_the_agent_job_types_and_have_server_handlers(core):
    registry = handlers(core)
    assert set(HOST_JOBS) <= set(registry)
    assert {JobType(t) for t in AGENT_JOB_TYPES} == set(HOST_JOBS)
