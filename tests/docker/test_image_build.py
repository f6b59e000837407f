"""Images build on a clean Docker engine that reaches no registry, and an unchanged tree is not rebuilt.

The clean engine is a second dockerd of this test's own (own data root, socket, no bridge, no iptables), so
the machine's engine and its images are left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker_labtools import labctl

pytestmark = [pytest.mark.docker, pytest.mark.root]


@pytest.fixture
def clean_engine() -> Iterator[str]:
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is missing: run scripts/docker-engine", pytrace=False)
    # A short path: the engine's unix sockets must fit in 108 bytes.
    root = Path(f"/tmp/t6-engine-{os.getpid()}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    host = f"unix://{root}/docker.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["dockerd", "--data-root", f"{root}/data", "--exec-root", f"{root}/exec", "--pidfile", f"{root}/pid",
         "-H", host, "--bridge", "none", "--iptables=false", "--ip-masq=false"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                docker.DockerClient(base_url=host).ping()
                break
            except docker.errors.DockerException:
                if process.poll() is not None:
                    pytest.fail(f"test dockerd exited: {(root / 'dockerd.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        subprocess.run(["umount", "-R", f"{root}/data"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_image_build_on_a_clean_engine_without_registry(clean_engine: str, tmp_path: Path) -> None:
    client = docker.DockerClient(base_url=clean_engine)
    assert client.images.list() == []
    with pytest.raises(docker.errors.APIError):
        client.images.pull("debian", tag="bookworm-slim")  # no registry: everything must be made here

    built = labctl(tmp_path, "image", "build", DOCKER_HOST=clean_engine)
    assert built.returncode == 0, built.stdout + built.stderr
    tags = {line.split(": ")[0]: line.split(": ")[1] for line in built.stdout.splitlines()
            if line.startswith(("gateway: labctl-", "host: labctl-"))}
    assert set(tags) == {"gateway", "host"}

    gateway = tags["gateway"]
    probe = ("import labctl.gateway, cryptography, pyroute2, importlib.util; "
             "print(cryptography.__version__, importlib.util.find_spec('labctl.cli') is None)")
    out = client.containers.run(gateway, ["python", "-c", probe], entrypoint=[], remove=True,
                                network_mode="none").decode()
    # the gateway's own dependencies only: the orchestrator is not in the image
    assert out.split()[1] == "True", out
    tools = "command -v ip nft ping tcpdump iperf3 labctl-gateway labctl-node >/dev/null && echo ok"
    assert client.containers.run(gateway, ["sh", "-c", tools], entrypoint=[], remove=True,
                                 network_mode="none").decode().strip() == "ok"
    host_tools = "command -v ping iperf3 tcpdump labctl-echo >/dev/null && echo ok"
    assert client.containers.run(tags["host"], ["sh", "-c", host_tools], entrypoint=[], remove=True,
                                 network_mode="none").decode().strip() == "ok"

    again = labctl(tmp_path, "image", "build", DOCKER_HOST=clean_engine)
    assert again.returncode == 0
    assert f"host: {tags['host']} up to date" in again.stdout and "host: building" not in again.stdout
    # The gateway's tag hashes labctl/gateway/: rebuilt only when that source changed in between
    # (other work in a shared checkout may change it while this test runs).
    rebuilt = "gateway: building" in again.stdout
    assert rebuilt == (f"gateway: {gateway}\n" not in again.stdout), again.stdout
    client.close()
