# The whole stack on one host.
include:
  - redis
  - app
  - supervisor
  - nginx
