"""Log lines of every fleet program: readable text, or one JSON object per line.

``FLEET_LOG_FORMAT=json`` makes each line ``{"time", "level", "logger", "message",
"request_id"?, "exc"?}`` so a log shipper needs no parser.  ``request_id`` is the
``X-Request-ID`` nginx sets on every request it forwards (its ``$request_id``,
overwriting any client-sent copy): the web app and the instances log it, so one
request is followed through nginx, gunicorn and the Bokeh instance.

The request id of the request being handled is kept in a context variable
(:data:`request_id`): set by the web app per request, by an instance for the log
lines of a request; :class:`RequestIdFilter` copies it onto every record.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from typing import Any

#: the request id of the request this thread/task is handling ('' = none)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("fleet_request_id", default="")

#: what an id must look like to be logged: nginx's $request_id is 32 hex digits; a
#: direct caller of gunicorn or an instance may send its own, but never log text
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(rid)s"


def clean_request_id(value: str | None) -> str:
    """``value`` when it is a well-formed request id, else ''."""
    return value if value and REQUEST_ID_RE.fullmatch(value) else ""


class RequestIdFilter(logging.Filter):
    """Give every record ``request_id`` (the context's, unless the call passed one) and
    ``rid`` (`` rid=<id>`` or '' for the text format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None) or request_id.get()
        record.request_id = rid
        record.rid = f" rid={rid}" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message,
    request_id when known, exc (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "rid"):
            RequestIdFilter().filter(record)
        return super().format(record)


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(fmt: str = "text", level: int = logging.INFO, stream: Any = None) -> None:
    """Send every logger's records to ``stream`` (stderr) in format ``fmt`` (text|json)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)


def dict_config(fmt: str, level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for gunicorn (``logconfig_dict``): its error
    and access logs and the app's loggers, all on stdout in format ``fmt``."""
    handler = {"class": "logging.StreamHandler", "formatter": "fleet", "filters": ["rid"],
               "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"rid": {"()": RequestIdFilter}},
        "formatters": {"fleet": {"()": JsonFormatter if fmt == "json" else TextFormatter}},
        "handlers": {"console": handler},
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }
