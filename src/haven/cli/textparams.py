"""Text options without pydantic: Typer (0.2x) checks every option's value through a pydantic TypeAdapter,
built on first use, so even ``haven vm list`` imported pydantic for ``--server`` and ``--output`` (about a
third of a CLI call's start). A ``str`` option given text, an ``int`` option given an int (click has parsed it), a
``bool`` flag given a bool, or an option left at ``None`` needs no checking: those get a pass-through, and any other value still goes through Typer's own coercion. Typer versions without this
machinery are left as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["plain_text_options"]

try:
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer.core import _TyperParameter
except ImportError:  # pragma: no cover  (another Typer: nothing to do)
    RuntimeParam = None


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _Text(RuntimeParam):
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if value is None or isinstance(value, self.annotation):
                return value
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)


def plain_text_options(command: Any) -> None:
    """Give the ``str``, ``int`` and ``bool`` options of ``command`` and of its subcommands (all levels) the pass-through."""
    if RuntimeParam is None:  # pragma: no cover
        return
    params = list(getattr(command, "params", ()))
    if getattr(command, "add_help_option", False):  # --help is made (and kept) on first use, outside params
        params.append(command.get_help_option(command.context_class(command)))
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if (isinstance(param, _TyperParameter) and getattr(param, "_runtime_param", False) is None
                and descriptor is not None and descriptor.annotation in (str, int, bool)
                and descriptor.file_annotation is None and descriptor.parameter_info.parser is None):
            param._runtime_param = _Text(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
    for sub in getattr(command, "commands", {}).values():
        plain_text_options(sub)
