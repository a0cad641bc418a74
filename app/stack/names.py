"""Supervisord process names of the fleet, formatted and parsed in one place.

Instance n (1-based) runs as program ``bokeh_<nn>`` in group ``fleet``: supervisorctl
and the event listener call it ``fleet:bokeh_01``; sentinel n (FLEET_REDIS_MODE=sentinel)
is ``sentinel_<n>``.  The supervisord template spells them as supervisord's own
expansions (``bokeh_%(process_num)02d``, ``sentinel_%(process_num)d``): one section
with ``numprocs`` names them all, so it cannot call these.
tests/test_stack_render.py and tests/test_stack_names.py parse the rendered config
with supervisord's parser and check its names against these.  Pure.
"""

from __future__ import annotations

import re

GROUP = "fleet"
INSTANCE_PROGRAM = "bokeh"
SENTINEL_PROGRAM = "sentinel"
_INSTANCE_RE = re.compile(rf"^{INSTANCE_PROGRAM}_(\d+)$")


def instance_name(n: int) -> str:
    """The supervisord process name of instance ``n``: ``bokeh_01``."""
    return f"{INSTANCE_PROGRAM}_{int(n):02d}"


def sentinel_name(n: int) -> str:
    """The supervisord process name of local sentinel ``n``: ``sentinel_1``."""
    return f"{SENTINEL_PROGRAM}_{int(n)}"


def instance_process(n: int, group: str = GROUP) -> str:
    """The full name supervisorctl takes: ``fleet:bokeh_01``."""
    return process_key(group, instance_name(n))


def instance_number(name: str) -> int | None:
    """``n`` of an instance's process name (``bokeh_01`` -> 1), None for other programs."""
    m = _INSTANCE_RE.match(name)
    return int(m.group(1)) if m else None


def process_key(group: str, name: str) -> str:
    """``group:name`` as supervisorctl names a process (just ``name`` outside a group)."""
    return f"{group}:{name}" if group and group != name else name
