"""Exact summation of float64 values (Shewchuk's algorithm, as in :func:`math.fsum`).

The accumulator adds one float64 batch total per ``update``. Keeping the running sum as a
short list of non-overlapping partials makes the sum *exact*: the result is the correctly
rounded value of the true sum, so it does not depend on the order in which batch totals
(or whole accumulators, in a distributed tree reduction) are combined. That is what makes
``result()`` identical across runs and across any merge order. Compensated (Kahan/Neumaier)
summation would be almost as accurate but still order-dependent in its last bit.

Non-finite totals are tracked on the side, as IEEE addition would treat them
(``inf + -inf = nan``), because the partials algorithm cannot hold them.
"""

from __future__ import annotations

import math

__all__ = ["ExactSum"]


class ExactSum:
    """A float64 sum that is exact until it is read (``value``), and mergeable."""

    __slots__ = ("_partials", "_special")

    def __init__(self) -> None:
        self._partials: list[float] = []
        self._special = 0.0  # the sum of the non-finite terms seen (0.0 while there are none)

    def add(self, x: float) -> None:
        x = float(x)
        if not math.isfinite(x):
            self._special += x
            return
        # Shewchuk's grow-expansion: after the loop the partials are non-overlapping and
        # their exact sum equals the exact sum of all inputs (no rounding is ever lost).
        partials = self._partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
            if not math.isfinite(x):  # the running sum overflowed: it is ±inf from now on
                del partials[:]
                self._special += x
                return
        partials[i:] = [x]

    def merge(self, other: ExactSum) -> None:
        for x in list(other._partials):  # a copy: other may be self
            self.add(x)
        self._special += other._special

    @property
    def value(self) -> float:
        """The correctly rounded sum (``math.fsum`` of the partials), or the IEEE result of
        the non-finite terms if there were any."""
        if self._special != 0.0 or math.isnan(self._special):
            return self._special
        return math.fsum(self._partials)

    def __getstate__(self) -> tuple[list[float], float]:
        return (list(self._partials), self._special)

    def __setstate__(self, state: tuple[list[float], float]) -> None:
        self._partials, self._special = list(state[0]), float(state[1])

    def __repr__(self) -> str:
        return f"ExactSum({self.value!r})"
