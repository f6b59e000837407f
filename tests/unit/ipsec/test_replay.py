"""Anti-replay window, RFC 4303 §3.4.3 and Appendix A (including A2's ESN inference)."""

from __future__ import annotations

import pytest

from labctl.gateway.ipsec.replay import ReplayWindow


def receive(window: ReplayWindow, seq_low: int) -> bool:
    seq = window.infer(seq_low)
    if seq is None or not window.check(seq):
        return False
    window.update(seq)
    return True


def test_in_order_then_duplicate() -> None:
    w = ReplayWindow(64)
    assert all(receive(w, n) for n in range(1, 100))
    assert not receive(w, 99)
    assert not receive(w, 50)


def test_sequence_zero_is_never_valid() -> None:
    assert not receive(ReplayWindow(64), 0)


@pytest.mark.parametrize("size", [64, 1024])
def test_out_of_order_within_window_and_too_old(size: int) -> None:
    w = ReplayWindow(size)
    assert receive(w, size + 10)
    assert receive(w, 11)  # exactly at the window's left edge: top - size + 1
    assert not receive(w, 10)  # one older: outside the window
    assert receive(w, size + 5)
    assert not receive(w, size + 5)
    assert receive(w, size + 20)
    assert not receive(w, 11)  # slid out of the window


def test_large_jump_clears_the_window() -> None:
    w = ReplayWindow(64)
    for n in (1, 2, 3):
        receive(w, n)
    assert receive(w, 10_000)
    assert receive(w, 10_000 - 63)
    assert not receive(w, 10_000 - 64)


def test_window_sizes_are_bounded() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(5000)
    assert ReplayWindow(1024).size == 1024


def test_disabled_window_accepts_duplicates() -> None:
    w = ReplayWindow(0)
    assert receive(w, 5) and receive(w, 5)


def test_esn_crosses_the_32_bit_boundary() -> None:
    w = ReplayWindow(64, esn=True)
    w.update(0xFFFFFFF0)
    assert w.infer(0xFFFFFFFF) == 0xFFFFFFFF  # case A, same subspace
    assert w.infer(0x00000002) == (1 << 32) | 2  # case A, wraps into the next subspace
    assert receive(w, 0x00000002)
    assert w.top == (1 << 32) | 2
    # Case B (window spans two subspaces): a large low value belongs to the previous subspace.
    assert w.infer(0xFFFFFFF5) == 0xFFFFFFF5
    assert receive(w, 0xFFFFFFF5)
    assert not receive(w, 0xFFFFFFF5)
    assert w.infer(0x00000001) == (1 << 32) | 1


def test_esn_at_start_cannot_go_below_zero() -> None:
    w = ReplayWindow(64, esn=True)
    w.update(3)
    assert w.infer(0xFFFFFFFF) is None
