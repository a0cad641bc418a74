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

{#- A data node (master or replica: fleet:redis_node); a sentinel-only host skips it. #}
{%- if ctx.programs.redis %}
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
{%- endif %}

{#- fleet:redis_node sentinel: its config is written once - the sentinel rewrites the
    file itself (current master, the replicas and sentinels it met). #}
{%- if ctx.programs.get('sentinel') %}

fleet-sentinel-conf:
  file.managed:
    - name: {{ ctx.var_dir }}/redis/sentinel-1/sentinel.conf
    - source: salt://redis/templates/sentinel.conf.j2
    - makedirs: True
    - replace: False
    - template: jinja
    - mode: '0600'
{%- if fleet.user %}
    - user: {{ fleet.user }}
{%- endif %}
    - context: {{ dict(ctx, sentinel_port=ctx.redis_ha.sentinel_ports[0], sentinel_dir=ctx.var_dir ~ '/redis/sentinel-1') | json }}
    - require:
      - pkg: redis-package
{%- endif %}
