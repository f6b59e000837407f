"""Container images for Docker labs, built where no container registry can be reached.

Layers, each cached by a hash of what goes into it so an unchanged tree is never rebuilt:

1. ``labctl-base``: Debian (suite ``BASE_SUITE``) with the lab tools. Made by debootstrap from the mirror in
   the host's apt sources and ``docker import``-ed; the root file system tarball is kept in the cache
   directory, so it is made once per machine and a fresh engine only re-imports it. Where a registry does
   answer, the official slim image plus the same package list gives the same base.
2. ``labctl-gateway``: the base + a venv holding only the gateway's own dependencies (wheels fetched on the
   host, since pip inside a container cannot reach the index) + ``labctl/__init__.py`` and
   ``labctl/gateway/`` (the orchestrator is deliberately absent: the gateway must not import it).
3. ``labctl-host``: the base + a small TCP/UDP echo tool.

The Dockerfiles live in ``images/<name>/``; ``images/node-entrypoint`` is shared by every node image. Installed,
they are package data (``labctl/image_files``, a link to ``images/`` in the source tree; see MANIFEST.in).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import labctl

Progress = Callable[[str], None]
DETAIL = "  "
"""Prefix of progress lines that are detail (tool output); the others are milestones worth keeping on screen."""

BASE_SUITE = "bookworm"
# The container's Python must match the wheels fetched on the host: bookworm ships CPython 3.11.
CONTAINER_PYTHON = "3.11"
BASE_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-venv",
    "iproute2",
    "iputils-ping",
    "nftables",
    "procps",
    "tcpdump",
    "iperf3",
    "ethtool",
)
# Bump when the way the base is made changes (not its inputs, which are hashed anyway).
BASE_RECIPE = "1"
GATEWAY_REQUIREMENTS: tuple[str, ...] = ("cryptography", "pyroute2")
IMAGE_PREFIX = "labctl-"
LABEL_IMAGE = "labctl.image"
LABEL_INPUTS = "labctl.inputs"
SLIM_BASE = ("debian", f"{BASE_SUITE}-slim")
TAG_LEN = 16
CURRENT_TAG = "current"


class ImageError(RuntimeError):
    """An image could not be built; the message says why and what to do."""


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------------------------- locations


def images_dir() -> Path:
    """The directory with the Dockerfiles: ``labctl/image_files`` (a link to the source tree's ``images/``, and
    package data in a wheel, so an installed labctl finds it too), or $LABCTL_IMAGES_DIR."""
    env = os.environ.get("LABCTL_IMAGES_DIR")
    path = Path(env) if env else Path(labctl.__file__).resolve().parent / "image_files"
    if not (path / "node-entrypoint").is_file():
        raise ImageError(f"image sources not found in {path}: set LABCTL_IMAGES_DIR to the images/ directory")
    return path


def cache_dir() -> Path:
    """Where the base tarball and wheels are kept ($LABCTL_CACHE, else /var/cache/labctl as root)."""
    env = os.environ.get("LABCTL_CACHE")
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = Path("/var/cache/labctl")
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labctl"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise builds of the same thing by concurrent labctl processes."""
    with open(cache_dir() / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------- apt mirror


@dataclass(frozen=True)
class Mirror:
    uri: str
    suites: tuple[str, ...]
    keyring: str | None = None


def _deb822_entries(text: str) -> Iterator[dict[str, str]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields:
            yield fields


def parse_sources(text: str, deb822: bool) -> list[Mirror]:
    """The binary ('deb') entries of an apt sources file, one-line or deb822 format."""
    mirrors: list[Mirror] = []
    if deb822:
        for f in _deb822_entries(text):
            if "deb" not in f.get("types", "").split() or f.get("enabled", "yes").lower() == "no":
                continue
            for uri in f.get("uris", "").split():
                mirrors.append(Mirror(uri.rstrip("/"), tuple(f.get("suites", "").split()), f.get("signed-by")))
        return mirrors
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        options = re.search(r"\[([^\]]*)\]", line)
        keyring = None
        if options:
            for opt in options.group(1).split():
                if opt.startswith("signed-by="):
                    keyring = opt.split("=", 1)[1]
            line = line[: options.start()] + line[options.end() :]
        parts = line.split()
        if len(parts) >= 3:
            mirrors.append(Mirror(parts[1].rstrip("/"), (parts[2],), keyring))
    return mirrors


def host_mirror(suite: str = BASE_SUITE, apt_dir: Path = Path("/etc/apt")) -> Mirror:
    """The host's Debian mirror: an entry carrying `suite`, else any Debian archive (it has every suite)."""
    mirrors: list[Mirror] = []
    files = [apt_dir / "sources.list"] + sorted((apt_dir / "sources.list.d").glob("*"))
    for path in files:
        if path.is_file() and path.suffix in (".list", ".sources"):
            mirrors += parse_sources(path.read_text(), deb822=path.suffix == ".sources")
    for m in mirrors:
        if suite in m.suites:
            return m
    for m in mirrors:
        if m.uri.endswith("/debian") and "security" not in m.uri:
            return Mirror(m.uri, (suite,), m.keyring)
    raise ImageError(
        f"no Debian mirror in the apt sources under {apt_dir}: the base image ({suite}) is made with "
        "debootstrap from the host's Debian mirror"
    )


# --------------------------------------------------------------------------------------------- base image


def base_key(suite: str = BASE_SUITE, packages: Sequence[str] = BASE_PACKAGES) -> str:
    text = "\n".join([BASE_RECIPE, suite, *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:TAG_LEN]


def base_tag() -> str:
    return f"{IMAGE_PREFIX}base:{base_key()}"


def _image_exists(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def _run_streaming(cmd: list[str], progress: Progress) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for line in proc.stdout or ():
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        progress(DETAIL + line)
    if proc.wait() != 0:
        raise ImageError(f"{cmd[0]} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def _trim_rootfs(rootfs: Path) -> None:
    """Drop package caches and docs from a fresh root file system (never following its symlinks)."""
    top = rootfs.resolve()
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        folder = rootfs / junk
        # An absolute symlink inside the rootfs would point into the HOST: stay inside the tree.
        if not folder.resolve().is_relative_to(top) or folder.is_symlink() or not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def _debootstrap_tarball(tarball: Path, progress: Progress) -> None:
    """Make the base root file system with debootstrap and pack it as `tarball` (atomically)."""
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (as root: apt-get install -y debootstrap)")
    if os.geteuid() != 0:
        raise ImageError("making the base image with debootstrap needs root")
    mirror = host_mirror()
    rootfs = tarball.with_suffix(".rootfs")
    shutil.rmtree(rootfs, ignore_errors=True)  # left over by a run that was killed
    cmd = ["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES)]
    if mirror.keyring and Path(mirror.keyring).is_file():
        cmd.append("--keyring=" + mirror.keyring)
    cmd += [BASE_SUITE, str(rootfs), mirror.uri]
    progress(f"base: debootstrap {BASE_SUITE} from {mirror.uri} (about a minute, once per machine)")
    try:
        _run_streaming(cmd, progress)
        _trim_rootfs(rootfs)
        tmp = tarball.with_suffix(".tmp")
        _run_streaming(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tmp), "."], progress)
        tmp.rename(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _registry_answers(client: Any, progress: Progress) -> bool:
    from docker.errors import APIError

    try:
        client.images.pull(*SLIM_BASE)
    except APIError as exc:
        progress(f"base: no registry ({str(exc).splitlines()[0][:100]}); making the base locally")
        return False
    return True


def _build_base_from_slim(client: Any, tag: str, progress: Progress) -> None:
    dockerfile = (
        f"FROM {SLIM_BASE[0]}:{SLIM_BASE[1]}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends "
        + " ".join(BASE_PACKAGES)
        + " && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man\n"
    )
    progress(f"base: registry answers, building {tag} from {SLIM_BASE[0]}:{SLIM_BASE[1]}")
    with tempfile.TemporaryDirectory(prefix="labctl-base-") as ctx:
        Path(ctx, "Dockerfile").write_text(dockerfile)
        _docker_build(client, Path(ctx), tag, {LABEL_IMAGE: "base", LABEL_INPUTS: base_key()}, {}, progress)


def ensure_base(client: Any, progress: Progress = _quiet, rebuild: bool = False) -> str:
    """The base image's tag, importing the cached tarball or making the base when needed."""
    tag = base_tag()
    with _locked("base"):
        if not rebuild and _image_exists(client, tag):
            progress(f"base: {tag} up to date")
            return tag
        tarball = cache_dir() / f"base-{base_key()}.tar"
        if rebuild:
            tarball.unlink(missing_ok=True)
        if not tarball.exists():
            if _registry_answers(client, progress):
                _build_base_from_slim(client, tag, progress)
                return tag
            _debootstrap_tarball(tarball, progress)
        progress(f"base: importing {tarball.name} as {tag}")
        repo, _, version = tag.partition(":")
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"LABEL {LABEL_IMAGE}=base {LABEL_INPUTS}={base_key()}",
            'CMD ["/bin/bash"]',
        ]
        client.api.import_image_from_file(str(tarball), repository=repo, tag=version, changes=changes)
        if not _image_exists(client, tag):
            raise ImageError(f"docker import of {tarball} did not produce {tag}")
    return tag


# --------------------------------------------------------------------------------------------- wheels


def _pinned(requirements: Sequence[str]) -> list[str]:
    """Pin to the versions installed on the host, so the gateway runs the code the tests ran."""
    pins = []
    for name in requirements:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _platform_tags() -> list[str]:
    arch = platform.machine()
    # Bookworm has glibc 2.36: any manylinux tag up to that runs in the image.
    return [f"manylinux_2_{minor}_{arch}" for minor in (36, 34, 28, 17)] + [f"manylinux2014_{arch}"]


def ensure_wheels(progress: Progress = _quiet, requirements: Sequence[str] = GATEWAY_REQUIREMENTS) -> Path:
    """A directory of wheels for the container's Python holding `requirements` and their dependencies."""
    pins = _pinned(requirements)
    key = hashlib.sha256("\n".join([CONTAINER_PYTHON, *_platform_tags(), *pins]).encode()).hexdigest()[:TAG_LEN]
    dest = cache_dir() / f"wheels-{key}"
    with _locked("wheels"):
        if (dest / ".complete").exists():
            progress(f"wheels: {', '.join(pins)} cached")
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        progress(f"wheels: downloading {', '.join(pins)} for CPython {CONTAINER_PYTHON} ({platform.machine()})")
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:"]
        cmd += ["--dest", str(dest), "--python-version", CONTAINER_PYTHON, "--implementation", "cp"]
        for tag in _platform_tags():
            cmd += ["--platform", tag]
        try:
            _run_streaming(cmd + pins, progress)
        except ImageError as exc:
            raise ImageError(f"could not fetch the gateway's wheels on the host: {exc}") from exc
        (dest / ".complete").write_text("\n".join(pins) + "\n")
    return dest


# --------------------------------------------------------------------------------------------- node images


@dataclass(frozen=True)
class ImageSpec:
    name: str
    wheels: bool = False  # needs GATEWAY_REQUIREMENTS as wheels/
    gateway_source: bool = False  # needs labctl/__init__.py + labctl/gateway/ as src/


# Room for more (e.g. a strongSwan interop image): add a spec and an images/<name>/Dockerfile.
IMAGES: dict[str, ImageSpec] = {
    "gateway": ImageSpec("gateway", wheels=True, gateway_source=True),
    "host": ImageSpec("host"),
}


def _gateway_source_files() -> Iterator[tuple[str, Path]]:
    pkg = Path(labctl.__file__).resolve().parent
    yield "src/labctl/__init__.py", pkg / "__init__.py"
    for path in sorted((pkg / "gateway").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            yield f"src/labctl/{path.relative_to(pkg).as_posix()}", path


def _context_files(spec: ImageSpec, progress: Progress) -> list[tuple[str, Path]]:
    """(path in the build context, file on the host) for everything that goes into `spec`'s image."""
    root = images_dir()
    files = [("node-entrypoint", root / "node-entrypoint")]
    own = root / spec.name
    if not (own / "Dockerfile").is_file():
        raise ImageError(f"no Dockerfile for image {spec.name!r} in {own}")
    files += [(p.relative_to(own).as_posix(), p) for p in sorted(own.rglob("*")) if p.is_file()]
    if spec.wheels:
        wheels = ensure_wheels(progress)
        files += [(f"wheels/{p.name}", p) for p in sorted(wheels.glob("*.whl"))]
    if spec.gateway_source:
        files += list(_gateway_source_files())
    return files


def _inputs_digest(base: str, files: Sequence[tuple[str, Path]]) -> str:
    h = hashlib.sha256(base.encode() + b"\0")
    for rel, path in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:TAG_LEN]


def image_tag(name: str, progress: Progress = _quiet) -> str:
    """The tag `name`'s image has for the current tree (fetches wheels if they are not cached)."""
    files = _context_files(IMAGES[name], progress)
    return f"{IMAGE_PREFIX}{name}:{_inputs_digest(base_tag(), files)}"


def _docker_build(
    client: Any, ctx: Path, tag: str, labels: dict[str, str], buildargs: dict[str, str], progress: Progress
) -> None:
    from docker.errors import APIError

    name = tag.partition(":")[0].removeprefix(IMAGE_PREFIX)
    log: list[str] = []
    try:
        stream = client.api.build(
            path=str(ctx), tag=tag, labels=labels, buildargs=buildargs, rm=True, forcerm=True, decode=True,
            pull=False, network_mode="none",  # offline by construction: everything comes from the context
        )
        for chunk in stream:
            if "error" in chunk:
                raise ImageError(f"building {tag} failed: {chunk['error'].strip()}\n" + "".join(log[-15:]))
            text = chunk.get("stream", "")
            if text:
                log.append(text)
                for line in text.splitlines():
                    if line.strip():
                        progress(f"{DETAIL}{name}: {line.strip()}")
    except APIError as exc:
        raise ImageError(f"building {tag} failed: {exc}") from exc


def ensure_image(client: Any, name: str, progress: Progress = _quiet, rebuild: bool = False) -> str:
    """Build `name`'s image unless an image with the current inputs' tag exists; return the tag."""
    if name not in IMAGES:
        raise ImageError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
    spec = IMAGES[name]
    base = ensure_base(client, progress)
    files = _context_files(spec, progress)
    digest = _inputs_digest(base, files)
    tag = f"{IMAGE_PREFIX}{name}:{digest}"
    with _locked(f"image-{name}"):
        if not rebuild and _image_exists(client, tag):
            progress(f"{name}: {tag} up to date")
            _tag_current(client, tag)
            return tag
        progress(f"{name}: building {tag}")
        with tempfile.TemporaryDirectory(prefix=f"labctl-{name}-") as tmp:
            ctx = Path(tmp)
            for rel, src in files:
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, ctx / rel)
                if src.read_bytes()[:2] == b"#!":
                    # Scripts run in the image whatever mode an installer gave the package data.
                    (ctx / rel).chmod(0o755)
            labels = {LABEL_IMAGE: name, LABEL_INPUTS: digest}
            _docker_build(client, ctx, tag, labels, {"BASE": base}, progress)
        progress(f"{name}: built {tag}")
        _tag_current(client, tag)
    return tag


def current_ref(name: str) -> str:
    """A stable name for the newest build of `name` (compose files use it, so they need no re-render)."""
    return f"{IMAGE_PREFIX}{name}:{CURRENT_TAG}"


def _tag_current(client: Any, tag: str) -> None:
    repo = tag.partition(":")[0]
    client.images.get(tag).tag(repo, CURRENT_TAG)


def ensure_images(
    client: Any, names: Sequence[str] = tuple(IMAGES), progress: Progress = _quiet, rebuild: bool = False
) -> dict[str, str]:
    """Make sure every image in `names` is current; returns name -> tag."""
    if rebuild:
        ensure_base(client, progress, rebuild=True)
    return {name: ensure_image(client, name, progress, rebuild=rebuild) for name in names}


def stale_images(client: Any, current: dict[str, str]) -> list[str]:
    """Tags of labctl node images built from older inputs than `current` (name -> tag)."""
    stale = []
    for image in client.images.list(filters={"label": LABEL_IMAGE}):
        name = (image.labels or {}).get(LABEL_IMAGE, "")
        for tag in image.tags:
            alias = tag.endswith(f":{CURRENT_TAG}")
            if tag.startswith(IMAGE_PREFIX) and name in current and tag != current[name] and not alias:
                stale.append(tag)
    return stale


def remove_images(client: Any, tags: Sequence[str], progress: Progress = _quiet) -> None:
    """Remove `tags`; an image still used by a container is kept (and said so)."""
    from docker.errors import APIError

    for tag in tags:
        try:
            client.images.remove(tag)
            progress(f"removed {tag}")
        except APIError as exc:
            progress(f"kept {tag}: {str(exc).splitlines()[0]}")


def describe(client: Any) -> list[tuple[str, str]]:
    """(tag, size) of every labctl image, for `labctl image list`."""
    rows = []
    for image in client.images.list(filters={"label": LABEL_IMAGE}):
        for tag in image.tags:
            rows.append((tag, f"{image.attrs.get('Size', 0) / 1e6:.0f} MB"))
    return sorted(rows)
