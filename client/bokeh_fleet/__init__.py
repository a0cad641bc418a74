"""Bokeh fleet controller client: publish data to live dashboards over Redis or HTTP.

    from bokeh_fleet import Controller, Rejected
    ctl = Controller("redis://ctl-sales:PASSWORD@host:6390/0", strict=True)
    ctl.replace("sales", "revenue", data=df)      # pandas, polars, pyarrow, dicts of lists

See docs/client.md (API reference) and docs/protocol.md (the wire format).
"""

from __future__ import annotations

from bokeh_fleet.aio import AsyncController
from bokeh_fleet.controller import Controller, FleetError, NotApplied
from bokeh_fleet.wire import VERSION, Rejected

__all__ = ["AsyncController", "Controller", "FleetError", "NotApplied", "Rejected", "VERSION"]
__version__ = "0.1.0"
