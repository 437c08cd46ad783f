"""(Sparse) categorical cross-entropy, logits and probabilities, as one fused parallel kernel.

Rows are split into fixed blocks of :func:`rows_per_block` rows (a function of ``C`` only),
processed in parallel; each block's ``Σ w·l`` is summed row by row in float64 and the block
sums are combined in block order, so the result is bitwise the same for every thread count.

Row path. Everything happens while the row is in L1/L2 (read from memory once), in the
input's float type (16 float32 lanes with 512-bit vectors); row scalars (``log s``, the
loss, the gradient factors) are float64 (the small-C path takes ``log s`` in the float
type, see :func:`_row_loss`).

logits
    1. ``m = max_j x_j`` (``maxnum``; see below for NaN);
    2. ``e_j = exp(x_j − m)``, ``s = Σ e_j`` and, unless the target is a plain one-hot,
       ``W = Σ c_j`` and ``Σ c_j·z_j`` (a term with ``c_j = 0`` counts as 0), with the ``e_j``
       kept in a per-thread scratch row;
    3. ``l = W·log s − Σ c_j z_j``; the gradient ``scale·w·(W·e_j/s − c_j)`` is formed in the
       scratch row and written out once (so an in-place call reads its row in 1–2 and writes
       it in 3: no aliasing), with non-temporal stores into a large separate output.
    For a one-hot target without smoothing the class loops carry no target work at all: the
    label's coefficient is applied to its single entry, and a streamed gradient goes out
    straight from the ``e_j`` (``stream_scale``: ``a·e_j``, the label's entry patched in
    its vector), one pass over the row fewer. Measured (float32, (2048, 32000), 2 threads,
    a shared machine whose load varied): 1–15 % less time in runs alternating the two
    versions in one process; benchmarks/targets.py 1.29 → 1.20× the ``np.copyto`` floor
    (34.9 → 27.5 ms). Streaming stays the better choice: ordinary stores into the output
    took 1.32× as long.

    NaN: ``maxnum`` skips a NaN entry, but that entry then gives ``z = NaN``, ``e = NaN`` and
    ``s = NaN``, so the row's loss and whole gradient are NaN, as the contract requires. A row
    whose maximum is ``+inf`` is rewritten (into the scratch row) as ``z_j = 0`` at the
    ``+inf`` entries and ``−inf`` (or NaN) elsewhere and run through the same code with
    ``m = 0``; it has no limit if it has several ``+inf`` (``s > 1``). A row whose maximum is
    ``−inf`` (all ``−inf`` or NaN) has no limit either. Both give NaN.

probabilities
    1. ``S = Σ x_j`` (row sums in float64);  2. ``q_j = x_j / S``,
    ``q̂_j = clip(q_j, lo, hi)``, ``l = −Σ c_j·log q̂_j``, ``g_j = −c_j/q̂_j`` (0 outside
    ``[lo, hi]``), ``Σ g_k q_k``;  3. gradient ``scale·w·(g_j − Σ g_k q_k)/S``, formed in
    scratch and written out once.

    One-hot targets (sparse labels without smoothing, ``lo > 0``) take a shortcut that
    gives the same bits. Call a row *regular* when ``S`` (in the float type) is finite and
    nonzero and every ``q_j`` is finite (tested as ``Σ|x_j| ≤ |S|·2^64``, see
    :func:`_regular`). Then every ``q̂_j`` lies in ``[lo, hi]`` with ``lo > 0``, so
    ``log q̂_j`` is finite, and a class with ``c_j = 0`` adds ``c_j·log q̂_j = ±0`` to the loss
    sum and ``g_j·q_j = ±0`` to ``Σ g·q``; adding ±0 to a sum that ends nonzero changes no
    bit, and a sum of ±0 only (started from +0) is +0 in any order. So the loss is
    ``w·−(0 + c_y·log q̂_y)`` and, when ``Σ g·q = g_y·q_y ≠ 0``, the gradient is the
    constant ``(0 − Σ g·q)·a`` (``a = scale·w/S``; ``±0 − d = −d`` for ``d ≠ 0``) with
    ``(g_y − Σ g·q)·a`` at the label: only ``S`` (and ``Σ|x_j|``) need the whole row. A
    row that is not regular, or whose ``Σ g·q`` is 0 (the label outside ``[lo, hi]``, a
    zero class weight: the zeros' signs would matter), takes the general loops, so NaN and
    ±inf behave exactly as there; the test for ``Σ g·q ≠ 0`` is made without a gradient
    too, so that every mode takes the same rows. C ≥ :data:`SMALL_C`: per row in
    :func:`_probabilities_row`; smaller C: block by block (:func:`_prob_block_losses`).
    Dense targets, small C, value only: a chunk whose rows have at most one nonzero
    target entry each and a finite nonzero ``S`` takes one log per row, bitwise the general
    loops' loss (see :func:`_dense_prob_block`).
    In float32 a row with ``|S|`` tiny next to its entries can have ``x_j/S`` overflow where
    the float64 reference's does not; the general loops then give a NaN gradient
    (``0·inf`` in ``Σ g·q``), and such a row is not regular, so the shortcut keeps that.

Small-C path (logits, ``C <`` :data:`SMALL_C`, any target and options; probabilities with
one-hot targets, see above, and with dense targets, see :func:`_dense_prob_block`): see the
comment above :func:`_lanes_block_losses` — a block's rows are transposed into scratch so
that each SIMD lane holds one row.
"""

from __future__ import annotations

import numpy as np
from numba import get_thread_id, njit, prange

from .._jobs import CrossEntropyJob
from ._intrinsics import (
    HELPER_OPTIONS,
    acc_add,
    cast_like,
    gather_labelled,
    helper,
    maxnum,
    prefer_wide_vectors,
    prefetch_lines,
    row_sum64_pick_at,
    row_sums64_pick,
    stream_copy,
    stream_scale,
    transpose_rows,
    transpose_rows_max,
    transpose_rows_nonzero,
    transpose_rows_sum64,
)
from ._math import exp_nonpositive, log
from ._runtime import CACHE, SOURCE_STAMP, _frozen, ones, read_only, run, scalars, threads_for

__all__ = ["KERNEL", "cross_entropy", "cross_entropy_unchecked", "kernel_signatures",
           "rows_per_block"]

#: Elements per block (rounded to whole rows): the unit of parallel work and of the
#: deterministic reduction.
BLOCK_ELEMS = 1 << 14
#: Elements per chunk of the small-C path (rounded to a multiple of 16 rows). Measured at
#: (6553600, 10), float32, two threads (with the per-thread gap, :data:`_GAP`): 1024
#: (96 rows) was ~5% faster value only (22.6 → 21.7 ms) and in place, but value_and_grad
#: into a separate output went 57 → 68 ms, and C = 50 value only 20 → 22 ms; the chunk is
#: part of the bits, the same in every path, so it stays 2048.
LANES_ELEMS = 2048
#: Below this many classes, logits take the small-C (rows in SIMD lanes) path. At least
#: 64: the row path's loops that both store and sum rely on rows of 256 bytes or more
#: (see :func:`_softmax_pass`).
SMALL_C = 64
#: Elements of a row's pass 2 between two prefetch slices of the next row.
PREFETCH_CHUNK = 512
#: A gradient written into a separate output of at least this many bytes is streamed out
#: with non-temporal stores (see :func:`._intrinsics.stream_copy`).
STREAM_BYTES = 1 << 23

# How the target coefficients c_j of a row are formed (a compile-time constant per loop):
ONE_HOT = 0  # sparse label, no smoothing: c_j = 0 except the label's, applied separately
SPARSE = 1  # sparse label with smoothing: c_j = label's coefficient at y, else κ_j·ε/C
SOFT = 2  # soft target row t: c_j = (t_j(1 − ε) + ε/C)·κ_j

# params tuple, in the input's float type: (1 − ε, ε/C, clip_lo, clip_hi)
_OM, _EPSC, _LO, _HI = range(4)


def rows_per_block(c: int) -> int:
    """Rows in one block for ``C = c`` classes (at least 1)."""
    return max(1, BLOCK_ELEMS // max(c, 1))


@njit(**HELPER_OPTIONS)
def lanes_rows(c):
    """Rows in one chunk of the small-C path for ``C = c`` classes: a multiple of 16 lanes,
    about :data:`LANES_ELEMS` elements (so that a chunk's scratch stays in L1)."""
    return max(16, LANES_ELEMS // max(c, 1) // 16 * 16)


@helper
def _u(i):
    """An index as uint64: Numba adds no negative-index wrap-around for unsigned indices,
    which for a computed index like ``j·R + r`` would turn a contiguous vector load into a
    gather (LLVM cannot prove ``j·R + r ≥ 0``)."""
    return np.uint64(i)


@helper
def _ignored(y, ignoring, ignore_index):
    """Whether label ``y`` is ignored: only when the call is ``ignoring`` at all (its
    "nothing ignored" is ``ignore_index = −1``, which must not make a label −1 ignored)."""
    return ignoring & (y == ignore_index)


@helper
def _kept(y, c, ignoring, ignore_index):
    """Whether label ``y`` is a row's class: not ignored and in ``[0, c)`` (as unsigned, a
    negative label is huge). The kernel reads a row's label entry only where this holds;
    a row whose label is neither kept nor ignored is reported (see :func:`_rows`)."""
    # (branch-free, for the small-C paths' vector loops; `not ignoring` is loop invariant)
    return (np.uint64(y) < np.uint64(c)) & ((y != ignore_index) | (not ignoring))


@helper
def _times(c, z):
    """``c·z``, except that a zero coefficient gives 0 even when ``z`` is infinite."""
    return cast_like(0.0, z) if c == 0 else c * z


@helper
def _class_coefficient(soft, is_label, cy, kappa_j, t_j, prm):
    """Target coefficient ``c_j`` of a class with weight ``kappa_j``: soft target entry ``t_j``
    (``soft``) or, for a sparse label, ``cy`` at the label (``is_label``) and ``κ_j·ε/C``
    elsewhere (0 without smoothing)."""
    if soft:
        return (t_j * prm[_OM] + prm[_EPSC]) * kappa_j
    return cy if is_label else prm[_EPSC] * kappa_j


@helper
def _coefficient(how, j, y, cy, kappa, trow, prm):
    """Target coefficient ``c_j`` of class ``j`` of a row (``how``: ONE_HOT, SPARSE or SOFT)."""
    if how == ONE_HOT:
        return cy if j == y else cast_like(0.0, cy)
    return _class_coefficient(how == SOFT, j == y, cy, kappa[_u(j)], trow[_u(j)], prm)


@helper
def _row_max(x):
    prefer_wide_vectors()
    m = cast_like(-np.inf, x[0])
    for j in range(x.size):
        m = maxnum(m, x[j])
    return m


@helper
def _row_sum64(x):
    """``Σ x_j`` accumulated in float64 (lane-wise partial sums: see ``acc_add``)."""
    prefer_wide_vectors()
    s = 0.0
    for j in range(x.size):
        s = acc_add(s, np.float64(x[j]))
    return s


@helper
def _row_sums64(x):
    """``(Σ x_j, Σ |x_j|)``, both accumulated in float64 as in :func:`_row_sum64`, in one
    read-only pass (which vectorises; with ``max |x_j|`` instead of ``Σ |x_j|`` it did not:
    8× slower, C = 1000)."""
    prefer_wide_vectors()
    s = 0.0
    t = 0.0
    for j in range(x.size):
        v = np.float64(x[j])
        s = acc_add(s, v)
        t = acc_add(t, abs(v))
    return s, t


@helper
def _regular(total, abs_sum64):
    """Whether a probabilities row with sum ``total`` (``S`` in the input's float type) and
    ``Σ |x_j|`` ``abs_sum64`` (float64) is regular: ``S`` finite and nonzero and every
    ``q_j = x_j/S`` finite. The last is tested as ``Σ|x_j| ≤ |S|·2^64``, compared in
    float64 (the product is exact, or ``+inf`` only where ``|S| ≥ 2^960``): a rounded sum of
    nonnegative terms is at least each term, so every ``|x_j|/|S| ≤ 2^64`` (or ``≤ 2^1024 /
    2^960``), and ``q_j`` rounds to a finite number in either float type. A sufficient test:
    a row it rejects (a ``q_j`` beyond ``2^64``) is merely left to the general loops. A
    multiplication, not the division ``fl(Σ|x_j|/|S|)`` it replaced: a row's one test,
    vectorised over a small-C block's rows, was one of its three divisions. NaN anywhere:
    not regular."""
    s = abs(total)
    return (total != 0) & (s < np.inf) & (abs_sum64 <= np.float64(s) * 18446744073709551616.0)


@helper
def _class_terms(xj, total, c, lo, hi, zero):
    """``(q_j, c_j·log q̂_j, g_j)`` of one class of a probabilities row: ``q_j = x_j/S``,
    ``q̂_j = clip(q_j, lo, hi)``, ``g_j = −c_j/q̂_j``, 0 where ``q_j`` lies outside
    ``[lo, hi]`` (NaN passes through both clips and the test)."""
    q = xj / total
    qc = lo if q < lo else q
    qc = hi if qc > hi else qc
    return q, c * log(qc), zero if (q < lo) | (q > hi) else -c / qc


@helper
def _one_hot_terms(xy, total64, total, cy, lo, hi, w, scale, zero):
    """The whole of a regular one-hot probabilities row (label entry ``xy``, coefficient
    ``cy``, sums ``S`` in float64 and in the float type): ``(w·l, Σ g·q`` in float64, the
    gradient off the label, the gradient at the label``)``, bitwise what the general row
    loops give (see the module docstring; only when ``Σ g·q ≠ 0`` for the gradient)."""
    q, term, gy = _class_terms(xy, total, cy, lo, hi, zero)
    dot64 = 0.0 + np.float64(gy * q)
    dot = cast_like(dot64, lo)
    a = cast_like(scale * w / total64, lo)
    return w * -(0.0 + np.float64(term)), dot64, (zero - dot) * a, (gy - dot) * a


@njit(inline="always", error_model="numpy")
def _softmax_pass(x, m, e, how, y, cy, kappa, trow, prm, nx, nt):
    """Pass 2 of a logits row: ``(s, W, Σ c_j z_j)`` with ``z_j = x_j − m``; stores ``e_j`` into
    the scratch row ``e`` (also for a value-only call: one L1 store per element is cheaper
    than compiling the loop twice). ``W`` and the sum are only formed for SPARSE and SOFT
    (ONE_HOT: 0, the caller adds the label's term).

    Slice by slice of :data:`PREFETCH_CHUNK` elements, the same slice of the next row ``nx``
    (and of its soft target ``nt``) is prefetched, so that its transfer from memory overlaps
    this arithmetic instead of stalling the next row's first pass.

    This loop stores and keeps ``reassoc`` sums, which :func:`._intrinsics.acc_add` warns
    about; here no run-time alias check can fail between distinct arrays, so the order is
    fixed (audited in the IR, Numba 0.68 / LLVM 22, float32 and float64): the checks ask
    for at most 256 bytes between the starts of ``e`` and of a row it reads (``x``, ``κ``,
    the soft target), and every such row is at least :data:`SMALL_C` = 64 elements (256
    bytes) long, so a distinct array cannot start closer. (A ``+inf`` row, of any length,
    is read from ``e`` itself: the check fails every time and the same scalar loop runs,
    a fixed order too.)"""
    zero = cast_like(0.0, m)
    s = zero
    w_sum = zero
    dot = zero
    n = x.size
    for j0 in range(0, n, PREFETCH_CHUNK):
        j1 = min(n, j0 + PREFETCH_CHUNK)
        prefetch_lines(nx, j0, j1)
        if how == SOFT:
            prefetch_lines(nt, j0, j1)
        for j in range(j0, j1):
            ju = _u(j)  # (no negative-index wrap-around: see _u)
            z = x[ju] - m
            ej = exp_nonpositive(z)
            s = acc_add(s, ej)
            e[ju] = ej
            if how != ONE_HOT:
                c = _coefficient(how, j, y, cy, kappa, trow, prm)
                w_sum = acc_add(w_sum, c)
                dot = acc_add(dot, _times(c, z))
    return s, w_sum, dot


@njit(**HELPER_OPTIONS | {"forceinline": False})
def _stream_out(g, buf):
    """Stream a finished gradient row (or run of rows) from scratch into a large separate
    output (see :func:`._intrinsics.stream_copy`). Not inlined: one compiled copy serves
    all the row routines and the small-C path."""
    stream_copy(g, buf)


@njit(inline="always", error_model="numpy")
def _softmax_grad_pass(g, e, e2, a, b, how, y, cy, kappa, trow, prm, stream):
    """Pass 3 of a logits row: ``g_j = a·e_j − b·c_j`` (``a = scale·w·W/s``, ``b = scale·w``),
    written once: straight into ``g``, or (``stream``) into the scratch row ``e2`` and then
    streamed out. A one-hot row is streamed straight from ``e`` (:func:`stream_scale`: one
    pass over the row less), its label's entry formed as in the loop below: ``a·e_y``
    rounded, then ``− b·c_y`` (LLVM contracts nothing into an FMA without fast-math flags:
    the same bits, checked by the tests against the in-place gradient)."""
    if how == ONE_HOT and stream:
        stream_scale(g, e, a, y, a * e[y] - b * cy)
        return
    dst = e2 if stream else g
    if how == ONE_HOT:
        for j in range(e.size):
            dst[j] = a * e[j]
        dst[y] = dst[y] - b * cy
    else:
        for j in range(e.size):
            dst[j] = a * e[j] - b * _coefficient(how, j, y, cy, kappa, trow, prm)
    if stream:
        _stream_out(g, dst)


@helper
def _fill(row, value):
    for j in range(row.size):
        row[j] = value


@njit(inline="always", error_model="numpy")
def _logits_row(x, g, e, e2, how, y, kappa, trow, prm, w, scale, want_grad, stream, nx, nt):
    """``w·l`` of one logits row; writes ``scale·w·∂l/∂x`` into ``g`` if ``want_grad``. ``e`` is
    a scratch row; ``x`` and ``g`` may be the same row (``g`` is written last, from ``e``).
    ``nx``, ``nt``: the next row and its soft target, prefetched in pass 2."""
    one = cast_like(1.0, prm[_OM])
    cy = cast_like(0.0, one)  # the label's coefficient (sparse targets)
    if how != SOFT:
        cy = (prm[_OM] + prm[_EPSC]) * kappa[y]
    m = _row_max(x)
    defined = m != -np.inf  # all entries −inf (or NaN): no limit
    inf_row = m == np.inf
    if inf_row:
        # z_j = 0 at the +inf entries, −inf (NaN) elsewhere: rewrite the row so into the
        # scratch row and continue with m = 0. Several +inf (s > 1) have no limit.
        for j in range(x.size):
            xj = x[j]
            e[j] = cast_like(0.0, xj) if xj == m else xj - m
        x = e
        m = cast_like(0.0, m)
    s = one
    w_sum = cy
    dot = cast_like(0.0, one)
    if defined:
        if how == ONE_HOT:
            dot = _times(cy, x[y] - m)  # before pass 2 may overwrite x (= e for an inf row)
        s, pass_w_sum, pass_dot = _softmax_pass(x, m, e, how, y, cy, kappa, trow, prm, nx, nt)
        if how != ONE_HOT:
            w_sum = pass_w_sum
            dot = pass_dot
        if inf_row and s > one:
            defined = False
    if not defined:
        if want_grad:
            _fill(g, cast_like(np.nan, one))
        return np.nan
    s64 = np.float64(s)
    loss = np.float64(w_sum) * log(s64) - np.float64(dot)
    if want_grad:
        a = cast_like(scale * w * np.float64(w_sum) / s64, one)
        b = cast_like(scale * w, one)
        _softmax_grad_pass(g, e, e2, a, b, how, y, cy, kappa, trow, prm, stream)
    return w * loss


@njit(inline="always", error_model="numpy")
def _probabilities_row(x, g, e, e2, how, y, kappa, trow, prm, w, scale, want_grad, stream, nx,
                       nt):
    """``w·l`` of one probabilities row; writes ``scale·w·∂l/∂x`` into ``g`` if ``want_grad``.
    ``e`` and ``e2`` are scratch rows; ``x`` and ``g`` may be the same row (``g`` is written
    last). ``nx``, ``nt``: the next row and its soft target, prefetched slice by slice during
    the element loop (as in :func:`_softmax_pass`), so that the next row's first pass, the
    sum ``S``, does not wait for memory.

    No loop both stores and keeps a running sum: LLVM guards a vectorised loop that stores
    with a run-time check that the stored row lies far enough from the rows it reads, and
    falls back to a scalar copy of the loop where it does not (e.g. a scratch row allocated
    just after the last row of ``x``); with a reassociated sum in that loop the two copies
    would add in different orders, and the same row could give results 1 ulp apart from one
    call to the next. So the terms are stored first (``e``: ``c_j·log q̂_j``; ``e2``: ``g_j``)
    and summed by loops that only read.

    The three row sums (``S``, ``Σ c_j log q̂_j``, ``Σ g_k q_k``) accumulate in float64; the
    per-element work runs in the input's float type, with ``S`` and ``Σ g_k q_k`` rounded to
    it once per row."""
    lo = prm[_LO]
    hi = prm[_HI]
    zero = cast_like(0.0, lo)
    cy = zero
    if how != SOFT:
        cy = (prm[_OM] + prm[_EPSC]) * kappa[y]
    total64, abs_sum64 = _row_sums64(x)
    total = cast_like(total64, lo)
    if how != SOFT and prm[_EPSC] == zero and lo > zero and _regular(total, abs_sum64):
        # one-hot, regular row: only the label's term (see the module docstring)
        wl, dot64, g_off, g_y = _one_hot_terms(x[y], total64, total, cy, lo, hi, w, scale, zero)
        if dot64 != 0.0:  # (not needed for the value alone, but then every mode agrees)
            if want_grad:
                dst = e2 if stream else g
                _fill(dst, g_off)
                dst[y] = g_y
                if stream:
                    _stream_out(g, dst)
            return wl
    n = x.size
    for j0 in range(0, n, PREFETCH_CHUNK):
        j1 = min(n, j0 + PREFETCH_CHUNK)
        prefetch_lines(nx, j0, j1)
        if how == SOFT:
            prefetch_lines(nt, j0, j1)
        for j in range(j0, j1):
            ju = _u(j)  # (no negative-index wrap-around: see _u)
            c = _coefficient(how, j, y, cy, kappa, trow, prm)
            _, e[ju], e2[ju] = _class_terms(x[ju], total, c, lo, hi, zero)
    log_sum = _row_sum64(e)
    if want_grad:
        dot64 = 0.0
        for j in range(x.size):
            dot64 = acc_add(dot64, np.float64(e2[j] * (x[j] / total)))
        dot = cast_like(dot64, lo)
        a = cast_like(scale * w / total64, lo)
        dst = e2 if stream else g
        for j in range(x.size):
            dst[j] = (e2[j] - dot) * a
        if stream:
            _stream_out(g, dst)
    return w * -log_sum


# The small-C ("lanes") path. With few classes, the row path's C-long loops are mostly loop
# overhead and scalar remainders, so for logits with C < SMALL_C (any target: sparse labels,
# soft targets, smoothing, class and sample weights) a block of R rows is transposed into
# scratch, class-major (`xt[j·R + r]`, and a soft target likewise into `tt`), which puts one
# row in each SIMD lane: the row maxima and sums become elementwise max/add of contiguous
# class vectors, and the exponentials, target coefficients, row losses (with `log`) and
# gradient factors run over contiguous lanes; the gradient is formed class-major and written
# back row-major. Per element it costs one transpose in and one out besides the vector work:
# in, by vector gathers, 16 rows at a time, with the row maxima folded in while the gathered
# vectors are in registers and the next chunk prefetched group by group
# (`_intrinsics.transpose_rows_max`; 0.14 against 0.25 ns per element for the scalar loop it
# replaced, C = 10, in L2); out, by a scalar loop (row loop outside: measured faster than
# class loop outside). Rows that are ignored or whose maximum is infinite are flagged and
# left to the row path.
#
# Phase 1 (the value) does only what the value needs: the gradient factors `a = scale·w·W/s`,
# `b = scale·w` (a float64 division per row) are formed in phase 2, and the block's sum
# `Σ w·l` is a reassociated (lane-wise, order fixed by R) sum over the rows, not a serial
# float64 chain (4 cycles of latency per row).
#
# Measured, value only, sparse labels (6553600, 10) float32, one thread, ns per element of
# thread CPU time, data in L2 / streamed from memory: 1.17 / 1.35 before these three
# changes, 0.89 / 1.05–1.10 after (soft targets 1.47 / 1.96 → 1.05–1.19 / 1.45–1.56).
#
# One compiled body serves every target kind: the coefficient `c_j` of `_class_coefficient`
# is formed for the soft and the sparse case branch-free (`soft` is loop invariant: a
# select), so the lanes path adds two functions to compile, not six. Without smoothing the
# sparse coefficients are 0 off the label, which gives exactly the row path's one-hot
# sums (`W = c_y`, `Σ c_j z_j = c_y·z_y`; adding zeros is exact).
#
# Phase 1 without a gradient (value only) does less still, with the same bits as with one
# (the sums are formed by the same operations in the same order either way): the
# exponentials are summed, not stored (`want_grad` is loop invariant: LLVM unswitches the
# loop into a storing and a non-storing copy); `W` and `Σ c_j z_j` (soft targets, smoothing)
# are summed in a class loop of their own before the exponentials' (one loop over seven
# arrays was slower); a one-hot row's label entry `x_y` and weight `κ_y` are gathered
# (`_intrinsics.gather_labelled`: the same loop in Numba stayed scalar, LLVM's cost model
# declines the gathers) and its loss formed in one vector loop; and `log s` is taken in the
# float type (`_row_loss`). Measured (float32, (6553600, 10), one thread, thread CPU time
# per element, medians of 7, two runs each alternating with the previous version on a
# loaded shared machine): value only, sparse labels 0.98–1.02 → 0.91–0.92 ns, soft targets
# 1.33–1.38 → 1.30–1.36 ns; value_and_grad (not slower: phase 2 is unchanged, phase 1 lost
# its reference counting and the scalar label loop) 1.75–1.84 → 1.68 and 2.18–2.20 →
# 2.09–2.16 ns. benchmarks/targets.py (2 threads) was dominated by the other load (the
# same build from 1.6× to 3× np.sum); in the two runs with the second core free, one of
# each version, value CE 1.87 → 1.64× np.sum, CCE 1.49 → 1.32×.
#
# Verified in the generated code (disassembly of the loaded kernel with `perf` samples on it,
# Numba 0.68, LLVM 22, AVX-512 host, float32): the transpose in is one `vgatherdps zmm` per
# class and 16 rows (32-bit offsets; with 64-bit ones LLVM splits it into two `vgatherqps`),
# a masked `vmovups` store, and `vmaxps` with the `vcmpunordps` NaN fix-up of maxnum; both
# exp-and-sums loops (one-hot / with coefficients) are `zmm` FMA loops, the row-loss loop
# runs the float64 `log` on `zmm` (`vfmadd…pd`), the block sum is `vaddpd zmm`, the gradient
# loop is `zmm`; the only calls are Numba's reference counting at function entry and exit
# (~1% of the time). The transpose out is unrolled scalar `vmovss` moves. On a CPU without
# AVX2, LLVM expands the gathers into scalar loads (the tests pass with
# NUMBA_CPU_NAME=x86-64). Re-checked after the value-only changes above (`inspect_asm` of
# `_lanes_block_losses`, float32, same versions): the exponentials' loop is there twice,
# both `zmm` FMA bodies, one storing `e_j` and the row sums, one storing the row sums only;
# the label gathers are two `vgatherqps` (64-bit indices) per 16 rows; the row-loss loops
# run the float32 `log` polynomial on `ymm` (8 rows a step, as wide as the float64 loss
# arithmetic next to it on `zmm`), with no division; no call is left in the function
# (:data:`NO_REFCOUNT`).
#
# Then, from `perf` samples on the disassembled kernel (value only, sparse labels, float32,
# (6553600, 10), one thread): a quarter of the time sat on the `prefetcht0` of the next
# chunk (issued in the transposes, ~30 % of a chunk's time: the line fill buffers ran
# full) and on the first gathers; the exponentials' loop loaded and stored the row sums
# once per class; the float32 `log` ran 8 lanes wide. Three changes, each giving the same
# bits as before (every row sum adds the classes in the same order):
#   * the next chunk (rows, soft targets, labels) is prefetched class by class in the class
#     loops (:func:`_prefetch_share`: the targets in the coefficients' loop, the rows and
#     labels in the exponentials'), not in the transposes; prefetching two or four chunks
#     ahead instead of one was slower (dense 65–67 → 81–83 ms);
#   * the exponentials' and the coefficients' loops take two classes per pass,
#     `s ← (s + e_j) + e_{j+1}` (the same additions in the same order: the same bits), so
#     the row sums are loaded and stored once per two classes (:func:`_lane_exp_sums`;
#     four classes per pass: no better for sparse labels at C = 10);
#   * `log s` (and the one-hot `c_y·z_y`) in a loop of the float type of its own before the
#     float64 row losses (:func:`_row_loss`): the `log` polynomial now runs on `zmm`.
# Checked in the disassembly (Numba 0.68, LLVM 22, AVX-512, float32): both two-class loops
# are `zmm` bodies (the value-only one without stores to `xt`: `want_grad` is a literal at
# each call of :func:`_lane_exp_sums`; with it a variable, the loop stayed scalar, 3.5×
# slower), the `log` loops `vcvtdq2ps zmm` / `vfmadd…ps zmm`. Measured, process CPU time
# per call, one thread, medians of 9, main and this version alternated in one session on a
# loaded shared machine: value only, sparse labels 52.6–54.5 → 44.0–46.5 ms, dense one-hot
# targets 80.0–86.6 → 65.6–66.8 ms; value_and_grad unchanged or faster (C = 10, 50).

# The two phases are compiled as functions of their own (not inlined into the kernel): LLVM
# generates markedly better code for their short loops on their own than inside the
# kernel's large loop body (measured: 2.1 → 1.5 ns per element for phase 1, one thread).
OUT_OF_LINE = {**HELPER_OPTIONS, "forceinline": False}
#: :data:`OUT_OF_LINE` without Numba's reference counting (``_nrt=False``): such a function
#: cannot allocate (Numba refuses to compile one that does), and its array arguments and
#: views are borrowed, so no ``NRT_incref``/``NRT_decref`` calls (atomic operations) are
#: made at its entry and exit: 18 such calls in the logits phase 1 before, once per chunk,
#: ~0.03 ns per element of a value-only call at C = 10 (thread CPU time, one thread).
NO_REFCOUNT = {**OUT_OF_LINE, "_nrt": False}

# rows of a thread's (_NROWS, R) row scratch: max, Σe, W, Σc·z, a, b, label, regular
_RM, _RS, _RW, _RD, _RA, _RB, _RY, _REGULAR = range(8)
_NROWS = 8
#: Unused elements after each thread's share of ``scratch`` (``rows`` and ``rows64`` get an
#: unused row per thread): no cache line holds data of two threads. Without them (Numba's
#: ``np.empty`` does not align to a cache line, and a share's size need not be a multiple
#: of one) the end of thread t's share and the start of thread t+1's, both written in every
#: chunk, shared a line that then moved between the cores: measured, value only, sparse
#: labels, float32, (6553600, 10), two threads, medians of 25 calls in alternating
#: processes: 24–28 → 22–24 ms, the per-call CPU time ~10% lower; one thread unchanged.
#: (The gap in ``rows`` mattered most; those in ``scratch`` or ``rows64`` alone did less.)
_GAP = 32


@helper
def _lane_coefficient(soft, jf, ry, kj, t, prm):
    """:func:`_class_coefficient` of class ``j`` (``jf``: ``j`` as a float) for a row with
    label ``ry`` (a float; −1 for a soft target): the label's coefficient is
    ``(1 − ε + ε/C)·κ_j`` at ``j = y``, so no per-row look-up of ``κ_y`` is needed."""
    return _class_coefficient(soft, jf == ry, (prm[_OM] + prm[_EPSC]) * kj, kj, t, prm)


@helper
def _row_loss(w, big_w, log_s, dot):
    """``w·(W·log s − Σ c_j z_j)`` of a small-C row, in float64 from the row's ``W``, ``log s``
    and ``Σ c_j z_j`` in the float type. ``log s`` is taken in the float type (then widened),
    which for float32 is the 16-lane polynomial without a division, not the float64 one
    (a float64 ``log`` of the row sums, 8 lanes with a ``vdivpd``: ~0.05 ns per element
    more at C = 10), and in a loop of its own before this one: in one loop with this
    float64 arithmetic LLVM ran the float32 ``log`` 8 lanes wide (``ymm``)."""
    return w * (np.float64(big_w) * np.float64(log_s) - np.float64(dot))


@helper
def _lane_exp(xt, k, m, store):
    """``e_j = exp(x_j − m)`` of the transposed entry ``xt[k]`` of a row with maximum ``m``,
    stored back into ``xt[k]`` if ``store`` (a constant at each call)."""
    ej = exp_nonpositive(xt[k] - m)
    if store:
        xt[k] = ej
    return ej


@helper
def _lane_exp_sums(xt, rm, rs, xn, ln, soft, n_rows, c, store):
    """The row sums ``s = Σ e_j`` of a small-C block (``xt``: its rows transposed, ``rm``:
    their maxima; ``rs`` zero before), with the ``e_j`` stored back into ``xt`` if ``store``
    (a constant at each call), two classes per pass; prefetches the next rows ``xn`` and
    (sparse) their labels ``ln`` spread over the passes (see :func:`_prefetch_share`)."""
    prefer_wide_vectors()  # (a helper's loops are vectorised before it is inlined)
    j = 0
    while j + 1 < c:
        _prefetch_share(xn, j, 2, c)
        if not soft:
            _prefetch_share(ln, j, 2, c)
        for r in range(n_rows):
            m = rm[r]
            k0 = _u(j * n_rows + r)
            k1 = _u((j + 1) * n_rows + r)
            e0 = _lane_exp(xt, k0, m, store)
            rs[r] = (rs[r] + e0) + _lane_exp(xt, k1, m, store)
        j += 2
    if j < c:
        _prefetch_share(xn, j, 1, c)
        if not soft:
            _prefetch_share(ln, j, 1, c)
        for r in range(n_rows):
            k0 = _u(j * n_rows + r)
            rs[r] = rs[r] + _lane_exp(xt, k0, rm[r], store)


@helper
def _lane_terms(soft, jf, ry, kj, t, xj, m, prm):
    """``(c_j, c_j·z_j)`` of class ``j`` of a small-C row (see :func:`_lane_coefficient`;
    ``z_j = x_j − m``, a zero ``c_j`` gives 0 even for an infinite ``z_j``)."""
    cj = _lane_coefficient(soft, jf, ry, kj, t, prm)
    return cj, _times(cj, xj - m)


@helper
def _prefetch_share(nxt, j, k, c):
    """Prefetch classes ``j`` to ``j + k − 1``'s share of the next rows ``nxt`` (any flat
    array: logits, soft targets, labels), ``k/c`` of it, so that a class loop over ``c``
    classes prefetches all of it, spread over its passes (see the comment above
    :func:`_lanes_block_losses`)."""
    per = (nxt.size + c - 1) // c
    prefetch_lines(nxt, j * per, (j + k) * per)


@njit(**NO_REFCOUNT)
def _lanes_block_losses(xs, ts, xn, tn, n_rows, c, soft, lab, ln, wts, has_w, kappa, prm,
                        ignoring, ignore_index, xt, tt, rt, r64, lout, has_loss, want_grad):
    """Phase 1 of a small-C block (``xs``, ``ts``: its ``n_rows`` rows of logits and soft
    target, flattened; ``xn``, ``tn``: the next rows, prefetched; ``lab`` its labels unless
    ``soft``, ``ln`` the next rows' labels, prefetched). Returns ``(Σ w·l over the regular
    rows, in an order fixed by n_rows (lane-wise partial sums), number of rows left to the row
    path)``; writes ``w·l`` of the regular rows to ``lout`` (if ``has_loss``), with
    ``want_grad`` the exponentials (class-major) to ``xt``, the row sums ``s``, ``W`` to
    ``rt`` and the weights ``w`` to ``r64[1]`` (for phase 2; ``rt[_RA]`` and ``rt[_RB]``
    serve as scratch here, phase 2 fills them), and flags the rows handled here
    (``rt[_REGULAR]`` 1) or left to the row path (0). ``tt`` receives the transposed target
    (``soft``; otherwise it is any scratch of the same size, read but unused). ``r64`` is
    ``(2, R)`` float64 scratch. Reads the rows only: it runs before any gradient is written,
    so an in-place call is safe. Every per-row loop is branch-free (it vectorises)."""
    prefer_wide_vectors()
    one = cast_like(1.0, prm[_OM])
    zero = cast_like(0.0, one)
    rm = rt[_RM]
    rs = rt[_RS]
    rw = rt[_RW]
    rd = rt[_RD]
    ry = rt[_RY]
    regular = rt[_REGULAR]
    wl = r64[0]
    wr = r64[1]
    # (the next rows are prefetched in the class loops below, not by the transposes: see
    # _prefetch_share)
    transpose_rows_max(xs, xt, rm, xn[:0], n_rows, c)
    if soft:
        transpose_rows(ts, tt, tn[:0], n_rows, c)
    for r in range(n_rows):
        m = rm[r]
        ok = (m != np.inf) & (m != -np.inf)
        regular[r] = one if ok else zero
        rm[r] = m if ok else zero
        rs[r] = zero
        rw[r] = zero
        rd[r] = zero
    if soft:
        for r in range(n_rows):
            ry[r] = -one
    else:
        # two loops over two arrays each, which LLVM vectorises (`vpcmpneqq`, `vcvtqq2pd`
        # on zmm; as one loop it stayed scalar: 0.92 → 0.87 ns per element for the whole
        # value-only call, C = 10, in L2). The label of a row left to the row path (ignored,
        # or outside [0, C): the row path reports it) is converted too (any integer): its
        # `ry` is never used.
        for r in range(n_rows):
            regular[r] = regular[r] if _kept(lab[r], c, ignoring, ignore_index) else zero
        for r in range(n_rows):
            ry[r] = cast_like(np.float64(lab[r]), one)  # (in [0, C) for a regular row)
    _block_weights(wr, wts, has_w, n_rows)
    coefficients = soft or prm[_EPSC] != zero
    if coefficients:
        # W and Σ c_j z_j first, in a loop of their own (fewer arrays per loop), two classes
        # per pass (see the comment above); the next soft target rows are prefetched here
        j = 0
        while j + 1 < c:
            _prefetch_share(tn, j, 2, c)
            kj0 = kappa[j]
            kj1 = kappa[j + 1]
            jf0 = cast_like(np.float64(j), one)
            jf1 = cast_like(np.float64(j + 1), one)
            for r in range(n_rows):
                m = rm[r]
                y = ry[r]
                k0 = _u(j * n_rows + r)
                k1 = _u((j + 1) * n_rows + r)
                c0, d0 = _lane_terms(soft, jf0, y, kj0, tt[k0], xt[k0], m, prm)
                c1, d1 = _lane_terms(soft, jf1, y, kj1, tt[k1], xt[k1], m, prm)
                rw[r] = (rw[r] + c0) + c1
                rd[r] = (rd[r] + d0) + d1
            j += 2
        if j < c:
            _prefetch_share(tn, j, 1, c)
            kj0 = kappa[j]
            jf0 = cast_like(np.float64(j), one)
            for r in range(n_rows):
                k0 = _u(j * n_rows + r)
                c0, d0 = _lane_terms(soft, jf0, ry[r], kj0, tt[k0], xt[k0], rm[r], prm)
                rw[r] = rw[r] + c0
                rd[r] = rd[r] + d0
    # the exponentials and their row sums (`want_grad` a constant at each call of the
    # inlined loops: with it a variable in them, they stayed scalar)
    if want_grad:
        _lane_exp_sums(xt, rm, rs, xn, ln, soft, n_rows, c, True)
    else:
        _lane_exp_sums(xt, rm, rs, xn, ln, soft, n_rows, c, False)
    # the row losses: `log s` (and the one-hot `c_y·z_y`) in a loop of the float type only
    # (16 lanes), then the float64 arithmetic (see _row_loss)
    ls = rt[_RA]
    if not coefficients:
        # one-hot: W = c_y and Σ c_j z_j = c_y·z_y, as in the row path
        # the labels' entries and class weights gathered first (into rows of `rt` that
        # phase 2 fills later), so that the arithmetic loop reads contiguous rows only
        xy = rt[_RB]
        gather_labelled(xs, lab, c, c, xy[:n_rows])
        gather_labelled(kappa, lab, 0, c, rw[:n_rows])
        for r in range(n_rows):
            cy = (prm[_OM] + prm[_EPSC]) * rw[r]
            rw[r] = cy  # (W, also for phase 2)
            rd[r] = _times(cy, xy[r] - rm[r])
            ls[r] = log(rs[r])
    else:
        for r in range(n_rows):
            ls[r] = log(rs[r])
    for r in range(n_rows):
        wl[r] = _row_loss(wr[r], rw[r], ls[r], rd[r])
    return _sum_regular_rows(wl, regular, n_rows, lout, has_loss)


@njit(**NO_REFCOUNT)
def _lanes_block_gradient(gs, n_rows, c, soft, kappa, prm, scale, xt, tt, rt, r64, buf, stream,
                          left):
    """Phase 2 of a small-C block: the gradient ``a·e_j − b·c_j`` (``a = scale·w·W/s``,
    ``b = scale·w`` from phase 1's ``W``, ``s`` and ``w``) of its regular rows, formed
    class-major in ``xt`` and written row-major straight into ``gs`` or (``stream``) into
    ``buf`` and then streamed out run by run of consecutive regular rows. Rows left to the
    row path (``left`` of them) are not touched: they are final already."""
    prefer_wide_vectors()
    one = cast_like(1.0, prm[_OM])
    rs = rt[_RS]
    rw = rt[_RW]
    ra = rt[_RA]
    rb = rt[_RB]
    ry = rt[_RY]
    regular = rt[_REGULAR]
    wr = r64[1]
    for r in range(n_rows):
        w = wr[r]
        ra[r] = cast_like(scale * w * np.float64(rw[r]) / np.float64(rs[r]), one)
        rb[r] = cast_like(scale * w, one)
    for j in range(c):
        kj = kappa[j]
        jf = cast_like(np.float64(j), one)
        for r in range(n_rows):
            k = _u(j * n_rows + r)
            cj = _lane_coefficient(soft, jf, ry[r], kj, tt[k], prm)
            xt[k] = ra[r] * xt[k] - rb[r] * cj
    _write_rows(gs, buf, xt, regular, n_rows, c, left, stream)


@helper
def _block_weights(wr, wts, has_w, n_rows):
    """The sample weights of a small-C block's rows into ``wr`` (float64; 1 without)."""
    if has_w:
        for r in range(n_rows):
            wr[r] = wts[r]
    else:
        for r in range(n_rows):
            wr[r] = 1.0


@helper
def _sum_regular_rows(wl, regular, n_rows, lout, has_loss):
    """``(Σ wl`` over the regular rows of a small-C block, the number of rows left to the row
    path``)``; writes the regular rows' ``wl`` to ``lout`` (if ``has_loss``)."""
    acc = 0.0
    left = 0
    for r in range(n_rows):
        ok = regular[r] != 0
        # (a loop that only reads: its lane-wise order is fixed by n_rows, see acc_add)
        acc = acc_add(acc, wl[r] if ok else 0.0)
        left += 0 if ok else 1
    if has_loss:
        for r in range(n_rows):
            if regular[r] != 0:
                lout[r] = wl[r]
    return acc, left


@helper
def _write_rows(gs, buf, xt, regular, n_rows, c, left, stream):
    """Write a small-C block's gradient, formed class-major in ``xt``, row-major into ``gs``
    or (``stream``) into ``buf`` and stream it out: every row (``left == 0``) or only the
    regular ones (the others are the row path's)."""
    dst = buf if stream else gs
    if left == 0:
        for r in range(n_rows):
            for j in range(c):
                dst[_u(r * c + j)] = xt[_u(j * n_rows + r)]
    else:
        for r in range(n_rows):
            if regular[r] != 0:
                for j in range(c):
                    dst[_u(r * c + j)] = xt[_u(j * n_rows + r)]
    if stream:
        _stream_regular_rows(gs, buf, regular, n_rows, c, left)


@helper
def _stream_regular_rows(gs, buf, regular, n_rows, c, left):
    """Stream the gradient rows of a small-C block formed in ``buf`` out into ``gs``: all
    ``n_rows`` at once (``left == 0``) or run by run of consecutive regular rows."""
    if left == 0:
        _stream_out(gs, buf[:n_rows * c])
        return
    r = 0
    while r < n_rows:
        if regular[r] == 0:
            r += 1
            continue
        end = r + 1
        while end < n_rows and regular[end] != 0:
            end += 1
        _stream_out(gs[r * c:end * c], buf[r * c:end * c])
        r = end


# The small-C path of probabilities with one-hot targets (sparse labels, no smoothing,
# clip_lo > 0; C < SMALL_C): a chunk's rows are gathered (as above) only to form the float64
# row sums S and Σ |x_j|, in the registers of the gathers (`_intrinsics.row_sums64`: nothing
# transposed is stored and read back); the label's
# term of each row (the only one of a regular row, see the module docstring) is then one
# more vector loop over the rows, and the gradient a constant per row with the label's entry
# patched. Rows that are ignored or not regular are flagged and left to the row path.
# Measured (float32, C = 10, one thread, data in L2, ns per element): value 1.83 and
# value_and_grad 2.26 with the label work as one per-row loop (scalar: `vdivss`/`vdivsd`),
# 0.83–0.95 and 1.25–1.31 with the gathers split off (the arithmetic loop then vectorises:
# `vdivps`, `vdivpd`, `zmm`). benchmarks/targets.py, (6553600, 10), 2 threads (shared,
# loaded machine): value 12.9 → 1.6× np.sum, value_and_grad 12.2 → 1.8× np.copyto (the
# row path for every row before). The sums folded into the gathers (before: the chunk
# transposed into scratch, then summed class by class from there), same command, before and
# after side by side: value 1.58–1.74 → 1.24–1.44× np.sum, value_and_grad 2.12–2.23 →
# 1.78–1.96× np.copyto. The labels' entries and class weights picked in the same gathers
# (`_intrinsics.row_sums64_pick`: per class one compare with the labels and two masked
# moves; the scalar loop over the rows it replaced cost 0.1 ns per element), and, value
# only, no gradient factors (a float64 division per row): (6553600, 10) float32, one
# thread, CPU time per element (medians of 7, two processes each, base and new alternated):
# value 0.88–0.89 → 0.64–0.65 ns, value_and_grad 1.42 → 1.13 ns. (In L2, (65536, 10), the
# minima of 300 calls' wall time moved within the noise of a loaded machine: 0.59–0.68 →
# 0.58–0.66 ns.)


@njit(**OUT_OF_LINE)
def _prob_block_losses(xs, xn, n_rows, c, lab, wts, has_w, kappa, prm, ignoring, ignore_index,
                       rt, r64, lout, has_loss, want_grad, scale):
    """Phase 1 of a small-C probabilities block (one-hot targets): as
    :func:`_lanes_block_losses` (returns ``(Σ w·l`` over the regular rows, rows left``)``,
    flags ``rt[_REGULAR]``), and with ``want_grad`` the gradient's two values per regular row,
    ``(0 − Σ g·q)·a`` off the label into ``rt[_RA]`` and ``(g_y − Σ g·q)·a`` at it into
    ``rt[_RB]`` (``a = scale·w/S``), exactly as the row path forms them. The row sum adds the
    classes in order, ``((0 + x_0) + x_1) + …`` in float64. Reads the rows only."""
    prefer_wide_vectors()
    one = cast_like(1.0, prm[_OM])
    zero = cast_like(0.0, one)
    ra = rt[_RA]
    rb = rt[_RB]
    regular = rt[_REGULAR]
    wl = r64[0]
    wr = r64[1]
    s64 = r64[2]
    a64 = r64[3]
    # the labels' entries and class weights picked from the gathered vectors (a scalar
    # loop over the rows before: 0.1 ns per element), so that the loop with the arithmetic
    # reads contiguous rows only
    xy = rt[_RY]
    cy = rt[_RW]
    row_sums64_pick(xs, s64, a64, lab, kappa, xy, cy, xn, n_rows, c)
    _block_weights(wr, wts, has_w, n_rows)
    coefficient = prm[_OM] + prm[_EPSC]
    for r in range(n_rows):
        cy[r] = coefficient * cy[r]
        # (ignored, or outside [0, C): left to the row path, which reports the latter)
        regular[r] = one if _kept(lab[r], c, ignoring, ignore_index) else zero
    # (`want_grad` a constant at each call of the inlined loop: without a gradient, no
    # gradient factors, whose float64 division was a third of the loop's divisions)
    if want_grad:
        _one_hot_block_terms(xy, cy, s64, a64, wr, wl, ra, rb, regular, prm, scale, n_rows, True)
    else:
        _one_hot_block_terms(xy, cy, s64, a64, wr, wl, ra, rb, regular, prm, scale, n_rows,
                             False)
    return _sum_regular_rows(wl, regular, n_rows, lout, has_loss)


@helper
def _one_hot_block_terms(xy, cy, s64, a64, wr, wl, ra, rb, regular, prm, scale, n_rows,
                         want_grad):
    """:func:`_one_hot_terms` of a small-C block's rows (label entries ``xy``, coefficients
    ``cy``, sums ``s64`` and ``Σ|x_j|`` ``a64``, weights ``wr``): ``w·l`` into ``wl``, the
    gradient's two values into ``ra``, ``rb`` only if ``want_grad`` (a constant at each
    call), and ``regular`` cleared where the row is not regular or ``Σ g·q = 0``."""
    prefer_wide_vectors()  # (a helper's loops are vectorised before it is inlined)
    one = cast_like(1.0, prm[_OM])
    zero = cast_like(0.0, one)
    for r in range(n_rows):
        total64 = s64[r]
        total = cast_like(total64, one)
        wl[r], dot64, g_off, g_y = _one_hot_terms(xy[r], total64, total, cy[r], prm[_LO],
                                                  prm[_HI], wr[r], scale, zero)
        if want_grad:
            ra[r] = g_off
            rb[r] = g_y
        # (Σ g·q ≠ 0 also without a gradient: the same rows here in every mode, so the
        # same block sum)
        ok = (regular[r] != zero) & _regular(total, a64[r]) & (dot64 != 0.0)
        regular[r] = one if ok else zero


@njit(**OUT_OF_LINE)
def _prob_block_gradient(gs, n_rows, c, lab, rt, buf, stream, left):
    """Phase 2 of a small-C probabilities block: each regular row's gradient, the constant
    ``rt[_RA]`` with ``rt[_RB]`` at the label, written straight into ``gs`` or (``stream``)
    into ``buf`` and streamed out."""
    prefer_wide_vectors()
    ra = rt[_RA]
    rb = rt[_RB]
    regular = rt[_REGULAR]
    dst = buf if stream else gs
    for r in range(n_rows):
        if left == 0 or regular[r] != 0:
            v = ra[r]
            for j in range(c):
                dst[_u(r * c + j)] = v
            dst[_u(r * c + lab[r])] = rb[r]
    if stream:
        _stream_regular_rows(gs, buf, regular, n_rows, c, left)


# The small-C path of probabilities with dense targets (one-hot or soft, any options;
# C < SMALL_C): a chunk's rows and target rows are transposed (by gathers, as above) so that
# every loop runs over the rows in SIMD lanes, class by class: the float64 row sums S, then
# the terms `c_j·log q̂_j` and `g_j` of the general row loops (:func:`_class_terms`, the same
# elementwise formulas, so NaN and ±inf rows come out as there and no row is left to the row
# path) with each row's `Σ c_j log q̂_j` added class by class in float64 (lane-wise, no
# reassociation: the order is fixed), then the gradient. Only the order of the row sums
# differs from the row path (classes in order here). (With every term computed, skipping
# the c_j = 0 ones buys nothing: the terms are vector work; but see the one-log chunks below.)
# benchmarks/targets.py, value only, (6553600, 10) float32, 2 threads (shared machine):
# 621 → 83 ms, 12.8 → 1.9× np.sum (the row path for every row before).
#
# Then: the terms in a loop of the float type only, into scratch of their own (`buf`), and
# the float64 row sums of the terms in a loop after it (with the float64 sum in it, LLVM
# vectorised the terms loop 8 lanes wide; g_j, the second division, only with a gradient);
# the row sums S from the gathers of the transpose (`transpose_rows_sum64`). One thread,
# wall time per call, (65536, 10), minima of 200 calls: value only 1.72–1.76 → 1.13–1.21 ns
# per element; (6553600, 10), CPU time per element, medians of 7: 1.98–2.01 → 1.43 ns;
# two threads, the minima of 15 calls' wall time: 0.98–1.11 → 0.72–0.77 ns. Verified in
# the generated code (inspect_asm, Numba 0.68, LLVM 22, AVX-512, float32): the transpose is
# `vgatherdps zmm`, a masked `vmovups` store and `vcvtps2pd` / `vaddpd zmm` for S; both
# terms loops (with and without g_j) run on `zmm` (`vdivps zmm`, the `log` polynomial as
# `vfmadd…ps zmm`), the row sums of the terms are `vcvtps2pd` / `vaddpd zmm`; the only
# calls are Numba's reference counting, a `memset` and the gradient's `_stream_out`.
#
# Then, value only: a chunk whose rows all have at most one nonzero target entry and a finite
# nonzero S takes one log per row (see :func:`_dense_prob_block` for why its bits are the
# general loops'): the target's transpose counts each row's nonzero entries and keeps the
# last one and its class in the registers of its gathers (`transpose_rows_nonzero`); the
# row sums S and x_k at that class come from the gathers of x (`row_sum64_pick_at`: nothing
# transposed stored, no Σ|x_j|); then per row one division and one log (16 float32 lanes)
# and the float64 widening. Other chunks (soft targets, irregular rows) and every call with
# a gradient, smoothing, `lo = 0`, an infinite class weight: the general loops, as before,
# which find the target transposed already (the count costs a compare and three masked
# moves per gathered vector). The function is compiled without reference counting
# (:data:`NO_REFCOUNT`: 18 NRT calls per chunk before). Measured, (6553600, 10) float32
# one-hot, value only, wall time, medians of 9–15 calls, runs of main and this code
# alternated in separate processes (a shared 2-core machine): one thread 95–97 → 58–62 ms;
# two threads 55–57 → 34 ms (np.sum of the same bytes: 30–37 ms); value_and_grad and soft
# targets (1638400, 10) unchanged (55 and 23–24 ms, one thread). Verified with inspect_asm
# (Numba 0.68, LLVM 22, AVX-512, float32): every gather is `vgatherdps zmm`; with
# `transpose_rows_nonzero` under a branch of its own (only value-only calls), LLVM selected
# two `vgatherqps ymm` per vector for the fallback's `transpose_rows_sum64`.


@helper
def _dense_prob_terms(xt, tt, terms, tot, kappa, prm, n_rows, c, want_grad):
    """The class terms of a small-C dense probabilities block, class-major (``xt``, ``tt``:
    its rows and target transposed, ``tot``: the row sums ``S``): ``terms[k] = c_j·log q̂_j``
    and (``want_grad``, a constant at each call) ``tt[k] = g_j`` (:func:`_class_terms`).

    A loop in the float type only: with a float64 row sum in it, LLVM vectorised it 8 lanes
    wide (``ymm``, by the width of float64), without it 16 (``zmm``; checked with
    ``inspect_asm``). ``terms`` must be an array of its own: with it the same array as
    ``xt`` (known only at run time), the run-time alias check failed every time and the
    scalar copy of the loop ran (7.9 ns per element)."""
    prefer_wide_vectors()  # (a helper's loops are vectorised before it is inlined)
    zero = cast_like(0.0, prm[_LO])
    for j in range(c):
        kj = kappa[j]
        for r in range(n_rows):
            k = _u(j * n_rows + r)
            cj = _class_coefficient(True, False, zero, kj, tt[k], prm)
            _, terms[k], gj = _class_terms(xt[k], tot[r], cj, prm[_LO], prm[_HI], zero)
            if want_grad:
                tt[k] = gj


@njit(**NO_REFCOUNT)
def _dense_prob_block(xs, ts, xn, tn, n_rows, c, wts, has_w, kappa, prm, xt, tt, rt, r64,
                      lout, has_loss, want_grad, scale, gs, buf, stream):
    """A small-C probabilities block with dense targets (``xs``, ``ts``: its ``n_rows`` rows
    of probabilities and target, flattened; ``xn``, ``tn``: the next rows, prefetched).
    Returns ``Σ w·l`` over the rows (lane-wise partial sums, an order fixed by ``n_rows``)
    and writes ``w·l`` to ``lout`` (if ``has_loss``); with ``want_grad`` the gradient
    ``scale·w·(g_j − Σ g_k q_k)/S`` is formed class-major in ``xt`` (the ``g_j`` in ``tt``)
    and written row-major into ``gs`` or (``stream``) into ``buf`` and streamed out (``buf``
    holds the class terms before). Reads all the rows before it writes any gradient, so an
    in-place call is safe.

    Value only, a chunk whose rows all have at most one nonzero target entry ``t_k`` (NaN
    counts as nonzero) and a finite nonzero ``S`` (in the float type), with ``ε/C = 0``,
    ``1 − ε`` and every ``κ_j`` finite, ``0 < lo`` and ``0 < hi < inf``, takes one log per
    row, bitwise the loss of the general loops. There every other ``c_j = (±0·(1 − ε) +
    0)·κ_j`` is ``±0``; ``S`` finite makes every ``x_j`` finite, so every ``q_j`` is finite
    or ``±inf`` (never NaN), ``q̂_j`` finite and positive and ``log q̂_j`` finite, and a term
    ``c_j·log q̂_j = ±0`` leaves the float64 row sum ``((0 + t_0) + t_1) + …`` unchanged, or
    ``+0`` from ``+0``: the sum is ``0 + c_k log q̂_k`` (class 0 stands in, with
    ``c_0 = ±0``, where there is no nonzero entry). Every other chunk, and every call with a
    gradient, takes the general loops.
    """
    prefer_wide_vectors()
    one = cast_like(1.0, prm[_OM])
    zero = cast_like(0.0, one)
    tot = rt[_RS]
    dot = rt[_RD]
    ra = rt[_RA]
    lsum = r64[0]
    wr = r64[1]
    s64 = r64[2]
    dot64 = r64[3]
    lo = prm[_LO]
    hi = prm[_HI]
    # (rt's rows _RM, _RW, _RD, _RA, _RB are free here: a gradient's loops fill _RD, _RA
    # later; the nonzero count costs a compare and three moves per gathered vector, in
    # registers)
    count = rt[_RM]
    kf = rt[_RW]
    ty = rt[_RD]
    xy = rt[_RA]
    ky = rt[_RB]
    transpose_rows_nonzero(ts, tt, count, kf, ty, tn, n_rows, c)
    one_log = ((not want_grad) and prm[_EPSC] == zero and abs(prm[_OM]) < np.inf
               and lo > zero and hi > zero and hi < np.inf)
    for j in range(c):
        one_log &= abs(kappa[j]) < np.inf
    if one_log:
        many = 0
        for r in range(n_rows):
            many += np.int64(count[r] > one)
        one_log = many == 0
    if one_log:
        row_sum64_pick_at(xs, s64, kf, kappa, xy, ky, xn, n_rows, c)
        fine = 0
        for r in range(n_rows):
            t = cast_like(s64[r], one)
            tot[r] = t
            fine += np.int64((t != zero) & (abs(t) < np.inf))
        one_log = fine == n_rows
    if one_log:
        # the terms in a loop of the float type only (16 float32 lanes; with the float64 sum
        # in it, 8), into the count's row (read already)
        terms = count
        for r in range(n_rows):
            cy = _class_coefficient(True, False, zero, ky[r], ty[r], prm)
            terms[r] = _class_terms(xy[r], tot[r], cy, lo, hi, zero)[1]
        for r in range(n_rows):
            lsum[r] = 0.0 + np.float64(terms[r])
    if not one_log:
        # (the row sums from the gathered vectors: a loop over the transposed rows before)
        transpose_rows_sum64(xs, xt, s64, xn, n_rows, c)
        for r in range(n_rows):
            lsum[r] = 0.0
        for r in range(n_rows):
            tot[r] = cast_like(s64[r], one)
        # (`want_grad` a constant at each call of the inlined loop: no g_j without a gradient)
        if want_grad:
            _dense_prob_terms(xt, tt, buf, tot, kappa, prm, n_rows, c, True)
        else:
            _dense_prob_terms(xt, tt, buf, tot, kappa, prm, n_rows, c, False)
        for j in range(c):
            for r in range(n_rows):
                lsum[r] = lsum[r] + np.float64(buf[_u(j * n_rows + r)])
    _block_weights(wr, wts, has_w, n_rows)
    for r in range(n_rows):
        lsum[r] = wr[r] * -lsum[r]
    acc = 0.0
    for r in range(n_rows):
        # (a loop that only reads: its lane-wise order is fixed by n_rows, see acc_add)
        acc = acc_add(acc, lsum[r])
    if has_loss:
        for r in range(n_rows):
            lout[r] = lsum[r]
    if want_grad:
        for r in range(n_rows):
            dot64[r] = 0.0
        for j in range(c):
            for r in range(n_rows):
                k = _u(j * n_rows + r)
                dot64[r] = dot64[r] + np.float64(tt[k] * (xt[k] / tot[r]))
        for r in range(n_rows):
            dot[r] = cast_like(dot64[r], one)
            ra[r] = cast_like(scale * wr[r] / s64[r], one)
        for j in range(c):
            for r in range(n_rows):
                k = _u(j * n_rows + r)
                xt[k] = (tt[k] - dot[r]) * ra[r]
        _write_rows(gs, buf, xt, rt[_REGULAR], n_rows, c, 0, stream)
    return acc


@njit(**OUT_OF_LINE)
def _rows(from_logits, sparse, x, g, labels, target, weight, kappa, lout, prm, scale,
          ignoring, ignore_index, has_w, has_loss, smooth, want_grad, stream, e, e2, first, end,
          small, regular, acc, bad):
    """The row path over rows ``first..end−1`` of a block (skipping those the small-C path
    did: ``regular``, indexed from the block's first row ``end − regular.size``): adds each
    row's ``w·l`` to ``acc`` in row order and returns it.

    A sparse row whose label is neither kept nor ignored (outside ``[0, C)``: see
    :func:`_kept`) is treated as ignored (no entry of it is read) and reported by setting
    ``bad[0] = 1`` (the block's flag; the small-C paths leave such a row to this one).

    A function of its own, not part of the kernel's ``prange`` body: Numba's parfor passes
    copy and analyse that body repeatedly, and with the five inlined row routines in it the
    kernel took twice as long to compile."""
    prefer_wide_vectors()
    r0 = end - regular.size
    n, c = x.shape
    for i in range(first, end):
        if small and regular[i - r0] != 0:
            continue  # done by the small-C path
        w = weight[i] if has_w else 1.0
        gi = g[i] if want_grad else e2  # (g is a stand-in without a gradient: not indexed)
        nx = x[i + 1] if i + 1 < n else x[i]  # the next row, prefetched
        # `how` is a literal at each call so that the class loops compile without a
        # per-element branch on it.
        if not sparse:
            trow = target[i]
            nt = target[i + 1] if i + 1 < n else trow
            if from_logits:
                wl = _logits_row(x[i], gi, e, e2, SOFT, 0, kappa, trow, prm, w, scale, want_grad,
                                 stream, nx, nt)
            else:
                wl = _probabilities_row(x[i], gi, e, e2, SOFT, 0, kappa, trow, prm, w, scale,
                                        want_grad, stream, nx, nt)
        elif not _kept(labels[i], c, ignoring, ignore_index):
            if not _ignored(labels[i], ignoring, ignore_index):
                bad[0] = 1.0  # (the caller declines the result)
            wl = 0.0
            if want_grad:
                _fill(gi, cast_like(0.0, prm[0]))
        elif not from_logits:
            # (ε = 0 gives c_j = 0·κ_j: exactly the one-hot coefficients)
            wl = _probabilities_row(x[i], gi, e, e2, SPARSE, labels[i], kappa, e, prm, w, scale,
                                    want_grad, stream, nx, nx)
        elif smooth:
            wl = _logits_row(x[i], gi, e, e2, SPARSE, labels[i], kappa, e, prm, w, scale,
                             want_grad, stream, nx, nx)
        else:
            wl = _logits_row(x[i], gi, e, e2, ONE_HOT, labels[i], kappa, e, prm, w, scale,
                             want_grad, stream, nx, nx)
        acc += wl
        if has_loss:
            lout[i] = wl
    return acc


@helper
def _scratch_sizes(small, sparse, rl, c):
    """``(width, stride)``: per thread, the scratch holds two rows for the row path, then
    (small C) a chunk transposed, the chunk's gradient and (soft target) the chunk's target
    transposed, ``width`` elements each; ``stride`` in all."""
    width = rl * c if small else 0
    return width, 2 * c + (2 if sparse else 3) * width + _GAP


@helper
def _any_set(flags):
    """1 if any of ``flags`` is nonzero, else 0 (a serial loop)."""
    found = 0
    for b in range(flags.size):
        found |= np.int64(flags[b] != 0)
    return found


@helper
def _ordered_sum(sums):
    """Block sums added in block order (no reassociation): thread-count independent."""
    total = 0.0
    for b in range(sums.size):
        total += sums[b]
    return total


@njit(inline="always", error_model="numpy")
def _one_block(b, from_logits, sparse, x, g, xf, gf, tf, labels, target, weight, kappa, lout,
               prm, scale, ignoring, ignore_index, has_w, has_loss, smooth, want_grad, stream,
               scratch, rows, rows64, rb, rl, small, bad):
    """Block ``b`` of a call (rows ``b·rb`` to ``(b+1)·rb − 1``); returns its ``Σ w·l`` and
    sets ``bad[b]`` if a label of it lies outside ``[0, C)`` (see :func:`_rows`).

    Small C: chunk by chunk of ``rl`` rows, the lanes path, then the row path for the rows
    it left, then the chunk's gradient (the order of the sum is fixed by ``C`` either way).
    A chunk's scratch stays in L1. Otherwise the row path for every row.

    (``n`` and ``C`` are taken from ``x``, not passed: with more than 30 arguments CPython
    3.11 compiles the call as ``f(*args)``, which Numba cannot inline.)"""
    prefer_wide_vectors()
    n, c = x.shape
    width, stride = _scratch_sizes(small, sparse, rl, c)
    tid = get_thread_id()
    at = tid * stride
    e = scratch[at:at + c]
    e2 = scratch[at + c:at + 2 * c]
    r0 = b * rb
    r1 = min(n, r0 + rb)
    rt = rows[tid]
    r64 = rows64[tid]
    at += 2 * c
    xt = scratch[at:at + width]
    buf = scratch[at + width:at + 2 * width]
    # the transposed soft target (its own scratch), or any scratch that the sparse case
    # reads but does not use (see _lanes_block_losses)
    tt = buf if sparse else scratch[at + 2 * width:at + 3 * width]
    status = bad[b:b + 1]
    status[0] = 0.0
    acc = 0.0
    if not small:
        acc = _rows(from_logits, sparse, x, g, labels, target, weight, kappa, lout, prm,
                    scale, ignoring, ignore_index, has_w, has_loss, smooth, want_grad, stream,
                    e, e2, r0, r1, small, rt[_REGULAR, :1], acc, status)
    else:
        q0 = r0
        while q0 < r1:
            q1 = min(r1, q0 + rl)
            # the next chunk's rows (also past the block) are prefetched during this one's
            # transposes (logits: its class loops)
            ahead = min(n, 2 * q1 - q0)
            # the chunk's regular rows first, then the others in order
            left = 0
            if not from_logits and not sparse:
                chunk = _dense_prob_block(xf[q0 * c:q1 * c], tf[q0 * c:q1 * c],
                                          xf[q1 * c:ahead * c], tf[q1 * c:ahead * c],
                                          q1 - q0, c, weight[q0:q1], has_w, kappa, prm, xt,
                                          tt, rt, r64, lout[q0:q1], has_loss, want_grad,
                                          scale, gf[q0 * c:q1 * c], buf, stream)
            elif from_logits:
                chunk, left = _lanes_block_losses(xf[q0 * c:q1 * c], tf[q0 * c:q1 * c],
                                                  xf[q1 * c:ahead * c], tf[q1 * c:ahead * c],
                                                  q1 - q0, c, not sparse, labels[q0:q1],
                                                  labels[q1:ahead],
                                                  weight[q0:q1], has_w, kappa, prm,
                                                  ignoring, ignore_index, xt, tt, rt, r64,
                                                  lout[q0:q1], has_loss, want_grad)
            else:
                chunk, left = _prob_block_losses(xf[q0 * c:q1 * c], xf[q1 * c:ahead * c],
                                                 q1 - q0, c, labels[q0:q1], weight[q0:q1],
                                                 has_w, kappa, prm, ignoring, ignore_index,
                                                 rt, r64, lout[q0:q1], has_loss, want_grad,
                                                 scale)
            acc += chunk
            if left > 0:
                acc = _rows(from_logits, sparse, x, g, labels, target, weight, kappa, lout,
                            prm, scale, ignoring, ignore_index, has_w, has_loss, smooth,
                            want_grad, stream, e, e2, q0, q1, small, rt[_REGULAR, :q1 - q0],
                            acc, status)
            if not from_logits and not sparse:
                pass  # (the gradient is written already)
            elif want_grad and from_logits:
                _lanes_block_gradient(gf[q0 * c:q1 * c], q1 - q0, c, not sparse, kappa, prm,
                                      scale, xt, tt, rt, r64, buf, stream, left)
            elif want_grad:
                _prob_block_gradient(gf[q0 * c:q1 * c], q1 - q0, c, labels[q0:q1], rt, buf,
                                     stream, left)
            q0 = q1
    return acc


def _make_kernel():
    """The parallel kernel of every variant (one compiled signature per float type).

    One kernel rather than one per (logits?, sparse?): most of a parallel kernel's compile
    time is Numba's fixed cost for the ``prange`` shell, so the four variants in one kernel
    compile in well under the time of four kernels, at the price of compiling all of them on
    the first call of any.
    """
    stamp = SOURCE_STAMP

    @njit(parallel=True, cache=CACHE, nogil=True, error_model="numpy")
    def kernel(from_logits, sparse, x, g, gf, labels, target, weight, kappa, lout, prm, scale,
               ignoring, ignore_index, has_w, has_loss, smooth, want_grad, stream, n_threads):
        # x: (n, C) rows, read-only (a view of g for an in-place gradient); g, gf: the
        # gradient and its flat view (stand-ins without a gradient); labels (sparse) or
        # target (soft) rows; weight/kappa/lout: stand-ins when absent (flags say which are
        # real). ignoring: whether a label equal to ignore_index is ignored.
        # Returns (Σ w·l, 1 if a label, neither kept nor ignored, lies outside [0, C), else
        # 0): with a 1, the sum is meaningless (such rows count as ignored), and only the
        # gradient and losses may have been written.
        _ = stamp  # part of the cache key: recompile when any source file changes
        n, c = x.shape
        rb = max(1, BLOCK_ELEMS // c)
        nblocks = (n + rb - 1) // rb
        # per block: its Σ w·l, and its bad-label flag (no two threads write one element;
        # each block clears its own): one allocation, and neither np.zeros nor .max(), which
        # the parfor pass turns into parallel regions of their own (measured: +4 µs on a
        # (64, 10) call, milliseconds where the pool had gone to sleep)
        blocks = np.empty((2, nblocks))
        sums = blocks[0]
        bad = blocks[1]
        small = c < SMALL_C and (from_logits or not sparse
                                 or (not smooth and prm[_LO] > 0))
        rl = lanes_rows(c)
        stride = _scratch_sizes(small, sparse, rl, c)[1]
        scratch = np.empty(n_threads * stride, x.dtype)
        rows = np.empty((n_threads, _NROWS + 1, rl if small else 1), x.dtype)
        rows64 = np.empty((n_threads, 5, rl if small else 1))
        xf = x.reshape(n * c)
        tf = target.reshape(target.size)
        if nblocks == 1:  # one block of work: no parallel region (see _runtime.run)
            sums[0] = _one_block(0, from_logits, sparse, x, g, xf, gf, tf, labels, target, weight,
                                 kappa, lout, prm, scale, ignoring, ignore_index, has_w,
                                 has_loss, smooth, want_grad, stream, scratch, rows, rows64, rb,
                                 rl, small, bad)
        else:
            for b in prange(nblocks):
                sums[b] = _one_block(b, from_logits, sparse, x, g, xf, gf, tf, labels, target,
                                     weight, kappa, lout, prm, scale, ignoring, ignore_index,
                                     has_w, has_loss, smooth, want_grad, stream, scratch, rows,
                                     rows64, rb, rl, small, bad)
        return _ordered_sum(sums), _any_set(bad)

    return kernel


#: The cross-entropy kernel, compiled lazily (or by warmup) once per float type.
KERNEL = _make_kernel()

# Stand-ins for absent arrays: inputs are read-only (see _runtime.read_only), outputs not.
_NO_TARGET = {dt: _frozen(np.zeros((1, 1), dt)) for dt in (np.dtype("f4"), np.dtype("f8"))}
_NO_LABELS = _frozen(np.zeros(1, np.int64))
_NO_WEIGHT = _frozen(np.ones(1))
_NO_GRAD = {dt: np.zeros((1, 1), dt) for dt in (np.dtype("f4"), np.dtype("f8"))}
_NO_LOSS = {dt: np.zeros(1, dt) for dt in (np.dtype("f4"), np.dtype("f8"))}


def _arguments(job: CrossEntropyJob, ignoring: bool = True) -> tuple:
    """The kernel's arguments but the thread count; ``ignoring``: whether a label equal to
    ``job.ignore_index`` is ignored (with checked labels either is right)."""
    x = job.pred
    n, c = x.shape
    dtype = x.dtype
    eps = job.smoothing
    prm = scalars(dtype, (1.0 - eps, eps / c, job.clip_lo, job.clip_hi))
    kappa = (ones(c, dtype) if job.class_weight is None
             else _frozen(job.class_weight.astype(dtype)))
    g = job.grad_out
    want_grad = g is not None
    # (by the contract, a gradient that shares memory with x is x: in place)
    in_place = want_grad and (g is x or np.may_share_memory(g, x))
    sparse = job.labels is not None
    return (
        bool(job.from_logits),
        sparse,
        read_only(x),
        g if want_grad else _NO_GRAD[dtype],  # never touched without a gradient
        g.reshape(-1) if want_grad else _NO_LOSS[dtype],
        read_only(job.labels) if sparse else _NO_LABELS,
        _NO_TARGET[dtype] if sparse else read_only(job.target),
        read_only(job.weight) if job.weight is not None else _NO_WEIGHT,
        kappa,
        _NO_LOSS[dtype] if job.loss_out is None else job.loss_out,
        prm,
        float(job.scale),
        bool(ignoring),
        int(job.ignore_index),
        job.weight is not None,
        job.loss_out is not None,
        eps != 0,
        want_grad,
        want_grad and not in_place and g.nbytes >= STREAM_BYTES,
    )


def _run(job: CrossEntropyJob, ignoring: bool) -> tuple[float, int]:
    """``(Σ w·l, 1 if the kernel met a label outside [0, C) that it does not ignore, else 0)``."""
    n, c = job.pred.shape
    args = _arguments(job, ignoring)
    return run(KERNEL, args, threads_for(job.n_threads, n * c), n > rows_per_block(c))


def cross_entropy(job: CrossEntropyJob) -> float:
    """Run one :class:`~fastloss.backends._jobs.CrossEntropyJob` (see the contract: its labels
    are checked already, so the kernel's own report can only be a broken contract)."""
    total, bad = _run(job, True)
    if bad:
        raise ValueError("cross_entropy: a label outside [0, C) reached the kernel")
    return total


def cross_entropy_unchecked(job: CrossEntropyJob) -> float | None:
    """:func:`cross_entropy` of a sparse job whose labels were not checked and of which
    nothing is ignored (``job.ignore_index`` is not used): None where a label lies outside
    ``[0, C)`` (every kernel path checks each label it reads and reads nothing for a bad
    one). The gradient and losses outputs may then hold anything: only for a call whose
    outputs are its own (the shortcut's, declined then, see :mod:`.._shortcut`)."""
    total, bad = _run(job, False)
    return None if bad else total


def kernel_signatures():
    """``(description, kernel, example arguments)`` for every kernel signature, for warmup."""
    for dtype in (np.float32, np.float64):
        x = np.zeros((1, 2), dtype)
        job = CrossEntropyJob(from_logits=True, pred=x, labels=np.zeros(1, np.int64))
        yield f"cross_entropy {np.dtype(dtype).name}", KERNEL, _arguments(job) + (1,)
