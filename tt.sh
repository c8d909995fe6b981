#!/usr/bin/env bash
# TT Portal: set-up, run and test on a Debian machine, as root.
#
#   ./tt.sh run    install what is missing, migrate, create the first operator,
#                  register the local node, then run the web server (uvicorn: ASGI,
#                  for the console's websocket) and the task workers in the
#                  foreground until Ctrl-C
#   ./tt.sh run --production
#                  the same with TT_DEBUG=0 (as does TT_DEBUG=0 ./tt.sh run): static
#                  files collected, served by gunicorn (uvicorn workers) on TT_BIND behind a proxy
#                  that terminates TLS (docs/guide/production.md)
#   ./tt.sh serve [--production]
#                  only run's last step, as any user: the web server and the task
#                  workers in the foreground on a database run has set up (SIGTERM or
#                  Ctrl-C stops both: docs/guide/production.md#stopping)
#   ./tt.sh node-worker NAME [tt_prepare_node options]
#                  one more host of a site: prepare this host as node NAME against
#                  the site's TT_DATABASE_URL (PostgreSQL) and TT_REDIS_URL, then run
#                  the node's own task cluster in the foreground
#                  (docs/guide/several-hosts.md)
#   ./tt.sh test   install what is missing, then run ruff, build the docs (mkdocs
#                  --strict: a broken link fails) and run the whole test suite
#   ./tt.sh test --unit [pytest args]
#                  the fast loop: ruff and every test but the real-guest (integration)
#                  and browser ones, as any user, with no set-up once .venv exists
#   ./tt.sh setup  only install (apt packages, the Python environment, the browser
#                  libraries: npm ci, copied into static/vendor/)
#
# Settings come from TT_* variables (docs/guide/configuration.md); the defaults need nothing
# beyond this script: SQLite and django-q2's ORM broker.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
# Playwright (a dev dependency) must never fetch its own browsers: the tests use /usr/bin/chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config libvirt-dev procps iproute2
  # a real QEMU node: libvirt's daemon, QEMU, DHCP for the VM network, the firewall
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
  dnsmasq-base nftables
  # a docker node: podman serving the Docker API, runc (crun fails on hybrid cgroups), its
  # network stack with DNS, and nsenter (util-linux) to name each container's bridge port
  podman runc netavark aardvark-dns iptables util-linux
  # the template builders (busybox; Debian with mmdebstrap) and the cloud-init seeds (vfat)
  e2fsprogs cpio xz-utils mmdebstrap dosfstools mtools
  # SSH into guests, and ssh-keygen (the tests compare fingerprints with it)
  openssh-client
  # the browser tests (tests/browser): Playwright drives Debian's Chromium, never its own download
  chromium
)
# The portal's browser libraries (xterm.js for the console) come from package-lock.json through
# npm: Debian's when the machine has no npm of its own (a Node.js from elsewhere, nodesource's
# say, carries npm and conflicts with Debian's package).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "tt.sh: run me as root (apt packages, libvirt and nftables need it)" >&2
    exit 1
  fi
}

install_apt() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_python() {
  local stamp="$VENV/.tt-installed" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x "$PY" ]; then
    say "creating the Python environment in .venv"
    python3 -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Python packages (pinned in pyproject.toml)"
    "$PY" -m pip install -q --upgrade pip
    # Editable (-e): the `tt` command (.venv/bin/tt, pyproject's [project.scripts]) runs this
    # checkout's ttcli/ and ttclient/, not a copy that a later edit would leave stale.
    "$PY" -m pip install -q -e ".[dev]"
    echo "$want" > "$stamp"
  fi
}

install_js() {
  # The browser libraries the portal serves itself (never a CDN): npm ci from the committed
  # package-lock.json, then copied into static/vendor/ (build output, not committed), where
  # Django's static files (and collectstatic, in production) find them.
  local stamp="$ROOT/node_modules/.tt-installed" want
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing the browser libraries (pinned in package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" > "$stamp"
  fi
  local vendor="$ROOT/static/vendor"
  rm -rf "$vendor.new"
  mkdir -p "$vendor.new/xterm"
  # The source maps too: the scripts name them, and collectstatic's manifest follows the names.
  cp node_modules/@xterm/xterm/lib/xterm.js node_modules/@xterm/xterm/lib/xterm.js.map \
    node_modules/@xterm/xterm/css/xterm.css node_modules/@xterm/xterm/LICENSE \
    node_modules/@xterm/addon-fit/lib/addon-fit.js node_modules/@xterm/addon-fit/lib/addon-fit.js.map \
    "$vendor.new/xterm/"
  rm -rf "$vendor" && mv "$vendor.new" "$vendor"
}

primary_address() {
  # The address other machines reach this one at (the source of the default route).
  ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}' \
    | head -n1 | grep . || echo 127.0.0.1
}

setup() {
  need_root
  install_apt
  install_python
  install_js
  mkdir -p "${TT_VAR_DIR:-$ROOT/var}"
}

debug_is_off() {
  # As ttportal/config.py's env_bool reads TT_DEBUG: unset is on; 0/false/no/off/empty is off.
  [ -n "${TT_DEBUG+set}" ] || return 1
  local value="${TT_DEBUG,,}"
  value="${value//[[:space:]]/}"
  case "$value" in 0|false|no|off|"") return 0 ;; *) return 1 ;; esac
}

production_secret() {
  # Production needs a secret key. Without TT_SECRET_KEY or TT_SECRET_KEY_FILE, make one
  # once in TT_VAR_DIR (readable by root alone) and keep it: sessions survive restarts.
  # Several web hosts must share one: set TT_SECRET_KEY (or the file) on each.
  [ -n "${TT_SECRET_KEY:-}" ] || [ -n "${TT_SECRET_KEY_FILE:-}" ] && return 0
  local file="${TT_VAR_DIR:-$ROOT/var}/secret_key"
  if [ ! -s "$file" ]; then
    say "generating a secret key in $file (kept there, never printed)"
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(64))' > "$file.new" && mv "$file.new" "$file")
  fi
  export TT_SECRET_KEY_FILE="$file"
}

# `run` and `serve` take --production (or TT_DEBUG=0): sets the caller's $production to 1
# or 0, and TT_DEBUG=0 with --production.
production_mode() {
  local command="$1"
  shift
  production=0
  for arg in "$@"; do
    case "$arg" in
      --production) production=1 ;;
      *) echo "usage: $0 $command [--production]" >&2; exit 2 ;;
    esac
  done
  if [ "$production" = 1 ]; then export TT_DEBUG=0; fi
  if debug_is_off; then production=1; fi
}

run() {
  local production
  production_mode run "$@"
  setup
  [ "$production" = 1 ] && production_secret
  say "migrating the database"
  "$PY" manage.py migrate --noinput
  "$PY" manage.py tt_first_admin
  local public_host="${TT_PUBLIC_HOST:-$(primary_address)}"
  # The Debian template is opt-in: its first build takes about a minute (cached after).
  local templates=(--template busybox)
  [ "${TT_DEBIAN_TEMPLATE:-0}" = 1 ] && templates+=(--template debian)
  say "preparing this host as node 'local' (public address $public_host) with templates: ${templates[*]}"
  "$PY" manage.py tt_prepare_node local --uri qemu:///system --public-host "$public_host" \
    --vm-network "${TT_VM_NETWORK:-10.100.0.0/16}" "${templates[@]}"
  # Containers beside the VMs: a docker node with its own bridge, network and ports
  # (TT_DOCKER_NODE=0 skips it).
  if [ "${TT_DOCKER_NODE:-1}" = 1 ]; then
    say "preparing this host as node 'docker' too (podman's Docker API) with the busybox image"
    "$PY" manage.py tt_prepare_node docker --kind docker --public-host "$public_host" \
      --vm-network "${TT_DOCKER_VM_NETWORK:-10.99.0.0/16}" --bridge ttbr-docker --network-name tt-docker-net \
      --port-min 40000 --port-max 44999 --template busybox
  fi
  if [ "$production" = 1 ]; then
    say "collecting static files into ${TT_VAR_DIR:-$ROOT/var}/static"
    "$PY" manage.py collectstatic --noinput -v0
    # Prints what a production setting still lacks; only errors stop here.
    "$PY" manage.py check --deploy --fail-level ERROR
  fi
  serve "$production"
}

serve() {
  # The web server and the task cluster in the foreground: the end of `run`, and
  # `./tt.sh serve` on its own (no root, nothing installed, migrated or prepared).
  local production="$1" bind="${TT_BIND:-127.0.0.1:8000}"
  if [ "$production" = 1 ]; then
    say "TT Portal (production: gunicorn) on http://$bind/ for the TLS proxy (admin at /admin/, /healthz, /readyz, /metrics); Ctrl-C stops it"
  else
    say "TT Portal on http://$bind/ (admin at /admin/); Ctrl-C stops it"
  fi
  "$PY" manage.py tt_qcluster &
  CLUSTER=$!
  # ASGI either way (ttportal/asgi.py: Django, and the console's websocket): uvicorn, or in
  # production gunicorn managing uvicorn workers.
  if [ "$production" = 1 ]; then
    TT_BIND="$bind" "$VENV/bin/gunicorn" -c ttportal/gunicorn_conf.py &
  else
    "$VENV/bin/uvicorn" ttportal.asgi:application $(uvicorn_bind "$bind") --lifespan off \
      --timeout-graceful-shutdown 3 &
  fi
  WEB=$!
  trap 'stop_all; exit 0' INT TERM
  # Whichever stops first takes the other down: half a portal is worse than none.
  wait -n "$CLUSTER" "$WEB" || true
  stop_all
}

uvicorn_bind() {
  # TT_BIND (host:port, [v6]:port or unix:/path) as uvicorn's options.
  case "$1" in
    unix:*) echo "--uds ${1#unix:}" ;;
    *) local host="${1%:*}" port="${1##*:}"; host="${host#[}"; echo "--host ${host%]} --port $port" ;;
  esac
}

serve_command() {
  local production
  production_mode serve "$@"
  if [ ! -x "$PY" ]; then
    echo "tt.sh: no .venv yet. Make it once, as root: ./tt.sh setup (or ./tt.sh run)" >&2
    exit 1
  fi
  [ "$production" = 1 ] && production_secret
  serve "$production"
}

stop_all() {
  kill -TERM "$WEB" "$CLUSTER" 2>/dev/null || true
  # SIGTERM gives the operation in hand TT_WORKER_STOP_TIMEOUT seconds to finish,
  # then the cluster hands it back to be taken over at its next start; it starts
  # no new one, and an idle cluster is gone within a second or two. Past the
  # timeout and 5 s more (the bound docs/guide/production.md promises) whatever is
  # left is killed: a killed worker's operation is taken over as soon as a worker
  # starts again.
  local limit=$(( (${TT_WORKER_STOP_TIMEOUT:-15} + 5) * 10 ))
  for _ in $(seq "$limit"); do
    kill -0 "$CLUSTER" 2>/dev/null || kill -0 "$WEB" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL $(descendants "$CLUSTER") "$CLUSTER" $(descendants "$WEB") "$WEB" 2>/dev/null || true
}

descendants() {
  # Every process below $1 (the cluster's sentinel, workers, pusher, monitor).
  local child
  for child in $(pgrep -P "$1"); do
    echo "$child"
    descendants "$child"
  done
}

node_worker() {
  if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    echo "usage: $0 node-worker NAME [--vm-network CIDR] [--bridge BR] [--port-min N --port-max N] ..." >&2
    exit 2
  fi
  local name="$1"; shift
  local missing=()
  [ -n "${TT_DATABASE_URL:-}" ] || missing+=("TT_DATABASE_URL (the site's PostgreSQL)")
  [ -n "${TT_REDIS_URL:-}" ] || missing+=("TT_REDIS_URL (the site's Redis broker)")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "tt.sh: a node worker shares the site's state; set ${missing[*]}" >&2
    exit 2
  fi
  setup
  local public_host="${TT_PUBLIC_HOST:-$(primary_address)}"
  say "preparing this host as node '$name' (public address $public_host) and running its task cluster; Ctrl-C stops it"
  # exec: SIGTERM and Ctrl-C reach the cluster itself, which stops cleanly.
  exec "$PY" manage.py tt_node_worker "$name" --public-host "$public_host" --template busybox "$@"
}

lint() {
  say "ruff"
  "$VENV/bin/ruff" check .
  "$PY" manage.py makemigrations --check --dry-run >/dev/null || {
    echo "tt.sh: models changed without a migration (run: $PY manage.py makemigrations)" >&2
    exit 1
  }
}

run_tests() {
  setup
  lint
  say "docs (mkdocs build --strict)"
  local site
  site=$(mktemp -d)
  NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet -d "$site" || {
    rm -rf "$site"
    echo "tt.sh: the docs do not build (a broken link or anchor, or a page missing from mkdocs.yml)" >&2
    exit 1
  }
  rm -rf "$site"
  say "pytest (-n $(test_workers))"
  "$VENV/bin/pytest" -n "$(test_workers)" "$@"
}

# One pytest worker per core (pytest-xdist; TT_TEST_WORKERS overrides, `-n 0` after the command
# runs in one process). The real-guest tests all go to one worker, one after another, while the
# others take the rest (tests/xdist_schedule.py). With TT_REDIS_URL each worker takes its own
# Redis database (the URL's number plus its own: ttportal/config.py), as it has its own test
# database, so no worker sees another's queues or rate counts.
test_workers() {
  if [ -n "${TT_TEST_WORKERS:-}" ]; then echo "$TT_TEST_WORKERS"
  else nproc
  fi
}

run_unit_tests() {
  # No need_root, no apt: the unit tests need only .venv (libvirt's in-process test
  # driver, SQLite in memory, fakes for podman, nftables and Firecracker).
  if [ ! -x "$VENV/bin/pytest" ] || [ ! -x "$VENV/bin/ruff" ]; then
    echo "tt.sh: no .venv with the test packages yet. Make it once, as root: ./tt.sh setup" >&2
    echo "  (or as any user, once the apt packages of ./tt.sh are there:" >&2
    echo "   python3 -m venv .venv && .venv/bin/pip install '.[dev]')" >&2
    exit 1
  fi
  if [ "$(cat "$VENV/.tt-installed" 2>/dev/null)" != "$(sha256sum pyproject.toml | cut -d' ' -f1)" ]; then
    echo "tt.sh: note: pyproject.toml differs from what .venv was installed from (./tt.sh setup updates it)" >&2
  fi
  lint
  say "pytest (unit: not integration, not browser; -n $(test_workers))"
  "$VENV/bin/pytest" -n "$(test_workers)" -m "not integration and not browser" "$@"
}

case "${1:-}" in
  run) shift; run "$@" ;;
  serve) shift; serve_command "$@" ;;
  node-worker) shift; node_worker "$@" ;;
  test)
    shift
    if [ "${1:-}" = --unit ]; then shift; run_unit_tests "$@"; else run_tests "$@"; fi ;;
  setup) setup ;;
  *) echo "usage: $0 run [--production] | serve [--production] | node-worker NAME [options] | test [--unit] [pytest args] | setup" >&2; exit 2 ;;
esac
