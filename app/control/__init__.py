"""The control plane's pure core: wire protocol, state fold and snapshots (no I/O).

Importing the package registers the built-in ops (:mod:`app.control.commands`; the
registry is :mod:`app.control.ops`), whichever of its modules is imported first.
"""

from app.control import commands  # noqa: F401  (registers the built-in ops)
from app.control.protocol import Command, Limits, Rejected, encode, parse
from app.control.state import EMPTY, DashboardState, Figure, FoldConfig, apply, step

__all__ = ["Command", "Limits", "Rejected", "encode", "parse", "EMPTY", "DashboardState",
           "Figure", "FoldConfig", "apply", "step"]
