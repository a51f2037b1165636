"""How the dashboard shows values: dates, sizes, durations, job names and results, schedules and retention,
a VM's readiness verdict. Pure formatting (no request, no service), used as template filters by ``base``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from haven.domain.enums import JobStatus, JobType

FINISHED = {s.value for s in JobStatus if s.finished}
ACTIVE = {JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value, JobStatus.CANCELLING.value}


# ------------------------------------------------------------------ formatting helpers (template filters)


def _dt(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(value: Any) -> str:
    if value is None:
        return "—"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(value)


def _duration(value: Any) -> str:
    if value is None:
        return "—"
    secs = float(value)
    if secs < 60:
        return f"{secs:.1f} s"
    mins, s = divmod(int(secs), 60)
    if mins < 60:
        return f"{mins} min {s} s"
    h, m = divmod(mins, 60)
    return f"{h} h {m} min"


def _percent(job: dict) -> float | None:
    subtasks = job.get("subtasks") or []
    if job.get("status") in FINISHED:
        return 100.0 if job.get("status") in (JobStatus.COMPLETED.value, JobStatus.COMPLETED_WITH_WARNINGS.value) else None
    if not subtasks:
        return 0.0 if job.get("status") in ACTIVE else None
    values = [float(t.get("percent") or (100.0 if t.get("status") == "Completed" else 0.0)) for t in subtasks]
    return round(sum(values) / len(values), 1)


#: One name per job type, the same in titles, tables and filters (the API keeps the type and operation fields).
JOB_LABELS = {
    JobType.CONFIGURE_BACKUP.value: "Configure backup", JobType.BACKUP.value: "Backup", JobType.RESTORE.value: "Restore disks",
    JobType.RESTORE_VM.value: "Restore VM", JobType.REPLACE_DISKS.value: "Replace disks",
    JobType.CROSS_REGION_RESTORE.value: "Cross-region restore", JobType.FILE_RECOVERY.value: "File recovery (mount)",
    JobType.DISABLE_BACKUP.value: "Stop protection", JobType.DELETE_BACKUP_DATA.value: "Delete backup data",
    JobType.VERIFY.value: "Verify vault", JobType.GARBAGE_COLLECT.value: "Garbage collection",
}
#: What the jobs page's "Any restore" filter covers.
RESTORE_KINDS = (JobType.RESTORE.value, JobType.RESTORE_VM.value, JobType.REPLACE_DISKS.value,
                 JobType.CROSS_REGION_RESTORE.value, JobType.FILE_RECOVERY.value)


def _job_label(job_type: str) -> str:
    return JOB_LABELS.get(job_type, job_type)


_POINT_KEYS = {"recovery_point_id": "Recovery point", "parent": "Parent point", "undo_recovery_point": "Undo point"}
_LABELS = {"bytes_read": "Read", "bytes_stored": "Stored (new)", "nics": "Network interfaces"}


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_plain(v) for v in value)
    return str(value)


def _result_rows(job: dict, item_url: str | None) -> list[dict]:
    """A job's result as labelled lines for people: sizes as sizes, point ids as links, nothing raw."""
    rows = []
    for key, value in (job.get("result") or {}).items():
        if key == "instructions":
            continue
        label = _POINT_KEYS.get(key) or _LABELS.get(key) or key.replace("_", " ").capitalize()
        href = None
        if key in _POINT_KEYS and value:
            href = f"{item_url}#rp-{value}" if item_url else None
            lines = [str(value)]
        elif key == "parent" or (key in _POINT_KEYS and not value):
            lines = ["none (a full backup)" if key == "parent" else "—"]
        elif "bytes" in key and isinstance(value, (int, float)):
            lines = [_size(value)]
        elif isinstance(value, dict):
            lines = [f"{k}: {_plain(v)}" for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            lines = [_plain(v) for v in value] or ["—"]
        else:
            lines = [_plain(value)]
        rows.append({"key": key, "label": label, "lines": lines, "href": href})
    return rows


def _schedule_text(schedule: dict) -> str:
    freq = schedule.get("frequency", "?")
    times = ", ".join(schedule.get("times") or [])
    tz = schedule.get("timezone") or "UTC"
    if freq == "weekly":
        names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        days = ", ".join(names[d] for d in schedule.get("weekdays") or [] if isinstance(d, int) and 0 <= d < 7)
        return f"Weekly on {days} at {times} ({tz})"
    if freq == "hourly":
        return f"Every {schedule.get('hourly_interval')} h from {times} for {schedule.get('hourly_window_hours')} h ({tz})"
    return f"Daily at {times} ({tz})"


def _retention_text(retention: dict) -> str:
    parts = []
    for key, unit in (("daily_days", "daily points {} days"), ("weekly_weeks", "weekly points {} weeks"),
                      ("monthly_months", "monthly points {} months"), ("yearly_years", "yearly points {} years")):
        if retention.get(key):
            parts.append(unit.format(retention[key]))
    return "; ".join(parts) or "—"


def _verdict(vm: dict) -> dict:
    """What a backup of this VM will look like now: the seeds' rule (running + agent -> application-consistent)."""
    agent = vm.get("guest_agent") or {}
    power = vm.get("power_state")
    if power == "missing":
        return {"level": "bad", "text": "Not reported by its host any more", "consistency": "—"}
    if agent.get("problem"):
        detail = agent.get("problem")
        fix = agent.get("recommendation")
    else:
        detail, fix = None, None
    if power == "running" and agent.get("present") and agent.get("answering") and agent.get("version_ok") is not False:
        return {"level": "ok", "text": f"Guest agent {agent.get('version') or ''} answering".strip(), "consistency": "Application-consistent",
                "detail": detail, "fix": fix}
    if power == "running":
        return {"level": "warn", "text": "Running without a usable guest agent", "consistency": "Crash-consistent",
                "detail": detail or "The guest agent (qemu-guest-agent) is missing, not answering or too old.",
                "fix": fix or "Install or start qemu-guest-agent in the guest for application-consistent recovery points."}
    return {"level": "info", "text": f"VM is {power or 'unknown'}", "consistency": "Crash-consistent",
            "detail": detail or "A stopped VM is still backed up; its recovery points are crash-consistent.", "fix": fix}
