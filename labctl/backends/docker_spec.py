"""How a plan becomes Docker networks and containers: one pure mapping for the Docker backend and compose files.

Both `labctl up --backend docker` and `labctl render compose` start from these specs, so a compose file is
the same lab by construction: the same networks, addresses, capabilities, sysctls and node set-up.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from labctl.lab.model import NetworkPlan, NodePlan, Plan, ProgramPlan
from labctl.lab.naming import lab_tag

LABEL_LAB = "labctl.lab"
LABEL_NODE = "labctl.node"
LABEL_NETWORK = "labctl.network"
# Where a node's program files (configs) and logs appear inside its container.
NODE_DIR = "/etc/labctl"
LOG_DIR = "/var/log/labctl"
READY_FILE = "/run/labctl-node.ready"
IDLE_COMMAND = ("sleep", "infinity")
BRIDGE_OPTION = "com.docker.network.bridge.name"

# Image per node kind. A node of any kind that runs the gateway program (e.g. a `host` at one end of a
# transport-mode tunnel) gets the gateway image instead: the program decides, not only the kind.
IMAGE_OF_KIND = {"gateway": "gateway", "host": "host", "router": "host"}
GATEWAY_IMAGE = "gateway"
GATEWAY_MODULE = "labctl.gateway"
GATEWAY_COMMAND = "labctl-gateway"
# Every node changes its own addresses and routes (NET_ADMIN) and pings or captures (NET_RAW). The gateway
# program also binds IKE's ports 500/4500 (NET_BIND_SERVICE), opens /dev/net/tun, and opens raw ESP/AH
# sockets and sets SO_MARK on them (NET_RAW, NET_ADMIN). Nothing else: all other capabilities are dropped.
BASE_CAPS = ("NET_ADMIN", "NET_RAW")
GATEWAY_CAPS = ("NET_BIND_SERVICE",)
GATEWAY_DEVICES = ("/dev/net/tun",)
# /proc/sys is read-only in a container, so what the gateway would set for itself at start (netns) is set
# when the container is made: packets it writes into its TUN device come from addresses routed elsewhere
# (tunnel mode: the remote LAN; transport mode: the peer, whose route is a policy rule), which strict
# reverse-path filtering (RFC 3704) would drop. `default` covers the TUN device created later.
GATEWAY_SYSCTLS = {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}


class SpecError(ValueError):
    """The plan cannot be built on Docker as it is (e.g. no free address for Docker's bridge)."""


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    """Docker network name: labctl-<lab>-<network>."""
    network: str
    subnet: str
    gateway: str
    """The host side's address on the bridge: an address no node uses (Docker insists on one)."""
    bridge: str
    """The Linux bridge on the host (15 characters at most), where captures listen."""
    subnet6: str | None = None
    gateway6: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Attachment:
    network: str
    """Docker network name."""
    interface: str
    address: str
    """IPv4 address without prefix length."""
    address6: str | None = None


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    node: str
    kind: str
    image: str
    """Image name without tag: "gateway" or "host"."""
    attachments: tuple[Attachment, ...]
    cap_add: tuple[str, ...]
    devices: tuple[str, ...]
    sysctls: dict[str, str]
    environment: dict[str, str]
    labels: dict[str, str]


def network_name(lab: str, network: str) -> str:
    return f"labctl-{lab}-{network}"


def container_name(lab: str, node: str) -> str:
    return f"labctl-{lab}-{node}"


def bridge_name(lab: str, index: int) -> str:
    return f"dk{lab_tag(lab)}-{index}"


def free_gateway_address(subnet: str, used: set[str]) -> str:
    """The highest usable address of `subnet` that no node uses, for Docker's bridge on the host."""
    net = ipaddress.ip_network(subnet)
    if net.num_addresses < 4:
        raise SpecError(f"subnet {subnet} is too small for Docker: it needs a free address for the bridge")
    last = net.broadcast_address - (1 if net.version == 4 else 0)
    candidate = last
    for _ in range(min(net.num_addresses - 2, 1024)):
        if str(candidate) not in used and candidate != net.network_address:
            return str(candidate)
        candidate -= 1
    raise SpecError(f"subnet {subnet} has no free address for Docker's bridge gateway")


def _used(plan: Plan, network: str, v6: bool) -> set[str]:
    used = set()
    for node in plan.nodes:
        for iface in node.interfaces:
            address = iface.address6 if v6 else iface.address
            if iface.network == network and address:
                used.add(address.split("/")[0])
    return used


def network_specs(plan: Plan) -> list[NetworkSpec]:
    specs = []
    for index, net in enumerate(plan.networks):
        specs.append(_network_spec(plan, index, net))
    return specs


def _network_spec(plan: Plan, index: int, net: NetworkPlan) -> NetworkSpec:
    gateway6 = free_gateway_address(net.subnet6, _used(plan, net.name, True)) if net.subnet6 else None
    return NetworkSpec(
        name=network_name(plan.lab, net.name),
        network=net.name,
        subnet=net.subnet,
        gateway=free_gateway_address(net.subnet, _used(plan, net.name, False)),
        bridge=bridge_name(plan.lab, index),
        subnet6=net.subnet6,
        gateway6=gateway6,
        labels={LABEL_LAB: plan.lab, LABEL_NETWORK: net.name},
    )


def _routes(node: NodePlan) -> str:
    return ";".join(f"{r.destination} via {r.via}" for r in node.routes)


def is_gateway_program(program: ProgramPlan) -> bool:
    """The program is labctl-gateway (`python -m labctl.gateway ...` or the `labctl-gateway` command)."""
    argv = list(program.argv)
    if argv and argv[0].rsplit("/", 1)[-1] == GATEWAY_COMMAND:
        return True
    return any(flag == "-m" and module == GATEWAY_MODULE for flag, module in zip(argv, argv[1:], strict=False))


def runs_gateway(node: NodePlan) -> bool:
    return node.kind == "gateway" or any(is_gateway_program(p) for p in node.programs)


def container_spec(plan: Plan, node: NodePlan) -> ContainerSpec:
    if node.kind not in IMAGE_OF_KIND:
        raise SpecError(f"node {node.name}: kind {node.kind!r} has no Docker image (known: {', '.join(IMAGE_OF_KIND)})")
    gateway = runs_gateway(node)
    # Containers inherit forwarding from the Docker host (on there): forward only where the plan says so.
    sysctls = {"net.ipv4.ip_forward": "0", **(GATEWAY_SYSCTLS if gateway else {}), **node.sysctls}
    if any(iface.address6 for iface in node.interfaces):
        # The entry point renames interfaces (down/up), which would drop their IPv6 addresses.
        sysctls["net.ipv6.conf.all.keep_addr_on_down"] = "1"
    attachments = tuple(
        Attachment(
            network_name(plan.lab, iface.network),
            iface.name,
            iface.address.split("/")[0],
            iface.address6.split("/")[0] if iface.address6 else None,
        )
        for iface in node.interfaces
    )
    environment = {
        "LABCTL_INTERFACES": " ".join(f"{a.interface}={a.address}" for a in attachments),
        "LABCTL_ROUTES": _routes(node),
    }
    if node.masquerade:
        # The entry point installs the NAT (before the node reports ready), so a compose lab has it too.
        environment["LABCTL_MASQUERADE"] = " ".join(node.masquerade)
    return ContainerSpec(
        name=container_name(plan.lab, node.name),
        node=node.name,
        kind=node.kind,
        image=GATEWAY_IMAGE if gateway else IMAGE_OF_KIND[node.kind],
        attachments=attachments,
        cap_add=BASE_CAPS + (GATEWAY_CAPS if gateway else ()),
        devices=GATEWAY_DEVICES if gateway else (),
        sysctls=sysctls,
        environment=environment,
        labels={LABEL_LAB: plan.lab, LABEL_NODE: node.name},
    )


def container_run_dir(node: str) -> str:
    """A node program's runtime directory inside the container: under the read-write log mount, so the host
    reaches the gateway's control socket and key tables there."""
    return f"{LOG_DIR}/run-{node}"


def program_argv(program: ProgramPlan, run_dir: str = "/run/labctl") -> list[str]:
    """The program's command line inside a container: files in NODE_DIR, host interpreter paths mapped."""
    argv = [arg.replace("{node_dir}", NODE_DIR).replace("{run_dir}", run_dir) for arg in program.argv]
    # The plan names the host's interpreter (e.g. sys.executable); in an image it is the one on PATH
    # (the gateway image puts its venv first).
    if argv and "/" in argv[0] and re.fullmatch(r"python3?(\.\d+)?", argv[0].rsplit("/", 1)[1]):
        argv[0] = "python3"
    return argv
