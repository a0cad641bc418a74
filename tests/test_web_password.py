"""Users change their own password (``/auth/password``): the current one first, CSRF,
wrong guesses locked out like logins; afterwards the new one works, the old one does
not, the user's other logins are over and this one goes on.  That the user's open
dashboards close is proven on the whole stack in tests/test_security_revoke.py."""

from __future__ import annotations

from app import passwords
from fleet_testing.web import PASSWORDS, AuthActions, csrf_token


def change(client, current: str, new: str, confirm: str | None = None, token: str | None = ""):
    if token == "":
        token = csrf_token(client.get("/auth/password").data)
    data = {"current": current, "new": new, "confirm": new if confirm is None else confirm}
    if token is not None:
        data["csrf_token"] = token
    return client.post("/auth/password", data=data)


def test_password_change(app, client, auth, fleet_bus, audit_lines):
    other = app.test_client()  # the same user logged in elsewhere
    AuthActions(other).login("alice")
    assert other.get("/").status_code == 200
    auth.login("alice")
    page = client.get("/")
    assert b'href="/auth/password"' in page.data
    r = change(client, "not-the-password", "alice-new-password")
    assert r.status_code == 403 and b"current password is wrong" in r.data
    r = change(client, PASSWORDS["alice"], "alice-new-password", confirm="alice-other-password")
    assert r.status_code == 400 and b"new passwords differ" in r.data
    r = change(client, PASSWORDS["alice"], "short")
    assert r.status_code == 400 and b"at least 8 characters" in r.data
    r = change(client, PASSWORDS["alice"], "alice-new-password", token=None)
    assert r.status_code == 400 and b"CSRF" in r.data
    assert audit_lines() == []
    r = change(client, PASSWORDS["alice"], "alice-new-password")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    assert b"Password changed" in client.get("/").data  # this login goes on
    r = other.get("/")  # the other one is over
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]
    assert audit_lines() == ["user=alice addr=127.0.0.1 action=password.change"]
    auth.logout()
    assert auth.login("alice").status_code == 401  # the old password no longer works
    r = auth.login("alice", "alice-new-password")
    assert r.status_code == 302


def test_wrong_current_passwords_are_locked_out(client, auth, fleet_bus):
    auth.login("alice")
    for _ in range(3):  # login_rate_limit=3 in the test settings
        assert change(client, "wrong-guess", "alice-new-password").status_code == 403
    r = change(client, PASSWORDS["alice"], "alice-new-password")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert passwords.authenticate(fleet_bus.accounts, "alice", PASSWORDS["alice"]) is not None  # unchanged


def test_password_page_needs_a_login(client, users):
    r = client.get("/auth/password")
    assert r.status_code == 302 and "/auth/login?next=/auth/password" in r.headers["Location"]


def test_a_display_account_cannot_change_its_password(client, auth, fleet_bus):
    fleet_bus.accounts.add_user("wall", passwords.hash_password("wall-password"), roles=("display",))
    assert auth.login("wall", "wall-password").status_code == 302
    r = change(client, "wall-password", "wall-new-password")
    assert r.status_code == 403 and b"display account" in r.data
    assert passwords.authenticate(fleet_bus.accounts, "wall", "wall-password") is not None  # unchanged
