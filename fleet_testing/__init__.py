"""What the tests and the benches share: real servers on free loopback ports and clients.

* :mod:`~fleet_testing.ports`: free ports, waiting for one to listen.
* :mod:`~fleet_testing.redis`: a redis-server (AOF) that can be killed and restarted;
  a Sentinel set.
* :mod:`~fleet_testing.bokeh`: ``fleetctl instance`` processes, session tokens, and a
  headless Bokeh websocket client that keeps a real Document.
* :mod:`~fleet_testing.stack`: the whole stack under supervisord; headless Chromium helpers.
* :mod:`~fleet_testing.web` / :mod:`~fleet_testing.security`: login-form helpers; HTTP from
  a chosen loopback source address.
* :mod:`~fleet_testing.helpers`: ``until`` (poll a predicate), ``LINE`` (a minimal command).
* :mod:`~fleet_testing.plugin`: the pytest fixtures (the only module that imports pytest).
"""
