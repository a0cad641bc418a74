"""Which requests came through a trusted proxy, and who the real client is.

nginx forwards requests to gunicorn, which listens on loopback.  Forwarding headers
are believed only when the TCP peer is listed in ``settings.trusted_proxies``
(addresses or CIDR networks; default: loopback, i.e. nginx): then
``X-Forwarded-Proto`` sets the URL scheme and the client address is the right-most
``X-Forwarded-For`` entry, the one nginx wrote itself (it overwrites whatever the
client sent; proxies in front of nginx are resolved by nginx's realip module).  The
TCP peer stays in ``environ["fleet.peer"]`` for the SSO header check.
"""

from __future__ import annotations

import ipaddress
import re
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


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class TrustedProxyFix:
    """WSGI middleware: apply X-Forwarded-For/-Proto only from trusted peers."""

    def __init__(self, app: Any, networks: tuple[Network, ...]) -> None:
        self.app = app
        self.networks = networks

    def __call__(self, environ: dict, start_response: Any) -> Any:
        peer = environ.get("REMOTE_ADDR", "")
        environ["fleet.peer"] = peer
        if is_trusted(peer, self.networks):
            # nginx overwrites X-Forwarded-For with the one client address it saw (or,
            # behind FLEET_FRONT_PROXIES/FLEET_SSO_PROXIES, the one its realip module
            # found), so the right-most entry is the client; anything left of it came
            # from elsewhere and is ignored.
            hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
            if hops and _is_ip(hops[-1]):
                environ["REMOTE_ADDR"] = hops[-1]
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)


HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*\Z")


def nginx_header_var(header: str) -> str:
    """nginx's variable for a request header: ``X-Remote-User`` -> ``http_x_remote_user``.

    Only letters, digits and single dashes: nginx drops names with underscores, and
    anything else could not be matched reliably on both sides.
    """
    if not HEADER_NAME_RE.match(header):
        raise ValueError(f"FLEET_SSO_HEADER={header!r}: use letters, digits and dashes "
                         "(e.g. X-Remote-User)")
    return "http_" + header.lower().replace("-", "_")


def nginx_networks(*lists: Iterable[str]) -> list[str]:
    """The addresses/CIDRs of ``lists``, validated and de-duplicated, for nginx."""
    out: list[str] = []
    for items in lists:
        for net in parse_networks(items):
            text = str(net) if net.num_addresses > 1 else str(net.network_address)
            if text not in out:
                out.append(text)
    return out
