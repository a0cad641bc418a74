{#- Redis for the command log, run by the fleet's supervisord (not Debian's service). #}
{%- from "map.jinja" import fleet with context %}
{%- set ctx = fleet.ctx %}
include:
  - app

redis-package:
  pkg.installed:
    - name: redis-server

{#- var/redis holds users.acl, which `ACL SAVE` (redis-server, as fleet.user) replaces. #}
fleet-redis-dir:
  file.directory:
    - name: {{ ctx.var_dir }}/redis
    - mode: '0700'
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - require:
      - file: fleet-var

fleet-redis-data:
  file.directory:
    - name: {{ ctx.var_dir }}/redis/data
    - mode: '0700'
    - makedirs: True
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - require:
      - file: fleet-redis-dir

fleet-redis-conf:
  file.managed:
    - name: {{ ctx.var_dir }}/redis/redis.conf
    - source: salt://redis/templates/redis.conf.j2
    - makedirs: True
    - template: jinja
    - mode: '0600'
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - context: {{ ctx | json }}
    - require:
      - file: fleet-redis-data
      - pkg: redis-package

{#- The ACL users (one per role), plus the controllers already saved in the file
    (map.jinja reads them back): redis-server reads it, ACL SAVE rewrites it. #}
fleet-redis-acl:
  file.managed:
    - name: {{ ctx.var_dir }}/redis/users.acl
    - source: salt://redis/templates/redis.acl.j2
    - template: jinja
    - mode: '0600'
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - context: {{ ctx | json }}
    - require:
      - file: fleet-redis-data
