"""Every access to a private Bokeh (and Tornado websocket) attribute, in one place.

The instance relies on a few internals that Bokeh does not promise to keep: the
document lock and pending-write list of a ``ServerSession`` (app/instance/wire.py
sends patches on the loop without the worker-thread hop), the session contexts of
an application (a token may not re-open another dashboard's session), fixed model ids
(app/instance/documents.py, pagestatus.py: one serialised message for all sessions),
the ``gc`` module that ``Document.destroy`` calls (app/instance/teardown.py), the
websocket subprotocol token and a message's binary buffers.  Nothing else in
app/instance touches a ``_name`` of a Bokeh object.

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
from bokeh.server.session import ServerSession

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


def tag_event(event: Any, key: tuple) -> None:
    """Mark a change event whose serialised message may be shared under ``key``."""
    event._fleet_key = key


def event_tag(event: Any) -> tuple | None:
    return getattr(event, "_fleet_key", None)


def cached_frames(message: Any) -> bytes | None:
    return getattr(message, "_fleet_frames", None)


def cache_frames(message: Any, data: bytes) -> None:
    message._fleet_frames = data


# --- sessions ------------------------------------------------------------------------------
def session_document(session_context: Any) -> Any:
    """The document of a session context (``on_session_created`` has no public one)."""
    return session_context._document


def context_session(session_context: Any) -> ServerSession | None:
    """The ``ServerSession`` behind a session context (None before it exists)."""
    return getattr(session_context, "_session", None) if session_context is not None else None


def session_contexts(application_context: Any) -> dict:
    """Session id -> session context of an application."""
    return application_context._session_contexts


def websocket_token(handler: Any) -> str | None:
    """The token a websocket handler received in its subprotocol header."""
    return handler._token


def websocket_compressed(connection: Any) -> bool:
    """Whether a Tornado websocket connection compresses messages (permessage-deflate)."""
    return bool(getattr(connection, "_compressor", None))


def pending_writes(session: Any) -> list | None:
    """The patches ``session`` queued under its document lock (None outside the lock)."""
    return getattr(session, "_pending_writes", None)


async def locked_on_loop(session: ServerSession, fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` under the session's document lock, on the loop thread.

    ``ServerSession.with_document_locked`` hops to a worker thread first (Bokeh 3.10
    offloads every locked callback), one more thread round trip per session per
    update.  This mirrors its bookkeeping (expiry block, lock, pending writes sent
    before the lock is released) without the hop.
    """
    if session.destroyed:
        return
    session.block_expiration()
    try:
        async with session._lock:
            if session._pending_writes is not None:
                raise RuntimeError("document lock invariant violated: pending writes outside the lock")
            session._pending_writes = []
            try:
                fn(*args)
            finally:
                pending, session._pending_writes = session._pending_writes, None
            if pending:
                await session._send_pending_patches(pending)
    finally:
        session.unblock_expiration()


def replace_send_pending_patches(fn: Any) -> None:
    """Process-wide: ``ServerSession`` sends its queued patches with ``fn(self, pending)``."""
    ServerSession._send_pending_patches = fn  # type: ignore[method-assign]  # the patch this module exists for


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
    from bokeh.server.contexts import ApplicationContext, BokehSessionContext
    from bokeh.server.views.ws import WSHandler
    from tornado.websocket import WebSocketProtocol13

    out = _init_sets(ServerSession, "_lock", "_pending_writes")
    out += _init_sets(BokehSessionContext, "_document", "_session")
    out += _init_sets(ApplicationContext, "_session_contexts")
    out += _init_sets(WSHandler, "_token")
    out += _init_sets(Message, "_buffers")
    if "self._compressor =" not in inspect.getsource(WebSocketProtocol13):  # set when deflate is negotiated
        out.append("tornado.websocket.WebSocketProtocol13._compressor")
    if not inspect.iscoroutinefunction(getattr(ServerSession, "_send_pending_patches", None)):
        out.append("bokeh.server.session.ServerSession._send_pending_patches")
    id_getter = Model.__dict__["id"].fget  # the property itself (Model.id is typed as its value)
    if "_id" not in getattr(Model, "__annotations__", {}) or "self._id" not in inspect.getsource(id_getter):
        out.append("bokeh.model.Model._id")
    if not isinstance(getattr(bokeh_document, "gc", None), ModuleType) or "gc.collect()" not in inspect.getsource(
            Document.destroy):
        out.append("bokeh.document.document.gc (collected in Document.destroy)")
    return out
