"""gunicorn's logger with the request id: ``rid=`` on every access line (text), or
``request_id`` in the JSON object (``FLEET_LOG_FORMAT=json``, see :mod:`app.logsetup`)."""

from __future__ import annotations

import traceback
from typing import Any

from gunicorn.glogging import Logger

from app.logsetup import clean_request_id


class FleetLogger(Logger):
    def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        atoms = self.atoms_wrapper_class(self.atoms(resp, req, environ, request_time))
        rid = clean_request_id(environ.get("HTTP_X_REQUEST_ID"))
        try:
            line = self.cfg.access_log_format % atoms
            if rid and not self.cfg.logconfig_dict:  # text: gunicorn's plain "%(message)s" handler
                line += f" rid={rid}"
            self.access_log.info(line, extra={"request_id": rid})
        except Exception:
            self.error(traceback.format_exc())
