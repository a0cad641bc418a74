# Shared shell helpers for deploy/ scripts: locate python3.12, build the venv,
# install Debian packages that are missing.  Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLEET_VENV:-$ROOT/.venv}"

log() { printf '[fleet] %s\n' "$*" >&2; }
die() { printf '[fleet] error: %s\n' "$*" >&2; exit 1; }

# Print the path of a Python >= 3.12 interpreter (PATH first, then pyenv).
find_python() {
  local c
  for c in python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 &&
       "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    if [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

# apt-get install the given Debian packages if any of their commands is missing.
# Usage: ensure_apt "cmd:package" ...
ensure_apt() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    # `command -v`, never `[ -x "$cmd" ]` on a bare name: the checkout's own nginx/
    # folder is "executable" too.  An absolute path (/usr/bin/chromium) is checked as a file.
    case "$cmd" in
      /*) [ -f "$cmd" ] && [ -x "$cmd" ] && continue ;;
      *) command -v "$cmd" >/dev/null 2>&1 && continue
         # ordinary users' PATH often lacks /usr/sbin, where nginx lives
         # (FLEET_SBIN_DIRS: where else to look; the tests set it empty)
         local d found=0
         for d in ${FLEET_SBIN_DIRS-/usr/sbin /sbin}; do
           if [ -f "$d/$cmd" ] && [ -x "$d/$cmd" ]; then found=1; break; fi
         done
         [ "$found" = 1 ] && continue ;;
    esac
    missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Create/refresh the venv with the project (and extras, e.g. "test") installed.
ensure_venv() {
  local extras="${1:-}" py stamp want
  if [ ! -x "$VENV/bin/python" ]; then
    py="$(find_python)" || die "Python >= 3.12 not found (install python3.12 or pyenv install 3.12)"
    log "creating venv $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  want="$(cat "$ROOT/pyproject.toml" "$ROOT/client/pyproject.toml" | sha1sum | cut -c1-12)-$extras"
  stamp="$VENV/.fleet-installed"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python packages into $VENV"
    # the client distribution (bokeh_fleet, the wire format) first: the project requires it
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT/client" -e "$ROOT${extras:+[$extras]}"
    echo "$want" > "$stamp"
  fi
}

# --- the running stack ---------------------------------------------------------------
# FLEET_SITE_DIR: the directory holding supervisord.conf and var/ (default: the checkout).
SITE="${FLEET_SITE_DIR:-$ROOT}"
SUPERVISOR_CONF="$SITE/supervisord.conf"
VAR="$SITE/var"

# Export FLEET_* settings kept in var/site.env (operator's persistent choices, e.g.
# FLEET_INSTANCES=4) unless the environment already sets them.
load_site_env() {
  local f="$VAR/site.env" line name
  [ -f "$f" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    name="${line%%=*}"
    if [ -z "${!name+x}" ]; then export "$line"; fi
  done < "$f"
}

# Export the environment the programs run with (rendered by `fleetctl render`).
load_fleet_env() {
  [ -f "$VAR/fleet.env" ] || die "no $VAR/fleet.env: run ./deploy/run first"
  set -a; . "$VAR/fleet.env"; set +a
}

ctl() { "$VENV/bin/supervisorctl" -c "$SUPERVISOR_CONF" "$@"; }

supervisord_running() { ctl pid >/dev/null 2>&1; }

# Create the Python venv for the Salt tests (salt==3008.3; newer releases need a
# certifi version the package index here lacks).
ensure_salt_venv() {
  local dir="${FLEET_SALT_VENV:-$ROOT/var/salt-venv}"
  [ -x "$dir/bin/salt-call" ] && return 0
  log "creating the Salt venv $dir (salt==3008.3, used by tests/test_stack_salt.py)"
  mkdir -p "$(dirname "$dir")"
  "$VENV/bin/python" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "salt==3008.3"
}
