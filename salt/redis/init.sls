{#- Redis for the command log, run by the fleet's supervisord (not Debian's service):
    its redis.conf, ACL users and (fleet:redis_node sentinel) sentinel.conf come from
    `fleetctl render` (app state fleet-render). #}
include:
  - app

redis-package:
  pkg.installed:
    - name: redis-server
    - require_in:
      - cmd: fleet-render
