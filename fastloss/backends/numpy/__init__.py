"""The pure-NumPy reference backend: the correctness oracle and the benchmark baseline.

Vectorised float64 NumPy with no Python loop over elements. It ignores ``n_threads``
(NumPy's elementwise operations are single-threaded), so its results are trivially
identical for every thread count.
"""

from ._cross_entropy import cross_entropy
from ._elementwise import elementwise

name = "numpy"

# No shortcuts (see fastloss.backends._jobs): every call builds a job.
elementwise_shortcut = cross_entropy_shortcut = None

__all__ = ["cross_entropy", "cross_entropy_shortcut", "elementwise", "elementwise_shortcut", "name"]
