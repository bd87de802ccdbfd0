#!/usr/bin/env bash
# Runs an MLflow tracking server in a container of docker/mlflow.Dockerfile's image, backed by a
# PostgreSQL database that runs on this machine, both on the host's loopback.
#
#   docker/mlflow-server.sh {start|stop|status} [--port 5000] [--dir DIR] [--host ADDR] [--build]
#                           [--purge]
#
# start   builds the image when it is missing (or with --build; the engine's layer cache makes an
#         unchanged image a few seconds' work), starts PostgreSQL (as the `postgres` user when run
#         as root, its cluster in DIR/postgres, listening on 127.0.0.1 only, password auth)
#         unless it is running, starts the server container on the host network with its
#         artifacts in DIR/artifacts, waits for /health and prints the tracking URI
#         (http://127.0.0.1:PORT). Steps in containers on the host network (kerasflow's Docker
#         runner) and the host reach it there. When the server of DIR is already up, it only
#         prints the URI.
# stop    stops the container and PostgreSQL; the data stays in DIR for the next start, unless
#         --purge deletes what start made there (database, artifacts, password, logs).
# status  says what runs; exit 0 when the server answers, 3 when it does not.
#
# The server listens on ADDR (127.0.0.1: the host network makes that enough for local
# containers; 0.0.0.0 exposes it, without authentication, to the network).
#
# Environment: KERASFLOW_MLFLOW_IMAGE (tag, kerasflow-mlflow:dev), KERASFLOW_MLFLOW_WORKERS
# (server workers, 1), KERASFLOW_MLFLOW_WAIT (seconds to wait for /health, 180),
# KERASFLOW_PG_BIN (folder of initdb and pg_ctl), KERASFLOW_PG_PORT (PostgreSQL's port, chosen
# once when its cluster is made; a free one by default), and docker/build.sh's variables for
# the build (KERASFLOW_PYTHON_IMAGE, KERASFLOW_EXTRA_CA, KERASFLOW_STATE_DIR, ...).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$ROOT/docker/mlflow.Dockerfile"
# shellcheck source=docker/engine.sh
source "$ROOT/docker/engine.sh"

IMAGE="${KERASFLOW_MLFLOW_IMAGE:-kerasflow-mlflow:dev}"
WORKERS="${KERASFLOW_MLFLOW_WORKERS:-1}"
ARTIFACTS_IN_CONTAINER=/mlflow/artifacts

usage() {
  sed -n '5,6p' "$0" | sed 's/^#   //' >&2
  exit 2
}

COMMAND=""
PORT=""
DIR=""
HOST_ADDR=""
BUILD=0
PURGE=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    start | stop | status) [ -z "$COMMAND" ] || usage; COMMAND="$1"; shift ;;
    --port) [ "$#" -ge 2 ] || usage; PORT="$2"; shift 2 ;;
    --port=*) PORT="${1#--port=}"; shift ;;
    --dir) [ "$#" -ge 2 ] || usage; DIR="$2"; shift 2 ;;
    --dir=*) DIR="${1#--dir=}"; shift ;;
    --host) [ "$#" -ge 2 ] || usage; HOST_ADDR="$2"; shift 2 ;;
    --host=*) HOST_ADDR="${1#--host=}"; shift ;;
    --build) BUILD=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) usage ;;
    *) printf 'kerasflow-docker: error: unknown argument %s\n' "$1" >&2; usage ;;
  esac
done
[ -n "$COMMAND" ] || usage
if [ -n "$PORT" ] && ! [[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1 && "$PORT" -le 65535 ]]; then
  die "--port must be a TCP port number, not $PORT"
fi

DIR="$(realpath -m "${DIR:-$KERASFLOW_STATE_DIR/mlflow-server}")"
KEY="$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)"
NAME="kerasflow-mlflow-$KEY"
PGLINK="$DIR/postgres"
PASSWORD_FILE="$DIR/postgres.password"

# --- PostgreSQL on the host -------------------------------------------------------------------

pg_bin() {
  local dir
  if [ -n "${KERASFLOW_PG_BIN:-}" ]; then
    printf '%s\n' "$KERASFLOW_PG_BIN"
  elif command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
  else
    dir="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
    if [ -z "$dir" ] || [ ! -x "$dir/pg_ctl" ]; then
      die "PostgreSQL is not installed (no initdb/pg_ctl; apt-get install postgresql, or set KERASFLOW_PG_BIN)"
    fi
    printf '%s\n' "$dir"
  fi
}

# PostgreSQL refuses to run as root: as root its commands run as the `postgres` user. The
# server must not inherit the locks' descriptors (it would hold them as long as it runs).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@") 8>&- 9>&-
  else
    (cd / && "$@") 8>&- 9>&-
  fi
}

pg_data() { readlink -f "$PGLINK"; }

pg_running() { [ -e "$PGLINK" ] && as_pg "$PG/pg_ctl" -D "$(pg_data)" status >/dev/null 2>&1; }

pg_port() { sed -n "s/^port = \([0-9]*\).*/\1/p" "$(pg_data)/postgresql.conf" | tail -n 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A cluster in DIR/postgres. When the postgres user cannot reach DIR (a folder under /root or
# a private temporary folder), the cluster lives under the state folder and DIR/postgres links
# to it.
pg_init() {
  local data pwfile port
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 ||
      die "running as root and there is no 'postgres' user to run PostgreSQL (apt-get install postgresql creates one)"
  fi
  if [ ! -e "$PGLINK" ]; then
    if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$DIR" 2>/dev/null; then
      mkdir -m 700 "$PGLINK"
    else
      mkdir -p "$(state_dir)/postgres"
      chmod 755 "$(state_dir)" "$(state_dir)/postgres"
      rm -rf "$(state_dir)/postgres/$KEY"
      mkdir -m 700 "$(state_dir)/postgres/$KEY"
      ln -s "$(state_dir)/postgres/$KEY" "$PGLINK"
    fi
    [ "$(id -u)" -ne 0 ] || chown postgres: "$(pg_data)"
  fi
  data="$(pg_data)"
  [ -f "$data/PG_VERSION" ] && return 0
  [ -z "$(ls -A "$data")" ] || die "$data is neither empty nor a PostgreSQL cluster"

  log "making a PostgreSQL cluster in $data"
  (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$PASSWORD_FILE")
  # initdb wants an empty folder: the password file it reads sits beside it.
  pwfile="$(dirname "$data")/.pwfile-$KEY"
  (umask 077 && cp "$PASSWORD_FILE" "$pwfile")
  [ "$(id -u)" -ne 0 ] || chown postgres: "$pwfile"
  if ! as_pg "$PG/initdb" -D "$data" -U postgres --pwfile="$pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C >"$DIR/initdb.log" 2>&1; then
    rm -f "$pwfile"
    die "initdb failed; see $DIR/initdb.log"
  fi
  rm -f "$pwfile"
  port="${KERASFLOW_PG_PORT:-$(free_port)}"
  # Loopback only, no Unix socket (its path length is limited), commits acknowledged before
  # they reach the disk (a crash loses the last moments, never the database's consistency).
  cat >>"$data/postgresql.conf" <<EOF

# docker/mlflow-server.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
synchronous_commit = off
EOF
}

pg_start() {
  PG="$(pg_bin)"
  pg_init
  if pg_running; then
    return 0
  fi
  log "starting PostgreSQL on 127.0.0.1:$(pg_port) (log: $(pg_data)/server.log)"
  as_pg "$PG/pg_ctl" -D "$(pg_data)" -l "$(pg_data)/server.log" -w -t 60 start >/dev/null ||
    die "PostgreSQL did not start; see $(pg_data)/server.log"
  local err
  err="$(PGPASSWORD="$(cat "$PASSWORD_FILE")" as_pg "$PG/createdb" -h 127.0.0.1 -p "$(pg_port)" \
    -U postgres mlflow 2>&1)" ||
    case "$err" in
      *"already exists"*) ;;
      *) die "createdb mlflow failed: $err" ;;
    esac
}

pg_stop() {
  PG="$(pg_bin)"
  if pg_running; then
    as_pg "$PG/pg_ctl" -D "$(pg_data)" -m fast -w -t 60 stop >/dev/null
    log "PostgreSQL stopped"
  fi
}

# --- the server container -------------------------------------------------------------------

container_state() { docker inspect --format '{{.State.Status}}' "$NAME" 2>/dev/null || true; }

label() { docker inspect --format "{{index .Config.Labels \"kerasflow.mlflow.$1\"}}" "$NAME"; }

# The address clients use: the listening one, or loopback when it listens on every interface.
client_addr() {
  case "$1" in
    0.0.0.0 | :: | "") printf '127.0.0.1\n' ;;
    *:*) printf '[%s]\n' "$1" ;;
    *) printf '%s\n' "$1" ;;
  esac
}

healthy() {
  curl -fsS -o /dev/null --max-time 3 "http://$(client_addr "$HOST_ADDR"):$1/health" 2>/dev/null
}

port_taken() {
  ! python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))' "$HOST_ADDR" "$1" 2>/dev/null
}

build_image() {
  if [ -f "$ROOT/.dockerignore" ] && ! grep -qxE '!/?constraints\.txt' "$ROOT/.dockerignore"; then
    die ".dockerignore keeps constraints.txt out of the build context; add the line !constraints.txt"
  fi
  local cli base ca build_log start seconds bytes
  exec 9>"$(state_dir)/prepare.lock"
  flock 9
  cli="$(buildkit_cli)" ||
    die "no docker CLI here builds with BuildKit: install the buildx plugin, or use a Docker 18.09-22 CLI"
  base="$(resolve_python_base "$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$DOCKERFILE" | head -n 1)")"
  ca="$(extra_ca_file)"
  flock -u 9
  local secrets=()
  [ -z "$ca" ] || secrets=(--secret "id=extra_ca,src=$ca")
  build_log="$DIR/build.log"
  log "building $IMAGE (base $base${ca:+, extra CA from $ca}); log: $build_log"
  start=$(date +%s)
  DOCKER_BUILDKIT=1 "$cli" build --progress=plain --file "$DOCKERFILE" --tag "$IMAGE" \
    --build-arg "PYTHON_IMAGE=$base" "${secrets[@]}" "$ROOT" >"$build_log" 2>&1 || {
    tail -n 30 "$build_log" >&2
    die "building $IMAGE failed; see $build_log"
  }
  seconds=$(($(date +%s) - start))
  bytes="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
  log "image $IMAGE: $((bytes / 1000000)) MB, built in ${seconds}s"
}

start() {
  local state running uri env_file began waited
  mkdir -p "$DIR"
  state="$(container_state)"
  if [ "$state" = running ]; then
    running="$(label address):$(label port)"
    if [ "$running" != "${HOST_ADDR:-$(label address)}:${PORT:-$(label port)}" ]; then
      die "the server of $DIR already listens on $running; stop it first to change that"
    fi
    HOST_ADDR="$(label address)"
    PORT="$(label port)"
  fi
  # Without --port or --host, the server comes back where it last listened.
  if [ -f "$DIR/server.address" ]; then
    HOST_ADDR="${HOST_ADDR:-$(cut -d' ' -f1 "$DIR/server.address")}"
    PORT="${PORT:-$(cut -d' ' -f2 "$DIR/server.address")}"
  fi
  HOST_ADDR="${HOST_ADDR:-127.0.0.1}"
  PORT="${PORT:-5000}"
  uri="http://$(client_addr "$HOST_ADDR"):$PORT"
  if [ "$state" = running ] && pg_running_quiet && healthy "$PORT"; then
    log "already running ($NAME)"
    printf '%s\n' "$uri"
    return 0
  fi

  if [ "$state" != running ] && port_taken "$PORT"; then
    die "port $PORT is already in use on this machine; choose another with --port"
  fi
  ensure_engine 8>&-
  if [ "$BUILD" = 1 ] || ! image_present "$IMAGE"; then
    build_image
  fi
  pg_start

  if [ "$state" != running ]; then
    [ -z "$state" ] || docker rm -f "$NAME" >/dev/null
    mkdir -p "$DIR/artifacts"
    local user=()
    if [ "$(id -u)" -eq 0 ]; then
      chown 10001:10001 "$DIR/artifacts"
    else
      user=(--user "$(id -u):$(id -g)")
    fi
    # The database URI holds the password: it goes in through a file, not the command line.
    env_file="$DIR/server.env"
    (umask 077 && printf 'MLFLOW_BACKEND_STORE_URI=postgresql://postgres:%s@127.0.0.1:%s/mlflow\n' \
      "$(cat "$PASSWORD_FILE")" "$(pg_port)" >"$env_file")
    log "starting $NAME from $IMAGE on $HOST_ADDR:$PORT (artifacts in $DIR/artifacts)"
    printf '%s %s\n' "$HOST_ADDR" "$PORT" >"$DIR/server.address"
    # --init: a signal-forwarding PID 1, so that `docker stop` ends the server at once.
    docker run --detach --init --name "$NAME" --network host --restart no "${user[@]}" \
      --label "kerasflow.mlflow.dir=$DIR" --label "kerasflow.mlflow.port=$PORT" \
      --label "kerasflow.mlflow.address=$HOST_ADDR" \
      --env-file "$env_file" --env "MLFLOW_PORT=$PORT" \
      --volume "$DIR/artifacts:$ARTIFACTS_IN_CONTAINER" \
      "$IMAGE" server --artifacts-destination "$ARTIFACTS_IN_CONTAINER" \
      --host "$HOST_ADDR" --port "$PORT" --workers "$WORKERS" >/dev/null
  fi

  began=$SECONDS
  until healthy "$PORT"; do
    waited=$((SECONDS - began))
    if [ "$(container_state)" != running ]; then
      docker logs --tail 30 "$NAME" >&2 || true
      die "the server container stopped; its log is above (docker logs $NAME)"
    fi
    if [ "$waited" -ge "${KERASFLOW_MLFLOW_WAIT:-180}" ]; then
      docker logs --tail 30 "$NAME" >&2 || true
      die "the server did not answer $uri/health within ${waited}s"
    fi
    sleep 1
  done
  log "server answers at $uri after $((SECONDS - began))s"
  printf '%s\n' "$uri"
}

pg_running_quiet() {
  PG="$(pg_bin)"
  pg_running
}

stop() {
  local state
  state="$(container_state)"
  if [ -n "$state" ]; then
    docker stop --time 10 "$NAME" >/dev/null 2>&1 || true
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    log "server container $NAME stopped"
  fi
  if [ -e "$PGLINK" ]; then
    pg_stop
  fi
  if [ "$PURGE" = 1 ] && [ -d "$DIR" ]; then
    # A cluster kept under the state folder for DIR (see pg_init) goes too.
    if [ -L "$PGLINK" ] && [ "$(pg_data)" = "$(realpath -m "$KERASFLOW_STATE_DIR/postgres/$KEY")" ]; then
      rm -rf "$(pg_data)"
    fi
    rm -rf "$PGLINK" "$DIR/artifacts" "$PASSWORD_FILE" "$DIR/server.env" "$DIR/server.address" \
      "$DIR/initdb.log" "$DIR/build.log"
    log "deleted the database and artifacts of $DIR"
  fi
}

status() {
  local state uri code=3
  state="$(container_state)"
  if [ "$state" = running ]; then
    HOST_ADDR="$(label address)"
    uri="http://$(client_addr "$HOST_ADDR"):$(label port)"
    if healthy "$(label port)"; then
      printf 'mlflow: running at %s (container %s)\n' "$uri" "$NAME"
      code=0
    else
      printf 'mlflow: container %s runs but %s/health does not answer\n' "$NAME" "$uri"
    fi
  else
    printf 'mlflow: stopped\n'
  fi
  if [ -e "$PGLINK" ] && pg_running_quiet; then
    printf 'postgres: running on 127.0.0.1:%s (data %s)\n' "$(pg_port)" "$(pg_data)"
  else
    printf 'postgres: stopped\n'
  fi
  return "$code"
}

# One command at a time per server folder.
if [ "$COMMAND" = start ] || [ -d "$DIR" ]; then
  mkdir -p "$DIR"
  exec 8>"$DIR/.lock"
  flock 8
fi
case "$COMMAND" in
  start) start ;;
  stop) stop ;;
  status) status ;;
esac
