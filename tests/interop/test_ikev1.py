"""IKEv1 against strongSwan 5.9 (issue 5): Main/Aggressive Mode, PSK and certificates, Quick Mode with and
without PFS, ours as initiator and as responder, traffic both ways, phase-2 rekey under load, and what an
observer on the internet link can read.

Our gateway is always gw-a, strongSwan gw-b; `initiator` says which side starts. ESP runs in UDP 4500 because
strongSwan's userspace data plane (libipsec) supports nothing else.
"""

from __future__ import annotations

import time

import pytest
from interop_scenarios import CHILD, Certs, Scenario, start_pair
from strongswan import Lab, tshark_fields, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.root]

NO_PFS = "aes128-sha256"
PFS = "aes128-sha256-modp2048"


@pytest.mark.parametrize("initiator", ["a", "b"], ids=["ours-initiates", "strongswan-initiates"])
@pytest.mark.parametrize("esp", [NO_PFS, PFS], ids=["no-pfs", "pfs"])
@pytest.mark.parametrize("mode", ["main", "aggressive"])
def test_psk_tunnel_carries_traffic_both_ways(lab: Lab, mode: str, esp: str, initiator: str) -> None:
    s = Scenario(version=1, ike_mode=mode, esp_proposal=esp, initiator=initiator)  # type: ignore[arg-type]
    pair = start_pair(lab, s)
    pair.ping_both_ways()
    ours = pair.ours.status()["ike"]["v1"]
    assert ours["isakmp_sas"][0]["mode"] == mode
    assert ours["isakmp_sas"][0]["role"] == ("initiator" if initiator == "a" else "responder")
    sas = pair.charon.list_sas()
    assert "IKEv1" in sas and "TUNNEL-in-UDP" in sas
    # strongSwan lists the DH group of a PFS Quick Mode in the child's algorithms.
    assert ("MODP_2048" in sas.split(f"{CHILD}: #")[1].splitlines()[0]) == (esp == PFS)


@pytest.mark.parametrize("initiator", ["a", "b"], ids=["ours-initiates", "strongswan-initiates"])
def test_main_mode_with_certificates(lab: Lab, initiator: str) -> None:
    s = Scenario(version=1, auth="pubkey", certs=Certs.make(lab.topo.addr), id_by_dn=True,
                 initiator=initiator)  # type: ignore[arg-type]
    pair = start_pair(lab, s)
    pair.check_certificate_tunnel()
    assert pair.ours.status()["ike"]["v1"]["isakmp_sas"][0]["auth"] != "psk"


@pytest.mark.parametrize("initiator", ["a", "b"], ids=["ours-initiates", "strongswan-initiates"])
def test_main_mode_certificates_through_intermediate_cas(lab: Lab, initiator: str) -> None:
    """Each gateway's certificate comes from its own intermediate CA; both trust only the root, so each must send
    its intermediate as an extra CERT payload (RFC 2408 §3.9) for the other to build the chain."""
    s = Scenario(version=1, auth="pubkey", certs=Certs.make(lab.topo.addr, intermediates=True), id_by_dn=True,
                 initiator=initiator)  # type: ignore[arg-type]
    pair = start_pair(lab, s)
    pair.check_certificate_tunnel(intermediates=True)


@pytest.mark.parametrize("rekey_side", ["a", "b"], ids=["ours-rekeys", "strongswan-rekeys"])
def test_quick_mode_rekey_while_pinging(lab: Lab, rekey_side: str) -> None:
    s = Scenario(version=1, esp_proposal=PFS, child_rekey=4, child_life=8,
                 rekey_side=rekey_side)  # type: ignore[arg-type]
    pair = start_pair(lab, s)
    first_theirs = set(pair.charon.child_spis(CHILD))
    first_ours = pair.ours.inbound_spis()
    ping = lab.start_ping("ha", lab.topo.addr.host_b, interval=0.05)
    # Rekeys at about 3.6 s and 7.2 s (the rekey margin) and the first SAs expire at 8 s: traffic must survive.
    time.sleep(10)
    result = ping.stop()
    lost = ping.lost_sequences()
    theirs, mine = set(pair.charon.child_spis(CHILD)), pair.ours.inbound_spis()
    print(f"\nIKEv1 phase-2 rekey started by {'ours' if rekey_side == 'a' else 'strongSwan'}: "
          f"{result.sent} pings, {result.lost} lost (icmp_seq {lost}); strongSwan inbound SPIs "
          f"{sorted(first_theirs)} -> {sorted(theirs)}, ours {sorted(map(hex, first_ours))} -> "
          f"{sorted(map(hex, mine))}")
    assert theirs and not theirs & first_theirs, f"strongSwan still uses its first SA\n{lab.logs()}"
    assert mine and not mine & first_ours, f"we still use our first SA\n{lab.logs()}"
    assert result.sent >= 10 / 0.05 * 0.8, result.text
    assert result.lost <= 2, f"{result.lost} pings lost during the rekey (icmp_seq {lost})\n{lab.logs()}"
    pair.ping_both_ways()


@pytest.mark.parametrize("mode", ["main", "aggressive"])
def test_identity_on_the_wire(lab: Lab, mode: str) -> None:
    """Aggressive Mode sends the identities in clear (RFC 2409 §5); Main Mode encrypts them in MM5/MM6."""
    cap = lab.capture()
    pair = start_pair(lab, Scenario(version=1, ike_mode=mode))  # type: ignore[arg-type]
    pair.ping_both_ways()
    keys = pair.ours.dir / "state" / "keys"
    esp_keys = [x for line in (keys / "esp_sa").read_text().splitlines() for x in ("-o", f"uat:esp_sa:{line}")]
    ike_keys = [x for line in (keys / "ikev1_decryption_table").read_text().splitlines()
                for x in ("-o", f"uat:ikev1_decryption_table:{line}")]
    pcap = cap.stop()
    a = lab.topo.addr
    clear_ids = {row[0] for row in tshark_fields(pcap, "isakmp.id.data.ipv4_addr", ["isakmp.id.data.ipv4_addr"])}
    # The payload is really there: with the key table our gateway wrote, tshark finds it in MM5/MM6 too.
    decrypted_ids = {row[0] for row in tshark_fields(
        pcap, "isakmp.id.data.ipv4_addr && isakmp.exchangetype == 2", ["isakmp.id.data.ipv4_addr"], ike_keys)}
    esp = tshark_fields(pcap, "esp", ["esp.spi"])
    plain_icmp = tshark_fields(pcap, f"icmp && ip.src == {a.host_a}", ["ip.src"])
    # Our exported ESP keys let tshark open strongSwan's packets and ours (both directions' SAs are listed).
    inner_icmp = tshark_fields(pcap, "esp && icmp", ["ip.src"],
                               ["-o", "esp.enable_encryption_decode:TRUE", *esp_keys])
    print(f"\n{mode}: identities readable without keys: {sorted(clear_ids) or 'none'}; "
          f"with the key table: {sorted(decrypted_ids) or 'none'}; ESP packets: {len(esp)}")
    assert len(esp) >= 12, f"expected the 12 pings as ESP on the internet link, saw {len(esp)}"
    assert not plain_icmp
    assert len(inner_icmp) >= 12, f"tshark decrypted {len(inner_icmp)} ESP packets with our esp_sa table"
    if mode == "aggressive":
        assert {a.gw_a, a.gw_b} <= clear_ids
    else:
        assert not clear_ids
        assert {a.gw_a, a.gw_b} <= decrypted_ids


@pytest.mark.parametrize(("ike", "esp"), [("aes256-sha384-ecp256", "aes128gcm16-ecp256"),
                                          ("aes128-sha1-modp3072", "aes256-sha512")],
                         ids=["sha384-ecp256-gcm-pfs", "sha1-modp3072-cbc-sha512"])
@pytest.mark.parametrize("initiator", ["a", "b"], ids=["ours-initiates", "strongswan-initiates"])
def test_other_algorithms(lab: Lab, ike: str, esp: str, initiator: str) -> None:
    pair = start_pair(lab, Scenario(version=1, ike_proposal=ike, esp_proposal=esp,
                                    initiator=initiator))  # type: ignore[arg-type]
    pair.ping_both_ways()


@pytest.mark.parametrize("rekey_side", ["a", "b"], ids=["ours-renews", "strongswan-reauthenticates"])
def test_isakmp_sa_renewal_while_pinging(lab: Lab, rekey_side: str) -> None:
    """IKEv1 has no ISAKMP rekey exchange: a new Main Mode replaces the SA (strongSwan calls it reauth)."""
    s = Scenario(version=1, ike_rekey=4, rekey_side=rekey_side)  # type: ignore[arg-type]
    pair = start_pair(lab, s)
    first = pair.ours.status()["ike"]["v1"]["isakmp_sas"][0]["initiator_cookie"]
    ping = lab.start_ping("ha", lab.topo.addr.host_b, interval=0.05)
    time.sleep(8)
    result = ping.stop()
    lost = ping.lost_sequences()
    cookies = [sa["initiator_cookie"] for sa in pair.ours.status()["ike"]["v1"]["isakmp_sas"]]
    print(f"\nIKEv1 ISAKMP SA renewed by {'ours' if rekey_side == 'a' else 'strongSwan'}: {result.sent} pings, "
          f"{result.lost} lost (icmp_seq {lost}); our ISAKMP SAs {first} -> {cookies}")
    assert cookies and first not in cookies, f"the first ISAKMP SA is still there\n{pair.charon.list_sas()}"
    assert pair.charon.ike_up("s2s"), lab.logs()
    assert result.lost <= 2, f"{result.lost} pings lost (icmp_seq {lost})\n{lab.logs()}"
    pair.ping_both_ways()


@pytest.mark.parametrize("killed", ["strongswan", "ours"])
def test_dpd_notices_a_killed_peer(lab: Lab, killed: str) -> None:
    """RFC 3706 R-U-THERE against strongSwan, each side noticing the other gone."""
    pair = start_pair(lab, Scenario(version=1, dpd_delay=1, dpd_timeout=4))
    pair.ping_both_ways(count=1)
    t0 = time.monotonic()
    victim = pair.charon if killed == "strongswan" else pair.ours
    victim.kill()
    if killed == "strongswan":
        errors = wait_for("our gateway to declare the peer dead", lambda: [
            b["last_error"] for b in pair.ours.status()["bindings"] if b["last_error"]], 15, lab.logs)
        print(f"\nIKEv1 DPD: we noticed the killed strongSwan after {time.monotonic() - t0:.1f}s: {errors}")
        assert all(b["state"] != "installed" for b in pair.ours.status()["bindings"])
    else:
        wait_for("strongSwan to declare us dead", lambda: "DPD check timed out" in pair.charon.log_text()
                 or not pair.charon.ike_up("s2s"), 15, lab.logs)
        print(f"\nIKEv1 DPD: strongSwan noticed our killed gateway after {time.monotonic() - t0:.1f}s")
        assert not pair.charon.child_spis(CHILD)
