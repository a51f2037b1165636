"""Multi-user authorization's errors: each a stable code, a message and the fix."""

from __future__ import annotations

from haven.errors import Conflict, Forbidden, NotFound, UserError

__all__ = [
    "MultiUserAuthorizationRequired",
    "ApprovalNotFound",
    "ApprovalMismatch",
    "ApprovalNotApproved",
    "ApprovalAlreadyUsed",
    "ApprovalExpired",
    "SelfApprovalRefused",
    "GuardApproverRequired",
    "ResourceGuardNotFound",
    "ResourceGuardAlreadyExists",
    "ResourceGuardInUse",
    "ResourceGuardNameInvalid",
    "ApprovalWindowInvalid",
    "GuardPrincipalNotFound",
    "RequestNotFound",
    "RequestNotPending",
]


class MultiUserAuthorizationRequired(Forbidden):
    code = "UserErrorMultiUserAuthorizationRequired"
    message = ("Vault {vault!r} is protected by resource guard {guard!r}: {operation} needs the approval of another "
               "principal holding the Guard Approver role on that guard. Approval request {request_id} was made; it "
               "must be approved before {expires_at}. Nothing was changed.")
    recommendation = ("Ask an approver of resource guard {guard!r} to run 'haven resource-guard approve --request {request_id}', "
                      "then repeat the same command with --approval {request_id} (API: \"approval_id\").")


class ApprovalNotFound(Forbidden):
    code = "UserErrorResourceGuardApprovalNotFound"
    message = "Approval {request_id!r} does not exist for vault {vault!r}. Nothing was changed."
    recommendation = "Repeat the command without --approval to make an approval request, and have it approved."


class ApprovalMismatch(Forbidden):
    code = "UserErrorResourceGuardApprovalMismatch"
    message = "Approval {request_id!r} was given for another {what}; it cannot authorize this call. Nothing was changed."
    recommendation = "Repeat the command without --approval to make an approval request for exactly this operation, and have it approved."


class ApprovalNotApproved(Forbidden):
    code = "UserErrorResourceGuardApprovalNotApproved"
    message = "Approval request {request_id!r} is {status}, not approved. Nothing was changed."
    recommendation = "Ask an approver of the vault's resource guard to run 'haven resource-guard approve --request {request_id}'."


class ApprovalAlreadyUsed(Forbidden):
    code = "UserErrorResourceGuardApprovalAlreadyUsed"
    message = "Approval {request_id!r} was already used at {used_at}; an approval authorizes one call. Nothing was changed."
    recommendation = "Repeat the command without --approval to make a new approval request."


class ApprovalExpired(Forbidden):
    code = "UserErrorResourceGuardApprovalExpired"
    message = "Approval request {request_id!r} expired at {expires_at}. Nothing was changed."
    recommendation = "Repeat the command without --approval to make a new approval request, and have it approved within the guard's window."


class SelfApprovalRefused(Forbidden):
    code = "UserErrorResourceGuardSelfApproval"
    message = "Principal {principal!r} made approval request {request_id!r} and cannot approve it: a second principal must."
    recommendation = "Ask another principal holding the Guard Approver role on resource guard {guard!r} to approve it."


class GuardApproverRequired(Forbidden):
    code = "UserErrorResourceGuardApproverRequired"
    message = "Principal {principal!r} does not hold the Guard Approver role on resource guard {guard!r}."
    recommendation = ("Ask an Owner of the guard's subscription to assign it: haven resource-guard approver add "
                      "-s {subscription} --name {guard} --principal {principal}.")


class ResourceGuardNotFound(NotFound):
    code = "UserErrorResourceGuardNotFound"
    message = "Resource guard {name!r} does not exist in subscription {subscription!r}."
    recommendation = "List the guards with 'haven resource-guard list -s {subscription}'."


class ResourceGuardAlreadyExists(Conflict):
    code = "UserErrorResourceGuardAlreadyExists"
    message = "A resource guard named {name!r} already exists in subscription {subscription!r}."
    recommendation = "Choose another name, or use the existing guard."


class ResourceGuardInUse(Conflict):
    code = "UserErrorResourceGuardInUse"
    message = "Resource guard {name!r} protects {count} vault(s) and cannot be deleted."
    recommendation = "Remove the guard from each vault first (haven vault resource-guard remove, which needs an approval)."


class ResourceGuardNameInvalid(UserError):
    code = "UserErrorResourceGuardNameInvalid"
    message = "The resource guard name {name!r} is invalid: 2 to 50 letters, digits, hyphens or underscores, starting with a letter."
    recommendation = "Choose a name such as 'security-guard'."


class ApprovalWindowInvalid(UserError):
    code = "UserErrorResourceGuardApprovalWindowInvalid"
    message = "The approval window must be {minimum} to {maximum} minutes; {value} was given."
    recommendation = "Pass --approval-window-minutes between {minimum} and {maximum} (the default is 240, 4 hours)."


class GuardPrincipalNotFound(NotFound):
    code = "UserErrorResourceGuardPrincipalNotFound"
    message = "Principal {name!r} does not exist, or is not a user principal."
    recommendation = "Name a principal made with 'haven token create' (host agents and built-in principals cannot approve)."


class RequestNotFound(NotFound):
    code = "UserErrorResourceGuardRequestNotFound"
    message = "Approval request {request_id!r} does not exist or you cannot see it."
    recommendation = "List the requests you can see with 'haven resource-guard requests list'."


class RequestNotPending(Conflict):
    code = "UserErrorResourceGuardRequestNotPending"
    message = "Approval request {request_id!r} is {status}; only a pending request can be approved or rejected."
    recommendation = "The requester makes a new request by repeating the operation without --approval."
