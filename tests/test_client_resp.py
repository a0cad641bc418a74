"""A controller that is not this project's Python: a few lines of RESP over a socket,
written from docs/protocol.md alone (no import from this repository in the publisher).

It registers a dashboard, publishes JSON and Arrow data, learns from
``fleet:{d}:applied`` / ``fleet:{d}:rejected`` whether each entry was applied, and the
test then checks the readers' state with the server's own fold.
"""

from __future__ import annotations

import socket
import time

import pyarrow as pa


class Resp:
    """Minimal RESP2 client: commands as arrays of bulk strings, replies parsed."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = self.sock.makefile("rb")

    def call(self, *args: str | bytes):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.buf.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.buf.read(n + 2)[:-2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def close(self) -> None:
        self.sock.close()


def ids(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)


def outcome(r: Resp, dashboard: str, entry_id: bytes, timeout: float = 10.0) -> str:
    """'applied', or the readers' reason (docs/protocol.md, "Did it apply?")."""
    deadline = time.monotonic() + timeout
    while True:
        last = r.call("GET", f"fleet:{{{dashboard}}}:applied")
        if last is not None and ids(last) >= ids(entry_id):
            rej = r.call("XRANGE", f"fleet:{{{dashboard}}}:rejected", entry_id, entry_id)
            if not rej:
                return "applied"
            fields = rej[0][1]
            return dict(zip(fields[::2], fields[1::2], strict=True))[b"_reason"].decode()
        assert time.monotonic() < deadline, "not folded in time"
        time.sleep(0.01)


def arrow_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def test_raw_resp_controller(redis_server, start_instance):
    start_instance()
    r = Resp(redis_server.port)
    try:
        assert r.call("HSETNX", "fleet:dashboards", "raw", '{"title":"Raw"}') == 1
        r.call("XADD", "fleet:registry", "*", "event", "created", "dashboard", "raw")
        key = "fleet:{raw}:commands"
        e1 = r.call("XADD", key, "*", "op", "replace", "name", "temps", "kind", "line",
                    "x_axis_type", "datetime", "x", "t",
                    "data", '{"t":["2026-11-22T09:00:00","2026-11-22T09:00:00+02:00"],"c":[20.5,null]}')
        assert outcome(r, "raw", e1) == "applied"
        table = pa.table({"t": pa.array([1795338060000], pa.int64()).cast(pa.timestamp("ms")),
                          "c": pa.array([21.0])})
        e2 = r.call("XADD", key, "*", "op", "stream", "name", "temps", "arrow", arrow_ipc(table))
        assert outcome(r, "raw", e2) == "applied"
        e3 = r.call("XADD", key, "*", "op", "stream", "name", "tmeps", "data", '{"t":[1],"c":[1]}')
        assert "no figure 'tmeps'" in outcome(r, "raw", e3)
    finally:
        r.close()

    # the check (not the publisher) uses the server's own fold
    from app.bus.keys import Keys
    from app.bus.store import read_state
    from app.settings import Settings

    state, _ = read_state(redis_server.client(), Keys(), "raw", Settings(redis_url=redis_server.url))
    fig = state.figures["temps"]
    assert fig.x_axis_type == "datetime"
    assert fig.data["t"].tolist() == [1795338000000.0, 1795330800000.0, 1795338060000.0]
    assert fig.data["c"].tolist()[0] == 20.5 and fig.data["c"].tolist()[2] == 21.0
