{#- nginx in front of the web app and the Bokeh instances, run by supervisord
    (`daemon off;`, temp paths under the fleet's var/); its nginx.conf and the
    Prometheus target list come from `fleetctl render` (app state fleet-render). #}
{%- from "map.jinja" import fleet with context %}
include:
  - app

nginx-package:
  pkg.installed:
    - name: nginx
    - require_in:
      - cmd: fleet-render

fleet-nginx-check:
  cmd.run:
    - name: /usr/sbin/nginx -t -e stderr -p {{ fleet.var_dir }}/nginx/ -c {{ fleet.var_dir }}/nginx/nginx.conf
    - onchanges:
      - cmd: fleet-render
