"""gunicorn configuration for the web app: ``gunicorn -c app/web/gunicorn_conf.py --no-control-socket``.

Bind and worker count come from the fleet settings (``FLEET_WEB_HOST``/``_PORT``/
``_WORKERS``).  Always start gunicorn 27 with ``--no-control-socket`` (it otherwise
opens a control socket under ``~/.gunicorn``); it is also disabled here for good
measure.  The access log has the path without the query string, and no user or
referrer fields, so tokens and ``next=`` targets never reach a log file; it has
nginx's request id (``X-Request-ID``), and with ``FLEET_LOG_FORMAT=json`` every line
is one JSON object (:mod:`app.logsetup`).

Metrics: prometheus_client's multiprocess mode; each worker writes its counters under
``PROMETHEUS_MULTIPROC_DIR`` (``var/web-metrics``: private, emptied when
gunicorn starts) and ``child_exit`` folds a dead worker's files into the totals.
"""

import os
from pathlib import Path

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
logger_class = "app.web.gunicorn_log.FleetLogger"
# h: peer, t: time, m: method, U: path WITHOUT query, s: status, B: bytes, M: ms.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
if _s.log_format == "json":
    from app.logsetup import dict_config

    logconfig_dict = dict_config("json")
    access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'  # the JSON object has the time
limit_request_line = 8190
proc_name = "fleet-web"

_var = _s.var_dir if _s.var_dir.is_absolute() else Path.cwd() / _s.var_dir
_multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(_var / "web-metrics")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _multiproc  # inherited by every worker


def on_starting(server):  # noqa: ANN001 - gunicorn's hook signature
    """Empty (or create, 0700) the multiprocess directory: files of a previous run would
    add their old counts to this one.  The master never imports the metrics."""
    path = Path(_multiproc)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    for f in path.glob("*.db"):
        f.unlink()


def child_exit(server, worker):  # noqa: ANN001
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
