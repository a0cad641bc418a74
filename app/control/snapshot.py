"""State <-> snapshot serialisation, a digest for comparing states, and a readable view.

A snapshot is JSON: ``{"v": 1, "state": ..., "last_id": "1700000000000-0",
"epoch": "..."}``.  Numeric columns are stored as base64 float64 so that a state
survives the round trip bit for bit (NaN included); :func:`view` gives the plain
JSON a person or an HTTP client reads.  Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from app.control import columns as cols
from app.control.state import DashboardState, Figure

FORMAT = 1


@dataclass(frozen=True)
class Snapshot:
    state: DashboardState
    last_id: str = "0-0"
    epoch: str = ""


def _fig_to_dict(fig: Figure, data: dict) -> dict[str, Any]:
    return {
        "name": fig.name, "kind": fig.kind, "title": fig.title, "x_label": fig.x_label,
        "y_label": fig.y_label, "x_axis_type": fig.x_axis_type, "x": fig.x, "y": list(fig.y),
        "rollover": fig.rollover, "tooltips": [list(t) for t in fig.tooltips],
        "model": fig.model, "version": fig.version, "data": data,
        **({"panel": dict(fig.panel)} if fig.panel else {}),  # absent: older digests stay the same
    }


def dump_state(state: DashboardState) -> dict[str, Any]:
    return {
        "title": state.title,
        "figures": [_fig_to_dict(f, {n: cols.dump(a) for n, a in f.data.items()})
                    for f in state.figures.values()],
        "layout_mode": state.layout_mode,
        "layout": [list(g) for g in state.layout],
        "seen": list(state.seen),
        "applied": state.applied,
    }


def load_state(obj: dict[str, Any]) -> DashboardState:
    figs = {}
    for f in obj["figures"]:
        figs[f["name"]] = Figure(
            name=f["name"], kind=f["kind"], title=f["title"], x_label=f["x_label"],
            y_label=f["y_label"], x_axis_type=f["x_axis_type"], x=f["x"], y=tuple(f["y"]),
            data=MappingProxyType({n: cols.load(a) for n, a in f["data"].items()}),
            rollover=f["rollover"], tooltips=tuple(tuple(t) for t in f["tooltips"]),
            model=f["model"], version=f["version"], panel=MappingProxyType(dict(f.get("panel") or {})),
        )
    return DashboardState(
        title=obj["title"], figures=figs, layout_mode=obj["layout_mode"],
        layout=tuple(tuple(g) for g in obj["layout"]), seen=tuple(obj["seen"]),
        applied=obj["applied"],
    )


def dumps(snap: Snapshot) -> str:
    return json.dumps({"v": FORMAT, "state": dump_state(snap.state), "last_id": snap.last_id,
                       "epoch": snap.epoch}, separators=(",", ":"))


def loads(text: str | bytes) -> Snapshot:
    obj = json.loads(text)
    if obj.get("v") != FORMAT:
        raise ValueError(f"unsupported snapshot format {obj.get('v')!r}")
    return Snapshot(load_state(obj["state"]), obj["last_id"], obj["epoch"])


def digest(state: DashboardState) -> str:
    """SHA-256 of the canonical serialisation: equal digests mean equal states."""
    text = json.dumps(dump_state(state), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def view(state: DashboardState) -> dict[str, Any]:
    """Plain JSON for people and APIs: columns as lists, NaN as null."""
    out = dump_state(state)
    out["figures"] = [_fig_to_dict(f, {n: cols.to_jsonable(a) for n, a in f.data.items()})
                      for f in state.figures.values()]
    out["digest"] = digest(state)
    del out["seen"]
    return out
