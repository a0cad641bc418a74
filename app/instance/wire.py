"""Outgoing Bokeh messages: serialised on the loop, once per command, one write each.

Bokeh 3.10's ``ServerSession._send_pending_patches`` serialises every session's
patch in a thread pool.  For the small patches a ``stream`` makes, the two thread
hops (submit, then ``call_soon_threadsafe`` back) cost more than the serialisation
itself, and under the GIL the pool runs no faster than the loop.  Profiled at 100
sessions x 20 commands/s they were about a fifth of the instance's CPU.

With many sessions showing the same dashboard, the same command produces the same
message for every session, provided the changed model has the same id everywhere:
:mod:`app.instance.documents` gives data sources ids derived from (dashboard,
figure, version, reset generation), and the fan-out tags each change event with the
stream entries it carries (:func:`tag_pending`).  Tagged events are serialised once
and the prepared message is written to every session's connection.

A Bokeh message is 3 websocket frames plus 2 per binary buffer (7 for a two-column
numeric ``stream``), and tornado writes each frame separately: one syscall and a
few futures apiece, which was the largest remaining per-session cost.
:func:`frames` encodes the whole message as websocket frames once (server frames
are not masked, so the bytes are the same for every connection) and the
websocket handler writes them with a single ``stream.write``.

:func:`install` replaces the one method, process-wide, in the instance process only.
The Bokeh internals all this touches are reached through :mod:`app.instance.bokeh_compat`.
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from typing import Any

from bokeh.io.doc import patch_curdoc
from bokeh.server.session import ServerSession

from app.instance import bokeh_compat

CACHE_SIZE = 512
_cache: OrderedDict[tuple, Any] = OrderedDict()
stats = {"serialised": 0, "shared": 0}


def _message_for(patch: Any) -> Any:
    key = bokeh_compat.event_tag(patch.event)
    if key is not None:
        message = _cache.get(key)
        if message is not None:
            _cache.move_to_end(key)
            stats["shared"] += 1
            return message
    with patch_curdoc(patch.event.document):
        message = patch.protocol.create("PATCH-DOC", [patch.event])
        message.prepare()
    stats["serialised"] += 1
    if key is not None:
        _cache[key] = message
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return message


async def _send_pending_patches(self: ServerSession, pending: list) -> None:
    for patch in pending:
        message = _message_for(patch)
        for connection in patch.connections:
            await connection.send_message(message)


def tag_pending(session: Any, start: int, key: tuple) -> None:
    """Tag the change events queued by ``session`` since index ``start``.

    Only events whose content is fully determined by ``key`` plus the model id may be
    tagged: ``ColumnsStreamed``/``ColumnsPatched`` of a shared-id data source.
    """
    pending = bokeh_compat.pending_writes(session)
    if not pending:
        return
    for i, patch in enumerate(pending[start:]):
        event = patch.event
        kind = type(event).__name__
        if kind in ("ColumnsStreamedEvent", "ColumnsPatchedEvent"):
            bokeh_compat.tag_event(event, (kind, event.model.id, i, *key))


def pending_count(session: Any) -> int:
    pending = bokeh_compat.pending_writes(session)
    return len(pending) if pending else 0


def _frame(opcode: int, data: bytes) -> bytes:
    """One final, unmasked (server-to-client) websocket frame (RFC 6455 5.2)."""
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + data


def frames(message: Any) -> bytes:
    """All of ``message`` as websocket frames, in the order ``Message.send`` writes them."""
    cached = bokeh_compat.cached_frames(message)
    if cached is None:
        parts = [_frame(0x1, message.header_json.encode()), _frame(0x1, message.metadata_json.encode()),
                 _frame(0x1, message.content_json.encode())]
        for buffer in bokeh_compat.message_buffers(message):
            parts.append(_frame(0x1, json.dumps(buffer.ref).encode()))
            parts.append(_frame(0x2, buffer.to_bytes()))
        cached = b"".join(parts)
        bokeh_compat.cache_frames(message, cached)
    return cached


async def locked_on_loop(session: ServerSession, fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` under the session's document lock, on the loop thread
    (see :func:`app.instance.bokeh_compat.locked_on_loop`)."""
    await bokeh_compat.locked_on_loop(session, fn, *args)


def install() -> None:
    bokeh_compat.replace_send_pending_patches(_send_pending_patches)
