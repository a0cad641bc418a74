"""Headers that carry identity reach the app only from whom they should (issue 10,
items 2 and 8; issue 11, item 6).

A real front proxy (a tiny reverse proxy started here, like oauth2-proxy: it logs
its users in and names them in ``X-Remote-User``) sits in front of the stack's nginx
and connects from 127.0.0.9, the stack's ``FLEET_SSO_PROXIES``.  The header the
proxy sets is accepted; the same header from a client, straight to nginx in any
spelling or through the proxy, is not.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fleet_testing.bokeh import mint_token
from fleet_testing.ports import free_port
from fleet_testing.security import PASSWORDS, SSO_PROXY_ADDR, SourceClient

pytestmark = pytest.mark.xdist_group("security_stack")

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length", "host"}


def _front_proxy(nginx_port: int) -> ThreadingHTTPServer:
    """An authenticating proxy: strips every client copy of X-Remote-User, names its
    own logged-in user (cookie ``proxy_login=admin1``), connects from 127.0.0.9."""

    class Handler(BaseHTTPRequestHandler):
        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection("127.0.0.1", nginx_port, timeout=30,
                                              source_address=(SSO_PROXY_ADDR, 0))
            conn.putrequest(self.command, self.path, skip_accept_encoding=True)
            for k, v in self.headers.items():
                norm = k.lower().replace("_", "-")
                if norm in HOP or norm in ("x-remote-user", "x-forwarded-for", "x-forwarded-proto"):
                    continue
                conn.putheader(k, v)
            if "proxy_login=admin1" in (self.headers.get("Cookie") or ""):
                conn.putheader("X-Remote-User", "admin1")
            conn.putheader("X-Forwarded-For", self.client_address[0])
            conn.putheader("X-Forwarded-Proto", "https")  # as if it terminated TLS
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _relay

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def front_proxy(security_stack):
    server = _front_proxy(security_stack.settings.http_port)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_sso_header_is_taken_from_the_front_proxy_only(security_stack, front_proxy):
    # the proxy's own logged-in user reaches the admin page
    via = SourceClient(front_proxy)
    via.cookies["proxy_login"] = "admin1"
    status, _, body = via.get("/admin/")
    assert status == 200, body[:300]
    # a client that names itself through the proxy: the proxy overwrites/strips it
    status, hdrs, _ = SourceClient(front_proxy).get("/admin/", headers={"X-Remote-User": "admin1"})
    assert status == 302 and "/auth/login" in hdrs["location"]
    # straight to nginx, in every spelling nginx might pass on
    direct = SourceClient(security_stack.url)
    for headers in ({"X-Remote-User": "admin1"}, {"x-remote-user": "admin1"},
                    [("X-Remote-User", "admin1"), ("X-Remote-User", "admin1")],
                    {"X_Remote_User": "admin1"}, {"X-REMOTE-USER": "admin1"}):
        status, hdrs, _ = direct.get("/admin/", headers=headers)
        assert status == 302 and "/auth/login" in hdrs["location"], headers
    # nor can it reach a Bokeh session with it
    assert direct.get("/bokeh/dashboard/autoload.js", headers={"X-Remote-User": "admin1"})[0] == 401


def test_clients_behind_the_front_proxy_are_told_apart(security_stack, front_proxy):
    """nginx takes the client address from the front proxy's X-Forwarded-For (realip),
    so clients behind it are not one address for the login limit."""
    # the proxy reports https: Flask-WTF then wants a same-origin Referer, as browsers send
    ref = {"Referer": f"https://127.0.0.1:{security_stack.settings.http_port}/auth/login"}
    attacker = SourceClient(front_proxy, "127.0.0.11")
    for _ in range(3):
        assert attacker.login("carol", "wrong-password", headers=ref)[0] == 401
    assert attacker.login("carol", PASSWORDS["carol"], headers=ref)[0] == 429
    assert SourceClient(front_proxy, "127.0.0.12").login("carol", PASSWORDS["carol"], headers=ref)[0] == 302


def test_forwarded_proto_only_from_the_front_proxy(security_stack, front_proxy):
    """Token URLs use the scheme the front proxy reports, never a client's claim."""
    via = SourceClient(front_proxy)
    via.cookies["proxy_login"] = "admin1"
    status, _, body = via.get("/d/sec")
    assert status == 200 and b'"https://127.0.0.1:' in body, body[:300]
    direct = SourceClient(security_stack.url)
    direct.login("bob", PASSWORDS["bob"])
    status, _, body = direct.get("/d/sec", headers={"X-Forwarded-Proto": "https"})
    assert status == 200 and b'"http://127.0.0.1:' in body and b"https://" not in body


def test_auth_check_is_not_reachable_from_outside(security_stack):
    c = SourceClient(security_stack.url)
    _, sec = mint_token(security_stack.env["FLEET_SECRET_KEY"], "sec", user="admin1", roles=("admin",))
    assert c.get("/auth/check")[0] == 404
    assert c.get(f"/auth/check?bokeh-token={sec}")[0] == 404
    c.login("bob", PASSWORDS["bob"])
    assert c.get("/auth/check")[0] == 404
    # nginx's own use of it still works: a logged-in user's autoload request
    assert c.get(f"/bokeh/dashboard/autoload.js?bokeh-autoload-element=x&bokeh-token={sec}")[0] == 200


def test_unknown_host_header_is_refused(security_stack):
    c = SourceClient(security_stack.url)
    for host in ("evil.example", "evil.example:80", f"127.0.0.1:{security_stack.settings.http_port + 1}"):
        status, _, body = c.get("/auth/login", headers=[("Host", host)])
        assert status == 400 and b"unknown host" in body, (host, status)
    c.login("bob", PASSWORDS["bob"])
    status, _, body = c.get("/d/sec", headers=[("Host", "evil.example")])
    assert status == 400 and b"evil.example/bokeh" not in body
    assert c.get("/d/sec")[0] == 200
    # the same through nginx's auth_request for /bokeh/: a 4xx, not nginx's 500
    status, _, _ = c.get("/bokeh/dashboard/autoload.js?bokeh-autoload-element=x",
                         headers=[("Host", "evil.example")])
    assert status == 403, status


def test_crlf_in_next_gives_a_safe_redirect(security_stack):
    c = SourceClient(security_stack.url)
    for nxt in ("/d/sec\r\nSet-Cookie: pwned=1", "/d/sec\nX-Injected: 1", "/\r\n"):
        c.cookies.clear()
        status, hdrs, _ = c.login("bob", PASSWORDS["bob"], next=nxt)
        assert status == 302, (nxt, status)
        assert hdrs["location"] == "/" and "pwned" not in c.cookies
        assert "x-injected" not in hdrs


def _nginx_workers(master: int) -> set[int]:
    """Live (not zombie) child processes of nginx's master."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, ...
        if int(fields[1]) == master and fields[0] != "Z":
            out.add(int(d.name))
    return out


def test_nginx_reload_does_not_keep_old_workers_for_open_websockets(security_stack):
    conf = (security_stack.var / "nginx" / "nginx.conf").read_text()
    assert "worker_shutdown_timeout 10s;" in conf
    port = security_stack.settings.http_port
    _, token = mint_token(security_stack.env["FLEET_SECRET_KEY"], "sec", user="admin1", roles=("admin",))
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((
            "GET /bokeh/dashboard/ws HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: bokeh, {token}\r\n"
            "Cookie: fleet_route=reload-test\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        master = security_stack.pid("fleet:nginx")
        old = _nginx_workers(master)
        assert old
        t0 = time.monotonic()
        security_stack.ctl("signal", "HUP", "fleet:nginx", check=True)
        # the old worker holding the websocket closes it within worker_shutdown_timeout
        sock.settimeout(1)
        closed = None
        while time.monotonic() - t0 < 30:
            alive = old & _nginx_workers(master)
            if closed is None:
                try:
                    if sock.recv(65536) == b"":
                        closed = time.monotonic() - t0
                except TimeoutError:
                    pass
                except OSError:
                    closed = time.monotonic() - t0
            if not alive and closed is not None:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        assert not (old & _nginx_workers(master)), f"old nginx workers still there after {elapsed:.0f} s"
        assert closed is not None and closed < 20, closed
        assert _nginx_workers(master)  # new workers serve the reconnect
    finally:
        sock.close()


def test_host_rules():
    """Which Host headers the app answers (pure function)."""
    from app.web.auth import host_allowed

    allowed = ("127.0.0.1:8080", "localhost:8080", "*.corp:8080", "plain", "[::1]:8080")
    for host, want in [("127.0.0.1:8080", True), ("LOCALHOST:8080", True), ("127.0.0.1:8081", False),
                       ("a.corp:8080", True), ("a.corp:80", False), ("plain", True), ("plain:80", True),
                       ("plain:8080", False), ("evil", False), ("[::1]:8080", True), ("[::2]:8080", False),
                       ("a.corp:8080/x", False), ("", False), ("127.0.0.1:8080\r\nX: y", False)]:
        assert host_allowed(host, allowed, "http") is want, host
    assert host_allowed("anything:1", ("*",), "http")
