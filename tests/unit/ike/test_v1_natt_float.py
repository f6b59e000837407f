"""IKEv1 NAT-T port floating found in interop with strongSwan (tests/interop): the responder follows the port."""

from __future__ import annotations

from dataclasses import replace

from .test_v1_pair import A_ADDR, B_ADDR, Pair, assert_sa_pairs_match, configs


def test_responder_answers_mm5_on_the_port_it_came_from() -> None:
    # strongSwan with `encap = yes` as initiator fakes its NAT-D and floats to 4500 for MM5, while the
    # responder forces nothing. RFC 3947 §4: the responder must answer MM6 (and everything after) on 4500;
    # answering from 500 made strongSwan float back and send its ESP-in-UDP to port 500.
    a, b = configs(encap=True)
    p = Pair(a, replace(b, encap=False))
    p.a.initiate("gw", 0.0)
    p.exchange()
    ea, eb = assert_sa_pairs_match(p)
    mm5, mm6 = p.wire[4], p.wire[5]
    assert mm5[1] == (A_ADDR, 4500) and mm5[2] == (B_ADDR, 4500)
    assert mm6[1] == (B_ADDR, 4500) and mm6[2] == (A_ADDR, 4500)
    assert all(d[1][1] == 4500 and d[2][1] == 4500 for d in p.wire[4:])
    assert ea.encap == (4500, 4500) and eb.encap == (4500, 4500)
