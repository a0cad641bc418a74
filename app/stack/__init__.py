"""The deployable stack: configs rendered from one instance count, secrets, supervision.

* :mod:`app.stack.render` - the template context built from :class:`app.settings.Settings`
  and the rendering of supervisord programs, nginx and redis configs (Salt renders the
  very same templates from its pillar).
* :mod:`app.stack.secrets` - ``var/secrets.env``: generated once, never committed.
* :mod:`app.stack.events` - the supervisord event listener (process state -> Redis).
* :mod:`app.stack.demo` - the demo controller that feeds dashboard ``demo``.
"""
