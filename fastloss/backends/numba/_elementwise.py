"""Elementwise losses (MSE, MAE, Huber, binary cross-entropy) as one fused parallel kernel.

Layers, smallest first:

* one jitted function per kind holding the math of one element,
  ``(p, t, π, params) -> (l, ∂l/∂p)`` in the input's float type, with its formula in the
  docstring — the only place each formula is written (LLVM inlines it into the loops);
* two block loops, chosen per kind: :func:`_fused_block` (one loop; squared, absolute,
  Huber, which are memory-bound) and :func:`_split_block` (the math in a loop of its own in
  the float type, then the float64 sum; binary cross-entropy, which is compute-bound);
  ``run_block`` binds a kind to its loop at compile time;
* the parallel kernel (:func:`_make_kernel`): fixed blocks of :data:`BLOCK` elements under
  ``prange``, block sums combined in block order, so the result is bitwise the same for
  every thread count;
* :func:`elementwise`, which maps an :class:`~fastloss.backends._jobs.ElementwiseJob` onto a
  kernel call.

Per-call options are not compiled into separate kernels, to keep the compile time and the
cache small: a missing ``weight`` or ``pos_weight`` is read from a block of ones (L1
resident; ``x·1.0`` is exact, so the result is bitwise what a specialised kernel would give);
the modes share their loops (value only, gradient into a buffer, gradient in place: the
gradient goes to scratch and is copied out, in place the predictions are copied to scratch
first — one loop reading and writing the same array would fail LLVM's runtime overlap check
and take the scalar fallback). A large separate gradient is copied out with non-temporal
stores (no read-for-ownership of the output).

Vectorisation (checked with ``inspect_asm`` of the kernel on the AVX-512 development host,
Numba 0.68 / LLVM 22, float32 and float64): every element loop compiles to
``<16 x float>``/``<8 x double>`` bodies on ``zmm`` registers (8 lanes for the fused loop,
whose float64 sum sets the width), the polynomial math with FMA (``vfmadd…ps/pd``); no call
to ``exp``/``log``/``log1p`` or any other libm function is left in any block routine (the
only calls are Numba's per-block reference counting and the gradient copy-out); the float64
sum is a packed ``vaddpd`` on lane-wise partial sums fed by ``vcvtps2pd``. float32 binary
cross-entropy from logits divides only in its gradient loops (one ``vdivps`` per vector,
the sigmoid; the softplus uses the division-free :func:`._math.log1p_unit`), not in its
value-only loop; in float64 ``log1p``'s correction shares the sigmoid's division. Each
chunk of the block loops starts with ``prefetcht0`` of the lines :data:`AHEAD` elements on.
No fast-math flag is used anywhere; the one reassociation is the ``reassoc`` float64 block
sum (:func:`._intrinsics.acc_add`), whose order is fixed by the compiled loop and the block
boundaries, never by the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import get_thread_id, njit, prange, types
from numba.extending import overload

from .._jobs import ELEMENTWISE_KINDS, ElementwiseJob
from ._intrinsics import (
    HELPER_OPTIONS,
    acc_add,
    cast_like,
    helper,
    prefer_wide_vectors,
    prefetch_lines,
    store_fence,
    stream_copy_unfenced,
)
from ._math import exp_nonpositive, log, log1p, log1p_unit
from ._runtime import (
    CACHE,
    SERIAL_WORK,
    SOURCE_STAMP,
    _frozen,
    read_only,
    run,
    scalars,
    threads_for,
)

__all__ = ["BLOCK", "KERNEL", "elementwise", "kernel_signatures"]

#: Elements per block: the unit of parallel work and of the deterministic reduction.
#: 2048 keeps the ones-block (16 KiB), the scratch and a block of each stream in L1/L2.
BLOCK = 2048

#: A gradient written into a separate output of at least this many bytes is streamed out
#: with non-temporal stores (see :func:`._intrinsics.stream_copy`); a smaller one is likely
#: still in cache when the caller reads it, so it is written normally.
STREAM_BYTES = 1 << 23

#: The compute-bound loop (:func:`_split_block`) runs in chunks of ``CHUNK`` elements and,
#: before each chunk, prefetches the input ``AHEAD`` elements further on (see there).
CHUNK = 128
AHEAD = 1024

SQUARED, ABSOLUTE, HUBER, BCE_LOGITS, BCE_PROB = range(5)
_KIND_CODES = {name: code for code, name in enumerate(ELEMENTWISE_KINDS)}
assert _KIND_CODES["bce_prob"] == BCE_PROB

# params tuple, in the input's float type: (δ, 1 − ε, ε/2, clip_lo, clip_hi)
_DELTA, _ONE_MINUS_EPS, _HALF_EPS, _LO, _HI = range(5)


@helper
def _squared(p, t, pos_weight, prm):
    """``l = r²``, ``∂l/∂p = 2r`` with ``r = p − t``."""
    r = p - t
    return r * r, r + r


@helper
def _absolute(p, t, pos_weight, prm):
    """``l = |r|``, ``∂l/∂p = sign(r)`` (0 at ``r = 0``, NaN for NaN) with ``r = p − t``."""
    r = p - t
    one = cast_like(1.0, r)
    g = one if r > 0 else (-one if r < 0 else r - r)  # r − r: +0 for ±0, NaN for NaN
    return abs(r), g


@helper
def _huber(p, t, pos_weight, prm):
    """``l = ½r²`` if ``|r| ≤ δ`` else ``δ(|r| − ½δ)``; ``∂l/∂p = clip(r, −δ, δ)``
    (NaN stays NaN)."""
    d = prm[_DELTA]
    half = cast_like(0.5, d)
    r = p - t
    a = abs(r)
    loss = half * r * r if a <= d else d * (a - half * d)
    g = -d if r < -d else (d if r > d else r)
    return loss, g


@helper
def _smoothed(t, prm):
    """``t' = t(1 − ε) + ε/2``."""
    return t * prm[_ONE_MINUS_EPS] + prm[_HALF_EPS]


@helper
def _bce_logits(x, t, pos_weight, prm):
    """``l = (1−t')·softplus(x) + π·t'·softplus(−x)``, ``∂l/∂x = (1−t')·σ(x) − π·t'·σ(−x)``.

    With ``e = exp(−|x|) ≤ 1``: ``softplus(±x) = max(±x, 0) + log1p(e)`` and
    ``σ(x) = 1/(1+e)`` for ``x ≥ 0``, ``e/(1+e)`` otherwise, so nothing overflows. Both are
    written symmetrically (no ``σ(x) − t``), so neither cancels for large ``|x|``. A term whose
    coefficient is 0 counts as 0 even if its softplus is infinite (``x = +inf, t = 1`` gives
    loss 0 and gradient 0).
    """
    ts = _smoothed(t, prm)
    one = cast_like(1.0, ts)
    zero = cast_like(0.0, ts)
    neg = one - ts
    pos = pos_weight * ts
    e = exp_nonpositive(-abs(x))
    inv = one / (one + e)  # the gradient's only division (none in value-only loops)
    sp = log1p_unit(e)
    sig_x = inv if x >= 0 else e * inv
    sig_minus_x = e * inv if x >= 0 else inv
    sp_x = (x if x > 0 else zero) + sp
    sp_minus_x = (-x if x < 0 else zero) + sp
    loss = (zero if neg == 0 else neg * sp_x) + (zero if pos == 0 else pos * sp_minus_x)
    return loss, neg * sig_x - pos * sig_minus_x


@helper
def _bce_prob(p, t, pos_weight, prm):
    """``l = −(π·t'·log q + (1−t')·log(1−q))``, ``∂l/∂p = −(π·t'/q − (1−t')/(1−q))`` with
    ``q = clip(p, lo, hi)``; the gradient is 0 where ``p < lo or p > hi`` (NaN is not outside,
    so it propagates)."""
    lo = prm[_LO]
    hi = prm[_HI]
    ts = _smoothed(t, prm)
    one = cast_like(1.0, ts)
    neg = one - ts
    pos = pos_weight * ts
    q = lo if p < lo else p
    q = hi if q > hi else q
    loss = -(pos * log(q) + neg * log1p(-q))
    g = neg / (one - q) - pos / q
    return loss, (cast_like(0.0, g) if (p < lo or p > hi) else g)


@helper
def _fused_terms(element, prm, p, t, w, one, scale):
    """``(w·l, scale·w·∂l/∂p)`` of one element (``w·l`` in float64)."""
    loss, dloss = element(p, t, one, prm)
    return loss * w, dloss * (scale * w)


@njit(inline="always", error_model="numpy")
def _fused_block(element, prm, pb, tb, gb, wb, lb, scale, ahead, has_w):
    """``Σ_k w_k·l_k`` over one block, writing ``w·l`` to ``lb`` and ``scale·w·∂l/∂p`` to
    ``gb`` — for the memory-bound kinds (squared, absolute, Huber).

    Full chunks of :data:`CHUNK` elements run one loop that stores and sums. The loop
    always writes both (into scratch when the caller wants neither), so that it is the same
    compiled loop for every call: LLVM then splits the float64 sum into the same lanes
    everywhere, and value-only and value-and-gradient calls return bitwise the same value.
    The float64 weight and sum make LLVM vectorise 8 lanes wide (with 512-bit vectors),
    plenty for these kinds' few operations per element. Chunked and prefetched like
    :func:`_split_block` (measured, value and gradient, 2^26 float32, 2 threads: 5–8 %
    faster than the hardware prefetchers alone).

    The last, partial chunk (the whole block if it is shorter than a chunk) stores in one
    loop and sums in another, recomputing the loss. A loop that stores is versioned on a
    run-time check that the stored and the read arrays lie at least one unrolled vector
    iteration apart, and where the check fails, its scalar copy runs, which would add the
    sum in another order. For the full chunks the check cannot fail between arrays that do
    not overlap (read in the IR, Numba 0.68 / LLVM 22, hoisted before the chunk loop):
    float32 compares the arrays' ranges over all full chunks, float64 asks for 256 bytes
    (32 elements, a quarter chunk) between their starts. Shorter runs can lie closer
    (a ``loss_out`` right after the predictions, or this thread's scratch right after an
    input's last elements): measured before this split, float64, n = 6…31, 1 ulp between
    placements of the same data (tests/backends/test_numba_kernels.py,
    test_placement_of_the_arrays_changes_no_bit).
    """
    one = cast_like(1.0, prm[0])
    acc = 0.0
    m = pb.size
    full = m - m % CHUNK
    for c in range(0, full, CHUNK):
        _prefetch_ahead(ahead, c, c + CHUNK, has_w, False)
        for k in range(np.uint64(c), np.uint64(c + CHUNK)):
            wl, g = _fused_terms(element, prm, pb[k], tb[k], wb[k], one, scale)
            acc = acc_add(acc, wl)
            lb[k] = wl
            gb[k] = g
    for k in range(np.uint64(full), np.uint64(m)):
        wl, g = _fused_terms(element, prm, pb[k], tb[k], wb[k], one, scale)
        lb[k] = wl
        gb[k] = g
    for k in range(np.uint64(full), np.uint64(m)):
        acc = acc_add(acc, _fused_terms(element, prm, pb[k], tb[k], wb[k], one, scale)[0])
    return acc


@helper
def _prefetch_ahead(ahead, c, e, has_w, has_pw):
    """Prefetch elements ``[c, e)`` + :data:`AHEAD` of every input stream in ``ahead``."""
    pa, ta, wa, pwa = ahead
    prefetch_lines(pa, c + AHEAD, e + AHEAD)
    prefetch_lines(ta, c + AHEAD, e + AHEAD)
    if has_w:
        prefetch_lines(wa, c + AHEAD, e + AHEAD)
    if has_pw:
        prefetch_lines(pwa, c + AHEAD, e + AHEAD)


@njit(inline="always", error_model="numpy")
def _split_block(element, prm, pb, tb, gb, wb, lb, ls, pws, ahead, has_w, has_pw, has_loss,
                 scale, gscale, write_grad):
    """``Σ_k w_k·l_k`` over one block for the compute-bound kinds (binary cross-entropy):
    writes ``w·l`` to ``lb`` (if ``has_loss``) and ``scale·w·∂l/∂p`` to ``gb`` (if
    ``write_grad``, a compile-time constant).

    The first loop does all the math in the input's float type and nothing else, so that
    for float32 LLVM uses 16 lanes (512-bit vectors): a float64 value in the loop (weight,
    float64 sum) would halve that. Per-element losses go to the L1 scratch ``ls``,
    ``pos_weight`` comes as floats in ``pws``. The second loop, the float64 sum, is a loop of
    its own, identical in every mode, so that value-only and value-and-gradient calls add
    the same terms in the same order (bitwise equal results). Without a weight,
    ``gscale = scale`` (in the float type) is applied in the first loop; with one,
    ``gscale = 1`` and the gradient is scaled by ``scale·w`` (float64, one rounding) while
    the block is still in L1.

    Prefetching: ``ahead`` holds the input arrays from this block's first element to their
    end (predictions, targets, weights, pos_weights). Before each chunk of :data:`CHUNK`
    elements the lines :data:`AHEAD` elements further on are prefetched (``prefetcht0``).
    The hardware prefetchers alone do not keep this loop fed: at ~1 ns per element its
    loads stall on memory, and the time is the sum of compute and transfer, not the larger
    of the two (measured: float32 logits, 2^26 elements, value only, 2 threads: 57 → 40 ms,
    the compute alone being ~34 ms). The chunk loop indexes with an unsigned counter: with
    a signed one LLVM cannot rule out Numba's negative-index wraparound and vectorises
    with gathers/scatters (3× slower).
    """
    m = pb.size
    for c in range(0, m, CHUNK):
        e = min(c + CHUNK, m)
        _prefetch_ahead(ahead, c, e, has_w, has_pw)
        for k in range(np.uint64(c), np.uint64(e)):  # unsigned: no wraparound code
            loss, dloss = element(pb[k], tb[k], pws[k], prm)
            ls[k] = loss
            if write_grad:
                gb[k] = dloss * gscale
    acc = 0.0
    for k in range(m):
        acc = acc_add(acc, ls[k] * wb[k])
    if has_loss:
        for k in range(m):
            lb[k] = ls[k] * wb[k]
    if write_grad and has_w:
        for k in range(m):
            gb[k] = gb[k] * (scale * wb[k])
    return acc


@njit(**HELPER_OPTIONS | {"forceinline": False})
def _write_out(g, grad, stream):
    """Copy a block of gradient from scratch to the output (non-temporal if ``stream``; the
    kernel fences once per thread after its last block). Not inlined: one compiled copy
    serves every kind and mode."""
    if stream:
        stream_copy_unfenced(g, grad)
    else:
        for k in range(grad.size):
            g[k] = grad[k]


def run_block(kind, prm, p, t, g, wb, pwb, lb, sc, ones_t, ahead, has_w, has_pw, has_loss, scale,
              gscale, mode, stream):
    """One block of kind ``kind`` (an integer constant), in jitted code, for the call's
    ``mode`` (0 value only, 1 gradient into ``g``, 2 gradient in place: ``g`` is ``p``).
    ``sc`` is this thread's scratch, three blocks long. In mode 1 the gradient is computed
    into scratch and then copied out, with non-temporal stores if ``stream``. ``ahead``: the
    inputs from the block's start on, for prefetching (see :func:`_split_block`)."""
    raise NotImplementedError("for jitted code only")


_ELEMENTS = (_squared, _absolute, _huber, _bce_logits, _bce_prob)
_FUSED = (True, True, True, False, False)  # memory-bound kinds: _fused_block


@overload(run_block, prefer_literal=True,
          jit_options={**HELPER_OPTIONS, "forceinline": False})
def _run_block_for_kind(kind, prm, p, t, g, wb, pwb, lb, sc, ones_t, ahead, has_w, has_pw,
                        has_loss, scale, gscale, mode, stream):
    # Dispatching on the kind here, at typing time, compiles only that kind's math into its
    # branch of the kernel, and keeps the kernel free of dispatcher-valued closure variables
    # (Numba cannot hash those into a stable cache key).
    if not isinstance(kind, types.IntegerLiteral):
        return None
    element = _ELEMENTS[kind.literal_value]

    # In place (mode 2), the block of predictions is first copied into scratch: a loop that
    # reads and writes `g` would fail LLVM's runtime overlap check and run the scalar
    # fallback loop; the copy costs far less than the block's memory traffic.

    def fused(kind, prm, p, t, g, wb, pwb, lb, sc, ones_t, ahead, has_w, has_pw, has_loss,
              scale, gscale, mode, stream):
        prefer_wide_vectors()
        m = p.size
        if mode == 2:
            p = sc[2 * BLOCK:2 * BLOCK + m]
            for k in range(m):
                p[k] = g[k]
        lout = lb if has_loss else sc[:m]
        grad = g if mode == 2 else sc[BLOCK:BLOCK + m]
        acc = _fused_block(element, prm, p, t, grad, wb, lout, scale, ahead, has_w)
        if mode == 1:
            _write_out(g, grad, stream)
        return acc

    def split(kind, prm, p, t, g, wb, pwb, lb, sc, ones_t, ahead, has_w, has_pw, has_loss,
              scale, gscale, mode, stream):
        prefer_wide_vectors()
        m = p.size
        ls = sc[:m]
        pws = ones_t[:m]
        if has_pw:
            pws = sc[BLOCK:BLOCK + m]
            for k in range(m):
                pws[k] = cast_like(pwb[k], gscale)
        if mode == 0:
            return _split_block(element, prm, p, t, p, wb, lb, ls, pws, ahead, has_w, has_pw,
                                has_loss, scale, gscale, False)
        # Both gradient modes compute into scratch and copy out (in place, `p` is `g`'s
        # memory, read in full before the copy-out overwrites it): one compiled copy of the
        # loop for both, which keeps the kernel's compile time down.
        grad = sc[2 * BLOCK:2 * BLOCK + m]
        acc = _split_block(element, prm, p, t, grad, wb, lb, ls, pws, ahead, has_w, has_pw,
                           has_loss, scale, gscale, True)
        _write_out(g, grad, stream)
        return acc

    return fused if _FUSED[kind.literal_value] else split


@helper
def _ordered_sum(sums):
    """Block sums added in block order (no reassociation): thread-count independent."""
    total = 0.0
    for b in range(sums.size):
        total += sums[b]
    return total


@njit(inline="always", error_model="numpy")
def _one_block(kind, b, p, t, g, w, pw, lout, ones, ones_t, scratch, prm, scale, gscale, has_w,
               has_pw, has_loss, mode, stream):
    """Block ``b`` of a call: slice every array to the block, run the kind's block routine."""
    n = p.size
    lo = b * BLOCK
    hi = min(lo + BLOCK, n)
    m = hi - lo
    at = 3 * BLOCK * get_thread_id()
    sc = scratch[at:at + 3 * BLOCK]
    wb = w[lo:hi] if has_w else ones[:m]
    pwb = pw[lo:hi] if has_pw else ones[:m]
    lb = lout[lo:hi] if has_loss else lout[:m]
    pb = p[lo:hi]
    tb = t[lo:hi]
    gb = g[lo:hi]
    ahead = (p[lo:], t[lo:], w[lo:] if has_w else ones[:m], pw[lo:] if has_pw else ones[:m])
    if kind == SQUARED:
        return run_block(SQUARED, prm, pb, tb, gb, wb, pwb, lb, sc, ones_t, ahead, has_w,
                         has_pw, has_loss, scale, gscale, mode, stream)
    if kind == ABSOLUTE:
        return run_block(ABSOLUTE, prm, pb, tb, gb, wb, pwb, lb, sc, ones_t, ahead, has_w,
                         has_pw, has_loss, scale, gscale, mode, stream)
    if kind == HUBER:
        return run_block(HUBER, prm, pb, tb, gb, wb, pwb, lb, sc, ones_t, ahead, has_w,
                         has_pw, has_loss, scale, gscale, mode, stream)
    if kind == BCE_LOGITS:
        return run_block(BCE_LOGITS, prm, pb, tb, gb, wb, pwb, lb, sc, ones_t, ahead, has_w,
                         has_pw, has_loss, scale, gscale, mode, stream)
    return run_block(BCE_PROB, prm, pb, tb, gb, wb, pwb, lb, sc, ones_t, ahead, has_w, has_pw,
                     has_loss, scale, gscale, mode, stream)


def _make_kernel():
    """The parallel kernel of all kinds (one compiled signature per float type).

    One kernel rather than one per kind: most of a parallel kernel's compile time (about
    1.5 s of ~2 s here) is Numba's fixed cost for the ``prange`` shell, not the kind's math,
    so five kinds in one kernel compile in about 2/3 of the time of five kernels (measured:
    8 s vs 12 s CPU per float type, cold), at the price of compiling all kinds on the first
    call of any. ``kind`` dispatches once per block to the per-kind block routine.
    """
    stamp = SOURCE_STAMP

    @njit(parallel=True, cache=CACHE, nogil=True, error_model="numpy")
    def kernel(kind, p, t, g, w, pw, lout, ones, ones_t, prm, scale, has_w, has_pw, has_loss,
               mode, stream, n_threads):
        # mode: 0 value only, 1 gradient into g, 2 gradient in place (g is p). n_threads: the
        # thread count run() set, so get_thread_id() < n_threads.
        _ = stamp  # part of the cache key: recompile when any source file changes
        n = p.size
        nblocks = (n + BLOCK - 1) // BLOCK
        sums = np.empty(nblocks)
        # per-thread L1 scratch: losses | pos_weight in the float type | in-place copy
        scratch = np.empty(3 * BLOCK * n_threads, p.dtype)
        gscale = cast_like(1.0 if has_w else scale, prm[0])
        if nblocks == 1 or n < SERIAL_WORK:  # the serial branch (see elementwise())
            for b in range(nblocks):
                sums[b] = _one_block(kind, b, p, t, g, w, pw, lout, ones, ones_t, scratch, prm,
                                     scale, gscale, has_w, has_pw, has_loss, mode, stream)
            store_fence()
        else:
            # One contiguous run of blocks per thread (what prange's static schedule would
            # give), so that each thread fences its streamed stores once, after its last block.
            parts = min(n_threads, nblocks)
            for part in prange(parts):
                for b in range(part * nblocks // parts, (part + 1) * nblocks // parts):
                    sums[b] = _one_block(kind, b, p, t, g, w, pw, lout, ones, ones_t, scratch,
                                         prm, scale, gscale, has_w, has_pw, has_loss, mode,
                                         stream)
                store_fence()
        return _ordered_sum(sums)

    return kernel


#: The kernel of every kind, compiled lazily (or by :func:`warmup`) once per float type.
KERNEL = _make_kernel()

# Inputs reach the kernel read-only (see _runtime.read_only), the stand-ins too.
_ONES = _frozen(np.ones(BLOCK))
_ONES_T = {np.dtype(np.float32): _frozen(np.ones(BLOCK, np.float32)),
           np.dtype(np.float64): _frozen(np.ones(BLOCK, np.float64))}
# Stand-ins for absent optional arrays. A stand-in for an output is BLOCK long so that the
# address range a loop could touch lies inside it (no spurious overlap with a real input,
# which would make LLVM's runtime alias check pick the scalar loop).
_DUMMY_OUT = {np.dtype(np.float32): np.zeros(BLOCK, np.float32),
              np.dtype(np.float64): np.zeros(BLOCK, np.float64)}


def _arguments(job: ElementwiseJob) -> tuple:
    p = job.pred
    dtype = p.dtype
    eps = job.smoothing
    prm = scalars(dtype, (job.delta, 1.0 - eps, 0.5 * eps, job.clip_lo, job.clip_hi))
    g = job.grad_out
    if g is None:
        mode, g = 0, _DUMMY_OUT[dtype]  # never written
    elif g is p or np.may_share_memory(g, p):  # (by the contract: g is p's memory)
        mode = 2  # the kernel reads the predictions from g
    else:
        mode = 1
    has_w = job.weight is not None
    has_pw = job.pos_weight is not None
    has_loss = job.loss_out is not None
    return (
        _KIND_CODES[job.kind],
        read_only(p),
        read_only(job.target),
        g,
        read_only(job.weight) if has_w else _ONES,
        read_only(job.pos_weight) if has_pw else _ONES,
        job.loss_out if has_loss else _DUMMY_OUT[dtype],
        _ONES,
        _ONES_T[dtype],
        prm,
        float(job.scale),
        has_w,
        has_pw,
        has_loss,
        mode,
        mode == 1 and g.nbytes >= STREAM_BYTES,
    )


def elementwise(job: ElementwiseJob) -> float:
    """Run one :class:`~fastloss.backends._jobs.ElementwiseJob` (see the contract)."""
    n = job.pred.size
    # A call of one block, or below SERIAL_WORK, runs the kernel's serial branch (the same
    # test in the kernel), without a parallel region and without switching Numba's thread
    # count (which costs ~7-12 µs, more than such a call). Not for n_threads=1 on a large
    # input: measured, the serial branch over many blocks ran 10-30 % slower than the prange
    # branch on one thread (float32 MSE and BCE, 100 000 elements).
    serial = n <= BLOCK or n < SERIAL_WORK
    return run(KERNEL, _arguments(job), threads_for(job.n_threads, n), not serial)


def kernel_signatures():
    """``(description, kernel, example arguments)`` for every kernel signature, for warmup."""
    for dtype in (np.float32, np.float64):
        x = np.zeros(1, dtype)
        job = ElementwiseJob(kind="squared", pred=x, target=x)
        yield f"elementwise {np.dtype(dtype).name}", KERNEL, _arguments(job) + (1,)
