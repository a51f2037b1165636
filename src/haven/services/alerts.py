"""Alerts: a failed backup or restore, a missed backup window, an item without a recent good backup.

An alert is recorded once per ``dedup_key`` and delivered to the vault's webhook (a JSON POST) and
e-mail address (SMTP, from ``[smtp]`` in haven.toml or ``HAVEN_SMTP_HOST``/``HAVEN_SMTP_PORT``).
Delivery is best effort with short time-outs and never fails the operation that raised the alert;
what was delivered is recorded on the alert.
"""

from __future__ import annotations

import logging
import os
import smtplib
from datetime import timedelta
from email.message import EmailMessage

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from haven.db.models import Alert, Job, Policy, ProtectedItem, Vault, VirtualMachine
from haven.domain.enums import ProtectionState, Role
from haven.domain.schedule import Schedule
from haven.errors import UserError
from haven.services.auth import Caller
from haven.services.paging import Keyset

__all__ = ["AlertService"]

log = logging.getLogger(__name__)


#: newest first; the id breaks ties
ALERTS = Keyset("alerts", ((Alert.created_at, True), (Alert.id, True)))

class AlertTargetInvalid(UserError):
    code = "UserErrorAlertTargetInvalid"
    message = "The alert target {value!r} is invalid: {reason}"
    recommendation = "Give an http(s) URL for the webhook and a plain address (name@example.org) for e-mail."


class AlertService:
    def __init__(self, core):
        self.core = core
        self.smtp_host = os.environ.get("HAVEN_SMTP_HOST") or core.settings.extra.get("smtp_host")
        self.smtp_port = int(os.environ.get("HAVEN_SMTP_PORT") or core.settings.extra.get("smtp_port") or 25)
        self.smtp_from = os.environ.get("HAVEN_SMTP_FROM", "haven@localhost")

    # ---- configuration ----
    def configure(self, caller: Caller, subscription: str, vault_name: str, webhook: str | None, email: str | None) -> dict:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name, Role.CONTRIBUTOR)
            if webhook is not None:
                if webhook and not webhook.startswith(("http://", "https://")):
                    raise AlertTargetInvalid(value=webhook, reason="a webhook must be an http:// or https:// URL.")
                vault.alert_webhook = webhook or None
            if email is not None:
                if email and ("@" not in email or any(c in email for c in " \r\n<>,;")):
                    raise AlertTargetInvalid(value=email, reason="not a single e-mail address.")
                vault.alert_email = email or None
            return {"webhook": vault.alert_webhook, "email": vault.alert_email}

    def list(self, caller: Caller, subscription: str, vault_name: str) -> list[dict]:
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            rows = s.scalars(select(Alert).where(Alert.vault_id == vault.id).order_by(Alert.created_at.desc()).limit(500))
            return [_view(a) for a in rows]

    def page(self, caller: Caller, subscription: str, vault_name: str, limit: int = 100,
             cursor: str | None = None) -> tuple[list[dict], str | None]:
        """Newest first, ``limit`` at a time (``services/paging.py``)."""
        with self.core.db.session() as s:
            vault = self.core.vaults.find(s, caller, subscription, vault_name)
            rows, following = ALERTS.page(s, select(Alert).where(Alert.vault_id == vault.id), limit, cursor,
                                          lambda a: (a.created_at, a.id))
            return [_view(a) for a in rows], following

    # ---- raising ----
    def raise_alert(self, s, vault: Vault, kind: str, severity: str, message: str, dedup_key: str,
                    item_id: str | None = None, job_id: str | None = None) -> Alert | None:
        """Record the alert (once per dedup key) in the caller's transaction and deliver it."""
        if s.scalar(select(Alert.id).where(Alert.vault_id == vault.id, Alert.dedup_key == dedup_key[:200])):
            return None
        alert = Alert(vault_id=vault.id, item_id=item_id, job_id=job_id, kind=kind, severity=severity, message=message,
                      dedup_key=dedup_key[:200], created_at=self.core.clock.now(), delivered=[])
        try:
            with s.begin_nested():
                s.add(alert)
        except IntegrityError:
            return None  # raised at the same moment by another worker
        alert.delivered = self._deliver(vault, alert)
        return alert

    def job_failed(self, job_id: str) -> None:
        with self.core.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.vault_id is None or job.status not in ("Failed",):
                return
            vault = s.get(Vault, job.vault_id)
            vm = None
            if job.item_id:
                item = s.get(ProtectedItem, job.item_id)
                vm = s.get(VirtualMachine, item.vm_id).name if item else None
            what = f"{job.operation} of {vm}" if vm else job.operation
            self.raise_alert(s, vault, f"{job.type}Failed", "Critical",
                             f"{what} failed: {job.error_code}: {job.error_message} Fix: {job.error_recommendation}",
                             f"job:{job.id}", item_id=job.item_id, job_id=job.id)

    def check_overdue_items(self) -> list[str]:
        """Items whose last good backup is older than their schedule allows (two intervals and an hour)."""
        now = self.core.clock.now()
        raised: list[str] = []
        with self.core.db.session() as s:
            rows = s.execute(
                select(ProtectedItem, Policy, Vault)
                .join(Policy, ProtectedItem.policy_id == Policy.id).join(Vault, ProtectedItem.vault_id == Vault.id)
                .where(ProtectedItem.state == ProtectionState.PROTECTED.value)
            ).all()
            for item, policy, vault in rows:
                allowed = _allowed_gap(Schedule.from_dict(policy.schedule))
                since = item.last_success_time or item.created_at
                if now - since <= allowed:
                    continue
                vm = s.get(VirtualMachine, item.vm_id).name
                day = now.date().isoformat()
                if self.raise_alert(s, vault, "NoRecentBackup", "Critical",
                                    f"{vm} has had no successful backup since {since.isoformat()} (its schedule allows {allowed}).",
                                    f"overdue:{item.id}:{day}", item_id=item.id):
                    raised.append(item.id)
        return raised

    # ---- delivery ----
    def _deliver(self, vault: Vault, alert: Alert) -> list[str]:
        done: list[str] = []
        payload = _view(alert) | {"vault": vault.name, "region": vault.region}
        if vault.alert_webhook:
            try:
                httpx.post(vault.alert_webhook, json=payload, timeout=5.0, trust_env=False).raise_for_status()
                done.append("webhook")
            except httpx.HTTPError as e:
                log.warning("alert webhook %s failed: %s", vault.alert_webhook, e)
        if vault.alert_email and self.smtp_host:
            msg = EmailMessage()
            msg["Subject"] = f"[Haven] {alert.severity}: {alert.kind} in vault {vault.name}"
            msg["From"], msg["To"] = self.smtp_from, vault.alert_email
            msg.set_content(f"{alert.message}\n\nVault: {vault.name} ({vault.region})\nTime: {alert.created_at.isoformat()}\n")
            try:
                with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=5.0) as smtp:
                    smtp.send_message(msg)
                done.append("email")
            except (OSError, smtplib.SMTPException) as e:
                log.warning("alert e-mail to %s failed: %s", vault.alert_email, e)
        return done


def _allowed_gap(schedule: Schedule) -> timedelta:
    per_day = max(1, schedule.runs_per_day())
    interval = timedelta(days=7) if schedule.frequency == "weekly" else timedelta(days=1) / per_day
    return 2 * interval + timedelta(hours=1)


def _view(a: Alert) -> dict:
    return {"id": a.id, "kind": a.kind, "severity": a.severity, "message": a.message, "item_id": a.item_id,
            "job_id": a.job_id, "created_at": a.created_at.isoformat(), "delivered": a.delivered}
