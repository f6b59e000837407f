"""labctl-gateway: the IPsec gateway program that runs inside a lab's gateway nodes.

    labctl-gateway --version
    labctl-gateway check --config gateway.json     # validate, print what would run
    labctl-gateway run --config gateway.json       # run the daemon (foreground)
    labctl-gateway ctl --config gateway.json status|list-sas|initiate NAME|terminate NAME|rekey NAME [child|ike]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from labctl.gateway import __version__
from labctl.gateway.config import ConfigError, GatewayConfig, load_config


def _summary(cfg: GatewayConfig) -> str:
    lines = [f"gateway {cfg.name}: local address {cfg.local}, TUN {cfg.tun.name} (MTU {cfg.tun.mtu})"]
    for t in cfg.manual:
        lines.append(
            f"  manual {t.name}: {t.protection} {t.mode} {t.local} <-> {t.remote}"
            f"{' (UDP-encapsulated)' if t.encap else ''}, {','.join(t.local_ts)} <-> {','.join(t.remote_ts)}"
        )
    for c in cfg.connections:
        kind = f"IKEv{c.version}" + (f" {c.ike_mode} mode" if c.version == 1 else "")
        lines.append(f"  connection {c.name}: {kind}, {c.auth.method}, {c.local} <-> {c.remote}")
        for ch in c.children:
            lines.append(
                f"    child {ch.name}: {ch.protection} {ch.mode} {','.join(ch.local_ts)} <-> {','.join(ch.remote_ts)}"
                f", start_action={ch.start_action}"
            )
    if not cfg.manual and not cfg.connections:
        lines.append("  no IPsec configured: nothing will be protected and protected routes stay blackholed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labctl-gateway", description="labctl's userspace IPsec gateway")
    parser.add_argument("--version", action="version", version=f"labctl-gateway {__version__}")
    sub = parser.add_subparsers(dest="command")
    p_check = sub.add_parser("check", help="validate a configuration file and print what it sets up")
    p_check.add_argument("--config", required=True)
    p_run = sub.add_parser("run", help="run the gateway in the foreground")
    p_run.add_argument("--config", required=True)
    p_run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p_run.add_argument("--state-dir", help="where the control socket and key tables go (overrides the config)")
    p_ctl = sub.add_parser("ctl", help="talk to a running gateway over its control socket")
    p_ctl.add_argument("--config", help="the gateway's configuration (to find its control socket)")
    p_ctl.add_argument("--socket", help="the control socket path")
    p_ctl.add_argument("cmd", choices=["status", "list-sas", "initiate", "terminate", "rekey", "export-keys"])
    p_ctl.add_argument("args", nargs="*")
    ns = parser.parse_args(argv)

    if ns.command is None:
        print(f"labctl-gateway {__version__}")
        parser.print_help()
        return 0
    if ns.command == "ctl":
        return _ctl(ns)
    try:
        cfg = load_config(ns.config)
    except ConfigError as exc:
        print(f"labctl-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if ns.command == "check":
        print(_summary(cfg))
        print("configuration OK")
        return 0
    if getattr(ns, "state_dir", None):
        from dataclasses import replace
        from pathlib import Path

        cfg = replace(cfg, state_dir=Path(ns.state_dir))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # --log-level is about our own messages; library chatter (pyroute2's netlink dumps) stays at INFO.
    logging.getLogger("labctl").setLevel(getattr(logging, ns.log_level.upper()))
    from labctl.gateway.daemon import run

    return run(cfg)


def _ctl(ns: argparse.Namespace) -> int:
    from labctl.gateway.control import ControlClient

    if ns.socket:
        path = ns.socket
    elif ns.config:
        try:
            path = str(load_config(ns.config, check_files=False).control_socket)
        except ConfigError as exc:
            print(f"labctl-gateway: configuration error: {exc}", file=sys.stderr)
            return 2
    else:
        print("labctl-gateway ctl: give --config or --socket", file=sys.stderr)
        return 2
    args: dict[str, str] = {}
    if ns.args:
        args["name"] = ns.args[0]
    if len(ns.args) > 1:
        args["what"] = ns.args[1]
    try:
        reply = ControlClient(path).request(ns.cmd, **args)
    except OSError as exc:
        print(f"labctl-gateway ctl: cannot reach the gateway at {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
