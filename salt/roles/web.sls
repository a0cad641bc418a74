# Front host: nginx, the Flask app under gunicorn, the compactor (and the demo
# controller when fleet:demo is true). The nginx upstream lists every Bokeh host.
include:
  - app
  - supervisor
  - nginx
