"""The Bokeh instance process: documents built from dashboard state, fan-out of
commands to live sessions, /healthz and /metrics (see docs/instance.md)."""
