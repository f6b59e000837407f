"""One control surface for a gateway of either kind (ours or strongSwan), and IKE timings read off the wire.

Used by the setup-time comparison and meant for the throughput benchmark (issue 9): the same scenario can
put ours or strongSwan on each end, bring the tunnel up and down, and say whether it is up.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from interop_scenarios import AGGRESSIVE_PSK_OPTION, CHILD, CONN, Scenario, Side, our_config, swanctl_conf
from strongswan import Charon, Lab, OurGateway, tshark_fields, wait_for

Kind = Literal["ours", "strongswan"]
ROLE = {"a": "ga", "b": "gb"}


@dataclass
class Endpoint:
    kind: Kind
    side: Side
    gw: OurGateway | Charon

    def initiate(self) -> None:
        if isinstance(self.gw, OurGateway):
            reply = self.gw.ctl("initiate", CONN)
            if not reply.get("ok"):
                raise AssertionError(f"our gateway refused to initiate: {reply}")
        else:
            self.gw.initiate(CHILD)

    def terminate(self) -> None:
        if isinstance(self.gw, OurGateway):
            self.gw.ctl("terminate", CONN)
        else:
            self.gw.swanctl("--terminate", "--ike", CONN, "--timeout", "5", check=False)

    def up(self) -> bool:
        if isinstance(self.gw, OurGateway):
            return any(b["state"] == "installed" for b in self.gw.status()["bindings"])
        return bool(self.gw.child_spis(CHILD))

    def down(self) -> bool:
        if isinstance(self.gw, OurGateway):
            st = self.gw.status()
            ike = st.get("ike", {})
            v2 = ike.get("v2", {}).get("ike_sas", []) if isinstance(ike.get("v2"), dict) else []
            v1 = ike.get("v1", {}).get("isakmp_sas", []) if isinstance(ike.get("v1"), dict) else []
            return not self.up() and not v1 and not v2
        return not self.gw.ike_up(CONN) and not self.gw.child_spis(CHILD)


def start_endpoint(lab: Lab, s: Scenario, side: Side, kind: Kind, autostart: bool = True) -> Endpoint:
    """Start a gateway of `kind` on `side`; with autostart False the initiator waits for `initiate()`."""
    if kind == "ours":
        conf = our_config(s, side, lab.workdir)
        if not autostart:
            for child in conf["connections"][0]["children"]:
                child["start_action"] = "none"
        return Endpoint(kind, side, lab.ours(ROLE[side], conf))
    text, files = swanctl_conf(s, side)
    options = AGGRESSIVE_PSK_OPTION if s.ike_mode == "aggressive" else ""
    return Endpoint(kind, side, lab.charon(ROLE[side], text, files, charon_options=options))


def ikev2_setup_times(pcap: Path) -> list[float]:
    """Seconds from each IKE_SA_INIT request to the first IKE_AUTH response of the same IKE SA (by SPIi)."""
    rows = tshark_fields(pcap, "isakmp.exchangetype == 34 || isakmp.exchangetype == 35",
                         ["frame.time_relative", "isakmp.ispi", "isakmp.exchangetype", "isakmp.flag_r"])
    start: dict[str, float] = {}
    done: dict[str, float] = {}
    for t, spi, exch, resp in rows:
        response = resp in ("1", "True")
        if exch == "34" and not response:
            start.setdefault(spi, float(t))
        elif exch == "35" and response and spi in start:
            done.setdefault(spi, float(t))
    return [done[spi] - start[spi] for spi in start if spi in done]


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {statistics.median(ms):6.1f} ms  min {ms[0]:6.1f}  max {ms[-1]:6.1f}  (n={len(ms)})"


def measure_setups(lab: Lab, s: Scenario, initiator: Kind, responder: Kind, rounds: int = 5) -> list[float]:
    """Bring the tunnel up and down `rounds` times (gw-a initiates) and time each IKE_SA_INIT + IKE_AUTH."""
    resp = start_endpoint(lab, s, "b", responder)
    init = start_endpoint(lab, s, "a", initiator, autostart=False)
    cap = lab.capture(f"setup-{initiator}-{responder}")
    for i in range(rounds):
        init.initiate()
        wait_for(f"round {i + 1}: the tunnel up on both sides", lambda: init.up() and resp.up(), 10, lab.logs)
        init.terminate()
        wait_for(f"round {i + 1}: the tunnel down on both sides", lambda: init.down() and resp.down(), 10, lab.logs)
    return ikev2_setup_times(cap.stop())
