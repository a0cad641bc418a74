"""The op registry: op name -> :class:`OpSpec`, the one table every layer dispatches on.

Parsing (:func:`app.control.protocol.parse`), encoding (:func:`app.control.protocol.encode`,
which checks with the parser), folding (:func:`app.control.state.step`), applying to a
Bokeh document (``app.instance.documents.DashboardDoc.apply``, once per command on
each instance's shared document of the dashboard) all look the op up here; none of them
switches on op names.  Adding an op is one :func:`register` call with its typed command
and its behaviour (docs/architecture.md, "How to add an op"); the built-in ops are
registered by :mod:`app.control.commands`.

The instance layer owns document code, so :func:`attach` fills in an op's document
hook from there (this module imports neither Bokeh nor the instance).  Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bokeh_fleet.wire import Rejected


@dataclass(frozen=True, eq=False, kw_only=True)
class Command:
    """A validated command; each op has its own subclass with its own typed fields.

    ``op`` is the class's op name.  ``name`` is the figure (``None`` where the op has
    none or it was left out), ``cmd_id`` the idempotency ``id``, ``ts`` the publish time.
    """

    op: ClassVar[str] = ""
    name: str | None = None
    cmd_id: str | None = None
    ts: float | None = None

    @property
    def rows(self) -> int:
        """Number of data rows carried (0 when none)."""
        data = getattr(self, "data", None)
        if not data:
            return 0
        return len(next(iter(data.values())))


#: ``parse(fields, limits) -> kwargs`` of the op's own fields (the common ones are read for it)
Parser = Callable[[Mapping[str, bytes], Any], dict[str, Any]]
#: ``fold(state, cmd, cfg) -> (state changes, resolved command)``
Folder = Callable[[Any, Any, Any], tuple[dict[str, Any], Any]]
#: ``apply(dashboard_doc, resolved_cmd, state_after)``
Applier = Callable[[Any, Any, Any], None]


@dataclass(frozen=True)
class OpSpec:
    """Everything the layers need to know about one op.

    ``fields``/``required``: wire field names besides ``op``, ``id``, ``ts``.
    ``apply``: the document hook (see :func:`attach`).  Every command is applied once,
    as it arrives, to each instance's one shared document of its dashboard, so there
    is nothing to coalesce (app/instance/sessions.py).
    """

    name: str
    command: type[Command]
    fields: frozenset[str]
    required: frozenset[str]
    parse: Parser
    fold: Folder
    apply: Applier | None = None


REGISTRY: dict[str, OpSpec] = {}
#: the registered ops' fields, in the shape of ``bokeh_fleet.wire.OP_FIELDS``/``REQUIRED``
#: (kept by :func:`register`, read by the parser's field check)
OP_FIELDS: dict[str, set[str]] = {}
REQUIRED: dict[str, set[str]] = {}


def register(spec: OpSpec) -> OpSpec:
    """Add (or replace) an op.  Its command class must carry the same ``op`` name."""
    if spec.command.op != spec.name:
        raise ValueError(f"command class {spec.command.__name__} has op {spec.command.op!r}, not {spec.name!r}")
    if not spec.required <= spec.fields:
        raise ValueError(f"op {spec.name}: required fields {sorted(spec.required - spec.fields)} are not fields")
    REGISTRY[spec.name] = spec
    OP_FIELDS[spec.name] = set(spec.fields)
    REQUIRED[spec.name] = set(spec.required)
    return spec


def unregister(name: str) -> None:
    """Remove an op (tests register toy ops and take them away again)."""
    REGISTRY.pop(name, None)
    OP_FIELDS.pop(name, None)
    REQUIRED.pop(name, None)


def attach(name: str, apply: Applier) -> None:
    """Set an op's document hook (called by the instance layer, which owns documents)."""
    REGISTRY[name] = dataclasses.replace(get(name), apply=apply)


def get(name: str) -> OpSpec:
    """The spec of op ``name``; :class:`Rejected` if there is none."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise Rejected(f"unknown op {str(name)[:40]!r}; expected one of {', '.join(REGISTRY)}", "op")
    return spec
