# The Redis host: the command log (AOF), supervised like everything else.
include:
  - app
  - redis
  - supervisor
