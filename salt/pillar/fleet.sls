# Example pillar for the Bokeh fleet. Copy to your pillar root and change the
# secrets (generate each with: python3 -c "import secrets; print(secrets.token_urlsafe(48))").
# Salt writes all of fleet: but secrets and its own keys (root, venv, python, git_url,
# git_rev, systemd_unit) to var/deployment.json for `fleetctl render --deployment`: the
# other keys are Settings names (FLEET_* without the prefix) or the topology keys of
# app/stack/topology.py; an unknown key is refused by name.
fleet:
  # Where this repository is checked out, and its venv (created by the app state).
  root: /srv/fleet
  venv: /srv/fleet/.venv
  # Set git_url to let Salt check the code out (git.latest) instead of copying it.
  git_url: ''
  user: fleet            # programs run as this user ('' = as supervisord's user)
  python: python3.12     # Bokeh 3.10 needs Python >= 3.12

  # THE instance count: supervisord's numprocs and the nginx upstream both come from it.
  instances: 2
  bokeh_port_base: 5100  # instance n listens on 5100 + n

  http_host: 0.0.0.0     # nginx, the only public port
  http_port: 8080
  web_host: 127.0.0.1    # gunicorn, behind nginx
  web_port: 8000
  redis_port: 6390
  demo: false

  # Several hosts: grains `roles: [web]`, `[bokeh]`, `[redis]` on the minions.
  # The web host's nginx upstream lists every Bokeh host's instances; each Bokeh
  # host runs the number given in its entry (matched by minion id).
  # Nothing falls back to 127.0.0.1: see docs/scaling.md (who connects to what).
  redis_host: 10.0.0.30      # what web and Bokeh hosts connect to
  redis_bind: 10.0.0.30      # what the redis host listens on (default redis_host; firewall it!)
  bokeh_hosts:
    - id: bokeh1
      address: 10.0.0.21     # what nginx and Prometheus connect to
      instances: 4
      # bind: 0.0.0.0        # what the instances listen on (default: address)
    - id: bokeh2
      address: 10.0.0.22
      instances: 4
  allowed_origins: [dashboards.example.internal:8080]
  # web_address: dashboards.example.internal   # the site's name (default http_host)
  # trusted_proxies: [10.0.0.20]   # nginx's address as gunicorn sees it (default web_host
  #                                # when that is not loopback)
  metrics_allow: [10.0.0.5/32]     # Prometheus: may read every process's /metrics, /healthz
  # log_format: json               # every program's log and nginx's access log as JSON lines
  # Trusted-header SSO (docs/web.md): nginx passes sso_header on only from the
  # authenticating proxy's addresses and strips it from everyone else.
  # sso_header: X-Remote-User
  # sso_proxies: [10.0.0.5]
  # front_proxies: [10.0.0.6]        # load balancers whose X-Forwarded-For nginx believes
  # embed_origins: [http://wiki.example.internal]   # pages that may use /embed/<name>.js or frame /frame/<name>
  # extra_env: {FLEET_LOGIN_LIFETIME_SECONDS: "43200"}   # any other FLEET_* setting

  secrets:
    secret_key: CHANGE-ME-bokeh-session-signing-key-at-least-32-chars
    flask_secret: CHANGE-ME-flask-session-signing-key-at-least-32-chars
    redis_password: CHANGE-ME-redis-password            # Redis ACL user `admin` (operators)
    # one Redis ACL user per program role (URL-safe values)
    redis_password_instance: CHANGE-ME-redis-instance
    redis_password_web: CHANGE-ME-redis-web
    redis_password_compactor: CHANGE-ME-redis-compactor
    redis_password_events: CHANGE-ME-redis-events
    redis_password_demo: CHANGE-ME-redis-demo
    demo_password: ''
