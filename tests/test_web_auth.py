"""Login, logout, CSRF, rate limiting, roles, dashboard access and trusted-header SSO."""

from __future__ import annotations

from app.bus import registry
from app.passwords import hash_password
from fleet_testing.web import csrf_token


def test_login_logout_roundtrip(client, auth):
    assert client.get("/").status_code == 302
    r = auth.login("alice", next="/")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    r = client.get("/")
    assert r.status_code == 200 and b"alice" in r.data
    r = auth.logout()
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]
    assert client.get("/").status_code == 302


def test_session_cookie_flags(make_app, users):
    for secure in (False, True):
        c = make_app(cookie_secure=secure).test_client()
        page = c.get("/auth/login")
        r = c.post("/auth/login", data={"username": "alice", "password": users["alice"],
                                        "csrf_token": csrf_token(page.data)})
        assert r.status_code == 302
        cookie = next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("fleet_session="))
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure


def test_wrong_password_and_unknown_user(client, auth):
    r = auth.login("alice", "not-the-password")
    assert r.status_code == 401 and b"Wrong user name or password" in r.data
    r = auth.login("nobody", "whatever-password")
    assert r.status_code == 401
    assert client.get("/").status_code == 302


def test_csrf_enforced_on_login_and_logout(client, auth):
    r = client.post("/auth/login", data={"username": "alice", "password": "alice-password"})
    assert r.status_code == 400
    assert client.get("/").status_code == 302  # not logged in
    r = client.post("/auth/login", data={"username": "alice", "password": "alice-password",
                                         "csrf_token": "forged"})
    assert r.status_code == 400
    auth.login("alice")
    assert client.post("/auth/logout").status_code == 400  # no token: still logged in
    assert client.get("/").status_code == 200
    # a token from another browser session is refused too
    other = client.application.test_client()
    foreign = csrf_token(other.get("/auth/login").data)
    assert client.post("/auth/logout", data={"csrf_token": foreign}).status_code == 400
    assert client.get("/").status_code == 200


def test_open_redirect_refused(client, auth):
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        r = auth.login("alice", next=target)
        assert r.status_code == 302 and r.headers["Location"] == "/", target


def test_rate_limit_shared_across_app_instances(make_app, users):
    """Two create_app() instances stand for two gunicorn workers: one Redis counter."""
    from fleet_testing.web import AuthActions

    w1, w2 = AuthActions(make_app().test_client()), AuthActions(make_app().test_client())
    statuses = [w.login("alice", "wrong-password-x").status_code for w in (w1, w2, w1)]
    assert statuses == [401, 401, 401]
    r = w2.login("alice", "wrong-password-x")
    assert r.status_code == 429 and "Retry-After" in r.headers
    # even the right password is refused while the limit holds: no oracle
    assert w1.login("alice").status_code == 429
    # another user (or the same user from another address) is not affected
    assert w2.login("carol").status_code == 302
    w3 = AuthActions(make_app().test_client())
    assert w3.login("alice", environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 302


def test_success_resets_counter(make_app, users):
    from fleet_testing.web import AuthActions

    w = AuthActions(make_app().test_client())
    for _ in range(2):
        assert w.login("alice", "wrong-password-x").status_code == 401
    assert w.login("alice").status_code == 302
    for _ in range(2):
        assert w.login("alice", "wrong-password-x").status_code == 401
    assert w.login("alice").status_code == 302


def test_roles_admin_page(client, auth):
    assert client.get("/admin/").status_code == 302
    auth.login("alice")
    assert client.get("/admin/").status_code == 403
    assert client.get("/admin/status.json").status_code == 403
    auth.logout()
    auth.login("carol")
    assert client.get("/admin/").status_code == 403
    auth.logout()
    auth.login("root")
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/status.json").get_json()["redis"]["ok"] is True


def test_dashboard_access_rules(client, auth, fleet_bus):
    for name in ("sales", "ops", "secret"):
        registry.create_dashboard(fleet_bus.client, fleet_bus.keys, name)
    acc = fleet_bus.accounts
    acc.grant_access("sales", users=["alice"])
    acc.grant_access("ops", roles=["controller"])
    auth.login("alice")
    page = client.get("/").get_data(as_text=True)
    assert "/d/sales" in page and "/d/ops" not in page and "/d/secret" not in page
    assert client.get("/d/sales").status_code == 200
    assert client.get("/d/ops").status_code == 403
    assert client.get("/d/nope").status_code == 404
    auth.logout()
    auth.login("carol")
    page = client.get("/").get_data(as_text=True)
    assert "/d/ops" in page and "/d/sales" not in page
    auth.logout()
    auth.login("root")  # admin sees everything
    page = client.get("/").get_data(as_text=True)
    assert all(f"/d/{n}" in page for n in ("sales", "ops", "secret"))
    auth.logout()
    # '*' rule for a role, then revoke
    acc.grant_access("*", roles=["viewer"])
    auth.login("alice")
    assert client.get("/d/secret").status_code == 200
    acc.revoke_access("*", roles=["viewer"])
    assert client.get("/d/secret").status_code == 403


def test_password_change_and_removal_end_sessions(client, auth, fleet_bus):
    auth.login("alice")
    assert client.get("/").status_code == 200
    fleet_bus.accounts.set_password("alice", hash_password("a-new-password"))
    assert client.get("/").status_code == 302
    assert auth.login("alice", "a-new-password").status_code == 302
    assert client.get("/").status_code == 200
    fleet_bus.accounts.remove_user("alice")
    assert client.get("/").status_code == 302


def test_sso_off_by_default(client, users):
    r = client.get("/", headers={"X-Remote-User": "root"}, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.status_code == 302


def test_sso_only_from_trusted_proxies(make_app, users, fleet_bus):
    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    app = make_app(sso_header="X-Remote-User", trusted_proxies=("10.0.0.0/24", "127.0.0.2"))
    c = app.test_client()
    hdr = {"X-Remote-User": "root"}
    # from an untrusted address the header is ignored
    assert c.get("/", headers=hdr, environ_base={"REMOTE_ADDR": "10.0.1.5"}).status_code == 302
    assert c.get("/admin/", headers=hdr, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 302
    # from a trusted proxy it logs the user in, with the user's stored roles
    r = c.get("/admin/", headers=hdr, environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert r.status_code == 200
    r = c.get("/auth/check", headers=hdr, environ_base={"REMOTE_ADDR": "127.0.0.2"})
    assert r.status_code == 204 and r.headers["X-Fleet-User"] == "root"
    # X-Forwarded-For does not make an untrusted peer trusted
    r = c.get("/admin/", headers={**hdr, "X-Forwarded-For": "10.0.0.7"},
              environ_base={"REMOTE_ADDR": "192.168.1.1"})
    assert r.status_code == 302
    # an SSO user unknown to the fleet is a plain viewer
    r = c.get("/admin/", headers={"X-Remote-User": "dave"}, environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert r.status_code == 403
    fleet_bus.accounts.grant_access("sales", users=["dave"])
    r = c.get("/d/sales", headers={"X-Remote-User": "dave"}, environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert r.status_code == 200
    # the SSO header never creates a session cookie usable without the proxy
    r = c.get("/", environ_base={"REMOTE_ADDR": "10.0.1.5"})
    assert r.status_code == 302


def test_rate_limit_uses_forwarded_client_behind_trusted_proxy(make_app, users):
    """Behind nginx every request comes from 127.0.0.1: the limit must key on the client."""
    from fleet_testing.web import AuthActions

    w = AuthActions(make_app(trusted_proxies=("127.0.0.1",)).test_client())
    a = {"environ_base": {"REMOTE_ADDR": "127.0.0.1"}, "headers": {"X-Forwarded-For": "10.1.1.1"}}
    b = {"environ_base": {"REMOTE_ADDR": "127.0.0.1"}, "headers": {"X-Forwarded-For": "10.2.2.2"}}
    for _ in range(3):
        assert w.login("alice", "wrong-password-x", **a).status_code == 401
    assert w.login("alice", "wrong-password-x", **a).status_code == 429
    assert w.login("alice", **b).status_code == 302
