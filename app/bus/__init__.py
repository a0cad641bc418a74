"""Everything that talks to Redis (the only package that imports ``redis``).

Submodules: ``keys`` (names, pure), ``connection`` (clients with the right timeouts),
``registry`` (which dashboards exist), ``publisher`` (XADD of validated commands),
``store`` (read-side helpers: state, rejected), ``reader`` (the per-process XREAD
fan-in that folds every dashboard), ``compactor`` (snapshots + trimming),
``heartbeat`` (instance liveness), ``accounts`` (users, tokens, access rules; password
hashes only), ``access`` (the instances' access re-check), ``ratelimit`` (lock-outs),
``buckets`` (publish rates), ``health`` (Redis health, compactor status), ``acl``
(controller users), ``process_events`` (supervisord events).
"""
