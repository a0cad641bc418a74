"""Which requests came through a trusted proxy, and who the real client is.

nginx (and optionally an intranet SSO proxy in front of it) forward requests to
gunicorn.  Forwarding headers are believed only when the TCP peer is listed in
``settings.trusted_proxies`` (addresses or CIDR networks): then ``X-Forwarded-Proto``
sets the URL scheme and the client address is the right-most ``X-Forwarded-For``
entry that is not itself a trusted proxy.  The TCP peer stays in
``environ["fleet.peer"]`` for the SSO header check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    out = []
    for item in items:
        item = item.strip()
        if item:
            out.append(ipaddress.ip_network(item, strict=False))
    return tuple(out)


def is_trusted(addr: str | None, networks: tuple[Network, ...]) -> bool:
    if not addr or not networks:
        return False
    try:
        ip = ipaddress.ip_address(addr.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


class TrustedProxyFix:
    """WSGI middleware: apply X-Forwarded-For/-Proto only from trusted peers."""

    def __init__(self, app: Any, networks: tuple[Network, ...]) -> None:
        self.app = app
        self.networks = networks

    def __call__(self, environ: dict, start_response: Any) -> Any:
        peer = environ.get("REMOTE_ADDR", "")
        environ["fleet.peer"] = peer
        if is_trusted(peer, self.networks):
            hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
            client = peer
            for hop in reversed(hops):
                client = hop
                if not is_trusted(hop, self.networks):
                    break
            environ["REMOTE_ADDR"] = client
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
