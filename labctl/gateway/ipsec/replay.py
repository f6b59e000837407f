"""Anti-replay window (RFC 4303 §3.4.3 and Appendix A), with ESN inference (Appendix A2).

The window is one Python int used as a bitmap: bit ``i`` set means sequence number ``top - i`` was received.
Use it in two steps, as §3.4.3 requires: :meth:`ReplayWindow.check` before the ICV is verified (cheap reject
of duplicates and stale packets), :meth:`ReplayWindow.update` only after the ICV verified.
"""

from __future__ import annotations

MAX_WINDOW = 4096
_LOW = 1 << 32


class ReplayWindow:
    __slots__ = ("size", "esn", "top", "bitmap", "_mask")

    def __init__(self, size: int = 64, esn: bool = False) -> None:
        if not 0 <= size <= MAX_WINDOW:
            raise ValueError(f"replay window must be 0..{MAX_WINDOW} packets, got {size}")
        self.size = size  # 0 disables the replay check (RFC 4303 §3.4.3 lets the receiver choose)
        self.esn = esn
        self.top = 0  # highest authenticated sequence number; 0 = nothing received yet
        self.bitmap = 0
        self._mask = (1 << size) - 1

    def infer(self, seq_low: int) -> int | None:
        """The full sequence number of a packet carrying ``seq_low``, or None if it cannot be valid.

        Without ESN it is ``seq_low`` itself. With ESN the high 32 bits are guessed from the window
        (RFC 4303 Appendix A2.2): a wrong guess only makes the ICV fail, which is counted.
        """
        if not self.esn:
            return seq_low or None  # 0 is never sent: the first packet carries 1 (RFC 4303 §3.3.3)
        top_low = self.top & 0xFFFFFFFF
        top_high = self.top >> 32
        width = self.size or 32
        if top_low >= width - 1:
            # Case A: the window lies within one 2^32 subspace.
            high = top_high if seq_low >= top_low - width + 1 else top_high + 1
        else:
            # Case B: the window spans two subspaces; a large seq_low belongs to the previous one.
            high = top_high - 1 if seq_low >= (top_low - width + 1) % _LOW else top_high
        if high < 0:
            return None
        seq = (high << 32) | seq_low
        return seq or None

    def check(self, seq: int) -> bool:
        """True when ``seq`` is new: above the window, or inside it and not yet seen (§3.4.3)."""
        if seq > self.top:
            return True
        if not self.size:
            return True
        diff = self.top - seq
        if diff >= self.size:
            return False
        return not (self.bitmap >> diff) & 1

    def update(self, seq: int) -> None:
        """Record an authenticated packet, sliding the window forward if it is the newest."""
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self.top = seq
        elif self.size:
            self.bitmap |= 1 << (self.top - seq)

    def fresh_run(self, first_low: int, count: int) -> int | None:
        """The full sequence number of the first of ``count`` packets carrying ``first_low``, ``first_low + 1``, ...
        when every one of them is above the window (the in-order case, where :meth:`check` would pass each);
        None when any needs the per-packet check, or the run crosses a 2^32 boundary (per-packet inference)."""
        if count < 1 or first_low + count - 1 > 0xFFFFFFFF:
            return None
        first = self.infer(first_low)
        if first is None or first <= self.top:
            return None
        return first

    def update_run(self, first: int, count: int) -> None:
        """Record ``count`` consecutive authenticated packets from ``first`` on, all above the window's top: the same
        window as :meth:`update` called for each in order (§3.4.3), in one step."""
        last = first + count - 1
        shift = last - self.top
        run = (1 << min(count, self.size)) - 1  # bits 0..count-1 stand for last, last-1, ...
        # The last branch: the window moved past everything it held; `or 1` keeps update()'s bitmap of a size-0 window.
        self.bitmap = ((self.bitmap << shift) | run) & self._mask if shift < self.size else (run & self._mask) or 1
        self.top = last
