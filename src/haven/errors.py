"""Every error Haven reports: a stable code, a message, a fix, an HTTP status and a CLI exit code.

Errors are classes. Each one names its ``code`` (stable, in the seeds' style, e.g.
``UserErrorVaultNameInvalid``), a ``message`` template and a ``recommendation`` (the fix).
The HTTP status and the CLI exit code come from the *category* the class derives from, and
that mapping lives here and nowhere else (``CATEGORIES``). Packages may define their own
error classes (``haven.engine.errors`` …) as long as they derive from one of the categories
below; ``all_errors()`` finds them all and ``docs/errors.md`` is generated from it.

Raising::

    raise VaultNameInvalid(name="x")          # message/recommendation templates get the fields

The templates are ``str.format`` strings filled from the keyword arguments given when raising.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

__all__ = [
    "HavenError",
    "UserError",
    "NotFound",
    "Conflict",
    "Unauthenticated",
    "Forbidden",
    "TooLarge",
    "PreconditionFailed",
    "Transient",
    "InternalError",
    "CATEGORIES",
    "all_errors",
    "loaded_errors",
    "error_from_payload",
]


class HavenError(Exception):
    """Base of every error Haven reports to a user."""

    code: ClassVar[str] = "InternalError"
    message: ClassVar[str] = "An internal error occurred."
    recommendation: ClassVar[str] = "Retry the operation; if it keeps failing, report it with the job id."
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    #: True when retrying the same call later may succeed (storage hiccups, time-outs).
    transient: ClassVar[bool] = False
    #: The fix in the dashboard's words (its fields and buttons, not CLI flags), when they differ.
    recommendation_ui: ClassVar[str | None] = None

    def __init__(self, message: str | None = None, recommendation: str | None = None, **fields: Any):
        self.fields = fields
        self.text = message if message is not None else _fill(self.message, fields)
        self.fix = recommendation if recommendation is not None else _fill(self.recommendation, fields)
        self.ui_fix = _fill(self.recommendation_ui, fields) if recommendation is None and self.recommendation_ui else self.fix
        super().__init__(self.text)

    def to_payload(self) -> dict[str, Any]:
        """The body the API answers with, and what the CLI prints."""
        return {
            "error": {
                "code": self.code,
                "message": self.text,
                "recommendation": self.fix,
                "details": {k: _jsonable(v) for k, v in self.fields.items()},
            }
        }

    def __str__(self) -> str:
        return f"{self.code}: {self.text}"


def _fill(template: str, fields: dict[str, Any]) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError):
        return template


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


# ---- categories: the one place that maps an error to an HTTP status and an exit code ----


class UserError(HavenError):
    """The request is invalid; nothing was changed."""

    code = "UserErrorInvalidRequest"
    message = "The request is invalid."
    recommendation = "Check the values given and try again."
    http_status = 400
    exit_code = 2


class NotFound(HavenError):
    code = "UserErrorNotFound"
    message = "The requested resource does not exist."
    recommendation = "Check the name or id; list the resources to see what exists."
    http_status = 404
    exit_code = 3


class Conflict(HavenError):
    code = "UserErrorConflict"
    message = "The request conflicts with the current state."
    recommendation = "Refresh the state and try again."
    http_status = 409
    exit_code = 4


class Unauthenticated(HavenError):
    code = "UserErrorUnauthenticated"
    message = "No valid credentials were presented."
    recommendation = "Pass a valid token (haven token create, or HAVEN_TOKEN)."
    http_status = 401
    exit_code = 5


class Forbidden(HavenError):
    code = "UserErrorForbidden"
    message = "The caller is not allowed to do this."
    recommendation = "Ask an Owner of the subscription for a role that allows it."
    http_status = 403
    exit_code = 6


class TooLarge(HavenError):
    """The request is larger than the route accepts; it was refused without being read further."""

    code = "UserErrorRequestTooLarge"
    message = "The request is larger than this route accepts."
    recommendation = "Send a smaller request."
    http_status = 413
    exit_code = 2


class PreconditionFailed(HavenError):
    """The request is valid but something it depends on is not ready (agent, keys, network)."""

    code = "UserErrorPreconditionFailed"
    message = "A prerequisite of this operation is not met."
    recommendation = "Run 'haven prepare check' for the VM and fix what it reports."
    http_status = 422
    exit_code = 7


class Transient(HavenError):
    """A dependency (storage, network, database) failed in a way that may pass."""

    code = "TransientError"
    message = "A dependency did not answer as expected."
    recommendation = "Retry later; check the storage endpoint and the network path."
    http_status = 503
    exit_code = 8
    transient = True


class InternalError(HavenError):
    pass


CATEGORIES: tuple[type[HavenError], ...] = (
    UserError,
    NotFound,
    Conflict,
    Unauthenticated,
    Forbidden,
    TooLarge,
    PreconditionFailed,
    Transient,
    InternalError,
)


def loaded_errors() -> dict[str, type[HavenError]]:
    """The error classes this process has imported so far, by code."""
    found: dict[str, type[HavenError]] = {}
    stack = [HavenError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        found.setdefault(cls.code, cls)
    return found


def all_errors() -> list[type[HavenError]]:
    """Every concrete error class in Haven (imports every haven module to find them), by code."""
    import haven

    for mod in pkgutil.walk_packages(haven.__path__, "haven."):
        if ".migrations" in mod.name or mod.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(mod.name)
        except ImportError:  # optional dependency (libvirt …) missing: its errors are skipped
            continue
    return sorted(loaded_errors().values(), key=lambda c: c.code)


def error_from_payload(payload: dict[str, Any], status: int, *, among_loaded: bool = False) -> HavenError:
    """Rebuild an error from an API answer (the CLI uses this to exit with the right code). ``among_loaded``
    looks only at the classes already imported (finding them all imports every Haven module: seconds for a
    CLI call that only prints the error). A code without a class keeps its code, text and fix, with the
    category of its HTTP status (which decides the exit code)."""
    body = payload.get("error", {}) if isinstance(payload, dict) else {}
    code = body.get("code", "InternalError")
    cls = (loaded_errors() if among_loaded else _by_code()).get(code)
    if cls is None:
        cls = next((c for c in CATEGORIES if c.http_status == status), InternalError)
    err = cls(body.get("message", str(payload)), body.get("recommendation"))
    if err.code != code:
        err.code = code  # type: ignore[misc]  # this instance's code; the class stays the category's
    err.fields = body.get("details", {})
    return err


_CODE_INDEX: dict[str, type[HavenError]] = {}


def _by_code() -> dict[str, type[HavenError]]:
    if not _CODE_INDEX:
        _CODE_INDEX.update({c.code: c for c in all_errors()})
    return _CODE_INDEX
