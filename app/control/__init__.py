"""The control plane's pure core: wire protocol, state fold and snapshots (no I/O)."""

from app.control.protocol import Command, Limits, Rejected, encode, parse
from app.control.state import EMPTY, DashboardState, Figure, FoldConfig, apply, step

__all__ = ["Command", "Limits", "Rejected", "encode", "parse", "EMPTY", "DashboardState",
           "Figure", "FoldConfig", "apply", "step"]
