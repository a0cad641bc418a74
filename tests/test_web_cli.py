"""fleetctl users / tokens / access against the real Redis."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import passwords
from app.bus.accounts import Accounts
from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.cli import main
from app.settings import load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(redis_url, monkeypatch):
    for k in list(os.environ):
        if k.startswith("FLEET_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("FLEET_REDIS_URL", redis_url)
    monkeypatch.setenv("FLEET_KEY_PREFIX", "fleet")
    return {"FLEET_REDIS_URL": redis_url, "FLEET_KEY_PREFIX": "fleet"}


@pytest.fixture
def accounts(env):
    s = load(env=env)
    return Accounts(sync_client(s), Keys(s.key_prefix))


def run(argv, stdin="", monkeypatch=None):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(argv)


def test_users_add_from_stdin_subprocess(env, accounts):
    """The real command line: the password comes on stdin, never in argv."""
    penv = {**{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}, **env}
    p = subprocess.run([sys.executable, "-m", "app", "users", "add", "bob", "--role", "controller",
                        "--password-stdin"], input="bob-secret-pw\n", capture_output=True, text=True,
                       cwd=ROOT, env=penv, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "bob-secret-pw" not in p.stdout + p.stderr
    user = passwords.authenticate(accounts, "bob", "bob-secret-pw")
    assert user is not None and user.roles == ("controller",)
    assert passwords.authenticate(accounts, "bob", "wrong") is None
    # the stored value is a scrypt hash, not the password
    raw = accounts.client.hget(accounts.keys.users, "bob")
    assert b"bob-secret-pw" not in raw and b"scrypt:" in raw


def test_users_lifecycle(env, accounts, monkeypatch, capsys):
    assert run(["users", "add", "carol", "--password-stdin"], "carol-password\n", monkeypatch) == 0
    assert run(["users", "add", "carol", "--password-stdin"], "carol-password\n", monkeypatch) == 2
    assert "exists" in capsys.readouterr().err
    assert run(["users", "add", "shorty", "--password-stdin"], "short\n", monkeypatch) == 2
    assert run(["users", "add", "empty", "--password-stdin"], "", monkeypatch) == 2
    # a password is never accepted on the command line
    with pytest.raises(SystemExit):
        run(["users", "add", "dave", "--password", "dave-password"], "", monkeypatch)
    # no tty and no --password-stdin: refuse rather than hang
    assert run(["users", "add", "erin"], "erin-password\n", monkeypatch) == 2
    capsys.readouterr()
    assert run(["users", "passwd", "carol", "--password-stdin"], "carol-new-password\n", monkeypatch) == 0
    assert passwords.authenticate(accounts, "carol", "carol-new-password") is not None
    assert run(["users", "roles", "carol", "--role", "admin"], "", monkeypatch) == 0
    assert run(["users", "list"], "", monkeypatch) == 0
    out = capsys.readouterr().out
    assert "carol\tadmin" in out and "scrypt" not in out and "carol-new-password" not in out
    assert run(["users", "remove", "carol"], "", monkeypatch) == 0
    assert run(["users", "remove", "carol"], "", monkeypatch) == 2
    assert accounts.get_user("carol") is None


def test_tokens_create_prints_once(env, accounts, monkeypatch, capsys):
    assert run(["tokens", "create", "--dashboard", "sales", "--dashboard", "ops", "--name", "feeder"],
               "", monkeypatch) == 0
    captured = capsys.readouterr()
    secret = captured.out.strip()
    assert secret.startswith("fleet_") and "\n" not in secret
    assert "shown only now" in captured.err and secret not in captured.err
    tok = accounts.verify_token(secret)
    assert tok is not None and tok.dashboards == ("sales", "ops") and tok.name == "feeder"
    assert run(["tokens", "list"], "", monkeypatch) == 0
    listing = capsys.readouterr().out
    assert "feeder" in listing and tok.id in listing and secret not in listing
    assert secret.encode() not in b"".join(accounts.client.hgetall(accounts.keys.tokens).values())
    assert run(["tokens", "revoke", tok.id], "", monkeypatch) == 0
    assert accounts.verify_token(secret) is None
    assert run(["tokens", "revoke", tok.id], "", monkeypatch) == 2
    capsys.readouterr()
    assert run(["tokens", "list"], "", monkeypatch) == 0
    assert "feeder" not in capsys.readouterr().out
    assert run(["tokens", "list", "--all"], "", monkeypatch) == 0
    assert "revoked" in capsys.readouterr().out
    assert run(["tokens", "create", "--dashboard", "bad name!", "--name", "x"], "", monkeypatch) == 2


def test_access_grant_revoke_list(env, accounts, monkeypatch, capsys):
    accounts.add_user("alice", passwords.hash_password("alice-password"), ["viewer"])
    assert run(["access", "grant", "--dashboard", "sales", "--user", "alice", "--role", "controller"],
               "", monkeypatch) == 0
    assert accounts.can_view(accounts.get_user("alice"), "sales")
    assert run(["access", "list"], "", monkeypatch) == 0
    assert "sales\tusers=alice\troles=controller" in capsys.readouterr().out
    assert run(["access", "revoke", "--dashboard", "sales", "--user", "alice"], "", monkeypatch) == 0
    assert not accounts.can_view(accounts.get_user("alice"), "sales")
    assert run(["access", "grant", "--dashboard", "sales"], "", monkeypatch) == 2
