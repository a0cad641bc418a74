# The Redis host: the command log (AOF), supervised like everything else.  With
# fleet:redis_ha (Sentinel) it is the master, a replica or a sentinel: fleet:redis_node.
include:
  - app
  - redis
  - supervisor
