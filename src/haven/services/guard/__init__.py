"""Multi-user authorization (Azure Backup's Resource Guard): destructive operations on a guarded vault
need the approval of a second principal.

A resource guard is an object of a subscription, meant to be one the security administrators own
and the backup administrators do not (as in Azure, where the guard sits in another subscription or
tenant). Its Owner names the principals that hold the ``Guard Approver`` role on it. A vault put under
a guard answers every protected operation (``Operation``) without an approval with
``MultiUserAuthorizationRequired`` and an approval request bound to the operation, the vault, the
requester and a digest of the exact parameters. A different principal holding the guard's approver
role approves it within the guard's window; the requester repeats the call with the request's id and
it runs once. Every step is audited, refusals included.

The services call one hook each (``check_*``) before they change anything; ``authorize`` decides.
This package: :mod:`.rules` (operations, states, the digest), :mod:`.errors`, :mod:`.authorize` (the hooks
and the decision), :mod:`.approvals` (approve, reject, requests, audit), :mod:`.guards` (guards, their
approvers, vault links); :class:`GuardService` is all of them.
"""

from haven.services.guard.approvals import Approvals
from haven.services.guard.authorize import Authorization
from haven.services.guard.errors import *  # noqa: F401,F403  (the errors, each with its code and fix)
from haven.services.guard.errors import __all__ as _errors
from haven.services.guard.guards import GuardManagement
from haven.services.guard.rules import DEFAULT_APPROVAL_WINDOW_MINUTES, GUARD_APPROVER_ROLE, Operation, retention_shortened

__all__ = ["GuardService", "Operation", "GUARD_APPROVER_ROLE", "DEFAULT_APPROVAL_WINDOW_MINUTES", "retention_shortened", *_errors]


class GuardService(Authorization, Approvals, GuardManagement):
    """Multi-user authorization, as the core holds it (``core.guard``)."""
