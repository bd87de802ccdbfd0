"""`kerasflow run --runner docker`: the same DAG with every step in a container of the image.

kfp.local's DockerRunner covers the container itself; this module covers what it leaves open:

- it checks the engine and the image before any step runs (one line, exit 2, on failure);
- it mounts only the pipeline root, so the work directory (SQLite store, control files), the
  serving directory and a SQLite store elsewhere are mounted too, at the same paths;
- containers join the host's network, so a tracking server on the host's loopback answers;
- containers run as a non-root user: the caller's uid, or the image's user (uid 1000) when the
  caller is root, which then gets the mounted folders it must write;
- a container labelled with the run's token is stopped when the run is interrupted, and a step
  stops itself when `kerasflow run` dies (it watches a file the command touches every second);
- kfp counts a container that was removed before it could be waited on as exit code 0, so each
  step leaves its exit status in the control folder and the command checks them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from kerasflow.runtime.errors import UserError, first_line

RUNNERS = ("subprocess", "docker")
IMAGE_UID = 1000
"""The uid of the image's own user (docker/Dockerfile)."""
LABEL = "kerasflow.driver"


def _client() -> Any:
    try:
        import docker
    except ImportError:
        raise UserError(
            "the docker runner needs the Python package 'docker' (pip install docker)"
        ) from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine to use
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        first = first_line(exc)
        raise UserError(
            f"no Docker engine answers at {where} ({first[:200]}); start one "
            "(docker/build.sh installs and starts it) or use --runner subprocess"
        ) from None
    return client


def check_image(image: str) -> str:
    """The image's full reference, after checking the engine answers and has it.

    Raises:
        UserError: no engine, or the image is not on this machine (nothing is pulled).
    """
    if not image:
        raise UserError("--runner docker needs --image (build one with docker/build.sh)")
    ref = image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"
    client = _client()
    try:
        import docker

        client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise UserError(
            f"image '{ref}' is not on this machine: build it with `bash docker/build.sh {ref}`"
        ) from None
    finally:
        client.close()
    return ref


def image_identity(ref: str) -> str:
    """`ref@<image id>`: the tag and the content it named when the run started."""
    client = _client()
    try:
        return f"{ref}@{client.images.get(ref).id}"
    finally:
        client.close()


def container_user() -> str:
    """The user containers run as: the caller, or the image's own user for root."""
    uid = os.geteuid()
    return f"{IMAGE_UID}:{IMAGE_UID}" if uid == 0 else f"{uid}:{os.getegid()}"


def give_to_container_user(folders: list[Path]) -> None:
    """Lets the containers' user write the folders it must write (only when run as root).

    The folders go to the image's user and group, and their folders get the set-group-id bit,
    so what this process creates in them during the run (kfp.local makes each task's output
    folder before its container starts) belongs to that group; with the umask 002 the run
    then uses, the group may write it.
    """
    if os.geteuid() != 0:
        return
    import stat

    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for root, dirs, files in os.walk(folder):
            for name in [*dirs, *files, ""]:
                path = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    os.lchown(path, IMAGE_UID, IMAGE_UID)
                    if os.path.isdir(path) and not os.path.islink(path):
                        mode = os.stat(path).st_mode
                        os.chmod(path, mode | stat.S_ISGID | stat.S_IRWXG)
    os.umask(0o002)


def make_runner(
    token: str, folders: list[Path], pipeline_root: Path, environment: dict[str, str]
) -> Any:
    """A kfp.local DockerRunner for the run with token `token`.

    `folders` are mounted at their own paths, less those inside another one or inside the
    pipeline root, which kfp mounts itself.
    """
    from docker.types import Mount
    from kfp import local

    paths = sorted({f.absolute() for f in folders})
    root = pipeline_root.absolute()
    unique = [
        str(p)
        for p in paths
        if not p.is_relative_to(root) and not any(p != q and p.is_relative_to(q) for q in paths)
    ]
    return local.DockerRunner(
        network_mode="host",
        user=container_user(),
        environment=environment,
        labels={LABEL: token},
        mounts=[Mount(target=f, source=f, type="bind") for f in unique],
    )


def stop_containers(token: str) -> int:
    """Sends SIGTERM to the run's containers; returns how many there were."""
    try:
        import docker

        client = docker.from_env()
    except Exception:  # noqa: BLE001 - nothing to stop without an engine
        return 0
    stopped = 0
    with contextlib.closing(client):
        for container in client.containers.list(filters={"label": f"{LABEL}={token}"}):
            with contextlib.suppress(Exception):
                container.kill(signal="SIGTERM")
                stopped += 1
    return stopped


def containers_started(token: str, since: float) -> int:
    """Containers the engine started for the run with token `token` (from its events)."""
    import time

    import docker

    client = docker.from_env()
    with contextlib.closing(client):
        events = client.events(
            since=int(since),
            until=int(time.time()) + 1,
            decode=True,
            filters={"label": f"{LABEL}={token}", "event": "start", "type": "container"},
        )
        return sum(1 for _ in events)


def unreported_steps(status_dir: Path, ran: list[str]) -> list[str]:
    """Steps kfp counted as succeeded that left no exit status 0 (see the module's notes)."""
    missing = []
    for step in ran:
        path = status_dir / f"{step}.exit"
        if not path.is_file() or path.read_text().strip() != "0":
            missing.append(step)
    return missing
