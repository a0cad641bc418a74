"""gunicorn configuration for the web app: ``gunicorn -c app/web/gunicorn_conf.py --no-control-socket``.

Bind and worker count come from the fleet settings (``FLEET_WEB_HOST``/``_PORT``/
``_WORKERS``).  Always start gunicorn 27 with ``--no-control-socket`` (it otherwise
opens a control socket under ``~/.gunicorn``); it is also disabled here for good
measure.  The access log has the path without the query string, and no user or
referrer fields, so tokens and ``next=`` targets never reach a log file.
"""

from app.settings import load

_s = load()

wsgi_app = "app.web:create_app()"
bind = [f"{_s.web_host}:{_s.web_port}"]
workers = _s.web_workers
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5
# The SSO header is only believed from FLEET_TRUSTED_PROXIES, which app.web applies
# itself; gunicorn must not rewrite REMOTE_ADDR or the scheme on its own.
forwarded_allow_ips = ""
control_socket_disable = True
accesslog = "-"
errorlog = "-"
# h: peer, t: time, m: method, U: path WITHOUT query, s: status, B: bytes, M: ms.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
limit_request_line = 8190
proc_name = "fleet-web"
