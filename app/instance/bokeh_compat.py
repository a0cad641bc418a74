"""Every access to a private Bokeh (and Tornado websocket) attribute, in one place.

The instance relies on a few internals that Bokeh and Tornado do not promise to keep:
fixed model ids (app/instance/documents.py, pagestatus.py), the ``gc`` module that
``Document.destroy`` calls (app/instance/teardown.py), the websocket subprotocol token,
a message's binary buffers (app/instance/wire.py builds its frames once), and a
Tornado ``IOStream``'s write queue and socket (app/instance/sessions.py writes the same
bytes to every viewer without a Future each, and cuts one whose queue grows too long).
Nothing else in app/instance touches a ``_name`` of a Bokeh or Tornado object.

:func:`check_version` runs at instance start-up and refuses a Bokeh outside
``SUPPORTED`` with a clear message; :func:`missing` lists the internals that are not
where this module expects them (tests/test_bokeh_compat.py asserts it is empty).
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

import bokeh
import bokeh.document.document as bokeh_document
from bokeh.core.types import ID
from tornado.iostream import BaseIOStream, IOStream, StreamClosedError

SUPPORTED = ((3, 10), (3, 11))  # [lowest, first unsupported) major.minor, as pyproject pins


def _version(text: str) -> tuple[int, int]:
    parts = (text.split(".") + ["0", "0"])[:2]
    return int("".join(c for c in parts[0] if c.isdigit()) or 0), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def check_version(version: str | None = None) -> str:
    """The running Bokeh version; RuntimeError if this module was not written for it."""
    version = version or bokeh.__version__
    low, high = SUPPORTED
    if not low <= _version(version) < high:
        raise RuntimeError(
            f"Bokeh {version} is not supported: the instance uses Bokeh internals checked for "
            f"{low[0]}.{low[1]}.x only (app/instance/bokeh_compat.py). Install the pinned "
            f"version (pip install 'bokeh>={low[0]}.{low[1]},<{high[0]}.{high[1]}') or port "
            "bokeh_compat.py and run tests/test_bokeh_compat.py."
        )
    return version


# --- models and messages -----------------------------------------------------------------
def set_model_id(model: Any, model_id: str) -> None:
    """Give ``model`` a fixed id; before it joins a document (Bokeh has no public way)."""
    model._id = ID(model_id)


def message_buffers(message: Any) -> list:
    """The binary buffers of a prepared protocol message."""
    return message._buffers


def cached_frames(message: Any) -> bytes | None:
    return getattr(message, "_fleet_frames", None)


def cache_frames(message: Any, data: bytes) -> None:
    message._fleet_frames = data


# --- connections -----------------------------------------------------------------------------
def websocket_token(handler: Any) -> str | None:
    """The token a websocket handler received in its subprotocol header."""
    return handler._token


def unsent_bytes(stream: Any) -> int:
    """Bytes a tornado ``IOStream`` holds that the kernel has not taken yet."""
    return len(stream._write_buffer)


def write_now(stream: Any, data: bytes) -> None:
    """Write ``data`` to a tornado ``IOStream`` without waiting for anything.

    When nothing is queued, the bytes go straight to the socket (one ``send``, no
    Future, as tornado's own write would do after its bookkeeping); whatever the kernel
    does not take, and everything written while bytes are queued, goes through
    ``stream.write`` behind the queue, so the order on the wire is the order of calls.
    Raises ``StreamClosedError`` or ``OSError`` when the connection is gone.
    """
    if stream._write_buffer or type(stream) is not IOStream or stream._connecting:
        stream.write(data)
        return
    sock = stream.socket
    if sock is None:
        raise StreamClosedError()
    try:
        n = sock.send(data)
    except (BlockingIOError, InterruptedError):
        n = 0
    if n < len(data):
        stream.write(memoryview(data)[n:])


def replace_document_gc(gc_like: Any) -> None:
    """Process-wide: the ``gc`` that ``Document.destroy`` calls."""
    bokeh_document.gc = gc_like


# --- what the above relies on ---------------------------------------------------------------
def _init_sets(cls: type, *attrs: str) -> list[str]:
    src = inspect.getsource(cls.__init__)  # type: ignore[misc]  # read, never called: the class's own source
    return [f"{cls.__module__}.{cls.__name__}.{a}" for a in attrs if f"self.{a} =" not in src]


def missing() -> list[str]:
    """The internals used above that this Bokeh/Tornado no longer has (empty = all there)."""
    from bokeh.document import Document
    from bokeh.model import Model
    from bokeh.protocol.message import Message
    from bokeh.server.views.ws import WSHandler

    out = _init_sets(WSHandler, "_token")
    out += _init_sets(Message, "_buffers")
    out += _init_sets(BaseIOStream, "_write_buffer", "_connecting")
    out += _init_sets(IOStream, "socket")
    id_getter = Model.__dict__["id"].fget  # the property itself (Model.id is typed as its value)
    if "_id" not in getattr(Model, "__annotations__", {}) or "self._id" not in inspect.getsource(id_getter):
        out.append("bokeh.model.Model._id")
    if not isinstance(getattr(bokeh_document, "gc", None), ModuleType) or "gc.collect()" not in inspect.getsource(
            Document.destroy):
        out.append("bokeh.document.document.gc (collected in Document.destroy)")
    return out
