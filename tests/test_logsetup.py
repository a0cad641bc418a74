"""Log lines: JSON objects with the request id, text with ``rid=``; ids are believed only
when well-formed; nginx is rendered to set (never pass on) X-Request-ID."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app import logsetup
from app.settings import Settings, SettingsError, load
from app.stack import render


def _log(fmt: str, rid: str = "", **extra) -> str:
    out = io.StringIO()
    logsetup.configure(fmt, stream=out)
    token = logsetup.request_id.set(rid)
    try:
        logging.getLogger("fleet.test").warning("hello %s", "world", extra=extra)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("fleet.test").exception("failed")
    finally:
        logsetup.request_id.reset(token)
        logsetup.configure("text")
    return out.getvalue()


def test_json_lines_carry_the_request_id():
    lines = [json.loads(line) for line in _log("json", "abc123").splitlines() if line.startswith("{")]
    assert lines[0]["message"] == "hello world" and lines[0]["level"] == "WARNING"
    assert lines[0]["logger"] == "fleet.test" and lines[0]["request_id"] == "abc123"
    assert lines[0]["time"].endswith("+00:00")
    assert "ValueError: boom" in lines[1]["exc"]
    no_rid = json.loads(_log("json").splitlines()[0])
    assert "request_id" not in no_rid
    explicit = json.loads(_log("json", request_id="from-extra").splitlines()[0])
    assert explicit["request_id"] == "from-extra"


def test_text_lines_end_with_rid():
    first = _log("text", "abc123").splitlines()[0]
    assert first.endswith("WARNING fleet.test: hello world rid=abc123")
    assert _log("text").splitlines()[0].endswith("hello world")


@pytest.mark.parametrize("value,ok", [("0123456789abcdef0123456789abcdef", True), ("rid-0001", True),
                                      ("", False), ("a b", False), ("x\nINFO forged", False),
                                      ("<script>", False), ("x" * 65, False)])
def test_only_well_formed_request_ids_are_logged(value, ok):
    assert logsetup.clean_request_id(value) == (value if ok else "")


def test_log_format_setting():
    assert load(env={"FLEET_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match="FLEET_LOG_FORMAT"):
        Settings(log_format="xml")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_nginx_sets_the_request_id_and_logs_it(fmt):
    secrets = {"SECRET_KEY": "k" * 32, "FLASK_SECRET": "f" * 32, "DEMO_PASSWORD": "d" * 12,
               **{render.role_password_name(r): "pw" for r in ("admin", *render.REDIS_ROLES.values())}}
    ctx = render.build_context(Settings(log_format=fmt, run_user=""), secrets)
    text = render.render_text("nginx.conf.j2", ctx)
    assert text.count("proxy_set_header X-Request-ID $request_id;") >= 3  # auth, bokeh, web
    assert "$http_x_request_id" not in text  # a client's copy is never passed on
    assert "add_header X-Request-ID $request_id always;" in text
    log_format = text[text.index("log_format fleet"):text.index("access_log")]
    assert "$request_id" in log_format
    assert ("escape=json" in log_format) == (fmt == "json")
    assert "location ~ ^/+metrics" in text
