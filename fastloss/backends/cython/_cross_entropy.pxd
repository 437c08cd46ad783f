# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""(Sparse) categorical cross-entropy over a block of rows, from logits or probabilities.

The formulas are those of :class:`fastloss.backends._jobs.CrossEntropyJob`. Target
coefficients ``c_j = κ_j·(t_j(1-ε) + ε/C)`` (``t = onehot(label)`` for sparse labels),
``W = Σ_j c_j``.

Logits, a block of rows at a time, in phases that each are one simple loop. With
``C >= CE_SMALL_C`` classes (ce_logits_block), a row is long enough for vector loops:

1. per row: ``m = max x`` (first, alone in its loop, so the maxima of several rows overlap);
   then ``W`` and ``Σ c_j z_j`` with ``z_j = x_j - m`` (0 where ``x_j == m``; a term with
   ``c_j = 0`` counts as 0); for soft targets with the gradient, this pass also keeps
   ``w·c_j`` (rounded to the dtype) for step 5, so that the targets are read once (and the
   next block's targets are prefetched with its logits in step 2). Same bits; measured
   (float32, one-hot targets, medians of alternating runs of both builds, loaded machine):
   (256, 1000) one thread 1.44 -> 1.34 ns per element; (8192, 1000) one thread 14.6 -> 14.2 ms;
   (65536, 1000) two threads 121 -> 117 ms. What is left is the float64 arithmetic of c_j
   and of the two sums in this step (~30% of the in-cache time, perf) and the memory;
2. ``e = exp(z)`` written to the row's output buffer: the gradient itself (which may be
   ``x``: in place), or a scratch block for a value-only call or for a gradient too large
   for the caches (then streamed out at the end, see 6);
3. per row: ``s = Σ e`` (float64, lane-wise);
4. over the rows: ``l = W·log(s) - Σ c_j z_j`` (NaN for rows without a limit: all
   ``-inf``, or several ``+inf``), weighted; the gradient factor ``a = scale·w·W/s``;
5. per row: ``g_j = a·e_j - scale·w·c_j``;
6. a scratch-computed gradient is copied out with non-temporal stores. For a block of one
   row (C > CE_BLOCK/2: 8 KiB and more of float32) with sparse labels and no smoothing, steps 5
   and 6 are one pass, ``a·e_j`` (minus the label's term) streamed straight from the scratch
   (stream_scale): measured (float32, (2048, 32000), AVX-512) 2.25 -> 2.05× the np.copyto
   floor on one thread, 1.10 -> 1.00× and 1.53 -> 1.40× in two runs on two threads (same
   bits: tests/backends/test_cython_kernels.py, test_streamed_gradient_equals_in_place).

So the logits are read from memory once and the gradient written once; the passes after the
first touch only the block, which stays in L1/L2, and the next block is prefetched during
step 2. The math is in the input dtype (the exp of float32 logits in float32), every sum in
float64.

With fewer classes (ce_logits_small_block), loops over a row would be mostly remainder and
its max and sums chains of dependent operations: the block of CE_SMALL_ROWS rows is
transposed into a (C, R) scratch, so that the same steps are vector loops over the rows,
one class at a time (rows in the vector lanes), and the gradient is transposed back.
Measured (float32, C = 10, one thread, block in cache, AVX-512), per element: 0.9 ns value
only, 1.35 ns with the gradient; the row-wise loops took 2.1 and 2.8 ns (and 3.9 / 4.6 ns
for soft targets, now 1.2 / 1.7 ns). At C = 64 the row-wise path is the faster one again.

Probabilities, per row: ``S = Σ x`` (float64), then in float64 for both dtypes (no exp here,
and the chain rule through ``q = x/S`` cancels): ``q_j = x_j/S``, ``q̂ = clip(q, lo, hi)``,
``l = -Σ c_j log q̂_j``, ``g_j = -c_j/q̂_j`` inside ``[lo, hi]`` else 0,
``∂l/∂x_j = (g_j - Σ_k g_k q_k)/S``.

Most rows need only the classes with ``c_j != 0``. Call a row *regular* when S is finite and
nonzero, with ``0 < lo`` and ``0 < hi < inf``. Then every x_j is finite (an inf or NaN entry
makes S inf or NaN), so q_j is not NaN and ``log q̂_j`` is finite, and a class with
``c_j = 0`` contributes ``c_j log q̂_j = ±0`` to the loss sum and ``g_j = ±0``. lane_sum's
partial sums start at +0 and are never -0 (round to nearest), so adding ±0 changes none of
them: such a term is left out without its log (the general loop, for regular rows), and for
sparse labels without smoothing and with finite class weights (every ``c_j = 0`` off the
label) the row is the label's class alone (ce_probabilities_label_row): the loss
``-w·(0 + c_y log q̂_y)``, ``Σ g q = 0 + g_y q_y`` (the other ``g_j q_j`` are ±0 as long as
q_j is finite: always for float32, where ``|x| < 2^128`` and a nonzero S of float32 values
is at least ``2^-149``; checked through ``max |x_j|`` for float64), and the gradient
``f·(0 - Σ g q)`` off the label, which is ``f·(g_j - Σ g q)`` exactly when ``Σ g q != 0``
(otherwise the row takes the general loop, whose zeros keep the sign of g_j). These are the
general loop's results bit for bit (tests/backends/test_cython_kernels.py,
test_probabilities_label_row_is_the_general_loop). Irregular rows (S NaN, ±inf or 0) take
the general loop, with every term: a NaN q_j makes the row NaN even where ``c_j = 0``.
"""

from cython cimport floating
from libc.math cimport INFINITY, NAN

cdef extern from "_fastmath.h":
    enum: FL_LANES   # lane_sum's lanes; shorter rows are added in two chains

from fastloss.backends.cython._fastmath cimport (
    FL_EXP_GROUP_F32, FL_ONEHOT_ROWS, abs_, exp_nonpos, fl_exp_group_sums_f32, fl_log,
    fl_prefetch, fl_short_onehot_rows_f32, fl_sum_rows_f64, fl_touch, fl_prob_grad_term,
    fl_prob_loss_term, lane_max,
    gather_cols, lane_sum, shifted, short_row_sums, stream_copy, stream_scale,
    transpose_in_max, transpose_out,
)
from fastloss.backends.cython._modes cimport Mode, Soft, Sparse, Target, WithGrad


cdef enum:
    # Elements per block (at least one row): the unit of work of a thread and of the
    # deterministic reduction. A block of float32 logits (16 KiB) stays in L1.
    CE_BLOCK = 4096
    # Elements of the exp step between two prefetch slices.
    CE_CHUNK = 1024
    # Logits with fewer classes than this take the transposed path (ce_logits_small_block),
    # CE_SMALL_ROWS rows per block (a multiple of every vector width). Measured (float32,
    # (6553600, 10), value only, one thread, AVX-512, CPU time per element, sparse / soft),
    # one run: 256 rows 0.98 / 1.47 ns, 128 rows 0.92 / 1.26, 512 rows 1.16 / 1.77;
    # another: 64 rows 1.03 / 1.41, 128 rows 0.97 / 1.31, 192 rows 0.95 / 1.35.
    # (With 128 rows, a float32 block's logits and their transpose, 1 KiB per class, plus
    # ~11 KiB of per-row arrays fit a 48 KiB L1 up to C ~ 37: arithmetic, not measured.)
    CE_SMALL_C = 64
    CE_SMALL_ROWS = 128
    # Rows of a group of ce_small_group_sums (their sums stay in registers across the
    # classes): a multiple of every vector width.
    CE_SMALL_LANES = 16


cdef struct CEParams:
    Py_ssize_t n              # rows
    Py_ssize_t C              # classes
    Py_ssize_t rows_per_block
    const long long* labels   # Sparse: (n,) int64
    long long ignore_index
    bint ignoring             # whether a label equal to ignore_index is left out
    const double* weight      # (n,) or NULL
    double smoothing
    double kappa_sum          # Σ_j κ_j
    bint unit                 # every κ_j = 1 and ε = 0 (no class weight, no smoothing)
    double lo, hi             # probability clip bounds
    double scale
    bint stream               # logits: compute the block in scratch, stream it to grad


cdef inline bint skipped(const CEParams* a, Py_ssize_t i, char* bad) noexcept nogil:
    """Whether sparse row i is left out: ignored, or a label outside [0, C), which also sets
    ``bad[0]`` so that the call raises. (Every kernel checks every label it reads: the
    shortcut leaves the check to them where a bad call writes nothing of the caller's.)"""
    cdef long long y = a.labels[i]
    if a.ignoring and y == a.ignore_index:
        return True
    if y < 0 or y >= a.C:
        bad[0] = 1
        return True
    return False


cdef inline void block_labels(const CEParams* a, Py_ssize_t r0, Py_ssize_t R, int* lab,
                              char* bad) noexcept nogil:
    """``lab[r]``: the label of row ``r0 + r``, or -1 for a skipped row (see skipped: an
    ignored label, or one outside [0, C), which also sets ``bad[0]``). One loop without
    branches (vectorised), for the blocks that work on the rows' labels as a vector."""
    cdef Py_ssize_t r
    cdef long long y, ignore = a.ignore_index, C = a.C
    cdef bint ignoring = a.ignoring, counted, valid, invalid = False
    for r in range(R):
        y = a.labels[r0 + r]
        valid = (y >= 0) & (y < C)
        counted = (y != ignore) | (ignoring == 0)
        invalid |= counted & (valid == 0)
        lab[r] = <int>y if counted & valid else -1
    if invalid:
        bad[0] = 1


cdef inline void label_entries(const floating* xb, Py_ssize_t C, Py_ssize_t R, const int* lab,
                               const floating* kappa, int* col, floating* xy,
                               floating* ky) noexcept nogil:
    """Per row r of a block (``xb``: its R rows of C values; ``lab``: block_labels'),
    ``col[r]`` its label's class (0 standing in for a skipped row's), ``xy[r] = xb[r·C +
    col[r]]`` and ``ky[r] = kappa[col[r]]``: a hardware gather each per vector of rows
    (gather_cols; κ_y as the column of a "matrix" of row stride 0). GCC left both indexed
    loops scalar (-fwrapv index arithmetic, see gather_cols): measured (float32, (6553600,
    10), value only, perf / one-thread CPU time) 7% of a logits call, and κ_y alone 7.75 ->
    7.4 ns per row from probabilities. (Selecting x_y in the z loop instead, a compare and
    select per element, took twice as long.)"""
    cdef Py_ssize_t r
    for r in range(R):
        col[r] = lab[r] if lab[r] >= 0 else 0
    gather_cols(xb, C, R, col, xy)
    gather_cols(kappa, 0, R, col, ky)


cdef inline void block_weights(const CEParams* a, Py_ssize_t r0, Py_ssize_t R,
                               double* wrow) noexcept nogil:
    """``wrow[r]``: the sample weight of row ``r0 + r`` (1 without weights), in a loop
    without branches (vectorised)."""
    cdef Py_ssize_t r
    if a.weight == NULL:
        for r in range(R):
            wrow[r] = 1
    else:
        for r in range(R):
            wrow[r] = a.weight[r0 + r]


cdef inline double coefficient(floating kappa, double t, double keep_t, double eps_c) noexcept nogil:
    """c = κ·(t(1-ε) + ε/C), given ``keep_t = 1-ε`` and ``eps_c = ε/C``."""
    return kappa * (t * keep_t + eps_c)


cdef inline double unit_or_coefficient(bint unit, floating kappa, double t, double keep_t,
                                       double eps_c) noexcept nogil:
    """coefficient(κ, t, 1-ε, ε/C), computed as ``t + 0`` where ``unit`` (every κ_j = 1 and
    ε = 0): the same value, ``1·(t·1 + 0) = t + 0`` (exact, -0 becoming +0 in both), for
    less float64 work per element. ``unit`` is the same for a whole call, so GCC unswitches
    the loops around it. Measured in ce_logits_block (float32 (65536, 1000) one-hot targets,
    value only, runs alternated with the build before): one thread 78.5-79.0 -> 72.2-74.4 ms,
    two threads 41.3-42.2 -> 39.6-41.2 ms; bits unchanged (60 calls with -0, NaN, ±inf,
    soft targets, smoothing and class weights, on all three instruction sets)."""
    return t + 0.0 if unit else coefficient(kappa, t, keep_t, eps_c)


cdef inline Py_ssize_t ce_rows_per_block(Py_ssize_t C, bint from_logits) noexcept nogil:
    """Rows per block (depends on the sizes only: the block structure of the sums)."""
    if from_logits and C < CE_SMALL_C:
        return CE_SMALL_ROWS
    return max(1, CE_BLOCK // C)


cdef struct Prefetcher:
    # Spreads the prefetch of the next block's rows over the chunks of this block's exp
    # step, so that the memory transfer of block b+1 overlaps the arithmetic of block b
    # (between its first pass and the next block's, a block touches only cached data).
    const char* read
    const char* read2       # the next block's soft target rows (NULL: none)
    char* write             # the next block's gradient rows (NULL: none, or in place)
    Py_ssize_t left, step   # bytes


cdef inline void prefetch_next(Prefetcher* p) noexcept nogil:
    cdef Py_ssize_t nbytes = p.step if p.step < p.left else p.left
    if nbytes > 0:
        fl_prefetch(p.read, nbytes, 0)
        if p.read2 != NULL:
            fl_prefetch(p.read2, nbytes, 0)
            p.read2 += nbytes
        if p.write != NULL:
            fl_prefetch(p.write, nbytes, 1)
            p.write += nbytes
        p.read += nbytes
        p.left -= nbytes


cdef inline void ce_finish_rows(
    const Mode* mode, Py_ssize_t R, double scale, const double* wrow, const double* keep,
    const double* rmax, const double* ssum, const double* zsum, double* wsum, double* lrow,
) noexcept nogil:
    """Row losses and gradient factors from the per-row sums (one vectorisable loop):
    ``lrow = w·(W·log(s) - Σ c z)`` (0 for a skipped row) and, with the gradient, over
    ``wsum`` (W) ``a = scale·w·W/s``; both NaN for a row without a limit (its max is -inf,
    or +inf with s > 1: several +inf entries)."""
    cdef Py_ssize_t r
    cdef double w, lr
    cdef bint undefined
    for r in range(R):
        w = wrow[r]
        lr = wsum[r] * fl_log(ssum[r]) - zsum[r]
        undefined = (rmax[r] == -INFINITY) | ((rmax[r] == INFINITY) & (ssum[r] > 1))
        if Mode is WithGrad:
            # A NaN factor makes the whole gradient row NaN.
            wsum[r] = NAN if undefined else scale * w * wsum[r] / ssum[r]
        lr = NAN if undefined else lr
        lrow[r] = w * lr if keep[r] != 0 else 0   # skipped rows count exactly 0


cdef inline double ce_logits_block(
    const CEParams* a, const Target* target_kind, const Mode* mode,
    Py_ssize_t r0, Py_ssize_t r1,
    const floating* pred, const floating* target, const floating* kappa,
    floating* grad, floating* loss_out,
    floating* scratch, double* tmp, double* rows, char* bad,
) noexcept nogil:
    """Σ of the weighted losses of rows [r0, r1) from logits, C >= CE_SMALL_C (see the
    module docstring).

    ``scratch``: (r1-r0)·C values (used when ``grad`` is NULL or ``a.stream``: then the
    finished block is copied to ``grad`` with non-temporal stores); ``tmp``: 2·C doubles,
    followed for soft targets by (r1-r0)·C values;
    ``rows``: 7·(r1-r0) doubles. Sets ``bad[0]`` for a label outside [0, C) (such a row is
    treated as ignored: no out-of-bounds access whatever the labels).
    """
    cdef Py_ssize_t C = a.C, R = r1 - r0, r, j, j0, j1, i
    cdef floating* buf = grad + r0 * C if grad != NULL and not a.stream else scratch
    cdef double* zsum = rows            # Σ c_j z_j
    cdef double* wsum = rows + R        # W, then the gradient factor a
    cdef double* ssum = rows + 2 * R    # s = Σ exp(z)
    cdef double* rmax = rows + 3 * R    # m
    cdef double* lrow = rows + 4 * R    # weighted row losses
    cdef double* keep = rows + 5 * R    # 0 for a skipped row (ignored label), else 1
    cdef double* wrow = rows + 6 * R    # sample weight
    cdef const floating* x
    cdef const floating* t
    cdef floating* z
    cdef floating m, af, bf, cy
    cdef bint streamed = False     # the gradient is out already (fused step 5 and 6)
    cdef long long y = 0
    # struct fields as locals: stores to the double row arrays could alias them otherwise
    cdef double eps_c = a.smoothing / C, keep_y = 1 - a.smoothing, kappa_sum = a.kappa_sum
    cdef double scale = a.scale, coef_y, w, c
    cdef Prefetcher pf
    cdef Py_ssize_t next_rows = min(R, a.n - r1), chunks
    cdef bint unit = a.unit
    # soft targets: w·c_j per element of the block, rounded (step 1b for step 5)
    cdef floating* cwb = <floating*>(tmp + 2 * C)

    # 1a. per row: weight, skip, max. Nothing else in this loop, so the maxima of several
    #     (short) rows are computed at once: each is a chain of dependent max operations.
    for r in range(R):
        i = r0 + r
        x = pred + i * C
        wrow[r] = 1 if a.weight == NULL else a.weight[i]
        keep[r] = 1
        if Target is Sparse:
            if skipped(a, i, bad):
                keep[r] = rmax[r] = 0
                continue
        rmax[r] = lane_max(x, C)

    # 1b. per row: W and Σ c z (z computed on the fly from x and m).
    for r in range(R):
        i = r0 + r
        x = pred + i * C
        m = <floating>rmax[r]
        zsum[r] = wsum[r] = 0
        if keep[r] == 0:
            continue
        if Target is Sparse:
            y = a.labels[i]
            coef_y = kappa[y] * keep_y
            zsum[r] = 0 if coef_y == 0 else coef_y * shifted(x[y], m)
            wsum[r] = coef_y + eps_c * kappa_sum
            if eps_c != 0:
                for j in range(C):
                    tmp[j] = 0 if kappa[j] == 0 else kappa[j] * shifted(x[j], m)
                zsum[r] += eps_c * lane_sum(tmp, C)
        else:
            t = target + i * C
            if Mode is WithGrad:
                # with step 5's rounded w·c_j, so that the targets are read once
                w = scale * wrow[r]
                z = cwb + r * C
                for j in range(C):
                    c = unit_or_coefficient(unit, kappa[j], t[j], keep_y, eps_c)
                    tmp[j] = c
                    tmp[C + j] = 0 if c == 0 else c * shifted(x[j], m)
                    z[j] = <floating>(w * c)
            else:
                for j in range(C):
                    c = unit_or_coefficient(unit, kappa[j], t[j], keep_y, eps_c)
                    tmp[j] = c
                    tmp[C + j] = 0 if c == 0 else c * shifted(x[j], m)
            wsum[r] = lane_sum(tmp, C)
            zsum[r] = lane_sum(tmp + C, C)

    # 2. e = exp(z) into the output rows (in place over x when grad is pred), a chunk at a
    #    time, each chunk preceded by a share of the next block's prefetch.
    chunks = R * ((C + CE_CHUNK - 1) // CE_CHUNK)
    pf.read = <const char*>(pred + r1 * C)
    pf.read2 = NULL
    if Target is not Sparse:
        pf.read2 = <const char*>(target + r1 * C)
    pf.write = NULL
    if grad != NULL and <const void*>grad != <const void*>pred and not a.stream:
        pf.write = <char*>(grad + r1 * C)
    pf.left = next_rows * C * sizeof(floating)
    pf.step = (pf.left // chunks + 63) // 64 * 64 if chunks > 0 else 0
    for r in range(R):
        if keep[r] != 0:
            x = pred + (r0 + r) * C
            z = buf + r * C
            m = <floating>rmax[r]
            j0 = 0
            while j0 < C:
                prefetch_next(&pf)
                j1 = min(j0 + CE_CHUNK, C)
                for j in range(j0, j1):
                    z[j] = exp_nonpos(shifted(x[j], m))
                j0 = j1
    prefetch_next(&pf)   # whatever is left (skipped rows)
    pf.step = pf.left
    prefetch_next(&pf)

    # 3. s = Σ e per row.
    for r in range(R):
        ssum[r] = lane_sum(buf + r * C, C) if keep[r] != 0 else 1

    # 4. row losses and gradient factors.
    ce_finish_rows(mode, R, scale, wrow, keep, rmax, ssum, zsum, wsum, lrow)

    # 5. gradient: g = a·e - scale·w·c.
    if Mode is WithGrad:
        for r in range(R):
            i = r0 + r
            z = buf + r * C
            if keep[r] == 0:
                for j in range(C):
                    z[j] = 0
                continue
            w = scale * wrow[r]
            af = <floating>wsum[r]
            if Target is Sparse:
                # c_j = κ_j·ε/C + [j = y]·κ_y(1-ε); the label's term is subtracted inside
                # the loop (a scalar update after it would stall on store forwarding).
                bf = <floating>(w * eps_c)
                y = a.labels[i]
                cy = <floating>(w * kappa[y] * keep_y)
                if bf == 0 and a.stream and R == 1:
                    # The same, straight to the output with non-temporal stores: one
                    # pass over the row less (a block of one row: C > CE_BLOCK/2; with
                    # several rows, a row's ends would be partial cache lines).
                    stream_scale(grad + i * C, z, af, C, y, cy)
                    streamed = True
                elif bf == 0:
                    # Fast path (no smoothing): only the label's c_j is nonzero,
                    # so the loop is a scale and the label's term one scalar update.
                    for j in range(C):
                        z[j] = z[j] * af
                    z[y] -= cy
                else:
                    for j in range(C):
                        z[j] = z[j] * af - bf * kappa[j] - (cy if j == y else 0)
            else:
                t = cwb + r * C     # <floating>(w·c_j), from step 1b
                for j in range(C):
                    z[j] = z[j] * af - t[j]

    if Mode is WithGrad:
        if a.stream and not streamed:
            stream_copy(grad + r0 * C, buf, R * C)

    if loss_out != NULL:
        for r in range(R):
            loss_out[r0 + r] = <floating>lrow[r]
    return lane_sum(lrow, R)


cdef inline Py_ssize_t ce_small_scratch(Py_ssize_t C, Py_ssize_t R) noexcept nogil:
    """Values of ``scratch`` that ce_logits_small_block needs for a block of R rows."""
    return 3 * C * R + 8 * R


cdef inline void ce_small_group_sums(
    const Mode* mode, Py_ssize_t C, Py_ssize_t R, Py_ssize_t g, Py_ssize_t n,
    floating* xt, const floating* mrow, double* ssum,
) noexcept nogil:
    """Step 3's exp of ce_logits_small_block for the rows [g, g + n) of the transposed block
    (n <= CE_SMALL_LANES; row stride R): ``ssum = Σ_j e_j`` with ``e = exp(z)``, ``z =
    shifted(x, m)`` (e written over ``xt`` with the gradient), in float64 from +0 in class
    order: the same additions as a loop over the classes with the rows inside. Here the
    classes are the inner loop, and with ``n = CE_SMALL_LANES`` (a constant once inlined)
    the group's sums and maxima stay in vector registers across it. A whole group of float32
    in the AVX-512 build takes fl_exp_group_sums_f32 (_fastmath.h: the same exp and sums bit
    for bit, the 2^n scaling in one instruction; tests/backends/test_cython_kernels.py,
    test_small_class_groups_equal_the_remainder_rows)."""
    cdef double s[CE_SMALL_LANES]
    cdef floating m[CE_SMALL_LANES]
    cdef Py_ssize_t j, l
    cdef floating* col
    cdef floating e
    if floating is float:
        if FL_EXP_GROUP_F32 and n == CE_SMALL_LANES:
            fl_exp_group_sums_f32(xt + g, R, C, mrow + g, ssum + g, Mode is WithGrad)
            return
    for l in range(n):
        s[l] = 0
        m[l] = mrow[g + l]
    for j in range(C):
        col = xt + j * R + g
        for l in range(n):
            e = exp_nonpos(shifted(col[l], m[l]))
            if Mode is WithGrad:
                col[l] = e
            s[l] += e
    for l in range(n):
        ssum[g + l] = s[l]


cdef inline double ce_logits_small_block(
    const CEParams* a, const Target* target_kind, const Mode* mode,
    Py_ssize_t r0, Py_ssize_t r1,
    const floating* pred, const floating* target, const floating* kappa,
    floating* grad, floating* loss_out,
    floating* scratch, double* rows, char* bad,
) noexcept nogil:
    """ce_logits_block for few classes (C < CE_SMALL_C), with the rows in the vector lanes.

    The block's logits are transposed into a (C, R) scratch ``xt`` (``xt[j·R + r] =
    x[r, j]``), so that every step is a loop over the R rows for one class at a time, which
    vectorises whatever C is (a loop over a row of 10 classes would be mostly remainder, and
    its max and sums chains of dependent operations):

    1. ``xt`` ← x, and the running row maximum m (one pass; soft targets transposed too);
    2. per row: weight, label (skip), ``W``, ``c_y·z_y``;
    3. ``Σ c_j z_j`` over the classes (soft targets, or smoothing), then e = exp(z) (into
       ``xt`` for the gradient) and ``s += e``: every row sum in float64, in class order;
       z = x - m is formed where it is used (a loop storing it cost ~10% of a value-only
       call streaming from memory). The exp a group of CE_SMALL_LANES rows at a time, the
       classes inside (ce_small_group_sums): the group's sums stay in registers;
    4. row losses and gradient factors (ce_finish_rows, as in ce_logits_block);
    5. ``xt`` ← g = a·e - scale·w·c, 0 for a skipped row;
    6. g transposed back into the gradient rows (or a row-major scratch streamed out).

    The next block's logits and labels (targets) are prefetched a share per group in step 3,
    a few cache lines in flight at a time. Measured (float32, (6553600, 10), one thread,
    AVX-512, CPU time, min of 5, interleaved with the previous version, which prefetched a
    whole block at once, stored z in a pass of its own, had a per-row loop GCC left scalar
    and 256-row blocks): value only 68.8 -> 56.3 ms sparse, 116.5 -> 77.2 ms soft; with the
    gradient 110.2 -> 98.9 ms and 166.1 -> 131.3 ms (np.sum of the logits: 23.1 ms).
    Then (same case, value only, one thread, CPU time, min of 15 calls, three runs
    alternating with the previous build, loaded machine) the exp in groups of rows (with
    AVX-512's VSCALEFPS, fl_exp_group_sums_f32), x_y and κ_y by gather_cols, and the
    transpose in by 64-bit gathers of two classes (fl_transpose_in_max_f32): sparse
    51.6-53.7 -> 42.2-44.5 ms, one-hot targets 73.7-74.7 -> 66.4-66.7 ms. (A prefetch a
    line per class inside the group, the block read once with fl_touch before the
    transpose, or prefetching two blocks ahead: no gain or slower, not kept.)

    ``scratch``: ce_small_scratch(C, R) values; ``rows``: 7·R doubles. ``grad`` may be
    ``pred``: the block's x is read in steps 1-2 and its rows written only in step 6.
    """
    cdef Py_ssize_t C = a.C, R = r1 - r0, r, j, i
    cdef const floating* xb = pred + r0 * C
    cdef const floating* tb = target + r0 * C if target != NULL else NULL
    cdef floating* xt = scratch                  # (C, R): x, e, then g
    cdef floating* tt = scratch + C * R          # (C, R): soft targets
    cdef floating* gout = scratch + 2 * C * R    # (R, C): a gradient to stream
    cdef floating* mrow = scratch + 3 * C * R    # m
    cdef floating* af = mrow + R                 # the gradient factor a
    cdef floating* bf = af + R                   # scale·w·ε/C (sparse)
    cdef floating* cy = bf + R                   # scale·w·κ_y(1-ε) (sparse)
    cdef floating* xy = cy + R                   # x_y (sparse)
    cdef floating* ky = xy + R                   # κ_y (sparse)
    cdef int* lab = <int*>(ky + R)               # label, -1 for a skipped row
    cdef int* lcol = lab + R                     # label, 0 for a skipped row
    cdef double* zsum = rows            # Σ c_j z_j
    cdef double* wsum = rows + R        # W, then the gradient factor a
    cdef double* ssum = rows + 2 * R    # s = Σ exp(z)
    cdef double* rmax = rows + 3 * R    # m
    cdef double* lrow = rows + 4 * R    # weighted row losses; Σ κ_j z_j in step 3
    cdef double* keep = rows + 5 * R    # 0 for a skipped row, else 1
    cdef double* wrow = rows + 6 * R    # sample weight
    cdef floating* col
    cdef const floating* tcol
    cdef floating v, m, kj, e
    cdef int jl
    cdef Py_ssize_t next_rows, g, groups
    cdef Prefetcher pf, pft
    cdef double eps_c = a.smoothing / C, keep_y = 1 - a.smoothing, kappa_sum = a.kappa_sum
    cdef double scale = a.scale, w, coef_y, c

    # 1. transpose in, with the running maximum (NaN is never > m: a NaN row still gets
    #    NaN through its z; an all-NaN or all -inf row keeps m = -inf, "no limit").
    transpose_in_max(xb, C, R, xt, R, mrow)
    if Target is Soft:
        transpose_in_max(tb, C, R, tt, R, af)   # (af: not needed until step 5)
    # The next block's inputs, while this one computes from the cache: a share per class
    # in step 3, so that few cache lines are in flight at once (all at once, the
    # prefetches of a block stall the core when memory is the bottleneck).
    next_rows = min(R, a.n - r1)
    pf.read = <const char*>(pred + r1 * C)
    pf.read2 = NULL
    pf.write = NULL
    pf.left = next_rows * C * sizeof(floating)
    pft.read = <const char*>(target + r1 * C) if Target is Soft else <const char*>(a.labels + r1)
    pft.read2 = NULL
    pft.write = NULL
    pft.left = next_rows * (C * sizeof(floating) if Target is Soft else sizeof(long long))

    # 2. per row: weight, label (skip), W and c_y·z_y; the gradient's per-row constants.
    #    Loops without branches (a random ignored label would mispredict), each vectorised.
    block_weights(a, r0, R, wrow)
    if Target is Soft:
        for r in range(R):
            keep[r] = 1
            rmax[r] = mrow[r]
            zsum[r] = wsum[r] = 0
    else:
        block_labels(a, r0, R, lab, bad)

        label_entries(xb, C, R, lab, kappa, lcol, xy, ky)
        # Per row, in loops of few arrays each (one loop storing to all of them has more
        # possible overlaps than GCC checks at run time: it stayed scalar, 7 cycles a row).
        for r in range(R):
            keep[r] = 1 if lab[r] >= 0 else 0
            rmax[r] = mrow[r] if lab[r] >= 0 else 0
        for r in range(R):
            coef_y = ky[r] * keep_y
            zsum[r] = 0 if coef_y == 0 else coef_y * shifted(xy[r], mrow[r])
            wsum[r] = coef_y + eps_c * kappa_sum
        if Mode is WithGrad:
            for r in range(R):
                w = scale * wrow[r]
                bf[r] = <floating>(w * eps_c)
                cy[r] = <floating>(w * (ky[r] * keep_y))

    # 3. Σ c_j z_j (a term with c_j = 0 counts as 0), then e = exp(z) and s = Σ e, with
    #    z = shifted(x, m) computed where it is used (no pass storing it).
    if Target is Sparse:
        if eps_c != 0:
            for r in range(R):
                lrow[r] = 0
            for j in range(C):
                kj = kappa[j]
                if kj != 0:
                    col = xt + j * R
                    for r in range(R):
                        lrow[r] += kj * shifted(col[r], mrow[r])
            for r in range(R):
                zsum[r] += eps_c * lrow[r]
    else:
        for j in range(C):
            kj = kappa[j]
            col = xt + j * R
            tcol = tt + j * R
            for r in range(R):
                c = coefficient(kj, tcol[r], keep_y, eps_c)
                wsum[r] += c
                zsum[r] += 0 if c == 0 else c * shifted(col[r], mrow[r])
    # The exp a group of rows at a time (the row sums in registers across the classes);
    # the next block's inputs prefetched a share per group.
    groups = (R + CE_SMALL_LANES - 1) // CE_SMALL_LANES
    pf.step = (pf.left // groups + 63) // 64 * 64
    pft.step = (pft.left // groups + 63) // 64 * 64
    g = 0
    while g + CE_SMALL_LANES <= R:
        prefetch_next(&pf)
        prefetch_next(&pft)
        ce_small_group_sums(mode, C, R, g, CE_SMALL_LANES, xt, mrow, ssum)
        g += CE_SMALL_LANES
    if g < R:
        ce_small_group_sums(mode, C, R, g, R - g, xt, mrow, ssum)
    pf.step = pf.left
    pft.step = pft.left
    prefetch_next(&pf)
    prefetch_next(&pft)

    # 4. row losses and gradient factors.
    for r in range(R):
        ssum[r] = ssum[r] if keep[r] != 0 else 1
    ce_finish_rows(mode, R, scale, wrow, keep, rmax, ssum, zsum, wsum, lrow)

    if Mode is WithGrad:
        # 5. g = a·e - scale·w·c, in the transposed block.
        for r in range(R):
            af[r] = <floating>wsum[r]
        for j in range(C):
            kj = kappa[j]
            col = xt + j * R
            if Target is Sparse:
                # c_j = κ_j·ε/C + [j = y]·κ_y(1-ε); an int class index (the labels' width)
                jl = <int>j
                for r in range(R):
                    v = col[r] * af[r] - bf[r] * kj - (cy[r] if lab[r] == jl else 0)
                    col[r] = v if lab[r] >= 0 else 0
            else:
                tcol = tt + j * R
                for r in range(R):
                    col[r] = col[r] * af[r] - <floating>(
                        scale * wrow[r] * coefficient(kj, tcol[r], keep_y, eps_c))
        # 6. transpose out (after every read of this block's x: grad may be pred).
        transpose_out(xt, R, C, R, gout if a.stream else grad + r0 * C)
        if a.stream:
            stream_copy(grad + r0 * C, gout, R * C)

    if loss_out != NULL:
        for r in range(R):
            loss_out[r0 + r] = <floating>lrow[r]
    return lane_sum(lrow, R)


cdef inline bint regular_sum(double S) noexcept nogil:
    """Whether a row sum S is finite and nonzero (a "regular" row, module docstring)."""
    return (S != 0) & (S - S == 0)


cdef inline bint one_term_rows(Py_ssize_t R, const int* code, const double* ssum) noexcept nogil:
    """Whether every row of a block is regular (regular_sum of its S) and has at most one
    counted class (``code[r]``: Σ (1 + 16j) over them, its low 4 bits the count). One loop
    without branches (vectorised)."""
    cdef Py_ssize_t r
    cdef bint ok = True
    for r in range(R):
        ok &= ((code[r] & 15) <= 1) & regular_sum(ssum[r])
    return ok


cdef inline bint ce_probabilities_label_row(
    const Mode* mode, const floating* x, Py_ssize_t C, long long y, double S, double q,
    double ly, double gy, double fw, double w, floating* out, double* lrow,
) noexcept nogil:
    """A regular row of sparse labels whose other classes have ``c_j = 0`` (no smoothing,
    finite class weights): the loss and gradient of the general loop from the label's class
    alone (module docstring), given ``q = x_y/S``, ``ly = c_y log q̂_y`` and ``gy = g_y``
    (computed for a block of rows in vector loops); ``fw = scale·w``. Returns False, having
    written nothing, where the specialisation does not apply with the gradient: ``Σ g q = 0``
    (then the other entries ``f·(±0 - Σ g q)`` keep the sign of their ±0), or, for float64,
    an ``x_j/S`` that overflows (its ``0·inf`` would make the row NaN)."""
    cdef Py_ssize_t j
    cdef double gq, f, amax
    cdef floating fill
    if Mode is WithGrad:
        gq = 0.0 + gy * q
        if gq == 0:
            return False
        if floating is double:
            # q_j = x_j/S is finite for every j iff it is for max |x_j| (division is monotone).
            amax = 0
            for j in range(C):
                amax = amax if amax >= abs_(x[j]) else abs_(x[j])
            if not (amax / abs_(S) < INFINITY):
                return False
        f = fw / S
        fill = <floating>(f * (0 - gq))
        gy = f * (gy - gq)
        for j in range(C):      # after every read of x (out may be x)
            out[j] = fill
        out[y] = <floating>gy
    lrow[0] = -w * (0.0 + ly)
    return True


cdef inline Py_ssize_t ce_probabilities_scratch(
    Py_ssize_t C, Py_ssize_t R, bint sparse, bint with_grad
) noexcept nogil:
    """Values of scratch a block of ce_probabilities_block needs: the transposed targets of
    ce_probabilities_short_value (dense, value only, C < FL_LANES), else none."""
    return R * C if (not sparse) and (not with_grad) and C < FL_LANES else 0


cdef inline double ce_probabilities_short_value(
    const CEParams* a, Py_ssize_t r0, Py_ssize_t R,
    const floating* pred, const floating* target, const floating* kappa,
    floating* loss_out, double* rows, floating* scratch,
) noexcept nogil:
    """Value only, dense targets, C < FL_LANES: the general loop's loss (ce_probabilities_row)
    of the block's rows; the row sums S (written to ``rows[R:2R]``) and the terms a class at a
    time over the rows of the transposed targets (``scratch``: R·C values).

    First, for float32 without smoothing and with finite class weights, in a build with
    fl_short_onehot_rows' vector path (AVX-512): there ``c_j = κ_j·t_j·(1-ε)`` is ±0 wherever
    ``t_j`` is (κ_j finite), so the classes with ``t_j != 0`` (NaN counts) include those with
    ``c_j != 0``. Where every row of the block is regular with at most one of them (k), the
    row's loss is that of the one-log path below with ``c_k = coefficient(κ_k, t_k)``
    (``c_k`` is the row's only nonzero c_j, or ±0, when the loss is ``-w·(0 + ±0)`` as with
    ``c = Σ c_j = +0`` below), and S, t_k, κ_k, x_k come from one pass of pair gathers over x
    and t (_fastmath.h: no transpose, no loop over the classes here). Otherwise (and in other
    builds or dtypes) the transposed path.

    The coefficients c_j, per row their sum and a code of the number and classes of the
    nonzero ones (adds, no selects: one vector loop). Where every row of the block is regular with at most one nonzero c_j (one-hot
    targets), a row's loss is ``-w·(0 + c_k log q̂_k)`` for that class k (c_k = 0 where there
    is none): in a regular row every other term is ``±0``, which changes none of lane_sum's
    partial sums (module docstring), so its two chains are ``0 + c_k log q̂_k`` and +0: one
    log per row. Otherwise every term ``c_j log q̂_j``, added in lane_sum's two chains (even
    classes, odd classes), as the general loop adds them (in a regular row it adds c_j = ±0
    where this adds ``c_j log q̂_j = ±0``): the same partial sums, so the same bits as
    value_and_grad's value (tests/test_conformance.py, test_value_and_grad_equals_separate_calls;
    it failed while GCC fused the multiply into the sum). Measured (float32, (65536, 10),
    one-hot, one thread, CPU time), every term: 3.99 -> 3.04 ns per element (np.sum 0.26);
    (655360, 10), one thread, AVX-512, per row: every term (strided loads) 33 ns, one log
    per row with a select per class 23.5 ns, with the sums (no selects) about 0.53× the
    every-term time on a loaded machine; the count and class in one sum, 0.87× that again.
    The pair-gather path against that (float32, (6553600, 10) one-hot, AVX-512, medians of
    alternating runs of both builds): two threads 44.4 -> 24.0 ms (one-thread np.sum of the
    same bytes 31 ms), one thread 84.6 -> 45.5 ms; the targets' transpose and the loop over
    them had been ~45% of the samples, the gathers of the row sums ~20% (perf)."""
    cdef Py_ssize_t C = a.C, r, j
    cdef double* lrow = rows
    cdef double* ssum = rows + R
    cdef double* even = rows + 2 * R
    cdef double* odd = rows + 3 * R
    # Per row, the sums Σ c_j and Σ (1 + 16j)·[c_j != 0] (exact: below 2^12), whose low 4
    # bits count the nonzero c_j (C < 16); with at most one nonzero c_k, c_k (or ±0: then 0
    # below) and 16k (+ 1); then the class, as int, and its x.
    cdef double* csel = rows + 2 * R
    cdef double* code = rows + 3 * R
    cdef int* sel = <int*>(rows + 5 * R)
    cdef floating* xs = <floating*>(rows + 6 * R)
    cdef floating* tt = scratch          # tt[j·R + r] = target[(r0 + r)·C + j]
    cdef double* acc
    cdef const floating* xb = pred + r0 * C
    cdef const floating* tcol
    cdef floating kj
    cdef double keep_t = 1 - a.smoothing, eps_c = a.smoothing / C
    cdef double lo = a.lo, hi = a.hi, w, c, step
    cdef bint finite_logs = (lo > 0) & (hi > 0) & (hi < INFINITY)
    cdef bint one_term = False
    # fl_short_onehot_rows' per-row t_k and κ_k
    cdef float* tk = <float*>(rows + 4 * R)
    cdef float* kk = tk + R
    cdef bint fused = False
    if floating is float:
        # Without smoothing and with finite class weights, c_j = κ_j·t_j·(1-ε) is ±0 where
        # t_j is: the classes with t_j != 0 include those with c_j != 0, so where a row has
        # at most one (k), c_k = coefficient(κ_k, t_k) is its one nonzero c_j, if any (where
        # it is ±0 after all, the loss below is -w·(0 + ±0) either way). The row sums and
        # t_k, κ_k, x_k in one pass over x and t as pairs of classes (no transpose).
        if FL_ONEHOT_ROWS and finite_logs and eps_c == 0 and a.kappa_sum - a.kappa_sum == 0:
            fused = True
            fl_short_onehot_rows_f32(xb, target + r0 * C, kappa, C, R, ssum, sel, xs, tk, kk)
            one_term = one_term_rows(R, sel, ssum)
            if one_term:
                for r in range(R):
                    csel[r] = coefficient(kk[r], tk[r], keep_t, eps_c)
    if not fused:
        short_row_sums(xb, C, R, ssum)
    if not one_term:   # (the transposed targets: other builds and dtypes, or a fallback)
        transpose_in_max(target + r0 * C, C, R, tt, R, <floating*>(rows + 6 * R))  # (max unused)
        for r in range(R):
            csel[r] = 0
            code[r] = 0
        for j in range(C):
            kj = kappa[j]
            tcol = tt + j * R
            step = 1 + 16 * j
            for r in range(R):
                c = coefficient(kj, tcol[r], keep_t, eps_c)
                csel[r] += c
                code[r] += step if c != 0 else 0
        for r in range(R):
            sel[r] = <int>code[r]
        one_term = finite_logs and one_term_rows(R, sel, ssum)
        if one_term:
            for r in range(R):
                sel[r] = sel[r] >> 4
            gather_cols(xb, C, R, sel, xs)
    if one_term:
        for r in range(R):
            w = 1 if a.weight == NULL else a.weight[r0 + r]
            lrow[r] = -w * (0.0 + fl_prob_loss_term(xs[r] / ssum[r], csel[r], lo, hi))
    else:
        for r in range(R):
            even[r] = 0
            odd[r] = 0
        for j in range(C):
            acc = even if j % 2 == 0 else odd
            kj = kappa[j]
            tcol = tt + j * R
            for r in range(R):
                lrow[r] = fl_prob_loss_term(
                    xb[r * C + j] / ssum[r], coefficient(kj, tcol[r], keep_t, eps_c), lo, hi)
            for r in range(R):      # a loop of its own: no fused multiply-add into the sum
                acc[r] += lrow[r]
        for r in range(R):
            w = 1 if a.weight == NULL else a.weight[r0 + r]
            lrow[r] = -w * (even[r] + odd[r])
    if loss_out != NULL:
        for r in range(R):
            loss_out[r0 + r] = <floating>lrow[r]
    return fl_sum_rows_f64(lrow, R)


cdef inline double ce_probabilities_row(
    const CEParams* a, const Target* target_kind, const Mode* mode,
    const floating* x, const floating* t, long long y, double S, bint regular, double w,
    const floating* kappa, floating* out, double* clog, double* g,
) noexcept nogil:
    """The general loop of one row from probabilities (module docstring): returns the
    weighted loss ``-w·Σ c_j log q̂_j`` and, with the gradient, writes the row's ``out``
    (which may be x: written after every read). ``clog``, ``g``: C doubles each. In a
    regular row a term with c = 0 is ±0 (c itself stays), which changes no partial sum of
    lane_sum: left out, without its log."""
    cdef Py_ssize_t C = a.C, j
    cdef double c, gq, f, loss
    cdef double keep_t = 1 - a.smoothing, eps_c = a.smoothing / C
    cdef double lo = a.lo, hi = a.hi
    for j in range(C):
        if Target is Sparse:
            c = coefficient(kappa[j], 1.0 if j == y else 0.0, keep_t, eps_c)
        else:
            c = coefficient(kappa[j], t[j], keep_t, eps_c)
        clog[j] = c
        if Mode is WithGrad:
            g[j] = fl_prob_grad_term(x[j] / S, c, lo, hi)
    for j in range(C):
        if not regular or clog[j] != 0:
            clog[j] = fl_prob_loss_term(x[j] / S, clog[j], lo, hi)
    loss = -w * lane_sum(clog, C)
    if Mode is WithGrad:
        for j in range(C):
            clog[j] = g[j] * (x[j] / S)
        gq = lane_sum(clog, C)
        f = a.scale * w / S
        for j in range(C):
            out[j] = <floating>(f * (g[j] - gq))
    return loss


cdef inline double ce_probabilities_block(
    const CEParams* a, const Target* target_kind, const Mode* mode,
    Py_ssize_t r0, Py_ssize_t r1,
    const floating* pred, const floating* target, const floating* kappa,
    floating* grad, floating* loss_out,
    floating* scratch, double* tmp, double* rows, char* bad,
) noexcept nogil:
    """Σ of the weighted losses of rows [r0, r1) from probabilities (module docstring).

    Same buffers as :func:`ce_logits_block`, ``scratch`` of ce_probabilities_scratch values.
    ``grad`` may be ``pred``: a row's x is read by the first two loops and overwritten only by
    the last one.
    """
    cdef Py_ssize_t C = a.C, R = r1 - r0, r, j, i
    cdef double* clog = tmp          # c_j·log q̂_j, then g_j·q_j
    cdef double* g = tmp + C         # g_j
    cdef double* lrow = rows
    cdef const floating* x
    cdef const floating* t = NULL
    cdef floating* out = NULL
    cdef long long y = 0
    cdef double S, w, c
    cdef double keep_t = 1 - a.smoothing, eps_c = a.smoothing / C
    cdef double lo = a.lo, hi = a.hi, scale = a.scale
    cdef bint regular, irregular = False
    # log q̂ is finite for every finite q (q̂ in [lo, hi]) only with 0 < lo, hi < inf.
    cdef bint finite_logs = (lo > 0) & (hi > 0) & (hi < INFINITY)
    # Sparse labels: c_j = 0 off the label (no smoothing, every κ_j finite: Σκ is).
    cdef bint label_only = (eps_c == 0) & (a.kappa_sum - a.kappa_sum == 0)
    cdef double* ssum = rows + R     # S per row
    cdef double* qy = rows + 2 * R   # sparse labels: q_y, c_y log q̂_y, g_y
    cdef double* ly = rows + 3 * R
    cdef double* gy = rows + 4 * R
    cdef int* lab = <int*>(rows + 5 * R)   # the label, -1 for a skipped row
    cdef int* col = lab + R                # the label, class 0 for a skipped row
    cdef double* wrow = rows + 6 * R       # sample weight
    # x_y and κ_y, gathered into arrays of their own (so the loops vectorise), in rows that
    # are written only after they are read
    cdef floating* xy = <floating*>wrow
    cdef floating* ky = <floating*>lrow
    cdef const floating* xb = pred + r0 * C

    # The row sums first, in loops of their own: each is a chain of dependent additions,
    # and here those of several rows overlap. A short row (C < FL_LANES) is added as
    # lane_sum adds it, in two chains (even and odd classes), the rows of a vector at a time
    # (short_row_sums: gathers of one class). Measured (float32, (6553600, 10), sparse,
    # value only, one thread): 122 -> 92 ms (np.sum 19 ms) with loops a class at a time over
    # the rows, which GCC vectorised with a scalar load per element. With the gathers, and
    # the value-only rows below in vector loops (float32, (655360, 10), sparse, one thread,
    # AVX-512, CPU time per row, two runs): 13.2 / 14.6 -> 8.1 / 8.2 ns (np.sum of the
    # same bytes ~4 ns); value_and_grad 17.5 / 18.3 -> 15.6 / 16.3 ns. A prefetch of the next
    # block's inputs spread over the row sums (4 pieces) changed nothing measurable (8.4 ->
    # 8.7 ns, dense 15.9 -> 15.8 ns; (3276800, 10)): not kept.
    if Target is not Sparse and Mode is not WithGrad:
        if C < FL_LANES:   # (with its own row sums)
            return ce_probabilities_short_value(
                a, r0, R, pred, target, kappa, loss_out, rows, scratch)
    if C < FL_LANES:
        if Target is Sparse:
            # The block's x read first with contiguous loads (fl_touch), then by the gathers
            # from L1. Measured (float32, (3276800, 10), value only, one thread, AVX-512, CPU
            # time per row, two runs): sparse 9.0 / 9.1 -> 8.1 / 8.1 ns; dense targets (x
            # alone, or x and t) 12.5 -> 13.1 / 13.8 ns: not there (and slower again with the
            # pair gathers of the dense value-only path). The block's labels are touched too,
            # first (block_labels' first loads of them had ~10% of the samples, perf):
            # (6553600, 10), medians of alternating runs, two threads 24.2 -> 23.0 ms, one
            # thread 7.35 -> 7.1 ns per row (CPU time).
            lab[0] = <int>(fl_touch(a.labels + r0, R * sizeof(long long))   # (kept: used)
                           + fl_touch(xb, R * C * sizeof(floating)))
        short_row_sums(xb, C, R, ssum)
    else:
        for r in range(R):
            ssum[r] = lane_sum(pred + (r0 + r) * C, C)
    if Target is Sparse:
        if label_only and finite_logs:
            # The labels (block_labels), then the label's terms for every row (class 0
            # stands in for a skipped row's), each in a loop without branches (vectorised:
            # the gather of x_y, the logs).
            block_labels(a, r0, R, lab, bad)
            label_entries(xb, C, R, lab, kappa, col, xy, ky)
            for r in range(R):
                qy[r] = xy[r] / ssum[r]
                c = coefficient(ky[r], 1.0, keep_t, eps_c)
                ly[r] = fl_prob_loss_term(qy[r], c, lo, hi)
                if Mode is WithGrad:
                    gy[r] = fl_prob_grad_term(qy[r], c, lo, hi)
            if Mode is not WithGrad:
                # Value only: a regular row's loss is its label's term (module docstring),
                # a skipped row's 0; the irregular rows take the general loop after this one.
                block_weights(a, r0, R, wrow)
                for r in range(R):
                    regular = regular_sum(ssum[r])
                    irregular |= (lab[r] >= 0) & (regular == 0)
                    lrow[r] = -wrow[r] * (0.0 + ly[r]) if (lab[r] >= 0) & regular else 0
                if irregular:
                    for r in range(R):
                        if lab[r] >= 0 and not regular_sum(ssum[r]):
                            lrow[r] = ce_probabilities_row(
                                a, target_kind, mode, xb + r * C, t, lab[r], ssum[r], False,
                                wrow[r], kappa, out, clog, g)
                if loss_out != NULL:
                    for r in range(R):
                        loss_out[r0 + r] = <floating>lrow[r]
                return fl_sum_rows_f64(lrow, R)
    for r in range(R):
        i = r0 + r
        x = pred + i * C
        w = 1 if a.weight == NULL else a.weight[i]
        if Mode is WithGrad:
            out = grad + i * C
        if Target is Sparse:
            y = a.labels[i]
            if skipped(a, i, bad):
                lrow[r] = 0
                if Mode is WithGrad:
                    for j in range(C):
                        out[j] = 0
                continue
        else:
            t = target + i * C
        S = ssum[r]
        regular = finite_logs and regular_sum(S)
        if Target is Sparse:
            if regular and label_only and ce_probabilities_label_row(
                mode, x, C, y, S, qy[r], ly[r], gy[r], scale * w, w, out, lrow + r
            ):
                continue
        lrow[r] = ce_probabilities_row(
            a, target_kind, mode, x, t, y, S, regular, w, kappa, out, clog, g)

    if loss_out != NULL:
        for r in range(R):
            loss_out[r0 + r] = <floating>lrow[r]
    return fl_sum_rows_f64(lrow, R)
