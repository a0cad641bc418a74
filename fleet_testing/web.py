"""The accounts and form helpers of the Flask app fixtures (:mod:`fleet_testing.plugin`).

``users`` creates :data:`PASSWORDS` with :data:`ROLES`; :class:`AuthActions` (the ``auth``
fixture) logs in through the real form, CSRF token included (:func:`csrf_token`).
"""

from __future__ import annotations

import re

PASSWORDS = {"alice": "alice-password", "carol": "carol-password", "root": "root-password"}
ROLES = {"alice": "viewer", "carol": "controller", "root": "admin"}
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(html: str | bytes) -> str:
    text = html.decode() if isinstance(html, bytes) else html
    m = CSRF_RE.search(text)
    assert m, "no csrf_token in page"
    return m.group(1)


class AuthActions:
    def __init__(self, client) -> None:
        self.client = client

    def login(self, username: str = "alice", password: str | None = None, next: str = "",
              **kw):
        page = self.client.get("/auth/login", **kw)
        data = {"username": username, "password": password or PASSWORDS.get(username, ""),
                "csrf_token": csrf_token(page.data), "next": next}
        return self.client.post("/auth/login", data=data, **kw)

    def logout(self):
        page = self.client.get("/")
        return self.client.post("/auth/logout", data={"csrf_token": csrf_token(page.data)})
