"""Pure parts of the Docker backend: specs, compose rendering, apt sources, image inputs, engine messages.

No Docker engine needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labctl.backends import docker_engine
from labctl.backends.docker_compose import render_compose
from labctl.backends.docker_spec import (
    SpecError,
    container_spec,
    free_gateway_address,
    network_specs,
    program_argv,
)
from labctl.images import Mirror, _inputs_digest, base_key, host_mirror, parse_sources
from labctl.lab.model import FilePlan, InterfacePlan, NetworkPlan, NodePlan, Plan, ProgramPlan, RoutePlan


def _plan() -> Plan:
    gw = NodePlan(
        "gw", "gateway",
        (InterfacePlan("lan", "lan", "10.9.0.254/24"), InterfacePlan("wan", "wan", "192.168.77.2/30")),
        sysctls={"net.ipv4.ip_forward": "1"},
        programs=(ProgramPlan("gateway", ("/usr/local/bin/python3.11", "-m", "labctl.gateway", "run",
                                          "--config", "{node_dir}/gateway.json"),
                              files=(FilePlan("gateway.json", '{"x": 1}\n'),)),),
    )
    host = NodePlan("h", "host", (InterfacePlan("eth0", "lan", "10.9.0.10/24"),),
                    routes=(RoutePlan("default", "10.9.0.254"), RoutePlan("10.8.0.0/16", "10.9.0.1")))
    return Plan("t6-unit", "unit", (NetworkPlan("lan", "10.9.0.0/24"), NetworkPlan("wan", "192.168.77.0/30")),
                (gw, host))


def test_docker_gateway_is_the_last_usable_address_no_node_uses() -> None:
    assert free_gateway_address("10.9.0.0/24", set()) == "10.9.0.254"
    assert free_gateway_address("10.9.0.0/24", {"10.9.0.254"}) == "10.9.0.253"
    assert free_gateway_address("192.168.77.0/30", {"192.168.77.2"}) == "192.168.77.1"
    with pytest.raises(SpecError, match="no free address"):
        free_gateway_address("192.168.77.0/30", {"192.168.77.1", "192.168.77.2"})
    with pytest.raises(SpecError, match="too small"):
        free_gateway_address("192.168.77.0/31", set())
    assert free_gateway_address("2001:db8::/64", set()) == "2001:db8::ffff:ffff:ffff:ffff"


def test_network_and_container_specs() -> None:
    plan = _plan()
    lan, wan = network_specs(plan)
    assert (lan.name, lan.gateway, lan.labels) == ("labctl-t6-unit-lan", "10.9.0.253",
                                                  {"labctl.lab": "t6-unit", "labctl.network": "lan"})
    assert wan.gateway == "192.168.77.1"
    assert len(lan.bridge) <= 15 and lan.bridge != wan.bridge
    gw, host = (container_spec(plan, node) for node in plan.nodes)
    assert gw.image == "gateway" and gw.devices == ("/dev/net/tun",)
    assert gw.cap_add == ("NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE")
    assert gw.environment["LABCTL_INTERFACES"] == "lan=10.9.0.254 wan=192.168.77.2"
    assert gw.sysctls["net.ipv4.ip_forward"] == "1"
    assert host.image == "host" and host.devices == () and host.cap_add == ("NET_ADMIN", "NET_RAW")
    assert host.sysctls["net.ipv4.ip_forward"] == "0"
    assert host.environment["LABCTL_ROUTES"] == "default via 10.9.0.254;10.8.0.0/16 via 10.9.0.1"
    assert program_argv(plan.nodes[0].programs[0]) == [
        "python3", "-m", "labctl.gateway", "run", "--config", "/etc/labctl/gateway.json"]


def test_a_host_running_the_gateway_program_gets_the_gateway_image() -> None:
    # transport mode: the tunnel ends are `host` nodes running labctl-gateway themselves
    plan = _plan()
    gateway_program = plan.nodes[0].programs[0]
    end = NodePlan("h2h", "host", (InterfacePlan("eth0", "wan", "192.168.77.1/30"),), programs=(gateway_program,))
    spec = container_spec(plan, end)
    assert spec.image == "gateway" and spec.devices == ("/dev/net/tun",)
    assert spec.cap_add == ("NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE")
    assert spec.sysctls["net.ipv4.conf.all.rp_filter"] == "0" and spec.sysctls["net.ipv4.ip_forward"] == "0"
    by_command = ProgramPlan("gateway", ("/usr/local/bin/labctl-gateway", "run", "--config", "x"))
    assert container_spec(plan, NodePlan("c", "host", end.interfaces, programs=(by_command,))).image == "gateway"
    # another program on a host does not make it a gateway
    echo = ProgramPlan("echo", ("labctl-echo", "serve", "--port", "7"))
    other = container_spec(plan, NodePlan("e", "host", end.interfaces, programs=(echo,)))
    assert other.image == "host" and other.devices == () and "net.ipv4.conf.all.rp_filter" not in other.sysctls


def test_unknown_kind_is_refused() -> None:
    plan = _plan()
    odd = NodePlan("x", "strongswan", (InterfacePlan("eth0", "lan", "10.9.0.9/24"),))
    with pytest.raises(SpecError, match="has no Docker image"):
        container_spec(plan, odd)


def test_compose_rendering_matches_the_specs() -> None:
    files = render_compose(_plan())
    assert files["gw/gateway.json"] == '{"x": 1}\n'
    compose = yaml.safe_load(files["compose.yaml"])
    gw, host = compose["services"]["gw"], compose["services"]["h"]
    assert gw["image"] == "labctl-gateway:current" and host["image"] == "labctl-host:current"
    assert gw["cap_drop"] == ["ALL"] and gw["devices"] == ["/dev/net/tun:/dev/net/tun"]
    assert gw["volumes"] == ["./gw:/etc/labctl:ro"]
    assert gw["command"] == ["python3", "-m", "labctl.gateway", "run", "--config", "/etc/labctl/gateway.json"]
    assert host["command"] == ["sleep", "infinity"]
    assert gw["networks"] == {"lan": {"ipv4_address": "10.9.0.254"}, "wan": {"ipv4_address": "192.168.77.2"}}
    lan = compose["networks"]["lan"]
    assert lan["internal"] is True and lan["name"] == "labctl-t6-unit-lan"
    assert lan["ipam"]["config"] == [{"subnet": "10.9.0.0/24", "gateway": "10.9.0.253"}]
    assert "privileged" not in files["compose.yaml"]


DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_apt_sources_both_formats(tmp_path: Path) -> None:
    assert parse_sources(DEB822, deb822=True) == [
        Mirror("http://mirror.example/debian", ("bookworm", "bookworm-updates"),
               "/usr/share/keyrings/debian-archive-keyring.gpg"),
        Mirror("http://mirror.example/debian-security", ("bookworm-security",), None),
    ]
    one_line = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ trixie main\ndeb-src x y z\n"
    assert parse_sources(one_line, deb822=False) == [Mirror("http://m.example/debian", ("trixie",), "/k.gpg")]
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(one_line)
    # a Debian archive that lists another suite still serves bookworm
    assert host_mirror("bookworm", tmp_path) == Mirror("http://m.example/debian", ("bookworm",), "/k.gpg")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert host_mirror("bookworm", tmp_path).uri == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb http://archive.ubuntu.example/ubuntu jammy main\n")
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    with pytest.raises(Exception, match="no Debian mirror"):
        host_mirror("bookworm", tmp_path)


def test_image_inputs_hash_changes_with_any_input(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("FROM x\n")
    b.write_text("print('v1')\n")
    files = [("Dockerfile", a), ("src/labctl/gateway/x.py", b)]
    first = _inputs_digest("labctl-base:1", files)
    assert first == _inputs_digest("labctl-base:1", list(reversed(files)))  # order does not matter
    b.write_text("print('v2')\n")
    assert _inputs_digest("labctl-base:1", files) != first
    b.write_text("print('v1')\n")
    assert _inputs_digest("labctl-base:2", files) != first
    assert base_key("bookworm", ["b", "a"]) == base_key("bookworm", ["a", "b"]) != base_key("trixie", ["a", "b"])


def test_engine_messages_say_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(docker_engine.EngineUnavailable) as info:
        docker_engine.connect(timeout=2)
    assert info.value.reason == "not-running" and "scripts/docker-engine" in str(info.value)
    monkeypatch.setattr(docker_engine.shutil, "which", lambda name: None)
    with pytest.raises(docker_engine.EngineUnavailable) as info:
        docker_engine.connect(timeout=2)
    assert info.value.reason == "missing" and "apt-get install docker.io" in str(info.value)
    assert docker_engine.engine_answers() is False


def test_the_image_sources_ship_with_the_package(tmp_path: Path) -> None:
    """An installed labctl (not the source tree) must find images/: it is package data, labctl/image_files."""
    import shutil
    import subprocess
    import sys
    import tarfile

    from labctl.images import images_dir

    repo = Path(__file__).resolve().parents[2]
    assert images_dir().resolve() == (repo / "images").resolve()
    # A clean copy of the source: setuptools would otherwise reuse the file list of an earlier build (egg-info).
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "build",
                                  "dist", "artifacts", "*.pcap")
    shutil.copytree(repo, source, symlinks=True, ignore=skip)
    build = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=source, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    sdist = tmp_path / done.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        shipped = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile()}
        expected = {f"labctl/image_files/{p.relative_to(repo / 'images').as_posix()}": p
                    for p in (repo / "images").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        assert {"labctl/image_files/node-entrypoint", "labctl/image_files/gateway/Dockerfile",
                "labctl/image_files/host/Dockerfile"} <= expected.keys()
        for name, source in expected.items():
            assert name in shipped, f"{name} is not in the sdist"
            member = tar.extractfile(shipped[name])
            assert member is not None and member.read() == source.read_bytes(), name


def test_render_compose_takes_variants_and_overrides(tmp_path: Path) -> None:
    import json

    from docker_labtools import labctl

    out = tmp_path / "v1"
    done = labctl(tmp_path, "render", "compose", "site-to-site", "--variant", "ikev1-main",
                  "--set", "tunnels.s2s.encap=true", "-o", str(out))
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "gw-a" / "gateway.json").read_text())
    connection = config["connections"][0]
    assert (connection["version"], connection["ike_mode"], connection["encap"]) == (1, "main", True)
    bad = labctl(tmp_path, "render", "compose", "site-to-site", "--variant", "no-such", "-o", str(tmp_path / "x"))
    assert bad.returncode != 0 and "no-such" in bad.stderr and not (tmp_path / "x").exists()
