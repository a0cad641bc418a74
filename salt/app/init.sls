{#- The application: system user, checkout, venv, secrets, and every config file of
    this host, written by `fleetctl render --deployment` from the pillar (map.jinja). #}
{%- from "map.jinja" import fleet with context %}
{%- set render = fleet.venv ~ '/bin/fleetctl render --deployment ' ~ fleet.var_dir ~ '/deployment.json' %}

{%- if fleet.user %}
{#- As `fleetctl render` creates it (app/stack/render.py ensure_system_user): no home,
    so hosts sharing /etc/passwd with different sites never fight over it. #}
fleet-user:
  user.present:
    - name: {{ fleet.user }}
    - system: True
    - home: /nonexistent
    - createhome: False
    - shell: /usr/sbin/nologin

{#- setfacl: the render gives the programs' user read access to the code it runs. #}
fleet-acl-package:
  pkg.installed:
    - name: acl
{%- endif %}

{%- if fleet.git_url %}
fleet-checkout:
  git.latest:
    - name: {{ fleet.git_url }}
    - target: {{ fleet.root }}
    - rev: {{ fleet.git_rev }}
    - force_reset: True
{%- endif %}

fleet-venv:
  cmd.run:
    - name: {{ fleet.python }} -m venv {{ fleet.venv }} && {{ fleet.venv }}/bin/pip install -q -e {{ fleet.root }}
    - creates: {{ fleet.venv }}/bin/fleetctl
{%- if fleet.git_url %}
    - require:
      - git: fleet-checkout
{%- endif %}

fleet-var:
  file.directory:
    - name: {{ fleet.var_dir }}
    - mode: '0711'
    - makedirs: True
{%- if fleet.user %}
    - user: {{ fleet.user }}
    - require:
      - user: fleet-user
{%- endif %}

# The names of app/stack/secrets.py (var/secrets.env of ./deploy/run); values from the
# pillar, so every host has the same.  The render reads them and generates none.
fleet-secrets:
  file.managed:
    - name: {{ fleet.var_dir }}/secrets.env
    - mode: '0600'
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - contents: |
        # Managed by Salt from the pillar (fleet:secrets). Never commit.
{%- for name in ('secret_key', 'flask_secret', 'redis_password', 'redis_password_instance',
                 'redis_password_web', 'redis_password_compactor', 'redis_password_events',
                 'redis_password_demo', 'redis_password_replica', 'redis_password_sentinel',
                 'sentinel_password', 'demo_password') %}
        {{ name | upper }}={{ fleet.secrets.get(name, '') }}
{%- endfor %}
    - require:
      - file: fleet-var

# What `fleetctl render --deployment` reads: the pillar without secrets, + id and roles.
fleet-deployment:
  file.serialize:
    - name: {{ fleet.var_dir }}/deployment.json
    - serializer: json
    - mode: '0644'
    - dataset: {{ fleet.deployment | json }}
    - require:
      - file: fleet-var

{#- Every config file of this host (supervisord programs, nginx, redis, sentinel, ACL
    users, Prometheus targets, fleet.env), the var/ layout and the programs' user's
    access; `--check` first, so a second apply changes nothing.  The redis and nginx
    states add their packages to its requisites (require_in). #}
fleet-render:
  cmd.run:
    - name: {{ render }}
    - unless: {{ render }} --check
    - require:
      - cmd: fleet-venv
      - file: fleet-secrets
      - file: fleet-deployment
{%- if fleet.user %}
      - user: fleet-user
      - pkg: fleet-acl-package
{%- endif %}
