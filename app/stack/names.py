"""Supervisord process names of the fleet, formatted and parsed in one place.

Instance n (1-based) runs as program ``bokeh_<nn>`` in group ``fleet``: supervisorctl
and the event listener call it ``fleet:bokeh_01``.  The supervisord template
(app/stack/templates/supervisor.conf.j2: ``bokeh_%(process_num)02d``) and
bench/chaos.py still spell the format themselves; they should use these once they
can be edited.  Pure.
"""

from __future__ import annotations

import re

GROUP = "fleet"
INSTANCE_PROGRAM = "bokeh"
_INSTANCE_RE = re.compile(rf"^{INSTANCE_PROGRAM}_(\d+)$")


def instance_name(n: int) -> str:
    """The supervisord process name of instance ``n``: ``bokeh_01``."""
    return f"{INSTANCE_PROGRAM}_{int(n):02d}"


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
