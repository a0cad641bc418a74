{#- nginx in front of the web app and the Bokeh instances, run by supervisord
    (`daemon off;`, temp paths under the fleet's var/). #}
{%- from "map.jinja" import fleet with context %}
{%- set ctx = fleet.ctx %}
include:
  - app

nginx-package:
  pkg.installed:
    - name: nginx

{%- for name in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi') %}
fleet-nginx-tmp-{{ name }}:
  file.directory:
    - name: {{ ctx.var_dir }}/nginx/tmp/{{ name }}
    - user: {{ ctx.nginx_user }}
    - mode: '0700'
    - makedirs: True
    - require:
      - file: fleet-var
      - pkg: nginx-package
{%- endfor %}

fleet-nginx-conf:
  file.managed:
    - name: {{ ctx.var_dir }}/nginx/nginx.conf
    - source: salt://nginx/templates/nginx.conf.j2
    - template: jinja
    - mode: '0644'
    - makedirs: True
    - context: {{ ctx | json }}
    - require:
      - pkg: nginx-package
      - file: fleet-var

{#- Prometheus file_sd list of every instance of every Bokeh host (from the pillar's
    bokeh_hosts) and the site: what `fleetctl render --prometheus` writes on one host. #}
fleet-prometheus-targets:
  file.managed:
    - name: {{ ctx.var_dir }}/prometheus/targets.json
    - source: salt://nginx/templates/prometheus.json.j2
    - template: jinja
    - mode: '0644'
    - makedirs: True
    - context: {{ ctx | json }}
    - require:
      - file: fleet-var

fleet-nginx-check:
  cmd.run:
    - name: {{ ctx.nginx_bin }} -t -e stderr -p {{ ctx.var_dir }}/nginx/ -c {{ ctx.var_dir }}/nginx/nginx.conf
    - onchanges:
      - file: fleet-nginx-conf
