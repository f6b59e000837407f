"""The ``l2tp`` section of the gateway configuration: the LNS (server) or the remote user's client.

L2TP/IPsec (RFC 3193): L2TP runs on UDP 1701 inside an IPsec transport-mode SA. The section only describes
L2TP and PPP; the IPsec side is an ordinary connection of the same gateway (transport mode, ``remote: %any``
on the LNS so that any client may connect). Shapes::

    "l2tp": {"role": "lns", "tun": {"name": "l2tp0", "mtu": 1400},
             "local_address": "10.2.100.1",              # the LNS end of every PPP link
             "pool": ["10.2.100.10", "10.2.100.99"],     # addresses IPCP hands out (first, last)
             "dns": ["10.2.0.53"],                       # optional (RFC 1877)
             "users": {"alice": "secret"},
             "auth": ["mschapv2", "chap-md5", "pap"]}    # optional, in order of preference

    "l2tp": {"role": "client", "tun": {"name": "ppp0", "mtu": 1400},
             "server": "198.51.100.20", "user": "alice", "password": "secret",
             "routes": ["10.2.0.0/24"]}                  # sent through the PPP link once it is up

Both take optional ``echo_interval``/``echo_failures`` (LCP keepalive, RFC 1661 §5.8) and ``hello_interval``
(L2TP keepalive, RFC 2661 §6.5).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from labctl.gateway.config import ConfigError, TunConfig, _Obj

AUTH_LABELS = ("mschapv2", "chap-md5", "pap")


@dataclass(frozen=True)
class L2tpConfig:
    role: Literal["lns", "client"]
    tun: TunConfig
    # LNS
    local_address: str = ""
    pool_first: str = ""
    pool_last: str = ""
    dns: tuple[str, ...] = ()
    users: dict[str, str] = field(default_factory=dict)
    # client
    server: str = ""
    user: str = ""
    password: str = ""
    routes: tuple[str, ...] = ()
    # both
    auth: tuple[str, ...] = AUTH_LABELS
    echo_interval: float = 10.0
    echo_failures: int = 3
    hello_interval: float = 60.0

    def __repr__(self) -> str:  # never print passwords (STYLE: no secrets in logs)
        return f"L2tpConfig(role={self.role!r}, tun={self.tun.name!r})"


def parse_l2tp(data: Any) -> L2tpConfig | None:
    """The ``l2tp`` section (None when absent); ConfigError names the field and what was expected."""
    if data is None:
        return None
    o = _Obj(data, "l2tp")
    role = o.choice("role", ("lns", "client"))
    default_tun = "l2tp0" if role == "lns" else "ppp0"
    tun_o = _Obj(o.get("tun", {}), "l2tp.tun")
    tun = TunConfig(name=tun_o.get("name", default_tun, kind=str), mtu=tun_o.get("mtu", 1400, kind=int))
    tun_o.done()
    if not 576 <= tun.mtu <= 65535:
        raise ConfigError(f"l2tp.tun.mtu: expected 576..65535, got {tun.mtu}")
    auth = tuple(o.get("auth", list(AUTH_LABELS), kind=list))
    for i, label in enumerate(auth):
        if label not in AUTH_LABELS:
            raise ConfigError(f"l2tp.auth[{i}]: expected one of {', '.join(AUTH_LABELS)}, got {label!r}")
    if not auth:
        raise ConfigError("l2tp.auth: at least one PPP authentication method is required")
    common: dict[str, Any] = {
        "role": role,
        "tun": tun,
        "auth": auth,
        "echo_interval": float(o.get("echo_interval", 10.0, kind=(int, float))),
        "echo_failures": o.get("echo_failures", 3, kind=int),
        "hello_interval": float(o.get("hello_interval", 60.0, kind=(int, float))),
    }
    if common["echo_interval"] <= 0 or common["echo_failures"] < 1:
        raise ConfigError("l2tp.echo_interval/echo_failures: expected a positive interval and at least 1 failure")
    if role == "lns":
        cfg = _lns(o, common)
    else:
        cfg = L2tpConfig(
            **common,
            server=o.address("server"),
            user=o.get("user", kind=str),
            password=o.get("password", kind=str),
            routes=o.prefixes("routes"),
        )
        if not cfg.user:
            raise ConfigError("l2tp.user: the PPP user name must not be empty")
    o.done()
    return cfg


def _lns(o: _Obj, common: dict[str, Any]) -> L2tpConfig:
    pool = o.get("pool", kind=list)
    if len(pool) != 2:
        raise ConfigError(f"l2tp.pool: expected [first, last] addresses, got {pool!r}")
    try:
        first, last = (ipaddress.IPv4Address(a) for a in pool)
    except (ValueError, TypeError):
        raise ConfigError(f"l2tp.pool: expected two IPv4 addresses, got {pool!r}") from None
    if int(last) < int(first):
        raise ConfigError(f"l2tp.pool: the last address {last} comes before the first {first}")
    dns = o.get("dns", [], kind=list)
    for i, d in enumerate(dns):
        try:
            ipaddress.IPv4Address(d)
        except (ValueError, TypeError):
            raise ConfigError(f"l2tp.dns[{i}]: expected an IPv4 address, got {d!r}") from None
    users = o.get("users", kind=dict)
    for name, password in users.items():
        if not isinstance(password, str) or not password:
            raise ConfigError(f"l2tp.users.{name}: expected a non-empty password string")
    if not users:
        raise ConfigError("l2tp.users: the LNS needs at least one user")
    return L2tpConfig(
        **common,
        local_address=o.address("local_address"),
        pool_first=str(first),
        pool_last=str(last),
        dns=tuple(dns),
        users=dict(users),
    )
