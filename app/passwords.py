"""Password policy and hashing (werkzeug scrypt) for the CLI and the web app.

The account store (app/bus/accounts.py) only stores and returns hashes; hashing and
checking happen here, above the bus, so app/bus does not depend on werkzeug.
"""

from __future__ import annotations

import secrets
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from app.bus.accounts import USERNAME_RE, AccountError, User

METHOD = "scrypt"
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# Checked when a username is unknown, so that a miss costs as much as a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16), method=METHOD)


def check_password(password: Any) -> str:
    """``password`` if it meets the policy, else :class:`AccountError` saying why."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password longer than {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    """The stored form of a new ``password`` (checked against the policy first)."""
    return generate_password_hash(check_password(password), method=METHOD)


def verify(stored_hash: str | None, password: str | None) -> bool:
    """Whether ``password`` matches ``stored_hash``; None costs as much as a wrong one."""
    if not stored_hash:
        check_password_hash(_DUMMY_HASH, password or "")
        return False
    return check_password_hash(stored_hash, password or "")


def authenticate(accounts: Any, name: str, password: str) -> User | None:
    """The user of ``accounts`` if ``password`` is right, else None (same cost whether
    or not the user exists)."""
    found = accounts.credentials(name) if isinstance(name, str) and USERNAME_RE.match(name or "") else None
    if found is None:
        verify(None, password)
        return None
    user, stored = found
    return user if verify(stored, password) else None
