"""The Bokeh session token contract (app/tokens.py): what is minted and what is refused (unit)."""

from __future__ import annotations

import time

import pytest
from bokeh.util.token import check_session_id_signature, get_token_payload

from app import tokens

SECRET = "s" * 43


def test_mint_then_check_round_trip():
    m = tokens.mint(SECRET, "sales", "alice", ("viewer", "controller"), origin="https://intra.example",
                    expiration=60)
    assert check_session_id_signature(m.session_id, secret_key=SECRET, signed=True)
    payload = tokens.check(m.token, SECRET, session_id=m.session_id)
    assert isinstance(payload, dict)
    assert {k: payload[k] for k in ("dashboard", "user", "roles", "origin")} == {
        "dashboard": "sales", "user": "alice", "roles": ["viewer", "controller"],
        "origin": "https://intra.example"}
    assert time.time() < payload["session_expiry"] <= time.time() + 61
    assert tokens.read(m.token) == get_token_payload(m.token)


def test_no_origin_unless_given():
    payload = tokens.read(tokens.mint(SECRET, "sales", "alice", ["viewer"]).token)
    assert set(payload) == {"dashboard", "user", "roles", "session_expiry"}


def test_one_expiry_comparison():
    """Expired from ``session_expiry`` on (both checkers used to differ at that second)."""
    token = tokens.mint(SECRET, "sales", "alice", ["viewer"], expiration=100).token
    expiry = tokens.read(token)["session_expiry"]
    assert isinstance(tokens.check(token, SECRET, now=expiry - 0.5), dict)
    assert tokens.check(token, SECRET, now=expiry) == "token expired"
    assert tokens.check(token, SECRET, now=expiry + 1) == "token expired"
    assert tokens.expired({}, now=0) and tokens.expired({"session_expiry": True}, now=0)


@pytest.mark.parametrize("make, reason", [
    (lambda: None, "no token (sessions are minted by the web app)"),
    (lambda: "", "no token (sessions are minted by the web app)"),
    (lambda: tokens.mint("another-secret", "sales", "alice", ["viewer"]).token, "bad token signature"),
    (lambda: tokens.mint(SECRET, "sales", "alice", ["viewer"], signed=False).token, "bad token signature"),
    (lambda: "garbage.not-a-token", "unreadable token"),
    (lambda: tokens.mint(SECRET, "sales", "alice", ["viewer"], expiration=-5).token, "token expired"),
    (lambda: tokens.mint(SECRET, None, "alice", ["viewer"]).token, "token names no dashboard"),
    (lambda: tokens.mint(SECRET, "../etc", "alice", ["viewer"]).token, "token names an invalid dashboard"),
    (lambda: tokens.mint(SECRET, "sales", "", ["viewer"]).token, "token names no user"),
])
def test_refusals_say_why(make, reason):
    assert tokens.check(make(), SECRET) == reason


def test_bound_to_its_session():
    a, b = tokens.mint(SECRET, "sales", "alice", ["viewer"]), tokens.mint(SECRET, "sales", "alice", ["viewer"])
    assert tokens.check(a.token, SECRET, session_id=b.session_id) == "token is for another session"
    assert isinstance(tokens.check(a.token, SECRET, session_id=a.session_id), dict)


def test_read_of_garbage_is_none():
    assert tokens.read("not-a-token") is None
