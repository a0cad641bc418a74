{#- supervisord: the site's supervisord.conf + the rendered programs, a systemd unit,
    started if not running, `supervisorctl update` when the programs change. #}
{%- from "map.jinja" import fleet with context %}
{%- set ctx = fleet.ctx %}
{%- set conf = fleet.site ~ '/supervisord.conf' %}
{%- set ctl = ctx.venv ~ '/bin/supervisorctl -c ' ~ conf %}
include:
  - app
{#- supervisord starts its programs at once: their configs must be in place first. #}
{%- if ctx.programs.redis %}
  - redis
{%- endif %}
{%- if ctx.programs.nginx %}
  - nginx
{%- endif %}

fleet-supervisord-conf:
  file.managed:
    - name: {{ conf }}
    - source: salt://supervisor/templates/supervisord.conf
    - mode: '0644'
    - makedirs: True

fleet-supervisor-programs:
  file.managed:
    - name: {{ ctx.var_dir }}/supervisor/fleet.conf
    - source: salt://supervisor/templates/supervisor.conf.j2
    - makedirs: True
    - template: jinja
    - mode: '0600'
    - context: {{ ctx | json }}
    - require:
      - file: fleet-var-supervisor

fleet-supervisord-unit:
  file.managed:
    - name: {{ fleet.systemd_unit }}
    - mode: '0644'
    - makedirs: True
    - contents: |
        [Unit]
        Description=Bokeh fleet (supervisord)
        After=network-online.target

        [Service]
        Type=forking
        PIDFile={{ ctx.var_dir }}/run/supervisord.pid
        ExecStart={{ ctx.venv }}/bin/supervisord -c {{ conf }}
        ExecReload={{ ctl }} update
        ExecStop={{ ctl }} shutdown
        Restart=on-failure

        [Install]
        WantedBy=multi-user.target

fleet-supervisord-running:
  cmd.run:
    - name: {{ ctx.venv }}/bin/supervisord -c {{ conf }}
    - unless: {{ ctl }} pid
    - require:
      - file: fleet-supervisord-conf
      - file: fleet-supervisor-programs
      - cmd: fleet-venv
{%- if ctx.programs.redis %}
      - file: fleet-redis-conf
      - file: fleet-redis-acl
{%- endif %}
{%- if ctx.programs.nginx %}
      - file: fleet-nginx-conf
{%- for name in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi') %}
      - file: fleet-nginx-tmp-{{ name }}
{%- endfor %}
{%- endif %}
{%- if fleet.user %}
      - cmd: fleet-run-user-access
{%- endif %}

fleet-supervisor-update:
  cmd.run:
    - name: {{ ctl }} update
    - onlyif: {{ ctl }} pid
    - onchanges:
      - file: fleet-supervisor-programs
