"""Backends that build labs: `netns` (network namespaces, root only) and `docker` (a Docker engine).

`get_backend(name)` returns one by name; `choose_backend("auto")` picks what works here.
"""

from __future__ import annotations

from labctl.backends.base import Backend, BackendError, BackendUnavailable

BACKEND_NAMES = ("netns", "docker")
CHOICES = ("auto", *BACKEND_NAMES)


def get_backend(name: str) -> Backend:
    if name == "netns":
        from labctl.backends.netns import NetnsBackend

        return NetnsBackend()
    if name == "docker":
        from labctl.backends.docker import DockerBackend

        return DockerBackend()
    raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(CHOICES)}")


def choose_backend(requested: str) -> Backend:
    """The backend to use for `up`: the one asked for, or for "auto" the first that is available here."""
    if requested != "auto":
        backend = get_backend(requested)
        ok, reason = backend.available()
        if not ok:
            raise BackendUnavailable(reason)
        return backend
    reasons = []
    for name in ("docker", "netns"):
        try:
            backend = get_backend(name)
        except BackendUnavailable as exc:
            reasons.append(f"{name}: {exc}")
            continue
        ok, reason = backend.available()
        if ok:
            return backend
        reasons.append(f"{name}: {reason}")
    raise BackendUnavailable("no backend can run here (" + "; ".join(reasons) + ")")
