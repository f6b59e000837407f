"""Connecting to the Docker engine, with messages a person can act on when that fails."""

from __future__ import annotations

import os
import shutil
from typing import Any

ENGINE_SCRIPT = "scripts/docker-engine"


class EngineUnavailable(RuntimeError):
    """No usable Docker engine: `reason` is one of missing, not-running, permission, error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def _explain(exc: BaseException) -> EngineUnavailable:
    text = str(exc)
    sock = _socket_path()
    if "Permission denied" in text or isinstance(exc.__cause__, PermissionError):
        return EngineUnavailable(
            "permission",
            f"permission denied on the Docker socket {sock or ''}: run as root or add your user to the "
            "'docker' group (then log in again)",
        )
    if sock is not None and not os.path.exists(sock):
        if shutil.which("dockerd") is None:
            return EngineUnavailable(
                "missing",
                f"no Docker engine is installed: install one (as root: {ENGINE_SCRIPT}, "
                "or apt-get install docker.io) or use --backend netns",
            )
        return EngineUnavailable(
            "not-running",
            f"the Docker engine is installed but not running (no socket {sock}): start it "
            f"(as root: {ENGINE_SCRIPT}) or use --backend netns",
        )
    return EngineUnavailable("error", f"the Docker engine does not answer: {text}")


def connect(timeout: int = 120) -> Any:
    """A docker SDK client for the engine of DOCKER_HOST (or the default socket), checked with a ping."""
    import docker  # the SDK is imported lazily so that netns-only use never needs it
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, OSError) as exc:
        raise _explain(exc) from exc
    return client


def engine_answers() -> bool:
    """True when a Docker engine answers (used by `--backend auto`)."""
    try:
        connect(timeout=5).close()
    except EngineUnavailable:
        return False
    return True
