"""Bokeh fleet: live Bokeh dashboards on several instances, driven by Redis streams."""
