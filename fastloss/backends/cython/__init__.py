"""The Cython backend: fused, OpenMP-parallel, ahead-of-time compiled kernels.

One pass per call over the prediction (and target), writing the already-scaled gradient
once; value-only calls write nothing. The GIL is released for the whole kernel; work is split
into fixed-size blocks whose sums are added in block order, so results are bitwise the same
for every ``n_threads``; inputs below 32768 elements run on the calling thread.

Numerics: the math runs in the input dtype (float32 logits -> float32 exp), every sum in
float64; probabilities-input cross-entropy is computed in float64 for both dtypes.
``exp``/``log``/``log1p`` are branch-free polynomial versions (``_fastmath.h``) that GCC
vectorises without ``-ffast-math``. Maximum error against correctly rounded results, over
random bit patterns of the whole range plus dense samples of the overflow and subnormal
regions, ±0, ±inf and NaN (special values exact), 4·10⁶ samples each, all three ISA builds:

===========================  =========  =========
function                     float32    float64
===========================  =========  =========
exp (and exp of x ≤ 0)       1.01 ulp   0.98 ulp
log                          0.79 ulp   0.76 ulp
log1p                        0.83 ulp   0.80 ulp
log q, q in [0, 1] [†]_      0.81 ulp   0.82 ulp
log(1-q), q in [0, 1] [†]_   0.88 ulp   0.88 ulp
log1p(e), e in [0, 1] [*]_   1.91 ulp   0.84 ulp
1/(1+e), e in [0, 1] [*]_    1.49 ulp   1.50 ulp
===========================  =========  =========

.. [†] the logarithms of binary cross-entropy from clipped probabilities (no division;
   q in [0, 1] sampled by bit pattern, plus dense samples near 0, 1/2 and 1).
.. [*] the softplus/sigmoid pieces of binary cross-entropy from logits (fewer divisions).

``tests/backends/test_cython_kernels.py`` asserts < 1.5 ulp (< 2.5 for the two last rows).

Instruction sets: the kernels are compiled three times (baseline x86-64, AVX2+FMA,
AVX-512); this module imports the widest one the CPU supports. ``FASTLOSS_CYTHON_ISA``
(``baseline``, ``avx2`` or ``avx512``) forces a narrower one, e.g. to test the baseline build.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from .._jobs import CrossEntropyJob, ElementwiseJob
from . import _kernels as _baseline

name = "cython"

#: The instruction-set variants, narrowest first, by the level ``cpu_level()`` reports.
ISA_MODULES = ("_kernels", "_kernels_avx2", "_kernels_avx512")
ISA_NAMES = ("baseline", "avx2", "avx512")


def _load_kernels():
    level = _baseline.cpu_level()
    forced = os.environ.get("FASTLOSS_CYTHON_ISA")
    if forced:
        if forced not in ISA_NAMES:
            raise ValueError(
                f"FASTLOSS_CYTHON_ISA must be one of {', '.join(ISA_NAMES)}, got {forced!r}"
            )
        level = min(level, ISA_NAMES.index(forced))
    for candidate in range(level, 0, -1):
        try:
            return ISA_NAMES[candidate], importlib.import_module(
                f"{__name__}.{ISA_MODULES[candidate]}"
            )
        except ImportError:  # variant not built (e.g. a compiler without AVX-512)
            continue
    return ISA_NAMES[0], _baseline


#: The instruction set of the kernels in use ("baseline", "avx2" or "avx512").
isa, kernels = _load_kernels()

# The compiled entry points themselves (no Python frame in between: the per-call overhead
# of a small job is part of the speed targets).
elementwise: Callable[[ElementwiseJob], float] = kernels.elementwise
cross_entropy: Callable[[CrossEntropyJob], float] = kernels.cross_entropy
# A canonical call without weights in one compiled function (see fastloss.backends._jobs).
elementwise_shortcut: Callable[..., tuple | None] = kernels.elementwise_shortcut
cross_entropy_shortcut: Callable[..., tuple | None] = kernels.cross_entropy_shortcut


__all__ = [
    "cross_entropy",
    "cross_entropy_shortcut",
    "elementwise",
    "elementwise_shortcut",
    "isa",
    "kernels",
    "name",
]
