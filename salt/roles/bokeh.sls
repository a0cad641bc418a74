# A Bokeh host: fleet:instances (or its entry in fleet:bokeh_hosts) instances.
include:
  - app
  - supervisor
