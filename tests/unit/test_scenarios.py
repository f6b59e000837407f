"""Scenario files: matrix expansion, listed exclusions, -k selection, derived expectations, NAT router plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.backends.base import masquerade_commands
from labctl.lab.plan import make_plan
from labctl.scenarios.expect import Expectations, ExpectError, derive
from labctl.scenarios.expect_l2tp import L2tpExpectations, derive_scenario
from labctl.scenarios.load import ScenarioError, load_catalog, load_file
from labctl.scenarios.model import Scenario
from labctl.scenarios.runner import effective_jobs, load_scenario_topology
from labctl.scenarios.select import SelectError, matches
from labctl.topology.errors import TopologyError
from labctl.topology.load import load_topology

REPO = Path(__file__).resolve().parents[2]


def _by_name(names: list[str]) -> dict[str, Scenario]:
    found = {s.name: s for s in load_catalog().scenarios}
    return {n: found[n] for n in names}


def test_shipped_matrix_covers_every_combination_once() -> None:
    catalog = load_catalog()
    ipsec = [s for s in catalog.scenarios if s.name.startswith("ipsec-")]
    ipsec_excluded = [e for e in catalog.excluded if e.name.startswith("ipsec-")]
    # keying {IKEv2, IKEv1 Main, IKEv1 Aggressive, manual} x {esp, ah, ah+esp} x {tunnel, transport}
    assert len(ipsec) + len(ipsec_excluded) == 4 * 3 * 2
    assert {e.name for e in ipsec_excluded} == {
        f"ipsec-{k}-ah+esp-{m}" for k in ("ikev2", "ikev1-main", "ikev1-aggressive") for m in ("tunnel", "transport")}
    assert all("RFC" in e.reason for e in ipsec_excluded)
    names = {s.name for s in catalog.scenarios}
    assert {"algorithms-aes-gcm", "algorithms-aes-cbc-sha256-modp2048", "algorithms-chacha20poly1305-x25519",
            "nat-t-ikev2-esp", "nat-t-ikev1-main-esp", "udp-encap-manual", "ipsec-manual-ah+esp-tunnel",
            "l2tp-ipsec"} <= names
    assert "nat-t-ikev2-ah" in {e.name for e in catalog.excluded}


def test_every_shipped_scenario_builds_a_plan() -> None:
    for scenario in load_catalog().scenarios:
        topology = load_scenario_topology(scenario)
        derive_scenario(topology, scenario)
        make_plan(topology, "t7-unit")


def test_axes_merge_in_order_and_fill_in_the_tunnel() -> None:
    rows = _by_name(["ipsec-ikev1-aggressive-ah-transport", "nat-t-ikev1-main-esp"])
    row = rows["ipsec-ikev1-aggressive-ah-transport"]
    assert row.topology == "host-to-host" and row.tunnel == "h2h"
    assignments = dict(row.assignments)
    assert assignments["tunnels.h2h.ike.mode"] == "aggressive"
    assert assignments["tunnels.h2h.ike.esp_proposals"] == ["sha256"]  # the later axis wins
    assert row.axes == {"keying": "ikev1-aggressive", "protection": "ah", "mode": "transport"}
    assert rows["nat-t-ikev1-main-esp"].variant == "ikev1-main"


def test_a_users_scenario_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "name: mine\ntopology: site-to-site\ntunnel: s2s\nchecks: [reachability, wire]\ntags: [quick]\n"
        "set: {tunnel.encap: true}\n"
        "axes:\n  auth:\n    psk: {}\n    cert: {set: {tunnel.ike.auth: {method: pubkey}}}\n"
        "exclude:\n  - when: {auth: cert}\n    reason: not today\n")
    catalog = load_catalog([tmp_path])
    assert [s.name for s in catalog.scenarios] == ["mine-psk"]
    assert catalog.scenarios[0].checks == ("reachability", "wire")
    assert catalog.scenarios[0].assignments == (("tunnels.s2s.encap", True),)
    assert [(e.name, e.reason) for e in catalog.excluded] == [("mine-cert", "not today")]


def test_a_missing_topology_is_listed_as_excluded(tmp_path: Path) -> None:
    (tmp_path / "later.yaml").write_text("name: later\ntopology: no-such-topology\n")
    catalog = load_file(tmp_path / "later.yaml")
    assert not catalog.scenarios
    assert "no-such-topology" in catalog.excluded[0].reason


@pytest.mark.parametrize("text, needle", [
    ("name: x\ntopology: site-to-site\nchekcs: [wire]\n", "chekcs: Extra inputs are not permitted"),
    ("name: x\ntopology: site-to-site\nchecks: [telepathy]\n", "checks.0"),
    ("name: x\n  topology: [\n", "not valid YAML"),
])
def test_bad_scenario_files_name_the_file_and_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_file(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_tunnel_paths_need_a_tunnel(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: x\ntopology: site-to-site\nset: {tunnel.encap: true}\n")
    assert "names the tunnel" in load_file(tmp_path / "x.yaml").excluded[0].reason


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text("name: same\ntopology: site-to-site\n")
    with pytest.raises(ScenarioError, match="duplicated: same"):
        load_catalog([tmp_path])


@pytest.mark.parametrize("expr, expected", [
    ("ikev1", True), ("ikev2", False), ("ikev1 and not ah", False), ("ikev1 and (ah or esp)", True),
    ("not transport", False), ("not tunnel", True), ("tunnel", False), ("nat or transport", True),
])
def test_keyword_expressions(expr: str, expected: bool) -> None:
    assert matches(expr, "ipsec-ikev1-main-ah-transport", {"ah", "transport", "ikev1-main"}) is expected


@pytest.mark.parametrize("expr", ["ikev1 and", "(ikev1", "and ikev1", "ikev1 ikev2"])
def test_bad_keyword_expressions(expr: str) -> None:
    with pytest.raises(SelectError):
        matches(expr, "x", set())


def test_expectations_follow_the_topology() -> None:
    rows = _by_name(["ipsec-ikev1-aggressive-esp-tunnel", "ipsec-ikev2-esp-tunnel", "ipsec-manual-ah-transport",
                     "nat-t-ikev2-esp", "udp-encap-ikev2"])

    def exp(name: str) -> Expectations:
        scenario = rows[name]
        return derive(load_scenario_topology(scenario), scenario)

    am = exp("ipsec-ikev1-aggressive-esp-tunnel")
    assert (am.keying, am.ike_mode, am.identity_visible, am.nat) == ("IKEv1", "aggressive", True, False)
    assert am.child_algorithms == {"esp": "aes128-sha256"}
    assert am.protected == ("10.1.0.0/24", "10.2.0.0/24")
    assert exp("ipsec-ikev2-esp-tunnel").identity_visible is False
    manual = exp("ipsec-manual-ah-transport")
    assert (manual.keying, manual.identity_visible, manual.child_algorithms) == ("manual", None, {"ah": "sha256"})
    assert manual.protected == ("203.0.113.10/32", "203.0.113.20/32")
    assert (manual.source_address, manual.target_address) == ("203.0.113.10", "203.0.113.20")
    nat = exp("nat-t-ikev2-esp")
    assert (nat.nat, nat.encap, nat.peers) == (True, True, frozenset({"198.51.100.1", "198.51.100.20"}))
    forced = exp("udp-encap-ikev2")
    assert (forced.encap, forced.nat) == (True, None)


def test_l2tp_expectations_follow_the_topology() -> None:
    scenario = _by_name(["l2tp-ipsec"])["l2tp-ipsec"]
    exp = derive_scenario(load_scenario_topology(scenario), scenario)
    assert isinstance(exp, L2tpExpectations)
    assert (exp.lns, exp.lns_address, exp.segments) == ("gw", "198.51.100.20", ("internet", "home"))
    by_node = {c.node: c for c in exp.clients}
    assert (by_node["road-1"].seen, by_node["road-1"].nat) == ("198.51.100.31", False)
    assert (by_node["road-2"].address, by_node["road-2"].seen, by_node["road-2"].nat) == (
        "192.168.1.10", "198.51.100.30", True)
    internet, home = exp.wire("internet"), exp.wire("home")
    assert internet.peers == {"198.51.100.20", "198.51.100.31", "198.51.100.30"}
    assert internet.encap_peers == {"198.51.100.30"} and internet.hub == "198.51.100.20"
    assert home.peers == {"198.51.100.20", "192.168.1.10", "192.168.1.11"}
    assert home.encap_peers == {"192.168.1.10", "192.168.1.11"}
    assert (internet.ike_version, internet.ike_mode, internet.identity_visible) == (1, "main", False)
    assert [f.a for f in exp.flows("home", {"bob": "10.2.100.11"})] == ["10.2.100.11", "carol's address"]
    assert exp.sa().child_algorithms == {"esp": "aes128-sha256"} and exp.sa().mode == "transport"
    protected = exp.protected()
    assert "10.2.0.0/24" in protected and "198.51.100.20/32" in protected
    # The pool 10.2.100.10-99 exactly: its first and last address, nothing either side.
    assert protected[1] == "10.2.100.10/31" and protected[-2] == "10.2.100.96/30"


def test_a_wrong_password_client_is_expected_to_be_refused() -> None:
    scenario = _by_name(["l2tp-ipsec-wrong-password"])["l2tp-ipsec-wrong-password"]
    exp = derive_scenario(load_scenario_topology(scenario), scenario)
    assert isinstance(exp, L2tpExpectations)
    assert [c.node for c in exp.clients if c.refused] == ["road-1"]
    assert [c.node for c in exp.admitted] == ["road-2", "road-3"]
    assert [f.a for f in exp.flows("internet", {"bob": "10.2.100.10", "carol": "10.2.100.11"})] == [
        "10.2.100.10", "10.2.100.11"]


def test_l2tp_client_without_a_nat_to_the_lns_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: x\ntopology: l2tp-ipsec\nset: {nodes.home-router.masquerade: []}\n")
    scenario = load_file(tmp_path / "x.yaml").scenarios[0]
    with pytest.raises(ExpectError, match="road-2 dials from home, but no router masquerades it onto internet"):
        derive_scenario(load_scenario_topology(scenario), scenario)


def test_expect_overrides_and_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: x\ntopology: site-to-site\nexpect: {identity_visible: true}\n")
    scenario = load_file(tmp_path / "x.yaml").scenarios[0]
    assert derive(load_scenario_topology(scenario), scenario).identity_visible is True
    (tmp_path / "y.yaml").write_text("name: y\ntopology: site-to-site\nexpect: {colour: blue}\n")
    scenario = load_file(tmp_path / "y.yaml").scenarios[0]
    with pytest.raises(ExpectError, match="colour"):
        derive(load_scenario_topology(scenario), scenario)


def test_docker_scenarios_run_one_at_a_time() -> None:
    assert effective_jobs("docker", 4) == 1
    assert effective_jobs("netns", 4) == 4


def test_nat_router_in_the_plan_and_its_nft_commands() -> None:
    plan = make_plan(load_topology(REPO / "topologies" / "nat-t.yaml"), "t7-unit")
    nat = plan.node("nat")
    assert nat.masquerade == ("eth1",)
    assert masquerade_commands(nat)[-1] == ["nft", "add", "rule", "ip", "labctl_nat", "postrouting",
                                            "oifname", "eth1", "masquerade"]
    assert masquerade_commands(plan.node("gw-b")) == []
    gw_b = next(p for p in plan.node("gw-b").programs if p.name == "gateway")
    assert '"remote": "198.51.100.1"' in gw_b.files[0].content  # gw-a is seen at the NAT's address


@pytest.mark.parametrize("change, needle", [
    (("nodes.host-a.masquerade", ["lan-a"]), "masquerade needs a node that forwards"),
    (("nodes.nat.masquerade", ["lan-b"]), "has no interface on 'lan-b'"),
    (("nodes.nat.masquerade", []), "no router joins home to internet"),
])
def test_masquerade_validation(change: tuple[str, object], needle: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(REPO / "topologies" / "nat-t.yaml", None, [change])
    assert any(needle in str(issue) for issue in info.value.issues), info.value.issues
