"""Load-generator parts shared by the benchmarks: a cheap Bokeh websocket session, the
timed publisher, process CPU/RSS readings and a logged-in web client.

The session client is a raw asyncio protocol (handshake and frame parsing by hand,
JSON decoded only for PATCH-DOC contents) so that the load generator costs far less
CPU than the servers it measures: both share the bench machine's cores, real
browsers would not.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import time
import urllib.parse
from urllib.parse import urlsplit

import numpy as np

from app.control import encode


def pct(values, q) -> float:
    """Percentile ``q`` of seconds, in milliseconds (nan when empty)."""
    return float(np.percentile(values, q)) * 1000 if len(values) else float("nan")


def _seq_values(content: dict, buffers: dict[str, bytes]) -> list[int]:
    """The ``seq`` values streamed by a PATCH-DOC content (JSON lists or binary buffers)."""
    out: list[int] = []
    for ev in content.get("events", []):
        if ev.get("kind") != "ColumnsStreamed":
            continue
        data = ev["data"]
        entries = data["entries"] if isinstance(data, dict) and data.get("type") == "map" else list(data.items())
        for key, val in entries:
            if key != "seq":
                continue
            if isinstance(val, list):
                out += [int(v) for v in val]
            elif isinstance(val, dict) and val.get("type") == "ndarray":
                arr = val["array"]
                if isinstance(arr, dict) and arr.get("type") == "bytes":
                    raw = arr["data"]
                    raw = buffers[raw["id"]] if isinstance(raw, dict) else base64.b64decode(raw)
                    out += np.unique(np.frombuffer(raw, dtype=val["dtype"])).tolist()
                elif isinstance(arr, list):
                    out += [int(v) for v in arr]
    return out


_NUM_BUFFERS = re.compile(rb'"num_buffers":\s*(\d+)')


def receipts(raw: list) -> tuple[list[int], list[float]]:
    """(seqs, receipt times) of the streamed rows in what clients kept in ``raw``: whole
    PATCH-DOC messages (receipt time, frames) and, from clients that were current,
    undecoded socket reads (receipt time, client, bytes), parsed here into messages
    timed by the read that completed them.  Each seq counts once per message."""
    seqs: list[int] = []
    times: list[float] = []
    while raw:
        items = raw[:]
        del raw[:len(items)]
        for item in items:
            if len(item) == 3:  # a read kept whole: its messages go back into raw, decoded next round
                item[1].feed(item[0], item[2])
                continue
            now, frames = item
            buffers = {json.loads(frames[i])["id"]: frames[i + 1] for i in range(3, len(frames), 2)}
            for s in set(_seq_values(json.loads(frames[2]), buffers)):
                seqs.append(s)
                times.append(now)
    return seqs, times


def settle(raw: list, sent: dict[int, float], lat: list[float]) -> int:
    """Decode what clients kept in ``raw`` into latencies; returns how many.  Decoding
    after the fact keeps the parsing and JSON work of one client from delaying the
    receipt times of the next ones (10,000 clients share one process)."""
    seqs, times = receipts(raw)
    n = len(lat)
    for s, now in zip(seqs, times, strict=True):
        t0 = sent.get(s)
        if t0 is not None:
            lat.append(now - t0)
    return len(lat) - n


class LightClient(asyncio.Protocol):
    """A Bokeh session that only records when each streamed ``seq`` arrives.

    ``headers`` go into the upgrade request (e.g. the ``Cookie`` nginx hashes on).
    ``lat`` collects seconds from ``sent[seq]`` to receipt; with ``raw`` given, nothing
    is decoded live: once current, each socket read is only kept there with its time
    (``time.perf_counter()``, CLOCK_MONOTONIC on Linux), for :func:`receipts` to parse
    later; a message's receipt time is that of the read that completed it.  ``closed``
    is set when the server or the network ends the connection.

    The server sends the document, the updates made since its cached copy, then OK to
    the pull: those replayed updates are not deliveries and are not timed (``marker``
    False: a server before issue 13, which sends no OK, is current from its reply on).
    """

    def __init__(self, url: str, token: str, sent: dict[int, float], lat: list[float],
                 headers: dict[str, str] | None = None, raw: list | None = None, marker: bool = True) -> None:
        self.url, self.token, self.sent, self.lat = url, token, sent, lat
        self.raw = raw
        self.marker = marker
        self.current = False  # read past the replayed updates: PATCH-DOCs from now on are deliveries
        self.need = 3
        self.headers = headers or {}
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.buf = bytearray()
        self.handshaken = False
        self.frames: list[bytes] = []  # text/binary payloads of the message being assembled
        self.transport = None
        self.error: str | None = None
        self.deferred = False  # current and keeping raw reads: data_received only stores them

    async def connect(self, timeout: float = 300) -> None:
        u = urlsplit(self.url)
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_connection(lambda: self, u.hostname, u.port)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        self.transport.write((f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                              f"Sec-WebSocket-Protocol: bokeh, {self.token}\r\nOrigin: http://{u.netloc}\r\n"
                              f"{extra}\r\n").encode())
        done = asyncio.ensure_future(self.closed.wait())
        ready = asyncio.ensure_future(self.ready.wait())
        await asyncio.wait([done, ready], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        ready.cancel()
        if not self.ready.is_set():
            self.close()
            raise ConnectionError(self.error or f"no document from {self.url} within {timeout}s")

    def connection_lost(self, exc) -> None:
        self.closed.set()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.deferred:
            self.raw.append((now, self, data))
            return
        self.feed(now, data)
        if self.current and self.raw is not None:
            self.deferred = True

    def feed(self, now: float, data: bytes) -> None:
        """Parse ``data`` (read at ``now``) on from the bytes left by the last read."""
        self.buf += data
        if not self.handshaken:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.error = self.buf[:200].decode("latin-1").splitlines()[0]
                self.transport.close()
                return
            del self.buf[: end + 4]
            self.handshaken = True
        buf, pos = self.buf, 0
        while len(buf) - pos >= 2:
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + n:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            if opcode in (1, 2):
                self.frame(payload, now)
            elif opcode == 8:
                self.transport.close()
        del buf[:pos]

    def frame(self, payload: bytes, now: float) -> None:
        self.frames.append(payload)
        if len(self.frames) == 1:  # the header: how many frames this message has
            m = _NUM_BUFFERS.search(payload)
            self.need = 3 + 2 * int(m.group(1)) if m else 3
        if len(self.frames) < self.need:
            return
        frames, self.frames = self.frames, []
        head = frames[0]
        if b'"PATCH-DOC"' in head:
            if not self.current:
                return  # replayed with the document: not a delivery
            if self.raw is not None:
                if b"ColumnsStreamed" in frames[2]:
                    self.raw.append((now, frames))
                return
            buffers = {json.loads(frames[i])["id"]: frames[i + 1] for i in range(3, len(frames), 2)}
            for s in set(_seq_values(json.loads(frames[2]), buffers)):
                t0 = self.sent.get(s)
                if t0 is not None:
                    self.lat.append(now - t0)
            return
        kind = json.loads(head)["msgtype"]
        if kind == "ACK":
            self.send_text(json.dumps({"msgid": "pull1", "msgtype": "PULL-DOC-REQ"}), "{}", "{}")
        elif kind == "PULL-DOC-REPLY":
            self.current = not self.marker
            self.ready.set()
        elif kind == "OK" and b'"pull1"' in head:
            self.current = True

    def send_text(self, *texts: str) -> None:
        out = bytearray()
        for text in texts:  # client frames are masked (RFC 6455); a zero mask keeps it cheap
            data = text.encode()
            out += struct.pack("!BB", 0x81, 0x80 | len(data)) if len(data) < 126 else \
                struct.pack("!BBH", 0x81, 0x80 | 126, len(data))
            out += b"\x00\x00\x00\x00" + data
        self.transport.write(bytes(out))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def stream_fields(seq: int, rows: int) -> dict:
    """A ``stream`` command of ``rows`` rows to figure ``p``, every row tagged ``seq``."""
    data = {"seq": np.full(rows, seq, dtype=np.int64), "y": np.random.random(rows)}
    return encode("stream", name="p", data=data, ts=f"{time.time() * 1000:.3f}")


async def publish_for(client, key: str, rate: float, rows: int, seconds: float, sent: dict[int, float],
                      start_seq: int, drain: float = 1.0) -> int:
    """XADD ``rate`` stream commands per second for ``seconds``; ``sent[seq]`` = time
    just before each XADD.  Returns the last seq.  Waits ``drain`` s at the end."""
    period = 1.0 / rate
    t_next = time.perf_counter()
    seq = start_seq
    for _ in range(max(1, int(rate * seconds))):
        seq += 1
        fields = stream_fields(seq, rows)
        sent[seq] = time.perf_counter()
        await client.xadd(key, fields)
        t_next += period
        await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
    await asyncio.sleep(drain)
    return seq


# --- processes ---------------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct child pids (nginx workers of the master, say)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except OSError:
                pass
    return out


# --- the web app, as a browser uses it ------------------------------------------------
class WebUser:
    """A user logged in through Flask's real form (CSRF and all), who then gets a fresh
    signed Bokeh token per page view, exactly the way a browser does."""

    TOKEN_RE = re.compile(r"bokeh-token=([A-Za-z0-9_.%-]+)")

    def __init__(self, base_url: str) -> None:
        from tornado.httpclient import AsyncHTTPClient

        self.base = base_url.rstrip("/")
        self.http = AsyncHTTPClient(max_clients=8)
        self.cookies: dict[str, str] = {}

    def _cookie_header(self, extra: dict[str, str] | None = None) -> str:
        return "; ".join(f"{k}={v}" for k, v in {**self.cookies, **(extra or {})}.items())

    def _keep(self, resp) -> None:
        for c in resp.headers.get_list("Set-Cookie"):
            name, _, rest = c.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]

    async def get(self, path: str, route: str | None = None):
        extra = {"fleet_route": route} if route else None
        r = await self.http.fetch(self.base + path, headers={"Cookie": self._cookie_header(extra)},
                                  follow_redirects=False, raise_error=False)
        return r

    async def login(self, user: str, password: str) -> None:
        r = await self.get("/auth/login")
        self._keep(r)
        m = re.search(rb'name="csrf_token"[^>]*value="([^"]+)"', r.body)
        if not m:
            raise RuntimeError(f"no CSRF token on the login page ({r.code})")
        body = urllib.parse.urlencode({"username": user, "password": password, "csrf_token": m.group(1).decode()})
        r = await self.http.fetch(self.base + "/auth/login", method="POST", body=body, follow_redirects=False,
                                  raise_error=False, headers={"Cookie": self._cookie_header(),
                                                              "Content-Type": "application/x-www-form-urlencoded",
                                                              "Referer": self.base + "/auth/login"})
        if r.code != 302:
            raise RuntimeError(f"login failed: HTTP {r.code}")
        self._keep(r)

    async def token(self, dashboard: str, route: str) -> str:
        """GET /d/<dashboard> with this routing cookie; the signed token in its loader."""
        r = await self.get(f"/d/{dashboard}", route)
        m = self.TOKEN_RE.search(r.body.decode())
        if r.code != 200 or not m:
            raise RuntimeError(f"/d/{dashboard}: HTTP {r.code}, no token")
        return urllib.parse.unquote(m.group(1))

    def ws_headers(self, route: str) -> dict[str, str]:
        return {"Cookie": self._cookie_header({"fleet_route": route})}

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/bokeh/dashboard/ws"


# --- the floor: a pre-built frame to N plain tornado websockets ----------------------------
FLOOR_SERVER = r"""
import asyncio, json, sys, time
import tornado.web, tornado.websocket
conns = []
class Sink(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin): return True
    def open(self):
        self.set_nodelay(True); conns.append(self)
    def on_close(self):
        if self in conns: conns.remove(self)
class Blast(tornado.web.RequestHandler):
    async def get(self):
        count, size = int(self.get_argument("count")), int(self.get_argument("size"))
        rate = float(self.get_argument("rate"))
        frame = bytes([0x82, 127]) + size.to_bytes(8, "big") + b"x" * size
        writes, t_next, c0 = 0, time.perf_counter(), time.process_time()
        for _ in range(count):
            for c in conns:  # the floor of issue 13: IOStream.write of one pre-built frame
                c.ws_connection.stream.write(frame)
            writes += len(conns)
            t_next += 1.0 / rate
            await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
        await asyncio.sleep(0.2)  # the writes' own callbacks run after the loop above: count them
        cpu = time.process_time() - c0
        self.write(json.dumps({"writes": writes, "cpu_s": cpu, "connections": len(conns)}))
async def main():
    tornado.web.Application([(r"/ws", Sink), (r"/blast", Blast)]).listen(int(sys.argv[1]), "127.0.0.1")
    await asyncio.Event().wait()
asyncio.run(main())
"""


class SinkClient(asyncio.Protocol):
    """A websocket client that reads and discards (for the floor server)."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.received = 0
        self.transport = None

    async def connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_connection(lambda: self, host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                              "\r\n").encode())
        await asyncio.wait_for(self.ready.wait(), 30)

    def data_received(self, data: bytes) -> None:
        if not self.ready.is_set():
            self.ready.set()
            return
        self.received += len(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def floor(n: int, size: int, rate: float, seconds: float) -> dict:
    """CPU per connection-write of one pre-built ``size``-byte frame to ``n`` tornado
    websockets at ``rate`` per second (a server process of its own, like an instance)."""
    import subprocess
    import sys

    from tornado.httpclient import AsyncHTTPClient

    from fleet_testing.ports import free_port, wait_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(port)])
    clients = []
    try:
        wait_port(port, 20)
        for i in range(0, n, 100):
            batch = [SinkClient() for _ in range(min(100, n - i))]
            await asyncio.gather(*(c.connect("127.0.0.1", port) for c in batch))
            clients += batch
        await asyncio.sleep(0.5)
        count = max(1, int(rate * seconds))
        r = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/blast?count={count}&size={size}&rate={rate}",
                                          request_timeout=seconds * 4 + 60)
        out = json.loads(r.body)
        out["us_per_write"] = out["cpu_s"] / max(1, out["writes"]) * 1e6
        return out
    finally:
        for c in clients:
            c.close()
        proc.terminate()
        proc.wait(5)
