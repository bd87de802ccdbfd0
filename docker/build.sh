#!/usr/bin/env bash
# Builds the kerasflow component image from docker/Dockerfile on this machine or any Docker host.
#
#   docker/build.sh [--target runtime|gpu] [--no-cache] [TAG]     (TAG defaults to kerasflow:dev)
#
# First it prepares what a bare machine lacks, each step skipped when already in place: a Docker
# engine (Debian's docker.io installed and dockerd started), a BuildKit-capable CLI, a Python base
# image when the Dockerfile's official default cannot be pulled (Debian bookworm made with
# debootstrap and imported), and the host's extra CA certificates, handed to the build as the
# BuildKit secret `extra_ca` so that pip trusts a TLS-re-signing proxy without the certificate
# landing in any image layer. Then it builds and prints the image's size and the build time.
#
# Environment: KERASFLOW_PYTHON_IMAGE (base to build from), KERASFLOW_TF_GPU_IMAGE (the gpu
# target's base), KERASFLOW_EXTRA_CA (a CA file, or `none`), KERASFLOW_STATE_DIR (logs and
# scratch, /var/tmp/kerasflow-docker), KERASFLOW_LOCAL_BASE (tag of the debootstrap base),
# KERASFLOW_DEBIAN_MIRROR, KERASFLOW_PULL_TIMEOUT (seconds, 45).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$ROOT/docker/Dockerfile"
# shellcheck source=docker/engine.sh
source "$ROOT/docker/engine.sh"

usage() {
  sed -n '4p' "$0" | sed 's/^# *//' >&2
  exit 2
}

TARGET=runtime
TAG=""
EXTRA=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --target) [ "$#" -ge 2 ] || usage; TARGET="$2"; shift 2 ;;
    --target=*) TARGET="${1#--target=}"; shift ;;
    --no-cache) EXTRA+=(--no-cache); shift ;;
    -h | --help) usage ;;
    -*) printf 'kerasflow-docker: error: unknown option %s\n' "$1" >&2; usage ;;
    *) [ -z "$TAG" ] || usage; TAG="$1"; shift ;;
  esac
done
case "$TARGET" in
  runtime) TAG="${TAG:-kerasflow:dev}" ;;
  gpu) TAG="${TAG:-kerasflow:dev-gpu}" ;;
  *) die "unknown target $TARGET (runtime or gpu)" ;;
esac

arg_default() { sed -n "s/^ARG $1=//p" "$DOCKERFILE" | head -n 1; }

# The build context is filtered by .dockerignore; the pins must get through it.
if [ -f "$ROOT/.dockerignore" ] && ! grep -qxE '!/?constraints\.txt' "$ROOT/.dockerignore"; then
  die ".dockerignore keeps constraints.txt out of the build context; add the line !constraints.txt"
fi

# One preparation at a time: two builds must not both start dockerd or debootstrap.
exec 9>"$(state_dir)/prepare.lock"
flock 9
ensure_engine
CLI="$(buildkit_cli)" ||
  die "no docker CLI here builds with BuildKit: install the buildx plugin, or use a Docker 18.09-22 CLI"
BASE="$(resolve_python_base "$(arg_default PYTHON_IMAGE)")"
BUILD_ARGS=(--build-arg "PYTHON_IMAGE=$BASE")
COMMIT="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || true)"
if [ -n "$COMMIT" ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  COMMIT="$COMMIT+dirty"
fi
BUILD_ARGS+=(--build-arg "KERASFLOW_GIT_COMMIT=${COMMIT:-unknown}")
if [ "$TARGET" = gpu ]; then
  GPU_BASE="${KERASFLOW_TF_GPU_IMAGE:-$(arg_default TF_GPU_IMAGE)}"
  if ! image_present "$GPU_BASE" &&
    ! timeout "${KERASFLOW_PULL_TIMEOUT:-45}" docker pull -q "$GPU_BASE" >/dev/null 2>&1; then
    die "the gpu target builds FROM $GPU_BASE, which is neither present nor pullable here"
  fi
  BUILD_ARGS+=(--build-arg "TF_GPU_IMAGE=$GPU_BASE")
fi
CA="$(extra_ca_file)"
flock -u 9

SECRETS=()
if [ -n "$CA" ]; then
  SECRETS=(--secret "id=extra_ca,src=$CA")
fi

log "building $TAG (target $TARGET, base $BASE${CA:+, extra CA from $CA}) with $CLI"
start=$(date +%s)
DOCKER_BUILDKIT=1 "$CLI" build --progress=plain \
  --file "$DOCKERFILE" --target "$TARGET" --tag "$TAG" \
  "${BUILD_ARGS[@]}" "${SECRETS[@]}" "${EXTRA[@]}" "$ROOT"
seconds=$(($(date +%s) - start))

bytes="$(docker image inspect --format '{{.Size}}' "$TAG")"
printf 'image %s: %s MB (%s bytes), built in %ss\n' "$TAG" "$((bytes / 1000000))" "$bytes" "$seconds"
