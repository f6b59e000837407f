"""The gateway's configuration file: JSON, rendered by labctl from a topology, readable by people.

The gateway image carries no YAML or pydantic, so this is plain JSON checked by hand. Every error names the
field path and what was expected, e.g.
``connections[0].children[0].mode: expected 'tunnel' or 'transport', got 'tunel'``.

Shape (all keys not marked optional are required)::

    {
      "name": "gw-a",
      "state_dir": "/run/labctl/lab/gw-a",          # control socket, key tables
      "tun": {"name": "ipsec0", "mtu": 1400},       # optional
      "fwmark": 485, "table": 485,                  # optional
      "local": "198.51.100.10",                     # address we send IKE/ESP/AH from
      "manual": [ManualTunnel...],                  # optional: static keys (like `ip xfrm state add`)
      "connections": [Connection...]                # optional: IKEv1 / IKEv2
    }
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from labctl.gateway.l2tp_config import L2tpConfig

Mode = Literal["tunnel", "transport"]
PROTECTIONS = ("esp", "ah", "ah+esp")
ANY = "%any"


class ConfigError(ValueError):
    """The configuration file is wrong; the message says where and what to fix."""


@dataclass(frozen=True)
class TunConfig:
    name: str = "ipsec0"
    mtu: int = 1400


@dataclass(frozen=True)
class ManualKeys:
    """One protocol's SA pair with static keys: `out` is what we send with, `in` what the peer sends with."""

    spi_out: int
    spi_in: int
    encr: str | None
    integ: str | None
    encr_key_out: bytes
    encr_key_in: bytes
    integ_key_out: bytes
    integ_key_in: bytes


@dataclass(frozen=True)
class ManualTunnel:
    name: str
    local: str
    remote: str
    mode: Mode
    protection: str  # esp | ah | ah+esp
    encap: bool
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    esp: ManualKeys | None
    ah: ManualKeys | None
    replay_window: int = 64
    esn: bool = False


@dataclass(frozen=True)
class AuthConfig:
    method: Literal["psk", "pubkey"]
    psk: bytes = b""
    key: str = ""  # PEM file path
    cert: str = ""  # PEM file path: our certificate first, then any intermediate CA certificates to send
    ca: tuple[str, ...] = ()  # PEM files of the trusted (root) CAs


@dataclass(frozen=True)
class ChildConfig:
    name: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    mode: Mode = "tunnel"
    protection: str = "esp"
    proposals: tuple[str, ...] = ("aes128gcm16",)
    rekey_time: float = 3600.0
    life_time: float = 0.0  # 0: rekey_time * 1.1, as swanctl does
    rand_time: float = 0.0
    rekey_bytes: int = 0
    rekey_packets: int = 0
    start_action: Literal["start", "trap", "none"] = "start"


@dataclass(frozen=True)
class ConnectionConfig:
    name: str
    version: Literal[1, 2]
    local: str
    remote: str
    local_id: str
    remote_id: str
    auth: AuthConfig
    proposals: tuple[str, ...]
    children: tuple[ChildConfig, ...]
    ike_mode: Literal["main", "aggressive"] = "main"
    encap: bool = False
    rekey_time: float = 14400.0
    dpd_delay: float = 0.0
    dpd_timeout: float = 30.0
    dpd_action: Literal["restart", "clear", "none"] = "restart"
    allow_legacy: bool = False
    # First retransmission of an unanswered IKE request. Lab links answer in well under a millisecond, and an
    # initiator that starts a moment before its responder should not wait strongSwan's 4 s for its second try.
    retransmit_timeout: float = 1.0


@dataclass(frozen=True)
class GatewayConfig:
    name: str
    state_dir: Path
    local: str
    tun: TunConfig = TunConfig()
    fwmark: int = 485
    table: int = 485
    manual: tuple[ManualTunnel, ...] = ()
    connections: tuple[ConnectionConfig, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    l2tp: L2tpConfig | None = None  # L2TP/IPsec LNS or client (labctl.gateway.l2tp_config)

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"


class _Obj:
    """A JSON object being read, which knows its own path for error messages."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'top level'}: expected an object, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any = ..., kind: type | tuple[type, ...] | None = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._p(key)}: required field is missing")
            return default
        value = self.data[key]
        if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(f"{self._p(key)}: expected {names}, got {value!r}")
        return value

    def choice(self, key: str, options: tuple[Any, ...], default: Any = ...) -> Any:
        value = self.get(key, default)
        if value not in options:
            raise ConfigError(f"{self._p(key)}: expected one of {', '.join(map(repr, options))}, got {value!r}")
        return value

    def address(self, key: str) -> str:
        value = self.get(key, kind=str)
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ConfigError(f"{self._p(key)}: expected an IPv4 address, got {value!r}") from None

    def prefixes(self, key: str) -> tuple[str, ...]:
        values = self.get(key, kind=list)
        out = []
        for i, v in enumerate(values):
            try:
                out.append(str(ipaddress.IPv4Network(v, strict=False)))
            except (ValueError, TypeError):
                raise ConfigError(f"{self._p(key)}[{i}]: expected an IPv4 prefix like 10.1.0.0/24, got {v!r}") from None
        if not out:
            raise ConfigError(f"{self._p(key)}: at least one prefix is required")
        return tuple(out)

    def hexbytes(self, key: str, default: Any = ...) -> bytes:
        value = self.get(key, default)
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{self._p(key)}: expected a hex string, got {value!r}")
        text = value.removeprefix("0x").replace(":", "")
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"{self._p(key)}: expected a hex string (like 0x0011aabb...), got {value!r}") from None

    def spi(self, key: str) -> int:
        value = self.get(key, kind=(int, str))
        try:
            spi = int(value, 0) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(f"{self._p(key)}: expected an SPI like 0x1000a001, got {value!r}") from None
        # RFC 4303 §2.1: SPIs 1..255 are reserved by IANA, 0 is for local use only.
        if not 256 <= spi <= 0xFFFFFFFF:
            raise ConfigError(f"{self._p(key)}: SPI must be in 0x100..0xffffffff (RFC 4303 §2.1), got {value!r}")
        return spi

    def child(self, key: str) -> _Obj:
        return _Obj(self.get(key), self._p(key))

    def children(self, key: str) -> list[_Obj]:
        values = self.get(key, [], kind=list)
        return [_Obj(v, f"{self._p(key)}[{i}]") for i, v in enumerate(values)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.path or 'top level'}: unknown field(s) {', '.join(unknown)}")


def _manual_keys(o: _Obj, need_encr: bool) -> ManualKeys:
    encr = o.get("encr", None, kind=(str, type(None)))
    integ = o.get("integ", None, kind=(str, type(None)))
    if need_encr and encr is None:
        raise ConfigError(f"{o.path}.encr: ESP needs an encryption algorithm (use 'null' for none)")
    keys = ManualKeys(
        spi_out=o.spi("spi_out"),
        spi_in=o.spi("spi_in"),
        encr=encr,
        integ=integ,
        encr_key_out=o.hexbytes("encr_key_out", b""),
        encr_key_in=o.hexbytes("encr_key_in", b""),
        integ_key_out=o.hexbytes("integ_key_out", b""),
        integ_key_in=o.hexbytes("integ_key_in", b""),
    )
    o.done()
    return keys


def _manual(o: _Obj) -> ManualTunnel:
    protection = o.choice("protection", PROTECTIONS, "esp")
    esp = _manual_keys(o.child("esp"), True) if "esp" in protection.split("+") else None
    ah = _manual_keys(o.child("ah"), False) if "ah" in protection.split("+") else None
    if ah is not None and not ah.integ:
        raise ConfigError(f"{o.path}.ah.integ: AH needs an integrity algorithm")
    t = ManualTunnel(
        name=o.get("name", kind=str),
        local=o.address("local"),
        remote=o.address("remote"),
        mode=o.choice("mode", ("tunnel", "transport"), "tunnel"),
        protection=protection,
        encap=o.get("encap", False, kind=bool),
        local_ts=o.prefixes("local_ts"),
        remote_ts=o.prefixes("remote_ts"),
        esp=esp,
        ah=ah,
        replay_window=o.get("replay_window", 64, kind=int),
        esn=o.get("esn", False, kind=bool),
    )
    if t.encap and ah is not None:
        raise ConfigError(f"{o.path}.encap: UDP encapsulation carries ESP only (RFC 3948); AH cannot cross a NAT")
    if not 0 <= t.replay_window <= 4096:
        raise ConfigError(f"{o.path}.replay_window: expected 0..4096, got {t.replay_window}")
    o.done()
    return t


def _auth(o: _Obj) -> AuthConfig:
    method = o.choice("method", ("psk", "pubkey"))
    if method == "psk":
        psk = o.get("psk", kind=str)
        if not psk:
            raise ConfigError(f"{o.path}.psk: the pre-shared key must not be empty")
        a = AuthConfig(method="psk", psk=psk.encode())
    else:
        a = AuthConfig(
            method="pubkey",
            key=o.get("key", kind=str),
            cert=o.get("cert", kind=str),
            ca=tuple(o.get("ca", [], kind=list)),
        )
    o.done()
    return a


def _child(o: _Obj) -> ChildConfig:
    c = ChildConfig(
        name=o.get("name", kind=str),
        local_ts=o.prefixes("local_ts"),
        remote_ts=o.prefixes("remote_ts"),
        mode=o.choice("mode", ("tunnel", "transport"), "tunnel"),
        protection=o.choice("protection", PROTECTIONS, "esp"),
        proposals=tuple(o.get("proposals", ["aes128gcm16"], kind=list)),
        rekey_time=float(o.get("rekey_time", 3600, kind=(int, float))),
        life_time=float(o.get("life_time", 0, kind=(int, float))),
        rand_time=float(o.get("rand_time", 0, kind=(int, float))),
        rekey_bytes=o.get("rekey_bytes", 0, kind=int),
        rekey_packets=o.get("rekey_packets", 0, kind=int),
        start_action=o.choice("start_action", ("start", "trap", "none"), "start"),
    )
    o.done()
    return c


def _connection(o: _Obj) -> ConnectionConfig:
    local = o.address("local")
    # %any: a responder for remote-access clients whose addresses are not known in advance (L2TP/IPsec).
    remote = ANY if o.get("remote", None) == ANY else o.address("remote")
    c = ConnectionConfig(
        name=o.get("name", kind=str),
        version=o.choice("version", (1, 2), 2),
        local=local,
        remote=remote,
        local_id=o.get("local_id", local, kind=str),
        remote_id=o.get("remote_id", "" if remote == ANY else remote, kind=str),
        auth=_auth(o.child("auth")),
        proposals=tuple(o.get("proposals", ["aes128gcm16-prfsha256-ecp256"], kind=list)),
        children=tuple(_child(c) for c in o.children("children")),
        ike_mode=o.choice("ike_mode", ("main", "aggressive"), "main"),
        encap=o.get("encap", False, kind=bool),
        rekey_time=float(o.get("rekey_time", 14400, kind=(int, float))),
        dpd_delay=float(o.get("dpd_delay", 0, kind=(int, float))),
        dpd_timeout=float(o.get("dpd_timeout", 30, kind=(int, float))),
        dpd_action=o.choice("dpd_action", ("restart", "clear", "none"), "restart"),
        allow_legacy=o.get("allow_legacy", False, kind=bool),
        retransmit_timeout=float(o.get("retransmit_timeout", 1.0, kind=(int, float))),
    )
    if not c.children:
        raise ConfigError(f"{o.path}.children: a connection needs at least one child SA")
    if c.ike_mode == "aggressive" and c.version != 1:
        raise ConfigError(f"{o.path}.ike_mode: aggressive mode exists only in IKEv1 (set version: 1)")
    for i, ch in enumerate(c.children):
        if ch.protection == "ah+esp":
            why = ("IKEv2 negotiates one protocol per child SA (RFC 7296 §3.3)" if c.version == 2
                   else "AH+ESP bundles over IKEv1 are not supported yet")
            raise ConfigError(f"{o.path}.children[{i}].protection: {why}; use manual keys for an AH+ESP tunnel")
    o.done()
    return c


def parse_config(data: object) -> GatewayConfig:
    top = _Obj(data, "")
    tun_o = _Obj(top.get("tun", {}), "tun")
    tun = TunConfig(name=tun_o.get("name", "ipsec0", kind=str), mtu=tun_o.get("mtu", 1400, kind=int))
    tun_o.done()
    if not 576 <= tun.mtu <= 65535:
        raise ConfigError(f"tun.mtu: expected 576..65535, got {tun.mtu}")
    cfg = GatewayConfig(
        name=top.get("name", kind=str),
        state_dir=Path(top.get("state_dir", kind=str)),
        local=top.address("local"),
        tun=tun,
        fwmark=top.get("fwmark", 485, kind=int),
        table=top.get("table", 485, kind=int),
        manual=tuple(_manual(m) for m in top.children("manual")),
        connections=tuple(_connection(c) for c in top.children("connections")),
        l2tp=_l2tp_section(top.get("l2tp", None)),
    )
    top.done()
    names = [t.name for t in cfg.manual] + [c.name for c in cfg.connections]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ConfigError(f"manual/connections: duplicate name(s) {', '.join(dups)}")
    return cfg


def _l2tp_section(data: object) -> L2tpConfig | None:
    from labctl.gateway.l2tp_config import parse_l2tp  # that module builds on _Obj above

    return parse_l2tp(data)


def _resolved(cfg: GatewayConfig, base: Path) -> GatewayConfig:
    """Relative paths in the file (state_dir, certificates) are relative to the file's own directory."""
    from dataclasses import replace

    def fix(path: str) -> str:
        return path if Path(path).is_absolute() else str(base / path)

    conns = tuple(
        replace(c, auth=replace(c.auth, key=fix(c.auth.key), cert=fix(c.auth.cert), ca=tuple(map(fix, c.auth.ca))))
        if c.auth.method == "pubkey"
        else c
        for c in cfg.connections
    )
    state_dir = cfg.state_dir if cfg.state_dir.is_absolute() else base / cfg.state_dir
    return replace(cfg, state_dir=state_dir.resolve(), connections=conns)


def _read_pem(path: str, field_path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field_path}: cannot read {path}: {exc.strerror}") from None


def check_credentials(cfg: GatewayConfig) -> None:
    """The PEM files of certificate-authenticated connections: the key can be read, the certificate file starts
    with the certificate of that key (intermediate CA certificates may follow, RFC 7296 §3.6), and every CA
    file holds at least one certificate. The same checks the IKE engines make, made before the gateway starts."""
    if not any(c.auth.method == "pubkey" for c in cfg.connections):
        return
    from labctl.gateway.ike import certs  # needs `cryptography`, which PSK-only configurations do not

    for i, c in enumerate(cfg.connections):
        if c.auth.method != "pubkey":
            continue
        where = f"connections[{i}].auth"
        key_pem = _read_pem(c.auth.key, f"{where}.key")
        cert_pem = _read_pem(c.auth.cert, f"{where}.cert")
        try:
            key = certs.load_private_key(key_pem, c.auth.key)
        except certs.CertError as exc:
            raise ConfigError(f"{where}.key: {exc}") from None
        try:
            certs.local_chain(cert_pem, key, c.auth.cert)
        except certs.CertError as exc:
            raise ConfigError(f"{where}.cert: {exc}") from None
        for j, ca in enumerate(c.auth.ca):
            try:
                certs.load_pem_certificates(_read_pem(ca, f"{where}.ca[{j}]"), ca)
            except certs.CertError as exc:
                raise ConfigError(f"{where}.ca[{j}]: {exc}") from None


def load_config(path: str | Path, check_files: bool = True) -> GatewayConfig:
    """``check_files``: also read the certificate and key files (`check_credentials`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the configuration: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    try:
        cfg = _resolved(parse_config(data), p.resolve().parent)
        if check_files:
            check_credentials(cfg)
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
