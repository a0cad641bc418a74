{#- supervisord: the site's supervisord.conf (its programs: var/supervisor/fleet.conf,
    written by the app state fleet-render), a systemd unit, started if not running,
    `supervisorctl update` when the render changed something. #}
{%- from "map.jinja" import fleet with context %}
{%- set conf = fleet.site ~ '/supervisord.conf' %}
{%- set ctl = fleet.venv ~ '/bin/supervisorctl -c ' ~ conf %}
include:
  - app

fleet-supervisord-conf:
  file.managed:
    - name: {{ conf }}
    - source: salt://supervisor/templates/supervisord.conf
    - mode: '0644'
    - makedirs: True

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
        PIDFile={{ fleet.var_dir }}/run/supervisord.pid
        ExecStart={{ fleet.venv }}/bin/supervisord -c {{ conf }}
        ExecReload={{ ctl }} update
        ExecStop={{ ctl }} shutdown
        Restart=on-failure

        [Install]
        WantedBy=multi-user.target

{#- supervisord starts its programs at once: their configs must be in place first. #}
fleet-supervisord-running:
  cmd.run:
    - name: {{ fleet.venv }}/bin/supervisord -c {{ conf }}
    - unless: {{ ctl }} pid
    - require:
      - file: fleet-supervisord-conf
      - cmd: fleet-render

fleet-supervisor-update:
  cmd.run:
    - name: {{ ctl }} update
    - onlyif: {{ ctl }} pid
    - onchanges:
      - cmd: fleet-render
