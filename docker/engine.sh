# shellcheck shell=bash
# Prepares what a Docker build needs on a machine that may lack it: an engine that answers, a
# Python base image when the official one cannot be pulled, and the host's extra CA
# certificates for TLS-re-signing proxies. Sourced by docker/build.sh (and by other image
# scripts); it defines functions and runs nothing.

KERASFLOW_STATE_DIR="${KERASFLOW_STATE_DIR:-/var/tmp/kerasflow-docker}"
# The registry-less stand-in for the official python image: Debian bookworm's own Python 3.11.
KERASFLOW_LOCAL_BASE="${KERASFLOW_LOCAL_BASE:-kerasflow-base:python3.11-bookworm}"
KERASFLOW_DEBIAN_MIRROR="${KERASFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf 'kerasflow-docker: %s\n' "$*" >&2; }
die() {
  printf 'kerasflow-docker: error: %s\n' "$*" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "needs root to run: $*"
  fi
}

apt_install() {
  log "installing $* with apt-get"
  as_root apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

state_dir() {
  mkdir -p "$KERASFLOW_STATE_DIR"
  printf '%s\n' "$KERASFLOW_STATE_DIR"
}

engine_answers() { docker info >/dev/null 2>&1; }

# An engine that answers `docker info`: installs Debian's docker.io when there is no dockerd
# (a static docker CLI alone, as in /usr/local/bin here, cannot run containers) and starts
# dockerd in the background when nothing answers on the default socket.
ensure_engine() {
  if command -v docker >/dev/null 2>&1 && engine_answers; then
    return 0
  fi
  if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "unix:///var/run/docker.sock" ]; then
    die "no Docker engine answers at DOCKER_HOST=$DOCKER_HOST"
  fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    apt_install docker.io
  fi
  local log_file
  log_file="$(state_dir)/dockerd.log"
  log "starting dockerd (log: $log_file)"
  as_root setsid dockerd >>"$log_file" 2>&1 </dev/null &
  local waited=0
  until engine_answers; do
    if [ "$waited" -ge "${KERASFLOW_DOCKERD_WAIT:-60}" ]; then
      die "dockerd did not answer within ${waited}s; see $log_file"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "dockerd answers after ${waited}s"
}

# A docker CLI that builds with BuildKit (the Dockerfile uses RUN --mount): one with the buildx
# plugin, or a pre-23 CLI whose built-in BuildKit client DOCKER_BUILDKIT=1 turns on (Debian
# bookworm's docker.io 20.10 is one; it has no buildx package).
buildkit_cli() {
  local cli version
  while read -r cli; do
    if "$cli" buildx version >/dev/null 2>&1; then
      printf '%s\n' "$cli"
      return 0
    fi
    version="$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)"
    case "$version" in
      18.09.* | 19.* | 20.* | 21.* | 22.*)
        printf '%s\n' "$cli"
        return 0
        ;;
    esac
  done < <(type -ap docker)
  return 1
}

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# The image to build FROM for the official python base named by the Dockerfile's default:
# that image when present or pullable, else a local bookworm image made with debootstrap.
resolve_python_base() {
  local official="$1"
  if [ -n "${KERASFLOW_PYTHON_IMAGE:-}" ]; then
    printf '%s\n' "$KERASFLOW_PYTHON_IMAGE"
  elif image_present "$official"; then
    printf '%s\n' "$official"
  elif image_present "$KERASFLOW_LOCAL_BASE"; then
    printf '%s\n' "$KERASFLOW_LOCAL_BASE"
  elif timeout "${KERASFLOW_PULL_TIMEOUT:-45}" docker pull -q "$official" >/dev/null 2>&1; then
    printf '%s\n' "$official"
  else
    log "$official cannot be pulled; making $KERASFLOW_LOCAL_BASE with debootstrap"
    make_local_base
    printf '%s\n' "$KERASFLOW_LOCAL_BASE"
  fi
}

# Debian bookworm minbase with python3.11, venv, pip and CA certificates, imported as an image
# that stands in for python:3.11-slim-bookworm: `python` and `pip` on PATH, and pip allowed to
# install into the system interpreter as it is in the official image.
make_local_base() {
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  local rootfs
  # Folders left by an interrupted run go first; they hold a whole root file system each.
  as_root rm -rf "$(state_dir)"/rootfs.*
  rootfs="$(mktemp -d "$(state_dir)/rootfs.XXXXXX")"
  as_root debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$KERASFLOW_DEBIAN_MIRROR" >"$(state_dir)/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $(state_dir)/debootstrap.log"
  as_root chroot "$rootfs" apt-get clean
  as_root rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  as_root tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' -c . |
    docker import \
      --change 'ENV LANG=C.UTF-8' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'LABEL org.opencontainers.image.description="Debian bookworm minbase with Python 3.11 (local stand-in for python:3.11-slim-bookworm)"' \
      --change 'CMD ["python3"]' \
      - "$KERASFLOW_LOCAL_BASE" >/dev/null
  as_root rm -rf "$rootfs"
}

# A file holding the extra CA certificates this host trusts beyond the public ones (those that
# update-ca-certificates took from /usr/local/share/ca-certificates), or nothing when there are
# none. KERASFLOW_EXTRA_CA names a file instead; KERASFLOW_EXTRA_CA=none gives none.
extra_ca_file() {
  if [ "${KERASFLOW_EXTRA_CA:-}" = none ]; then
    return 0
  elif [ -n "${KERASFLOW_EXTRA_CA:-}" ]; then
    [ -s "$KERASFLOW_EXTRA_CA" ] || die "KERASFLOW_EXTRA_CA=$KERASFLOW_EXTRA_CA is not a file"
    printf '%s\n' "$KERASFLOW_EXTRA_CA"
    return 0
  fi
  local certs=() out
  while IFS= read -r -d '' cert; do certs+=("$cert"); done < <(
    find /usr/local/share/ca-certificates -type f -name '*.crt' -print0 2>/dev/null | sort -z
  )
  [ "${#certs[@]}" -gt 0 ] || return 0
  out="$(state_dir)/extra-ca.crt"
  cat "${certs[@]}" >"$out.tmp" && mv "$out.tmp" "$out"
  printf '%s\n' "$out"
}
