{#- The application: system user, checkout, venv, var/ layout and secrets. #}
{%- from "map.jinja" import fleet with context %}
{%- set ctx = fleet.ctx %}

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
{%- endif %}

{%- if fleet.git_url %}
fleet-checkout:
  git.latest:
    - name: {{ fleet.git_url }}
    - target: {{ ctx.root }}
    - rev: {{ fleet.git_rev }}
    - force_reset: True
{%- endif %}

fleet-venv:
  cmd.run:
    - name: {{ fleet.python }} -m venv {{ ctx.venv }} && {{ ctx.venv }}/bin/pip install -q -e {{ ctx.root }}
    - creates: {{ ctx.venv }}/bin/fleetctl
{%- if fleet.git_url %}
    - require:
      - git: fleet-checkout
{%- endif %}

fleet-var:
  file.directory:
    - name: {{ ctx.var_dir }}
    - mode: '0711'
    - makedirs: True
{%- if fleet.user %}
    - user: {{ fleet.user }}
    - require:
      - user: fleet-user
{%- endif %}

{#- The programs run as fleet.user: like `fleetctl render` as root, give it read
    access to the code it runs (checkout, venv, Python, BokehJS for nginx's workers)
    with POSIX ACLs, only where it lacks it (`--check` first: nothing to do, no change). #}
{%- if fleet.user %}
{%- set grant = 'env FLEET_RUN_USER=' ~ fleet.user ~ ' FLEET_VAR_DIR=' ~ ctx.var_dir ~ ' '
    ~ ctx.venv ~ '/bin/fleetctl render --grant' %}
fleet-run-user-access:
  pkg.installed:
    - name: acl
  cmd.run:
    - name: {{ grant }}
    - unless: {{ grant }} --check
    - require:
      - pkg: fleet-run-user-access
      - user: fleet-user
      - cmd: fleet-venv
      - file: fleet-var
{%- endif %}

{#- web-metrics: the web app's prometheus_client multiprocess files (gunicorn empties it) #}
{%- for sub in ('log', 'run', 'supervisor', 'web-metrics') %}
fleet-var-{{ sub }}:
  file.directory:
    - name: {{ ctx.var_dir }}/{{ sub }}
    - mode: '{{ '0700' if sub in ('run', 'web-metrics') else '0750' if sub == 'log' else '0755' }}'
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - require:
      - file: fleet-var
{%- endfor %}

# The same names as var/secrets.env of ./deploy/run; values come from the pillar.
fleet-secrets:
  file.managed:
    - name: {{ ctx.var_dir }}/secrets.env
    - mode: '0600'
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - contents: |
        # Managed by Salt from the pillar (fleet:secrets). Never commit.
        SECRET_KEY={{ fleet.secrets.get('secret_key', '') }}
        FLASK_SECRET={{ fleet.secrets.get('flask_secret', '') }}
        REDIS_PASSWORD={{ fleet.secrets.get('redis_password', '') }}
{%- for role in ('instance', 'web', 'compactor', 'events', 'demo') %}
        REDIS_PASSWORD_{{ role | upper }}={{ fleet.secrets.get('redis_password_' ~ role, '') }}
{%- endfor %}
        DEMO_PASSWORD={{ fleet.secrets.get('demo_password', '') }}
    - require:
      - file: fleet-var

# The programs' environment for operator shells: set -a; . var/fleet.env; set +a
fleet-env:
  file.managed:
    - name: {{ ctx.var_dir }}/fleet.env
    - mode: '0600'
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - contents: |
        # Managed by Salt: the environment of every fleet program.
{%- for k, v in ctx.env.items() %}
        {{ k }}='{{ v }}'
{%- endfor %}
    - require:
      - file: fleet-var
