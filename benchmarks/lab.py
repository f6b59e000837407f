"""The benchmark's lab: four network namespaces and whichever gateways one variant needs.

    host-a 10.1.0.10 -- 10.1.0.1 gw-a 198.51.100.1 == 198.51.100.2 gw-b 10.2.0.1 -- 10.2.0.10 host-b

Every namespace and link is named with the ``bn`` prefix and a per-run tag, and :meth:`Lab.close` removes them.
Each variant (plain routing, our gateway, strongSwan) is started on the same namespaces and stopped before the
next one, so all figures of one run share topology and machine.

Why our own small harness instead of ``tests/interop/strongswan.py``: that module lives in the test tree (not
importable from an installed checkout without path tricks) and hard-codes its own namespace prefix.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "bn"
ROLES = ("ha", "ga", "gb", "hb")
HOST_A, GW_A_LAN, GW_A = "10.1.0.10", "10.1.0.1", "198.51.100.1"
HOST_B, GW_B_LAN, GW_B = "10.2.0.10", "10.2.0.1", "198.51.100.2"
LAN_A, LAN_B = "10.1.0.0/24", "10.2.0.0/24"
TUN_MTU = 1400  # the same as strongSwan kernel-libipsec's default TUN MTU, so both carry equal segments
CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "/usr/sbin/swanctl"
IKE_PROPOSAL = "aes128-sha256-ecp256"  # the same for both daemons (a MODP group would time Python's pow())
PSK = "benchmark-only-secret"  # lab-only; both peers live in namespaces this run created

# kernel-libipsec before kernel-netlink, or CHILD_SAs fail with netlink error 93 (notes/environment.md).
CHARON_PLUGINS = (
    "random nonce openssl aes sha1 sha2 hmac gcm kdf gmp pem pkcs1 x509 pubkey revocation constraints "
    "kernel-libipsec kernel-netlink socket-default vici"
)

# Algorithm names (strongSwan proposal keywords, which our config also uses) per benchmark label.
ALGORITHMS = {"gcm128": ("aes128gcm16", None), "cbc128-sha256": ("aes128", "sha256")}


# ETHTOOL_STXCSUM (0x17) through SIOCETHTOOL (0x8946): `ethtool -K DEV tx on|off` without needing ethtool.
_TX_CSUM = """
import array, fcntl, socket, struct, sys
cmd = array.array("B", struct.pack("II", 0x17, int(sys.argv[2])))
ifr = struct.pack("16sP", sys.argv[1].encode(), cmd.buffer_info()[0]).ljust(40, b"\\0")
fcntl.ioctl(socket.socket(), 0x8946, ifr)
"""


class LabError(RuntimeError):
    """Something did not come up; the message carries the relevant log tail."""


def run(cmd: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, logs: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs()}")
        time.sleep(0.02)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not written)"


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Stop one process we started, by its pid."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(8)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class Lab:
    workdir: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    built: bool = False

    def ns(self, role: str) -> str:
        return f"{PREFIX}-{self.tag}-{role}"

    def link(self, name: str) -> str:
        return f"{PREFIX}{self.tag}{name}"

    def build(self) -> Lab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            run(["ip", "netns", "add", self.ns(role)])
            self.built = True
            self.exec(role, ["ip", "link", "set", "lo", "up"])
        for ns1, l1, ns2, l2 in (("ha", "ha", "ga", "la"), ("ga", "wa", "gb", "wb"), ("gb", "lb", "hb", "hb")):
            run(["ip", "link", "add", self.link(l1), "netns", self.ns(ns1), "type", "veth", "peer", "name",
                 self.link(l2), "netns", self.ns(ns2)])
        for role, link, address in (("ha", "ha", HOST_A), ("ga", "la", GW_A_LAN), ("ga", "wa", GW_A),
                                    ("gb", "wb", GW_B), ("gb", "lb", GW_B_LAN), ("hb", "hb", HOST_B)):
            self.exec(role, ["ip", "addr", "add", f"{address}/24", "dev", self.link(link)])
            self.exec(role, ["ip", "link", "set", self.link(link), "up"])
        self.exec("ha", ["ip", "route", "add", "default", "via", GW_A_LAN])
        self.exec("hb", ["ip", "route", "add", "default", "via", GW_B_LAN])
        for role in ("ga", "gb"):
            self.exec(role, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        return self

    def tx_checksum_offload(self, on: bool) -> None:
        """Transmit checksum offload on gw-b's LAN veth.

        On (the default), a veth hands CHECKSUM_PARTIAL packets on unverified, so a wrong checksum seed in our
        coalesced TUN writes would go unnoticed. Off, the kernel completes every checksum in software there and
        host-b's TcpInCsumErrors proves them (notes/dataplane-performance.md).
        """
        self.exec("gb", [sys.executable, "-c", _TX_CSUM, self.link("lb"), "1" if on else "0"])

    def route_plain(self, on: bool) -> None:
        """The plain routed path: each gateway routes the far LAN via the other gateway."""
        verb = "replace" if on else "del"
        self.exec("ga", ["ip", "route", verb, LAN_B, "via", GW_B], check=on)
        self.exec("gb", ["ip", "route", verb, LAN_A, "via", GW_A], check=on)

    def exec(self, role: str, cmd: list[str], check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.ns(role), *cmd], check=check, timeout=timeout)

    def popen(self, role: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
        with open(log, "ab") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.ns(role), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)

    def close(self) -> list[str]:
        problems: list[str] = []
        if not self.built:
            return problems
        for role in ROLES:
            res = run(["ip", "netns", "del", self.ns(role)], check=False)
            if res.returncode and "No such file" not in res.stderr:
                problems.append(f"{self.ns(role)}: {res.stderr.strip()}")
        self.built = False
        return problems


# --- our gateway ----------------------------------------------------------------------------------------------
def _ours_manual(name: str, local: str, remote: str, lts: str, rts: str, encr: str, integ: str | None,
                 encap: bool, keys: dict[str, str], swap: bool) -> dict[str, Any]:
    esp: dict[str, Any] = {"spi_out": "0x0000b001" if not swap else "0x0000a001",
                           "spi_in": "0x0000a001" if not swap else "0x0000b001", "encr": encr}
    ek_ab, ek_ba, ik_ab, ik_ba = keys["ek_ab"], keys["ek_ba"], keys["ik_ab"], keys["ik_ba"]
    esp["encr_key_out"], esp["encr_key_in"] = (ek_ba, ek_ab) if swap else (ek_ab, ek_ba)
    if integ:
        esp["integ"] = integ
        esp["integ_key_out"], esp["integ_key_in"] = (ik_ba, ik_ab) if swap else (ik_ab, ik_ba)
    return {"name": name, "local": local, "remote": remote, "mode": "tunnel", "protection": "esp", "encap": encap,
            "local_ts": [lts], "remote_ts": [rts], "esp": esp}


def ours_manual_configs(encr: str, integ: str | None, encap: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Static-key ESP tunnel configs for gw-a and gw-b (fresh random keys: the keying is not what is measured)."""
    from labctl.gateway.ipsec.transforms import encr_algorithm, integ_algorithm

    klen = encr_algorithm(encr).keymat_len
    ilen = integ_algorithm(integ).key_len if integ else 0
    keys = {"ek_ab": secrets.token_hex(klen), "ek_ba": secrets.token_hex(klen),
            "ik_ab": secrets.token_hex(ilen), "ik_ba": secrets.token_hex(ilen)}
    a = {"name": "ga", "local": GW_A, "tun": {"name": "bntun", "mtu": TUN_MTU},
         "manual": [_ours_manual("bench", GW_A, GW_B, LAN_A, LAN_B, encr, integ, encap, keys, False)]}
    b = {"name": "gb", "local": GW_B, "tun": {"name": "bntun", "mtu": TUN_MTU},
         "manual": [_ours_manual("bench", GW_B, GW_A, LAN_B, LAN_A, encr, integ, encap, keys, True)]}
    return a, b


def ours_ike_configs(version: int, encap: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """IKE PSK configs whose child is not started automatically (the benchmark initiates and times it)."""

    def one(name: str, local: str, remote: str, lts: str, rts: str) -> dict[str, Any]:
        conn = {"name": "bench", "version": version, "local": local, "remote": remote, "encap": encap,
                "auth": {"method": "psk", "psk": PSK}, "proposals": [IKE_PROPOSAL],
                "children": [{"name": "bench", "local_ts": [lts], "remote_ts": [rts], "start_action": "none",
                              "proposals": ["aes128gcm16"]}]}
        return {"name": name, "local": local, "tun": {"name": "bntun", "mtu": TUN_MTU}, "connections": [conn]}

    return one("ga", GW_A, GW_B, LAN_A, LAN_B), one("gb", GW_B, GW_A, LAN_B, LAN_A)


@dataclass
class OurGateway:
    lab: Lab
    role: str
    config: dict[str, Any]
    proc: subprocess.Popen[Any] | None = None

    @property
    def dir(self) -> Path:
        return self.lab.workdir / f"ours-{self.role}"

    @property
    def socket(self) -> Path:
        return self.dir / "state" / "control.sock"

    @property
    def log(self) -> Path:
        return self.dir / "gateway.log"

    def start(self) -> OurGateway:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "gateway.json"
        path.write_text(json.dumps({**self.config, "state_dir": str(self.dir / "state")}, indent=1))
        self.proc = self.lab.popen(self.role, [sys.executable, "-m", "labctl.gateway", "run", "--config", str(path),
                                               "--log-level", "info"], self.log)
        wait_for(f"our gateway in {self.lab.ns(self.role)}", self._answers, 20, lambda: tail(self.log))
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise LabError(f"our gateway in {self.lab.ns(self.role)} exited\n{tail(self.log)}")
        try:
            return self.socket.exists() and bool(self.ctl("status").get("ok"))
        except OSError:
            return False

    def ctl(self, cmd: str, name: str | None = None) -> dict[str, Any]:
        from labctl.gateway.control import ControlClient

        req = {"name": name} if name else {}
        return ControlClient(self.socket).request(cmd, **req)

    @property
    def pid(self) -> int:
        assert self.proc is not None  # noqa: S101 - harness invariant, not a security check
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# --- strongSwan ---------------------------------------------------------------------------------------------------
def swanctl_conf(local: str, remote: str, lts: str, rts: str, esp: str, ike: str, version: int,
                 start: bool) -> str:
    return f"""connections {{
    bench {{
        version = {version}
        local_addrs = {local}
        remote_addrs = {remote}
        proposals = {ike}
        encap = yes
        local {{
            auth = psk
            id = {local}
        }}
        remote {{
            auth = psk
            id = {remote}
        }}
        children {{
            bench {{
                local_ts = {lts}
                remote_ts = {rts}
                esp_proposals = {esp}
                mode = tunnel
                start_action = {"start" if start else "none"}
            }}
        }}
    }}
}}
secrets {{
    ike-bench {{
        secret = "{PSK}"
    }}
}}
"""


@dataclass
class Charon:
    """One charon (kernel-libipsec) per gateway namespace, with its own strongswan.conf, vici socket and /run."""

    lab: Lab
    role: str
    conf: str
    proc: subprocess.Popen[Any] | None = None

    @property
    def dir(self) -> Path:
        return self.lab.workdir / f"charon-{self.role}"

    @property
    def vici(self) -> str:
        return f"unix://{self.dir / 'charon.vici'}"

    @property
    def env(self) -> dict[str, str]:
        return {"STRONGSWAN_CONF": str(self.dir / "strongswan.conf"), "SWANCTL_DIR": str(self.dir / "swanctl")}

    def start(self) -> Charon:
        for sub in ("swanctl/x509", "swanctl/x509ca", "swanctl/private", "swanctl/conf.d", "run"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "swanctl" / "swanctl.conf").write_text(self.conf)
        (self.dir / "charon.vici").unlink(missing_ok=True)  # a previous variant's socket must not look alive
        (self.dir / "strongswan.conf").write_text(f"""charon {{
    load_modular = no
    load = {CHARON_PLUGINS}
    install_virtual_ip = no
    plugins {{
        vici {{
            socket = {self.vici}
        }}
    }}
    filelog {{
        main {{
            path = {self.dir / 'charon.log'}
            default = 1
            append = no
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
}}
swanctl {{
    socket = {self.vici}
}}
""")
        # `ip netns exec` gives a private mount namespace, so binding a directory of ours over /run (charon's pid
        # file path is fixed) stays private to this charon.
        script = f"mount --bind {self.dir / 'run'} /run && exec {CHARON}"
        self.proc = self.lab.popen(self.role, ["sh", "-c", script], self.dir / "charon.stdout", env=self.env)
        wait_for(f"charon in {self.lab.ns(self.role)}", lambda: (self.dir / "charon.vici").exists(), 15,
                 lambda: tail(self.dir / "charon.log"))
        self.swanctl("--load-all", "--file", str(self.dir / "swanctl" / "swanctl.conf"))
        return self

    def swanctl(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.lab.ns(self.role), SWANCTL, *args, "--uri", self.vici]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                             env={**os.environ, **self.env})
        if check and res.returncode:
            raise LabError(f"swanctl {' '.join(args)}: {res.stdout}{res.stderr}\n{tail(self.dir / 'charon.log')}")
        return res

    @property
    def pid(self) -> int:
        assert self.proc is not None  # noqa: S101 - harness invariant
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
