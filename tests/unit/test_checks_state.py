"""SA-state, reachability and hygiene evaluators on synthetic gateway replies, probes and leftovers."""

from __future__ import annotations

import copy
from typing import Any

from labctl.checks.hygiene import check_hygiene
from labctl.checks.reachability import Probe, check_probes
from labctl.checks.result import CheckResult, combine, not_applicable
from labctl.checks.sa_state import SaExpectation, check_sa_state, same_suite


def _status(nat: bool = False, mode: str = "tunnel", keying: str = "IKEv2", state: str = "installed") -> dict[str, Any]:
    # Shaped like the gateway's `status` reply ("gateway" object), trimmed to what the check reads.
    return {
        "bindings": [{"name": "s2s", "keying": keying, "state": state, "mode": mode, "protection": "esp",
                      "last_error": "" if state == "installed" else "peer did not answer"}],
        "ike": {"v2": {"ike_sas": [{"conn": "s2s", "state": "established", "algorithms": "aes128gcm16/prfsha256/ecp256",
                                    "nat_local": False, "nat_remote": nat}]},
                "v1": {"isakmp_sas": [{"connection": "s2s", "state": "established", "mode": "aggressive",
                                       "algorithms": "aes128-sha256-modp2048", "nat": {"local": False,
                                                                                     "remote": nat}}]}},
    }


def _sas(encap: bool = False, mode: str = "tunnel") -> list[dict[str, Any]]:
    return [{"spi": f"0x{n}", "direction": d, "protocol": "esp", "mode": mode, "encr": "aes128gcm16", "integ": None,
             "encap": [4500, 4500] if encap else None} for n, d in ((1, "out"), (2, "in"))]


EXPECT = SaExpectation("s2s", "IKEv2", "tunnel", "esp", False, None, False, "aes128gcm16-prfsha256-ecp256",
                       {"esp": "aes128gcm16"})


def test_matching_state_passes() -> None:
    result = check_sa_state({"gw-a": _status(), "gw-b": _status()}, {"gw-a": _sas(), "gw-b": _sas()}, EXPECT)
    assert result.status == "pass", result.details


def test_each_difference_fails_with_its_reason() -> None:
    cases = [
        ({"gw-a": _status(state="down"), "gw-b": _status()}, None, "state is 'down' (peer did not answer)"),
        ({"gw-a": _status(mode="transport"), "gw-b": _status()}, None, "mode is 'transport'"),
        ({"gw-a": _status(keying="manual"), "gw-b": _status()}, None, "keying is 'manual'"),
        ({"gw-a": {}, "gw-b": _status()}, None, "did not answer its control socket"),
        ({"gw-a": _status(nat=True), "gw-b": _status()}, None, "reports a NAT, but there is none"),
        ({"gw-a": {**_status(), "internal_errors": 1}, "gw-b": _status()}, None, "gw-a: 1 internal errors"),
        ({"gw-a": _status(), "gw-b": {**_status(), "dataplane": {"drops": {"internal_error": 2}}}}, None,
         "gw-b: 2 internal errors"),
        ({"gw-a": {**_status(), "io_drops": {"internal_errors": 3, "send_errors": 9}}, "gw-b": _status()}, None,
         "gw-a: 3 internal errors"),
    ]
    for statuses, sas, needle in cases:
        result = check_sa_state(statuses, sas or {"gw-a": _sas(), "gw-b": _sas()}, EXPECT)
        assert result.status == "fail", needle
        assert any(needle in d for d in result.details), (needle, result.details)


def test_child_sas_are_checked_per_direction_mode_encap_and_algorithm() -> None:
    statuses = {"gw-a": _status()}
    assert any("expected one in, one out" in d for d in check_sa_state(statuses, {"gw-a": _sas()[:1]}, EXPECT).details)
    assert any("UDP-encapsulated" in d for d in check_sa_state(statuses, {"gw-a": _sas(encap=True)}, EXPECT).details)
    other = copy.deepcopy(_sas())
    other[0]["encr"] = "aes256gcm16"
    assert any("uses 'aes256gcm16'" in d for d in check_sa_state(statuses, {"gw-a": other}, EXPECT).details)


def test_nat_and_ikev1_mode() -> None:
    expect = SaExpectation("s2s", "IKEv1", "tunnel", "esp", True, "main", True, "aes128-sha256-modp2048")
    statuses = {"gw-a": _status(nat=True, keying="IKEv1")}
    result = check_sa_state(statuses, {"gw-a": _sas(encap=True)}, expect)
    assert any("negotiated in 'aggressive' mode; expected 'main'" in d for d in result.details)
    no_nat = check_sa_state({"gw-a": _status(keying="IKEv1")}, {"gw-a": _sas(encap=True)}, expect)
    assert any("no gateway reports a NAT" in d for d in no_nat.details)


def test_suite_names() -> None:
    assert same_suite("aes128/sha256/prfsha256/modp2048", "aes128-sha256-modp2048")  # implicit PRF
    assert same_suite("chacha20poly1305/prfsha256/curve25519", "chacha20poly1305-prfsha256-x25519")
    assert not same_suite("aes128/sha256/prfsha384/modp2048", "aes128-sha256-prfsha256-modp2048")
    assert not same_suite("aes256/sha256/prfsha256/modp2048", "aes128-sha256-modp2048")


def test_probes() -> None:
    ok = Probe("ping", "host-a", "10.2.0.10", True, "3/3 replies")
    lost = Probe("ping", "host-b", "10.1.0.10", False, "0/3 replies")
    assert check_probes([ok], expect_ok=True).status == "pass"
    assert check_probes([ok, lost], expect_ok=True).status == "fail"
    assert check_probes([lost], expect_ok=False).status == "pass"
    leaked = check_probes([ok, lost], expect_ok=False)
    assert leaked.status == "fail" and leaked.details[0].startswith("unexpectedly ping host-a")


def test_hygiene() -> None:
    assert check_hygiene([], "t7-x").status == "pass"
    result = check_hygiene(["namespace labctl-t7-x-gw-a"], "t7-x")
    assert result.status == "fail" and result.details == ("left behind: namespace labctl-t7-x-gw-a",)


def test_combined_checks_fail_when_any_part_fails_and_keep_the_labels() -> None:
    ok = CheckResult("wire", "pass", "only ESP", "3 esp", ("fine",))
    bad = CheckResult("wire", "fail", "only ESP", "1 cleartext", ("cleartext on the segment: frame 3",))
    merged = combine("wire", [("internet", ok), ("home", bad)])
    assert merged.status == "fail"
    assert merged.observed == "internet: 3 esp; home: 1 cleartext"
    assert merged.details == ("home: cleartext on the segment: frame 3", "internet: fine")
    assert combine("wire", [("a", ok), ("b", ok)]).status == "pass"
    assert combine("decryption", [("a", not_applicable("decryption", "AH"))]).status == "n/a"
