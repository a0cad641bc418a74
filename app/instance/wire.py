"""Outgoing Bokeh messages as websocket frame bytes, built once for every viewer.

A Bokeh message is 3 websocket frames plus 2 per binary buffer (7 for a two-column
numeric ``stream``), and tornado writes each frame separately: one syscall and a few
futures apiece.  :func:`frames` encodes the whole message as websocket frames once
(server frames are not masked, so the bytes are the same for every connection), and
the fan-out (:mod:`app.instance.sessions`) writes those bytes to each connection with
a single non-blocking write.

Replies to one viewer (ACK, OK, PULL-DOC-REPLY) differ from the shared bytes only in
their header frame (``reqid``): :func:`reply_header` builds it, and the rest of a
cached PULL-DOC-REPLY is reused as is.
"""

from __future__ import annotations

import itertools
import json
import struct
from typing import Any

from app.instance import bokeh_compat

stats = {"serialised": 0, "shared": 0}
_ids = itertools.count(1)


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


def frames_header(message: Any) -> bytes:
    """The first frame of ``message`` (its header, which names its msgid and reqid)."""
    return _frame(0x1, message.header_json.encode())


def frames(message: Any) -> bytes:
    """All of ``message`` as websocket frames, in the order ``Message.send`` writes them."""
    cached = bokeh_compat.cached_frames(message)
    if cached is None:
        parts = [frames_header(message), _frame(0x1, message.metadata_json.encode()),
                 _frame(0x1, message.content_json.encode())]
        for buffer in bokeh_compat.message_buffers(message):
            parts.append(_frame(0x1, json.dumps(buffer.ref).encode()))
            parts.append(_frame(0x2, buffer.to_bytes()))
        cached = b"".join(parts)
        bokeh_compat.cache_frames(message, cached)
    return cached


def msgid() -> str:
    return f"fleet{next(_ids)}"


def reply_header(msgtype: str, reqid: str | None, num_buffers: int = 0) -> bytes:
    """The header frame of a server message (``reqid``: the request it answers;
    ``num_buffers``: binary buffers that follow its content)."""
    header: dict[str, Any] = {"msgid": msgid(), "msgtype": msgtype}
    if reqid is not None:
        header["reqid"] = reqid
    if num_buffers:
        header["num_buffers"] = num_buffers
    return _frame(0x1, json.dumps(header).encode())


EMPTY_JSON = _frame(0x1, b"{}")


def simple(msgtype: str, reqid: str | None = None, content: Any = None) -> bytes:
    """A whole message without buffers: header, ``{}`` metadata, ``content`` (``{}``)."""
    body = EMPTY_JSON if content is None else _frame(0x1, json.dumps(content).encode())
    return reply_header(msgtype, reqid) + EMPTY_JSON + body
