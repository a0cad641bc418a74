# Roles come from the minion grain `roles` (or pillar fleet:roles):
#   single - everything on one machine (what ./deploy/run does, but Salt-managed)
#   web    - nginx + gunicorn/Flask + compactor (+ demo controller): the front host
#   bokeh  - Bokeh instances (fleet:bokeh_hosts lists them for the nginx upstream)
#   redis  - the command log
# One pillar value, fleet:instances (or per host in fleet:bokeh_hosts), sets the
# instance count for supervisord and nginx alike.
base:
  'roles:single':
    - match: grain
    - roles.single
  'roles:web':
    - match: grain
    - roles.web
  'roles:bokeh':
    - match: grain
    - roles.bokeh
  'roles:redis':
    - match: grain
    - roles.redis
