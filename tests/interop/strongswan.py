"""A reusable harness for running our gateway against real strongSwan 5.9 (charon with kernel-libipsec).

Topology (four network namespaces, all named with the `io` prefix and a per-run tag)::

    host-a 10.1.0.10 -- 10.1.0.1 gw-a 198.51.100.1 == internet == 198.51.100.2 gw-b 10.2.0.1 -- 10.2.0.10 host-b

Either gateway runs our gateway (`OurGateway`) or a charon (`Charon`); both expose `logs()` so a failing
wait can show what each side said. Everything is importable on its own (a benchmark can build the same
topology with strongSwan on both ends and with ours on both ends) and everything is removed by `close()`.

Why the odd bits:
- One charon per namespace, each with its own strongswan.conf, vici socket and `/run` (its pid file path is
  fixed at /var/run/charon.pid): `ip netns exec` gives a private mount namespace, where a bind mount of a
  per-instance directory onto /run stays private to that charon.
- kernel-libipsec must be loaded before kernel-netlink, or CHILD_SAs fail with netlink error 93 (the host
  kernel has no ESP); libipsec only does ESP tunnel mode in UDP, so our side is configured with `encap: true`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"
PREFIX = "io"

# Plugin order matters: kernel-libipsec before kernel-netlink (shared/notes/environment.md).
CHARON_PLUGINS = (
    "random nonce openssl aes sha1 sha2 hmac gcm kdf gmp pem pkcs1 pkcs8 x509 pubkey revocation constraints "
    "kernel-libipsec kernel-netlink socket-default vici"
)


class HarnessError(RuntimeError):
    """Something in the lab did not come up or did not happen in time; the message carries both sides' logs."""


def require_tools() -> None:
    """Interop tests fail loudly (never skip) when strongSwan or the capture tools are missing: CI installs them."""
    missing = [p for p in (CHARON, SWANCTL) if not Path(p).exists()]
    missing += [t for t in ("tcpdump", "tshark", "ip") if shutil.which(t) is None]
    if missing:
        raise HarnessError(
            "interop tests need strongSwan 5.9 and capture tools; missing: " + ", ".join(missing)
            + " (apt-get install strongswan-charon strongswan-swanctl libcharon-extra-plugins tshark tcpdump)"
        )
    if os.geteuid() != 0:
        raise HarnessError("interop tests build network namespaces and need root")


def run(cmd: list[str], check: bool = True, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and res.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, logs: Callable[[], str] = lambda: "",
             interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; on timeout raise with `what` and the logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {what}\n{logs()}")
        time.sleep(interval)


def _stop_pid(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Signal one process we started (by its pid), then kill it if it does not go in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not written)"
    return "\n".join(text.splitlines()[-lines:])


# --- topology --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Addresses:
    lan_a: str = "10.1.0.0/24"
    lan_b: str = "10.2.0.0/24"
    host_a: str = "10.1.0.10"
    gw_a_lan: str = "10.1.0.1"
    gw_a: str = "198.51.100.1"
    gw_b: str = "198.51.100.2"
    gw_b_lan: str = "10.2.0.1"
    host_b: str = "10.2.0.10"


@dataclass
class Topology:
    """host-a -- gw-a == gw-b -- host-b in four namespaces; `close()` deletes them (and their veths)."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    addr: Addresses = field(default_factory=Addresses)
    built: bool = False

    def ns(self, role: str) -> str:
        return f"{PREFIX}-{self.tag}-{role}"

    def link(self, name: str) -> str:
        return f"{PREFIX}{self.tag}{name}"  # <= 15 characters (IFNAMSIZ)

    @property
    def wan_a(self) -> str:
        """gw-a's internet-side interface (where captures are taken)."""
        return self.link("wa")

    def build(self) -> Topology:
        a = self.addr
        for role in ("ha", "ga", "gb", "hb"):
            run(["ip", "netns", "add", self.ns(role)])
            self.built = True
            run(["ip", "-n", self.ns(role), "link", "set", "lo", "up"])
        pairs = (("ha", "ha", "ga", "la"), ("ga", "wa", "gb", "wb"), ("gb", "lb", "hb", "hb"))
        for ns1, l1, ns2, l2 in pairs:
            run(["ip", "link", "add", self.link(l1), "netns", self.ns(ns1), "type", "veth", "peer", "name",
                 self.link(l2), "netns", self.ns(ns2)])
        for role, link, address in (("ha", "ha", a.host_a), ("ga", "la", a.gw_a_lan), ("ga", "wa", a.gw_a),
                                    ("gb", "wb", a.gw_b), ("gb", "lb", a.gw_b_lan), ("hb", "hb", a.host_b)):
            plen = "24"
            run(["ip", "-n", self.ns(role), "addr", "add", f"{address}/{plen}", "dev", self.link(link)])
            run(["ip", "-n", self.ns(role), "link", "set", self.link(link), "up"])
        run(["ip", "-n", self.ns("ha"), "route", "add", "default", "via", a.gw_a_lan])
        run(["ip", "-n", self.ns("hb"), "route", "add", "default", "via", a.gw_b_lan])
        for role in ("ga", "gb"):
            self.exec(role, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        return self

    def exec(self, role: str, cmd: list[str], check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.ns(role), *cmd], check=check, timeout=timeout)

    def popen(self, role: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
        out = open(log, "ab")  # noqa: SIM115 - handed to the child; closed when the parent's copy goes
        try:
            return subprocess.Popen(["ip", "netns", "exec", self.ns(role), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        finally:
            out.close()

    def ping(self, src: str, dst: str, count: int = 3, interval: float = 0.2, deadline: float = 5) -> PingResult:
        """`src` is a role (ha/hb/ga/gb), `dst` an address; the result counts what came back."""
        res = self.exec(src, ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1",
                              "-w", str(deadline), dst], check=False, timeout=deadline + 10)
        return PingResult.parse(res.stdout + res.stderr)

    def start_ping(self, src: str, dst: str, interval: float = 0.1, log: Path | None = None) -> BackgroundPing:
        log = log or Path(f"/tmp/{self.ns(src)}-ping.log")
        proc = self.popen(src, ["ping", "-n", "-i", str(interval), "-W", "1", dst], log)
        return BackgroundPing(proc, log)

    def capture(self, role: str, iface: str, pcap: Path) -> Capture:
        proc = self.popen(role, ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-s", "0", "-w", str(pcap)],
                          pcap.with_suffix(".tcpdump.log"))
        cap = Capture(proc, pcap)
        wait_for(f"tcpdump on {iface}", lambda: "listening on" in tail(pcap.with_suffix(".tcpdump.log")), 10,
                 lambda: tail(pcap.with_suffix(".tcpdump.log")))
        return cap

    def close(self) -> list[str]:
        """Delete the namespaces (their veths go with them); return what could not be removed."""
        problems: list[str] = []
        if not self.built:
            return problems
        for role in ("ha", "ga", "gb", "hb"):
            res = run(["ip", "netns", "del", self.ns(role)], check=False)
            if res.returncode != 0 and "No such file" not in res.stderr:
                problems.append(f"namespace {self.ns(role)}: {res.stderr.strip()}")
        return problems

    def leftovers(self) -> list[str]:
        names = run(["ip", "netns", "list"]).stdout.split()
        return [n for n in names if n.startswith(f"{PREFIX}-{self.tag}-")]


@dataclass(frozen=True)
class PingResult:
    sent: int
    received: int
    text: str

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @classmethod
    def parse(cls, text: str) -> PingResult:
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
        if not m:
            return cls(0, 0, text)
        return cls(int(m.group(1)), int(m.group(2)), text)


@dataclass
class BackgroundPing:
    proc: subprocess.Popen[Any]
    log: Path

    def stop(self) -> PingResult:
        _stop_pid(self.proc, signal.SIGINT)  # ping prints its statistics on SIGINT
        result = PingResult.parse(tail(self.log, 10))
        answered = [int(m) for m in re.findall(r"icmp_seq=(\d+)", tail(self.log, 100000))]
        if answered and result.sent - max(answered) == 1:
            # The echo request sent just before SIGINT had no time to come back: in flight, not lost.
            return PingResult(result.sent - 1, result.received, result.text)
        return result

    def lost_sequences(self) -> list[int]:
        """icmp_seq numbers that never got an answer (ping prints every reply it sees)."""
        seen = [int(m) for m in re.findall(r"icmp_seq=(\d+)", tail(self.log, 100000))]
        if not seen:
            return []
        got = set(seen)
        return [s for s in range(1, max(got) + 1) if s not in got]


@dataclass
class Capture:
    proc: subprocess.Popen[Any]
    pcap: Path

    def stop(self) -> Path:
        time.sleep(0.2)  # let the last packets reach the file (-U flushes per packet)
        _stop_pid(self.proc, signal.SIGINT)
        return self.pcap


def tshark_fields(pcap: Path, display_filter: str, fields: Iterable[str], extra: Iterable[str] = ()) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(pcap), "-Y", display_filter, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    res = run([*cmd, *extra], timeout=60)
    return [line.split("|") for line in res.stdout.splitlines() if line.strip()]


# --- the two kinds of gateway ---------------------------------------------------------------------------------
class _GatewayProcess:
    """What both kinds of gateway share: a process started in a namespace, and a log to show on failure."""

    label = "gateway"

    def __init__(self, topo: Topology, role: str, log: Path) -> None:
        self.topo = topo
        self.role = role
        self.log = log
        self.proc: subprocess.Popen[Any] | None = None

    def logs(self, lines: int = 40) -> str:
        return f"--- {self.label} {self.topo.ns(self.role)} ({self.log}) ---\n{tail(self.log, lines)}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_pid(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# --- strongSwan ------------------------------------------------------------------------------------------------
CHARON_LOG_LEVELS = "\n            ".join(("default = 1", "ike = 2", "cfg = 2", "knl = 1", "net = 1", "enc = 1"))


class Charon(_GatewayProcess):
    """One charon in one namespace, with its own config directory, vici socket and /run."""

    label = "charon"

    def __init__(self, topo: Topology, role: str, workdir: Path, charon_options: str = "") -> None:
        self.dir = workdir / f"charon-{role}"
        super().__init__(topo, role, self.dir / "charon.log")
        self.run_dir = self.dir / "run"
        self.swanctl_dir = self.dir / "swanctl"
        for sub in ("x509", "x509ca", "private", "conf.d"):
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.vici = self.dir / "charon.vici"
        self.conf = self.dir / "strongswan.conf"
        self.charon_options = charon_options

    @property
    def uri(self) -> str:
        return f"unix://{self.vici}"

    def write_strongswan_conf(self) -> None:
        self.conf.write_text(f"""charon {{
    load_modular = no
    load = {CHARON_PLUGINS}
    install_virtual_ip = no
    retransmit_timeout = 1.0
    retransmit_tries = 3
    {self.charon_options}
    plugins {{
        vici {{
            socket = {self.uri}
        }}
    }}
    filelog {{
        main {{
            path = {self.log}
            time_format = %H:%M:%S
            ike_name = yes
            append = yes
            flush_line = yes
            {CHARON_LOG_LEVELS}
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
}}
swanctl {{
    socket = {self.uri}
}}
""")

    def write_swanctl(self, conf: str, files: dict[str, str] | None = None) -> None:
        """`files` maps paths relative to the swanctl directory (x509/gw.pem, private/gw.pem, x509ca/ca.pem) to PEM."""
        (self.swanctl_dir / "swanctl.conf").write_text(conf)
        for rel, text in (files or {}).items():
            p = self.swanctl_dir / rel
            p.write_text(text)
            p.chmod(0o600)

    @property
    def env(self) -> dict[str, str]:
        return {"STRONGSWAN_CONF": str(self.conf), "SWANCTL_DIR": str(self.swanctl_dir)}

    def start(self, timeout: float = 10) -> Charon:
        self.write_strongswan_conf()
        # `ip netns exec` unshares the mount namespace, so the bind mount of /run is this charon's alone.
        script = f"mount --bind {self.run_dir} /run && exec {CHARON}"
        self.proc = self.topo.popen(self.role, ["sh", "-c", script], self.dir / "charon.stdout", env=self.env)
        wait_for(f"charon in {self.topo.ns(self.role)} to open its vici socket",
                 lambda: self.vici.exists() and self._alive(), timeout, self.logs)
        self.swanctl("--load-all", "--file", str(self.swanctl_dir / "swanctl.conf"))
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"charon in {self.topo.ns(self.role)} exited ({self.proc.returncode})\n{self.logs()}")
        return True

    def swanctl(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.topo.ns(self.role), SWANCTL, *args, "--uri", self.uri]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                             env={**os.environ, **self.env})
        if check and res.returncode != 0:
            raise HarnessError(f"swanctl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}\n"
                               f"{self.logs()}")
        return res

    def initiate(self, child: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return self.swanctl("--initiate", "--child", child, "--timeout", str(int(timeout)), timeout=timeout + 5)

    def list_sas(self) -> str:
        return self.swanctl("--list-sas", check=False).stdout

    def ike_up(self, conn: str) -> bool:
        return bool(re.search(rf"^{re.escape(conn)}: #\d+, ESTABLISHED", self.list_sas(), re.M))

    def child_spis(self, child: str) -> list[str]:
        """Inbound SPIs (hex) of the INSTALLED child SAs named `child`; a rekey shows as a new SPI."""
        spis, current = [], False
        for line in self.list_sas().splitlines():
            head = re.match(rf"\s+{re.escape(child)}: #\d+, reqid \d+, (\w+)", line)
            if head:
                current = head.group(1) == "INSTALLED"
            elif current and (m := re.match(r"\s+in\s+([0-9a-f]{8})", line)):
                spis.append(m.group(1))
                current = False
        return spis


# --- our gateway -----------------------------------------------------------------------------------------------
class OurGateway(_GatewayProcess):
    """Our gateway (`python -m labctl.gateway run`) in one namespace, with its JSON config and control socket."""

    label = "our gateway"

    def __init__(self, topo: Topology, role: str, workdir: Path, config: dict[str, Any]) -> None:
        self.dir = workdir / f"ours-{role}"
        self.dir.mkdir(parents=True, exist_ok=True)
        super().__init__(topo, role, self.dir / "gateway.log")
        self.config = {**config, "state_dir": str(self.dir / "state")}
        self.config_path = self.dir / "gateway.json"

    @property
    def socket(self) -> Path:
        return self.dir / "state" / "control.sock"

    def start(self, timeout: float = 15) -> OurGateway:
        self.config_path.write_text(json.dumps(self.config, indent=1))
        chk = run([sys.executable, "-m", "labctl.gateway", "check", "--config", str(self.config_path)], check=False)
        if chk.returncode != 0:
            raise HarnessError(f"our gateway rejects the generated config: {chk.stderr}{chk.stdout}")
        self.proc = self.topo.popen(self.role, [sys.executable, "-m", "labctl.gateway", "run", "--config",
                                                str(self.config_path), "--log-level", "debug"], self.log)
        wait_for(f"our gateway in {self.topo.ns(self.role)} to answer on its control socket", self._answers,
                 timeout, self.logs)
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"our gateway exited ({self.proc.returncode})\n{self.logs()}")
        if not self.socket.exists():
            return False
        try:
            return bool(self.ctl("status").get("ok"))
        except OSError:
            return False

    def ctl(self, cmd: str, *args: str) -> dict[str, Any]:
        from labctl.gateway.control import ControlClient

        req: dict[str, str] = {}
        if args:
            req["name"] = args[0]
        if len(args) > 1:
            req["what"] = args[1]
        return ControlClient(self.socket).request(cmd, **req)

    def status(self) -> dict[str, Any]:
        gw: dict[str, Any] = self.ctl("status")["gateway"]
        return gw

    def sas(self) -> list[dict[str, Any]]:
        sas: list[dict[str, Any]] = self.ctl("list-sas")["sas"]
        return sas

    def inbound_spis(self) -> set[int]:
        return {int(s["spi"], 0) if isinstance(s["spi"], str) else int(s["spi"])
                for s in self.sas() if s.get("direction") == "in"}



# --- a lab: topology + the two gateways, cleaned up as one ---------------------------------------------------
@dataclass
class Lab:
    workdir: Path
    topo: Topology = field(default_factory=Topology)
    gateways: list[OurGateway | Charon] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)
    pings: list[BackgroundPing] = field(default_factory=list)

    def build(self) -> Lab:
        require_tools()
        self.topo.build()
        return self

    def ours(self, role: str, config: dict[str, Any]) -> OurGateway:
        gw = OurGateway(self.topo, role, self.workdir, config)
        self.gateways.append(gw)
        return gw.start()

    def charon(self, role: str, swanctl_conf: str, files: dict[str, str] | None = None,
               charon_options: str = "") -> Charon:
        c = Charon(self.topo, role, self.workdir, charon_options)
        c.write_swanctl(swanctl_conf, files)
        self.gateways.append(c)
        return c.start()

    def capture(self, name: str = "internet") -> Capture:
        cap = self.topo.capture("ga", self.topo.wan_a, self.workdir / f"{name}.pcap")
        self.captures.append(cap)
        return cap

    def start_ping(self, src: str, dst: str, interval: float = 0.1) -> BackgroundPing:
        p = self.topo.start_ping(src, dst, interval, self.workdir / f"ping-{src}-{len(self.pings)}.log")
        self.pings.append(p)
        return p

    def logs(self) -> str:
        return "\n".join(g.logs() for g in self.gateways)

    def close(self) -> list[str]:
        for p in self.pings:
            p.stop()
        for c in self.captures:
            c.stop()
        for g in self.gateways:
            g.stop()
        problems = self.topo.close()
        problems += [f"namespace {n}" for n in self.topo.leftovers()]
        return problems
