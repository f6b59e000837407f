"""The gateway's only I/O: one poll loop that moves bytes between the TUN device, the raw ESP/AH sockets,
UDP 500/4500 and the control socket, and feeds the sans-I/O cores (data plane, IKE engines).

Why one thread and epoll, draining each descriptor until EAGAIN: on these 2-vCPU machines that beat threads
(GIL hand-offs) and processes (context switches) by a wide margin (shared/notes/dataplane-performance.md).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import time
from pathlib import Path
from typing import Any

from labctl.gateway import l2tp_io, netsetup, sockets
from labctl.gateway.config import GatewayConfig
from labctl.gateway.control import ControlConnection, listen
from labctl.gateway.ipsec.dataplane import Bypass, IpSend, OutboundResult, UdpSend
from labctl.gateway.keying import Keying
from labctl.gateway.offload import (
    GSO_MAX_BYTES,
    PLAIN_VNET_HDR,
    SOL_UDP,
    UDP_SEGMENT,
    VNET_HDR_LEN,
    GsoRuns,
    TcpCoalescer,
    gro_size,
    split_gro,
)
from labctl.gateway.tun import open_tun

log = logging.getLogger("labctl.gateway")

READ_SIZE = 2048 + VNET_HDR_LEN  # one MTU-sized packet; a 64 KB buffer costs more in allocation than it saves
GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
UDP_READ_SIZE = 65535
TUN_BATCH = 40  # TUN packets sealed at once: one UDP GSO send of MTU-sized datagrams (offload.GSO_MAX_BYTES)
ESP_OVERHEAD_MAX = 64  # header, IV, padding, trailer and ICV of one ESP packet, rounded up
RAW_BATCH = 64  # raw ESP packets handed to the data plane at once (about one UDP GRO batch's worth)
NON_ESP_MARKER = b"\x00\x00\x00\x00"
IKE_PORT = 500
NATT_PORT = 4500
HOUSEKEEPING_INTERVAL = 1.0


class Gateway:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.keying = Keying(cfg)
        self.dp = self.keying.dataplane
        self.epoll = select.epoll()
        self.handlers: dict[int, Any] = {}
        self.clients: dict[int, ControlConnection] = {}
        self.stopping = False
        self.started = time.time()
        self.drops = {"tun_write_errors": 0, "send_errors": 0, "bad_ike": 0, "internal_errors": 0}
        # How much each wake-up moves (packets per drain, datagrams per UDP receive) and how much of it took the
        # batch or the uniform fast path (fastpath.py): the figures that explain the data plane's speed.
        self.io = {"tun_drains": 0, "tun_packets": 0, "tun_batched": 0, "tun_uniform": 0, "esp_receives": 0,
                   "esp_packets": 0, "esp_batched": 0, "esp_uniform": 0}
        self.l2tp: l2tp_io.L2tpIo | None = None

    # --- setup ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.tun = open_tun(cfg.tun.name, vnet_hdr=True)
        self.coalescer = TcpCoalescer()
        self.gso_runs = GsoRuns()
        self.udp_gso = True  # cleared if the kernel refuses UDP_SEGMENT
        netsetup.apply(
            netsetup.RoutingPlan(
                tun=self.tun.name,
                mtu=cfg.tun.mtu,
                fwmark=cfg.fwmark,
                table=cfg.table,
                local=cfg.local,
                tunnel_prefixes=self.keying.tunnel_prefixes(),
                transport_peers=self.keying.transport_peers(),
            )
        )
        self.raw_out = sockets.raw_sender(cfg.fwmark)
        self.esp_in = sockets.raw_receiver(sockets.IPPROTO_ESP)
        self.ah_in = sockets.raw_receiver(sockets.IPPROTO_AH)
        self.udp500 = sockets.udp_socket(cfg.local, IKE_PORT, cfg.fwmark)
        self.udp4500 = sockets.udp_socket(cfg.local, NATT_PORT, cfg.fwmark, gro=True)
        self.control = listen(cfg.control_socket)
        self._register(self.tun.fd, self._on_tun)
        self._register(self.esp_in.fileno(), lambda: self._on_raw(self.esp_in))
        self._register(self.ah_in.fileno(), lambda: self._on_raw(self.ah_in))
        self._register(self.udp500.fileno(), lambda: self._on_udp(self.udp500, IKE_PORT))
        self._register(self.udp4500.fileno(), lambda: self._on_udp(self.udp4500, NATT_PORT))
        self._register(self.control.fileno(), self._on_control_accept)
        self.keying.start(time.monotonic())
        # L2TP/IPsec (LNS or client): its TUN device and trap socket join the loop; None without an l2tp section.
        self.l2tp = l2tp_io.start(cfg, self.keying, self._register, self._send_protected)
        self._flush_ike()
        self._write_keys()
        (cfg.state_dir / "gateway.pid").write_text(f"{os.getpid()}\n")
        log.info("gateway %s up: TUN %s, local %s", cfg.name, self.tun.name, cfg.local)

    def _register(self, fd: int, handler: Any) -> None:
        self.handlers[fd] = handler
        self.epoll.register(fd, select.EPOLLIN)

    # --- the loop ------------------------------------------------------------------------------------------
    def loop(self) -> None:
        next_housekeeping = 0.0
        while not self.stopping:
            now = time.monotonic()
            timeout = max(0.0, next_housekeeping - now)
            deadline = self.keying.get_timer()
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - now))
            l2tp_deadline = self.l2tp.get_timer() if self.l2tp is not None else None
            if l2tp_deadline is not None:
                timeout = min(timeout, max(0.0, l2tp_deadline - now))
            try:
                ready = self.epoll.poll(timeout)
            except InterruptedError:
                continue
            for fd, _ in ready:
                handler = self.handlers.get(fd)
                if handler is not None:
                    try:
                        handler()
                    except Exception:  # a bug in one handler must not stop the gateway (and its fail-closed routes)
                        self.drops["internal_errors"] += 1
                        if self.drops["internal_errors"] <= 10:  # a bug on every packet must not flood the log
                            log.exception("internal error while handling descriptor %d", fd)
            now = time.monotonic()
            self.keying.handle_timers(now)
            if self.l2tp is not None:
                self.l2tp.tick(now)
            self._after_keying_change()
            if now >= next_housekeeping:
                for payload, dst, dport in self.keying.keepalives(now):
                    self._send_udp(payload, dst, dport)
                next_housekeeping = now + HOUSEKEEPING_INTERVAL

    # --- data plane --------------------------------------------------------------------------------------
    def _on_tun(self) -> None:
        fd = self.tun.fd
        read = os.read
        now = time.monotonic()
        frames: list[bytes] = []
        while True:
            try:
                frames.append(read(fd, READ_SIZE))
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if len(frames) >= TUN_BATCH:
                self._tun_batch(frames, now)
                frames = []
        if frames:
            self._tun_batch(frames, now)
        self._send_run()
        self.io["tun_drains"] += 1

    def _tun_batch(self, frames: list[bytes], now: float) -> None:
        """Packets drained from the TUN device: sealed all at once when the data plane can (DataPlane.outbound_batch),
        else one by one. No TUNSETOFFLOAD, so each frame's virtio header is empty."""
        count = len(frames)
        self.io["tun_packets"] += count
        if count > 1 and count * (len(frames[0]) + ESP_OVERHEAD_MAX) <= GSO_MAX_BYTES:  # one UDP GSO send
            uniform = self.dp.outbound_uniform(frames, VNET_HDR_LEN, now)  # bulk: no Python step per packet
            if uniform is not None:
                self.io["tun_uniform"] += count
                data, size, peer = uniform
                self._send_run()  # whatever is pending leaves first
                if peer is not None:
                    self._send_gso(data, size, peer)
                else:
                    view = memoryview(data)
                    self._send_ip([view[i : i + size] for i in range(0, len(data), size)], _dst_of(data))
                return
        packets = [f[VNET_HDR_LEN:] for f in frames]
        if len(packets) > 1:
            sealed = self.dp.outbound_batch(packets, now)
            if sealed is not None:
                self.io["tun_batched"] += len(packets)
                esp, dest = sealed
                if dest is not None:
                    self._send_datagrams(esp, dest)
                else:
                    self._send_ip(esp)
                return
        outbound = self.dp.outbound
        runs = self.gso_runs
        for packet in packets:
            res = outbound(packet, now)
            if type(res) is UdpSend:
                # Equal-size datagrams to one peer leave in one UDP_SEGMENT sendmsg (offload.GsoRuns).
                dest = (res.dst, res.dport)
                if not runs.fits(res.payload, dest):
                    self._send_run()
                runs.add(res.payload, dest)
            elif type(res) is IpSend or type(res) is Bypass:
                self._send_ip([res.packet])

    def _send_ip(self, packets: list[bytes] | list[memoryview], dst: str | None = None) -> None:
        """Whole IPv4 packets (all to ``dst`` when given): the kernel routes each by its destination; our fwmark
        keeps it out of the TUN."""
        send = self.raw_out.sendto
        for packet in packets:
            try:
                send(packet, (dst or _dst_of(packet), 0))
            except OSError:
                self.drops["send_errors"] += 1

    def _send_datagrams(self, payloads: list[bytes], dest: tuple[str, int]) -> None:
        """ESP-in-UDP payloads for one peer, in order, after whatever run is pending: one UDP_SEGMENT sendmsg when
        they are equal-size (the last may be shorter) and within the GSO limits, else through offload.GsoRuns."""
        self._send_run()
        runs = self.gso_runs
        if not runs.load(payloads, dest):
            for payload in payloads:
                if not runs.fits(payload, dest):
                    self._send_run()
                runs.add(payload, dest)
        self._send_run()

    def _send_run(self) -> None:
        run = self.gso_runs.take()
        if run is not None:
            self._send_gso(*run)

    def _send_gso(self, data: bytes, size: int, dest: tuple[str, int]) -> None:
        """Datagrams of ``size`` bytes back to back (the last may be shorter) to one peer: one UDP_SEGMENT sendmsg."""
        sock = self.udp4500
        try:
            if len(data) <= size:
                sock.sendto(data, dest)
                return
            if self.udp_gso:
                sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, "little"))], 0, dest)
                return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EIO, errno.EOPNOTSUPP, errno.ENOPROTOOPT):
                self.drops["send_errors"] += 1
                return
            self.udp_gso = False  # an old kernel or a device without GSO support: one datagram per send
        for i in range(0, len(data), size):
            try:
                sock.sendto(data[i : i + size], dest)
            except OSError:
                self.drops["send_errors"] += 1

    def _write_tun(self, pkt: bytes) -> None:
        try:
            os.write(self.tun.fd, PLAIN_VNET_HDR + pkt)
        except OSError:
            self.drops["tun_write_errors"] += 1

    def _flush_tun(self) -> None:
        """Write what the coalescer gathered during one drain of a receive socket (offload.TcpCoalescer)."""
        fd = self.tun.fd
        for frame in self.coalescer.flush():
            try:
                os.write(fd, frame)
            except OSError:
                self.drops["tun_write_errors"] += 1

    def _on_raw(self, sock: socket.socket) -> None:
        now = time.monotonic()
        recv = sock.recv
        batch: list[bytes] = []
        while True:
            try:
                batch.append(recv(UDP_READ_SIZE))
            except BlockingIOError:
                break
            if len(batch) >= RAW_BATCH:
                self._raw_batch(batch, now)
                batch = []
        if batch:
            self._raw_batch(batch, now)
        self._flush_tun()
        if self.l2tp is not None:
            self.l2tp.flush()

    def _raw_batch(self, packets: list[bytes], now: float) -> None:
        """Packets drained from a raw socket: one batch through the data plane when it can take them all at once,
        else one by one (DataPlane.inbound_ip_batch)."""
        l2tp = self.l2tp
        io = self.io
        io["esp_receives"] += len(packets)
        io["esp_packets"] += len(packets)
        if len(packets) > 1 and l2tp is None:
            if len(set(map(len, packets))) == 1:
                uniform = self.dp.inbound_ip_uniform(packets, now)  # bulk: no Python step per packet
                if uniform is not None:
                    io["esp_uniform"] += len(packets)
                    self.coalescer.add_uniform(*uniform)
                    return
            opened = self.dp.inbound_ip_batch(packets, now)
            if opened is not None:
                io["esp_batched"] += len(packets)
                self.coalescer.add_run(*opened)
                return
        inbound = self.dp.inbound_ip
        add = self.coalescer.add
        for pkt in packets:
            plain = inbound(pkt, now)
            if plain is not None and (l2tp is None or not l2tp.service.take_raw(plain, pkt, now)):
                add(plain)

    def _on_udp(self, sock: socket.socket, port: int) -> None:
        if port == NATT_PORT:
            self._on_udp4500(sock)
            return
        now = time.monotonic()
        while True:
            try:
                data, (src, sport) = sock.recvfrom(UDP_READ_SIZE)
            except BlockingIOError:
                break
            self.keying.receive_ike(data, (src, sport), (self.cfg.local, port), now)

    def _on_udp4500(self, sock: socket.socket) -> None:
        now = time.monotonic()
        inbound = self.dp.inbound_udp
        inbound_batch = self.dp.inbound_udp_batch
        inbound_uniform = self.dp.inbound_udp_uniform
        add_uniform = self.coalescer.add_uniform
        add = self.coalescer.add
        add_run = self.coalescer.add_run
        local = self.cfg.local
        l2tp = self.l2tp
        io = self.io
        while True:
            try:
                data, anc, _flags, (src, sport) = sock.recvmsg(UDP_READ_SIZE, GRO_CMSG_SPACE)
            except BlockingIOError:
                break
            # UDP GRO may hand over several datagrams of one sender at once, cut at gso_size (offload.split_gro).
            size = gro_size(anc) if anc else 0
            io["esp_receives"] += 1
            if size and len(data) > size:
                if l2tp is None and len(data) % size == 0:
                    # Equal-size datagrams: the uniform path, with no Python step per packet; or None, then the
                    # batch path, then one by one.
                    uniform = inbound_uniform(data, size, now)
                    if uniform is not None:
                        io["esp_packets"] += uniform[2]
                        io["esp_uniform"] += uniform[2]
                        add_uniform(*uniform)
                        continue
                dgrams = split_gro(data, size)
                io["esp_packets"] += len(dgrams)
                if l2tp is None:
                    opened = inbound_batch(dgrams, now)  # all of them at once, or None: then one by one
                    if opened is not None:
                        io["esp_batched"] += len(dgrams)
                        add_run(*opened)
                        continue
            else:
                dgrams = [data]
                io["esp_packets"] += 1
            for dgram in dgrams:
                if dgram[:4] == NON_ESP_MARKER:
                    # RFC 3948 §2.2: IKE on port 4500 is prefixed with four zero bytes.
                    self.keying.receive_ike(dgram[4:], (src, sport), (local, NATT_PORT), now)
                    continue
                if dgram == b"\xff":
                    continue  # RFC 3948 §2.3: NAT keepalive
                plain = inbound(dgram, src, sport, local, NATT_PORT, now)
                if plain is not None and (l2tp is None or not l2tp.service.take_udp(plain, dgram, now)):
                    add(plain)  # L2TP never reaches the kernel: the service takes it with its SA (l2tp_service)
        self._flush_tun()
        if l2tp is not None:
            l2tp.flush()

    def _send_udp(self, payload: bytes, dst: str, dport: int, sport: int = NATT_PORT) -> None:
        sock = self.udp4500 if sport == NATT_PORT else self.udp500
        try:
            sock.sendto(payload, (dst, dport))
        except OSError:
            self.drops["send_errors"] += 1

    def _send_protected(self, res: OutboundResult) -> None:
        """A packet a service (L2TP) protected with the SA it chose (DataPlane.outbound_via)."""
        if type(res) is UdpSend:
            self._send_udp(res.payload, res.dst, res.dport, res.sport)
        elif type(res) is IpSend:
            try:
                self.raw_out.sendto(res.packet, (_dst_of(res.packet), 0))
            except OSError:
                self.drops["send_errors"] += 1

    def _flush_ike(self) -> None:
        for data, (_src, sport), (dst, dport) in self.keying.datagrams_to_send(time.monotonic()):
            if sport == NATT_PORT:
                data = NON_ESP_MARKER + data
            self._send_udp(data, dst, dport, sport)

    def _after_keying_change(self) -> None:
        if self.keying.process_events(time.monotonic()):
            self._write_keys()
        self._flush_ike()

    def _write_keys(self) -> None:
        # Key export is what the user asked for when they configured a lab: Wireshark tables beside the logs.
        keys = self.cfg.keys_dir
        keys.mkdir(parents=True, exist_ok=True)
        for name, lines in self.keying.key_tables().items():
            tmp = keys / f".{name}.tmp"
            tmp.write_text("".join(line + "\n" for line in lines))
            tmp.chmod(0o600)
            tmp.replace(keys / name)

    # --- control -------------------------------------------------------------------------------------------
    def _on_control_accept(self) -> None:
        while True:
            try:
                conn, _ = self.control.accept()
            except BlockingIOError:
                break
            conn.setblocking(False)
            cc = ControlConnection(conn, self._control_request)
            fd = conn.fileno()
            self.clients[fd] = cc
            self._register(fd, lambda fd=fd: self._on_control_client(fd))

    def _on_control_client(self, fd: int) -> None:
        cc = self.clients[fd]
        if not cc.on_readable():
            self.epoll.unregister(fd)
            del self.handlers[fd]
            del self.clients[fd]
            cc.sock.close()

    def _control_request(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        now = time.monotonic()
        if cmd == "status":
            return {"ok": True, "gateway": self.status()}
        if cmd == "list-sas":
            return {"ok": True, "sas": self.dp.sa_status(now)}
        if cmd in ("initiate", "terminate", "rekey"):
            name = req.get("name")
            if not isinstance(name, str):
                return {"ok": False, "error": f"{cmd} needs a connection name"}
            result = self.keying.command(cmd, name, str(req.get("what", "child")), now)
            self._after_keying_change()
            return result
        if cmd == "export-keys":
            self._write_keys()
            return {"ok": True, "keys_dir": str(self.cfg.keys_dir)}
        return {"ok": False, "error": f"unknown command {cmd!r}: try status, list-sas, initiate, terminate, rekey"}

    def status(self) -> dict[str, Any]:
        return {
            "name": self.cfg.name,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "clock": time.monotonic(),  # the time base of the engines' *_at fields
            "local": self.cfg.local,
            "tun": self.tun.name,
            "io_drops": dict(self.drops),
            "io": dict(self.io),
            **self.keying.status(),
            **({"l2tp": self.l2tp.status()} if self.l2tp is not None else {}),
        }

    # --- teardown ------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.l2tp is not None:
            self.l2tp.close(time.monotonic())  # StopCCN/LCP Terminate while the SAs still exist
        self.keying.stop(time.monotonic())
        self._flush_ike()
        for s in (self.raw_out, self.esp_in, self.ah_in, self.udp500, self.udp4500, self.control):
            s.close()
        self.tun.close()
        try:
            Path(self.cfg.control_socket).unlink()
        except OSError:
            pass


def _dst_of(packet: bytes | memoryview) -> str:
    return socket.inet_ntoa(packet[16:20])


def run(cfg: GatewayConfig) -> int:
    gw = Gateway(cfg)

    def _stop(signum: int, _frame: object) -> None:
        gw.stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        gw.setup()
    except OSError as exc:
        log.error("cannot start gateway %s: %s", cfg.name, exc)
        return 1
    try:
        gw.loop()
    finally:
        gw.close()
        log.info("gateway %s stopped", cfg.name)
    return 0
