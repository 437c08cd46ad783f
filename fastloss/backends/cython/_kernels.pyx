# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=False
"""Compiled kernels of the Cython backend: job unpacking, blocking and OpenMP threading.

The math lives in ``_elementwise.pxd`` / ``_cross_entropy.pxd`` (scalar functions and block
loops) and ``_fastmath.h`` (exp/log/log1p, lane-wise sums). This module

* checks the arrays of a job cheaply (dtype, shape, contiguity, writability: a malformed
  job raises instead of reaching native code out of bounds),
* splits the work into fixed-size blocks (their boundaries depend on the sizes only),
  runs the blocks with ``prange(num_threads=job.n_threads)`` with the GIL released, or on
  the calling thread for small inputs, and
* adds the block sums in block order, so the result is bitwise the same for any thread
  count;
* offers shortcuts (``elementwise_shortcut``, ``cross_entropy_shortcut``): a canonical call
  without weights checked, allocated and run in one compiled function, with the user's
  arrays and the loss's options instead of a job (see the contract's "Shortcuts").

Kernel arguments never depend on the thread count either: a block is computed the same
way whichever thread runs it.

The same source is compiled three times (``_kernels``: baseline x86-64; ``_kernels_avx2``
and ``_kernels_avx512`` include this file with wider vector ISAs); the package picks one
at import by CPU features (see ``fastloss.backends.cython``).
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, nextafterf
from libc.stdlib cimport calloc, free, malloc

from fastloss.backends.cython._cross_entropy cimport (
    CE_SMALL_C, CEParams, ce_logits_block, ce_logits_small_block, ce_probabilities_block,
    ce_probabilities_scratch, ce_rows_per_block, ce_small_scratch,
)
from fastloss.backends.cython._elementwise cimport (
    EW_AHEAD, EW_BLOCK, Absolute, BceLogits, BceProb, Huber, Loss, Squared, elementwise_block,
)
from fastloss.backends.cython._fastmath cimport (
    exp_, exp_nonpos, fl_cpu_level, fl_mxcsr, fl_sfence, log1m_unit, log1p_, log1p_unit, log_,
    log_unit,
)
from fastloss.backends.cython._modes cimport Mode, Soft, Sparse, Target, ValueOnly, WithGrad

import numpy as np

cnp.import_array()

# Inputs below this many elements run on the calling thread: waking a second OpenMP thread
# costs ~2-3 µs. Measured on the 2-core development machine (AVX-512 build, float32), one
# thread vs two: MSE 5.1 vs 4.9 µs at 16384 elements, 1.4 vs 3.1 µs at 4096; BCE from logits
# and softmax CE (C = 100) 4.8 vs 5.0 µs at 4096 elements, 18.5 vs 11.9 µs at 16384.
cdef Py_ssize_t SERIAL_BELOW_CHEAP = 16384   # squared, absolute, huber
cdef Py_ssize_t SERIAL_BELOW = 8192          # exp/log per element: BCE, cross-entropy

# Cross-entropy gradients of at least this many bytes (out of place) are written with
# streaming stores (the elementwise kernels prefetch theirs for writing instead: faster).
cdef Py_ssize_t STREAM_ABOVE = 64 << 20


# ---- array checks (the contract says they hold; checking costs ~50 ns and makes a broken
# ---- caller raise instead of touching memory it does not own) -----------------------------

def _shape(int ndim, Py_ssize_t n0, Py_ssize_t n1):
    if ndim == 1:
        return (n0,)
    return (n0, n1)


cdef void* _data(object arr, str name, int typenum, int ndim, Py_ssize_t n0, Py_ssize_t n1,
                 bint writable, bint optional) except? NULL:
    """The data pointer of a C-contiguous array of the given dtype and shape (NULL for None
    when optional)."""
    cdef cnp.ndarray a
    if arr is None:
        if optional:
            return NULL
        raise ValueError(f"{name} must be an array, got None")
    if not cnp.PyArray_Check(arr):
        raise TypeError(f"{name} must be a NumPy array, got {type(arr).__name__}")
    a = <cnp.ndarray>arr
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim
            or cnp.PyArray_DIM(a, 0) != n0 or (ndim == 2 and cnp.PyArray_DIM(a, 1) != n1)
            or not cnp.PyArray_IS_C_CONTIGUOUS(a)
            or (writable and not cnp.PyArray_ISWRITEABLE(a))
            or not cnp.PyArray_ISALIGNED(a)):
        raise ValueError(
            f"{name} must be a C-contiguous{' writable' if writable else ''} "
            f"{np.dtype(cnp.PyArray_DescrFromType(typenum)).name} array of shape "
            f"{_shape(ndim, n0, n1)}, got {arr.dtype} {arr.shape}"
        )
    return cnp.PyArray_DATA(a)


cdef int _threads(object n_threads, Py_ssize_t work, Py_ssize_t serial_below,
                  Py_ssize_t blocks) except -1:
    cdef long nt = n_threads
    if nt < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    if work < serial_below:
        return 1
    return <int>min(nt, blocks, 1024)


# ---- elementwise ----------------------------------------------------------------------------

cdef struct EWArrays:
    const void* pred
    const void* target
    const double* weight
    const double* pos_weight
    void* grad
    void* loss_out
    double scale
    Py_ssize_t n
    int n_threads


cdef inline double _ew_block_at(const Loss* prm, const Mode* mode, const EWArrays* a,
                                const floating* dtype, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t i0 = b * EW_BLOCK
    cdef Py_ssize_t m = min(<Py_ssize_t>EW_BLOCK, a.n - i0)
    # Under schedule="static" a thread's blocks are contiguous: it prefetches the start of
    # its next one (see elementwise_block). Past its last block it prefetches the start of
    # the next thread's share, which that thread has already read: harmless.
    cdef Py_ssize_t n_next = max(<Py_ssize_t>0, min(<Py_ssize_t>EW_AHEAD, a.n - i0 - m))
    return elementwise_block(
        prm, mode,
        <const floating*>a.pred + i0, <const floating*>a.target + i0,
        <const double*>NULL if a.weight == NULL else a.weight + i0,
        <const double*>NULL if a.pos_weight == NULL else a.pos_weight + i0,
        NULL if a.grad == NULL else <floating*>a.grad + i0,
        NULL if a.loss_out == NULL else <floating*>a.loss_out + i0,
        a.scale, m, n_next,
    )


cdef double _ew_run(const Loss* prm, const Mode* mode, const EWArrays* a, const floating* dtype,
                    double* sums) noexcept nogil:
    cdef Py_ssize_t b, nb = (a.n + EW_BLOCK - 1) // EW_BLOCK
    cdef double total = 0
    if a.n_threads <= 1:
        for b in range(nb):
            sums[b] = _ew_block_at(prm, mode, a, dtype, b)
    else:
        for b in prange(nb, num_threads=a.n_threads, schedule="static"):
            sums[b] = _ew_block_at(prm, mode, a, dtype, b)
    for b in range(nb):
        total += sums[b]
    return total


cdef double _ew_dispatch(const Loss* prm, const EWArrays* a, bint f32, double* sums) noexcept nogil:
    cdef ValueOnly value_only
    cdef WithGrad with_grad
    cdef const float* f = NULL
    cdef const double* d = NULL
    if f32:
        if a.grad == NULL:
            return _ew_run(prm, &value_only, a, f, sums)
        return _ew_run(prm, &with_grad, a, f, sums)
    if a.grad == NULL:
        return _ew_run(prm, &value_only, a, d, sums)
    return _ew_run(prm, &with_grad, a, d, sums)


cdef double _bound(double x, bint f32, int direction) noexcept:
    """x rounded to the input dtype upwards (direction 1) or downwards (-1): for a float32
    p, ``p < _bound(lo, 1)`` exactly when ``p < lo`` in float64 (no float32 lies between)."""
    cdef float f = <float>x
    if not f32 or <double>f == x or x != x:
        return x
    if direction > 0 and <double>f < x:
        return nextafterf(f, INFINITY)
    if direction < 0 and <double>f > x:
        return nextafterf(f, -INFINITY)
    return f


cdef double _ew_call(str kind, EWArrays* a, bint f32, double delta, double smoothing,
                     double clip_lo, double clip_hi, object n_threads) except? -1:
    """Run loss ``kind`` over ``a`` (its thread count is set here); returns Σ w·l. Shared by
    :func:`elementwise` and :func:`elementwise_shortcut`."""
    cdef Squared squared
    cdef Absolute absolute
    cdef Huber huber
    cdef BceLogits bce_logits
    cdef BceProb bce_prob
    cdef Py_ssize_t nb = (a.n + EW_BLOCK - 1) // EW_BLOCK
    a.n_threads = _threads(n_threads, a.n,
                           SERIAL_BELOW if kind.startswith("bce") else SERIAL_BELOW_CHEAP, nb)
    cdef double total
    cdef double sums_small[8]
    cdef double* sums = <double*>sums_small if nb <= 8 else <double*>malloc(nb * sizeof(double))
    if sums == NULL:
        raise MemoryError()
    try:
        if kind == "squared":
            with nogil:
                total = _ew_dispatch(&squared, a, f32, sums)
        elif kind == "absolute":
            with nogil:
                total = _ew_dispatch(&absolute, a, f32, sums)
        elif kind == "huber":
            huber.delta = delta
            with nogil:
                total = _ew_dispatch(&huber, a, f32, sums)
        elif kind == "bce_logits":
            bce_logits.smoothing = smoothing
            with nogil:
                total = _ew_dispatch(&bce_logits, a, f32, sums)
        elif kind == "bce_prob":
            bce_prob.smoothing = smoothing
            bce_prob.lo = clip_lo
            bce_prob.hi = clip_hi
            bce_prob.lo_cmp = _bound(clip_lo, f32, 1)
            bce_prob.hi_cmp = _bound(clip_hi, f32, -1)
            with nogil:
                total = _ew_dispatch(&bce_prob, a, f32, sums)
        else:
            raise ValueError(f"unknown elementwise kind {kind!r}")
    finally:
        if sums != sums_small:
            free(sums)
    return total


def elementwise(job):
    """Run an :class:`~fastloss.backends._jobs.ElementwiseJob`; returns Σ w·l as a float."""
    cdef EWArrays a
    cdef object pred = job.pred
    if not cnp.PyArray_Check(pred) or cnp.PyArray_NDIM(<cnp.ndarray>pred) != 1:
        raise ValueError("pred must be a 1-D NumPy array")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>pred)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise ValueError(f"pred must be float32 or float64, got {pred.dtype}")
    cdef Py_ssize_t n = cnp.PyArray_DIM(<cnp.ndarray>pred, 0)
    a.n = n
    a.pred = _data(pred, "pred", typenum, 1, n, 0, False, False)
    a.target = _data(job.target, "target", typenum, 1, n, 0, False, False)
    a.weight = <const double*>_data(job.weight, "weight", cnp.NPY_FLOAT64, 1, n, 0, False, True)
    a.pos_weight = <const double*>_data(
        job.pos_weight, "pos_weight", cnp.NPY_FLOAT64, 1, n, 0, False, True)
    a.grad = _data(job.grad_out, "grad_out", typenum, 1, n, 0, True, True)
    a.loss_out = _data(job.loss_out, "loss_out", typenum, 1, n, 0, True, True)
    a.scale = job.scale
    return _ew_call(job.kind, &a, typenum == cnp.NPY_FLOAT32, job.delta, job.smoothing,
                    job.clip_lo, job.clip_hi, job.n_threads)


# ---- cross-entropy --------------------------------------------------------------------------

cdef struct CEArrays:
    const void* pred
    const void* target
    void* kappa        # class weights in the input dtype (ones when None)
    void* grad
    void* loss_out
    int n_threads
    bint from_logits


cdef inline double _ce_block_at(const CEParams* p, const Target* tk, const Mode* mode,
                                const CEArrays* a, const floating* dtype, Py_ssize_t b,
                                char* workspace, size_t scratch_bytes, size_t tmp_bytes,
                                char* bad) noexcept nogil:
    cdef Py_ssize_t r0 = b * p.rows_per_block
    cdef Py_ssize_t r1 = min(r0 + p.rows_per_block, p.n)
    cdef floating* scratch = <floating*>workspace
    cdef double* tmp = <double*>(workspace + scratch_bytes)
    cdef double* rows = <double*>(workspace + scratch_bytes + tmp_bytes)
    if workspace == NULL:
        bad[0] = 2
        return 0
    if a.from_logits and p.C < CE_SMALL_C:
        return ce_logits_small_block(
            p, tk, mode, r0, r1, <const floating*>a.pred, <const floating*>a.target,
            <const floating*>a.kappa, <floating*>a.grad, <floating*>a.loss_out,
            scratch, rows, bad)
    if a.from_logits:
        return ce_logits_block(
            p, tk, mode, r0, r1, <const floating*>a.pred, <const floating*>a.target,
            <const floating*>a.kappa, <floating*>a.grad, <floating*>a.loss_out,
            scratch, tmp, rows, bad)
    return ce_probabilities_block(
        p, tk, mode, r0, r1, <const floating*>a.pred, <const floating*>a.target,
        <const floating*>a.kappa, <floating*>a.grad, <floating*>a.loss_out,
        scratch, tmp, rows, bad)


cdef double _ce_run(const CEParams* p, const Target* tk, const Mode* mode, const CEArrays* a,
                    const floating* dtype, double* sums, char* bad) noexcept nogil:
    cdef Py_ssize_t b, nb = (p.n + p.rows_per_block - 1) // p.rows_per_block
    cdef Py_ssize_t R = min(p.rows_per_block, p.n)   # rows of the largest block
    # One workspace per thread: a scratch block for the exp of a value-only logits call (or
    # the transposed block of few classes), 2·C doubles for the per-class terms where there
    # are any (for soft targets from logits, then a value per element of the block),
    # 7 doubles per row.
    cdef size_t scratch_bytes = 0, tmp_bytes = 0
    if a.from_logits and p.C < CE_SMALL_C:
        scratch_bytes = (ce_small_scratch(p.C, R) * sizeof(floating) + 63) // 64 * 64
    elif a.from_logits and (a.grad == NULL or p.stream):
        scratch_bytes = (R * p.C * sizeof(floating) + 63) // 64 * 64
    elif not a.from_logits:
        scratch_bytes = (ce_probabilities_scratch(p.C, R, p.labels != NULL, a.grad != NULL)
                         * sizeof(floating) + 63) // 64 * 64
    if not a.from_logits or p.labels == NULL or p.smoothing != 0:
        tmp_bytes = 2 * p.C * sizeof(double)
    if a.from_logits and p.labels == NULL and p.C >= CE_SMALL_C:
        # soft targets: also the block's w·c_j (ce_logits_block, steps 1b and 5)
        tmp_bytes = (tmp_bytes + R * p.C * sizeof(floating) + 63) // 64 * 64
    cdef size_t total_bytes = scratch_bytes + tmp_bytes + 7 * R * sizeof(double) + 64
    cdef char* workspace = NULL
    cdef double total = 0
    if a.n_threads <= 1:
        workspace = <char*>malloc(total_bytes)
        for b in range(nb):
            sums[b] = _ce_block_at(p, tk, mode, a, dtype, b, workspace, scratch_bytes,
                                   tmp_bytes, bad + b)
        fl_sfence()   # streamed gradient stores visible before we return
        free(workspace)
    else:
        with parallel(num_threads=a.n_threads):
            workspace = <char*>malloc(total_bytes)
            for b in prange(nb, schedule="static"):
                sums[b] = _ce_block_at(p, tk, mode, a, dtype, b, workspace, scratch_bytes,
                                       tmp_bytes, bad + b)
            fl_sfence()
            free(workspace)
    for b in range(nb):
        total += sums[b]
    return total


cdef double _ce_dispatch(const CEParams* p, const CEArrays* a, bint f32, double* sums,
                         char* bad) noexcept nogil:
    cdef ValueOnly vo
    cdef WithGrad wg
    cdef Sparse sparse
    cdef Soft soft
    cdef const float* f = NULL
    cdef const double* d = NULL
    if p.labels != NULL:
        if f32:
            return (_ce_run(p, &sparse, &vo, a, f, sums, bad) if a.grad == NULL
                    else _ce_run(p, &sparse, &wg, a, f, sums, bad))
        return (_ce_run(p, &sparse, &vo, a, d, sums, bad) if a.grad == NULL
                else _ce_run(p, &sparse, &wg, a, d, sums, bad))
    if f32:
        return (_ce_run(p, &soft, &vo, a, f, sums, bad) if a.grad == NULL
                else _ce_run(p, &soft, &wg, a, f, sums, bad))
    return (_ce_run(p, &soft, &vo, a, d, sums, bad) if a.grad == NULL
            else _ce_run(p, &soft, &wg, a, d, sums, bad))


cdef void _fill_kappa(void* out, const double* class_weight, Py_ssize_t C, bint f32) noexcept nogil:
    cdef Py_ssize_t j
    if f32:
        for j in range(C):
            (<float*>out)[j] = 1 if class_weight == NULL else <float>class_weight[j]
    else:
        for j in range(C):
            (<double*>out)[j] = 1 if class_weight == NULL else class_weight[j]


cdef double _ce_call(CEParams* p, CEArrays* a, int typenum, const double* class_weight,
                     object n_threads) except? -1:
    """Run the cross-entropy whose arrays and options ``p`` and ``a`` hold (the blocking, the
    thread count, streaming and Σκ are set here); returns Σ w·l. Shared by
    :func:`cross_entropy` and :func:`cross_entropy_shortcut`."""
    cdef bint f32 = typenum == cnp.NPY_FLOAT32
    cdef Py_ssize_t n = p.n, C = p.C
    p.rows_per_block = ce_rows_per_block(C, a.from_logits)
    # A separate gradient far larger than the caches is written with streaming stores (no
    # read of its old contents: a third less memory traffic); smaller ones stay cached for
    # the caller. In place, the lines are in cache already.
    p.stream = (a.from_logits and a.grad != NULL and a.grad != a.pred
                and n * C * (4 if f32 else 8) >= STREAM_ABOVE)
    cdef Py_ssize_t nb = (n + p.rows_per_block - 1) // p.rows_per_block
    a.n_threads = _threads(n_threads, n * C, SERIAL_BELOW, nb)
    cdef Py_ssize_t j
    p.kappa_sum = 0
    p.unit = class_weight == NULL and p.smoothing == 0
    if class_weight == NULL:
        p.kappa_sum = C
    else:
        for j in range(C):
            p.kappa_sum += class_weight[j]

    cdef double total = 0
    cdef double* sums = <double*>malloc(max(nb, 1) * sizeof(double))
    cdef char* bad = <char*>calloc(max(nb, 1), 1)
    a.kappa = malloc(C * (sizeof(float) if f32 else sizeof(double)))
    cdef int status = 0
    try:
        if sums == NULL or bad == NULL or a.kappa == NULL:
            raise MemoryError()
        with nogil:
            _fill_kappa(a.kappa, class_weight, C, f32)
            total = _ce_dispatch(p, a, f32, sums, bad)
            for j in range(nb):
                if bad[j] > status:
                    status = bad[j]
    finally:
        free(sums)
        free(bad)
        free(a.kappa)
    if status == 2:
        raise MemoryError()
    if status == 1:
        raise ValueError(f"labels must lie in [0, {C}) or equal ignore_index={p.ignore_index}")
    return total


def cross_entropy(job):
    """Run a :class:`~fastloss.backends._jobs.CrossEntropyJob`; returns Σ w·l as a float."""
    cdef CEParams p
    cdef CEArrays a
    cdef object pred = job.pred
    if not cnp.PyArray_Check(pred) or cnp.PyArray_NDIM(<cnp.ndarray>pred) != 2:
        raise ValueError("pred must be a 2-D NumPy array")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>pred)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise ValueError(f"pred must be float32 or float64, got {pred.dtype}")
    cdef Py_ssize_t n = cnp.PyArray_DIM(<cnp.ndarray>pred, 0)
    cdef Py_ssize_t C = cnp.PyArray_DIM(<cnp.ndarray>pred, 1)
    if C < 1:
        raise ValueError("pred must have at least one class")
    p.n = n
    p.C = C
    a.from_logits = job.from_logits
    a.pred = _data(pred, "pred", typenum, 2, n, C, False, False)
    p.labels = <const long long*>_data(job.labels, "labels", cnp.NPY_INT64, 1, n, 0, False, True)
    a.target = _data(job.target, "target", typenum, 2, n, C, False, True)
    if (p.labels == NULL) == (a.target == NULL):
        raise ValueError("exactly one of labels and target must be given")
    p.ignore_index = job.ignore_index
    p.ignoring = True   # the job's labels are checked; its "nothing ignored" is -1
    p.weight = <const double*>_data(job.weight, "weight", cnp.NPY_FLOAT64, 1, n, 0, False, True)
    cdef const double* class_weight = <const double*>_data(
        job.class_weight, "class_weight", cnp.NPY_FLOAT64, 1, C, 0, False, True)
    p.smoothing = job.smoothing
    p.lo = job.clip_lo
    p.hi = job.clip_hi
    p.scale = job.scale
    a.grad = _data(job.grad_out, "grad_out", typenum, 2, n, C, True, True)
    a.loss_out = _data(job.loss_out, "loss_out", typenum, 1, n, 0, True, True)
    return _ce_call(&p, &a, typenum, class_weight, job.n_threads)


# ---- shortcuts: a whole canonical call in one compiled function -----------------------------
#
# A training loop calls a loss with the same canonical arrays every step; building a job and
# validating it in Python costs several times the kernel of a small batch. A shortcut takes
# the user's arrays and the loss's options, checks that the call is one the general path
# would pass on unchanged (every check below is one that path makes too, made stricter),
# allocates the outputs, runs the same kernel as the job entry and returns (value, grad).
# Where anything is unusual it returns None and the Python layer takes the general path,
# which accepts the call or words the error: a shortcut never raises for a bad argument.

cdef object _F32 = np.dtype(np.float32)
cdef object _F64 = np.dtype(np.float64)
cdef object _I64 = np.dtype(np.int64)


cdef inline bint _plain(object arr, object dtype):
    """Whether ``arr`` is a NumPy array (not a subclass) of the native-order builtin ``dtype``
    (native builtin dtypes are singletons), C-contiguous and aligned: an array the general
    path would hand a kernel as it is."""
    if not cnp.PyArray_CheckExact(arr):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>arr
    return (<object>cnp.PyArray_DESCR(a) is dtype and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a))


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int k, nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd:
        return False
    for k in range(nd):
        if cnp.PyArray_DIM(a, k) != cnp.PyArray_DIM(b, k):
            return False
    return True


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether the bytes of two C-contiguous arrays overlap (``np.may_share_memory``)."""
    cdef const char* a0 = cnp.PyArray_BYTES(a)
    cdef const char* b0 = cnp.PyArray_BYTES(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


cdef object _gradient(object out, cnp.ndarray y_true, cnp.ndarray pred):
    """The gradient buffer: a new array, or ``out`` where it follows
    ``_validation.check_out``'s rules in their strict form (``y_pred`` itself, or a separate
    writable C-contiguous aligned array of ``y_pred``'s exact shape and dtype; neither
    overlapping ``y_true``); None (decline) for any other ``out``."""
    if out is None:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(pred), cnp.PyArray_DIMS(pred),
                                 cnp.PyArray_TYPE(pred), 0)
    if not cnp.PyArray_CheckExact(out) or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        return None
    cdef cnp.ndarray o = <cnp.ndarray>out
    if out is not pred and not (_plain(out, <object>cnp.PyArray_DESCR(pred))
                                and _same_shape(o, pred) and not _overlap(o, pred)):
        return None
    if _overlap(o, y_true):
        return None
    return out


cdef inline int _unweighted(str reduction) noexcept:
    """1 if ``reduction`` divides by the number of (kept) samples, 0 if it divides by 1, -1
    for an unknown one. Without any weight, "mean" (Σ w·l / Σ w) and
    "sum_over_batch_size" (Σ w·l / count) both divide by the count."""
    if reduction == "mean" or reduction == "sum_over_batch_size":
        return 1
    if reduction == "sum" or reduction == "none":
        return 0
    return -1


#: How many times cross_entropy_shortcut read the labels in a pass of their own before its
#: kernel (under the GIL; read by :func:`label_passes`, a test hook).
cdef Py_ssize_t _label_passes = 0


cdef Py_ssize_t _count_labels(const long long* labels, Py_ssize_t n, Py_ssize_t C,
                              bint ignoring, long long ignore_index) noexcept nogil:
    """How many labels are not ``ignore_index`` (when ``ignoring``), or -1 if any other lies
    outside [0, C) (as unsigned, a negative label is huge). No early exit: the loops
    vectorise."""
    cdef Py_ssize_t i, kept = 0
    cdef unsigned long long c = <unsigned long long>C
    cdef unsigned long long label
    cdef int bad = 0, skip
    if not ignoring:
        for i in range(n):
            bad |= <unsigned long long>labels[i] >= c
        return -1 if bad else n
    for i in range(n):
        skip = labels[i] == ignore_index
        bad |= (skip ^ 1) & (<unsigned long long>labels[i] >= c)
        kept += skip ^ 1
    return -1 if bad else kept


def elementwise_shortcut(y_true, y_pred, out, str reduction, bint want_value, bint want_grad,
                         object n_threads, str kind, double delta, double smoothing,
                         double clip_lo, double clip_hi):
    """``(value, grad)`` of an elementwise loss ``kind`` without sample or positive-class
    weights, or None where the call is not canonical: ``y_pred`` float32/float64 with
    ``ndim >= 1`` and at least one element, ``y_true`` of its exact shape and dtype, both
    plain C-contiguous aligned arrays; ``out`` as in :func:`_gradient`.

    ``reduction`` is the loss's; ``want_value``/``want_grad`` what the caller uses (no
    per-element losses or gradient are made otherwise); ``n_threads`` resolved; the rest are
    :class:`~fastloss.backends._jobs.ElementwiseJob`'s fields. ``grad`` is None when not
    wanted, ``value`` is ``Σ l / n`` or ``Σ l`` (a float), or the losses in ``y_pred``'s
    shape for ``"none"``.
    """
    cdef EWArrays a
    cdef int divide = _unweighted(reduction)
    if not cnp.PyArray_CheckExact(y_pred) or divide < 0:
        return None
    cdef cnp.ndarray pred = <cnp.ndarray>y_pred
    cdef object dtype = <object>cnp.PyArray_DESCR(pred)
    if ((dtype is not _F32 and dtype is not _F64) or not _plain(y_pred, dtype)
            or cnp.PyArray_NDIM(pred) < 1 or cnp.PyArray_SIZE(pred) == 0
            or not _plain(y_true, dtype) or not _same_shape(<cnp.ndarray>y_true, pred)):
        return None
    cdef object grad = None, losses = None
    if want_grad:
        grad = _gradient(out, <cnp.ndarray>y_true, pred)
        if grad is None:
            return None
    cdef bint none = reduction == "none"
    if none and want_value:
        losses = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(pred), cnp.PyArray_DIMS(pred),
                                   cnp.PyArray_TYPE(pred), 0)
    a.n = cnp.PyArray_SIZE(pred)
    cdef double norm = <double>a.n if divide else 1.0
    a.pred = cnp.PyArray_DATA(pred)
    a.target = cnp.PyArray_DATA(<cnp.ndarray>y_true)
    a.weight = NULL
    a.pos_weight = NULL
    a.grad = NULL if grad is None else cnp.PyArray_DATA(<cnp.ndarray>grad)
    a.loss_out = NULL if losses is None else cnp.PyArray_DATA(<cnp.ndarray>losses)
    a.scale = 1.0 / norm
    cdef double total = _ew_call(kind, &a, dtype is _F32, delta, smoothing, clip_lo, clip_hi,
                                 n_threads)
    return (losses if losses is not None else total / norm), grad


def cross_entropy_shortcut(y_true, y_pred, out, str reduction, bint want_value, bint want_grad,
                           object n_threads, bint from_logits, bint sparse, object ignore_index,
                           double smoothing, double clip_lo, double clip_hi):
    """``(value, grad)`` of a cross-entropy without sample or class weights, or None where the
    call is not canonical: ``y_pred`` a float32/float64 ``(n, C)`` array with ``n, C >= 1``,
    ``y_true`` int64 labels ``(n,)`` (``sparse``) each in ``[0, C)`` or equal to
    ``ignore_index`` (when not None), with at least one not ignored, or targets of
    ``y_pred``'s exact shape and dtype; all plain C-contiguous aligned arrays; ``out`` as in
    :func:`_gradient`.

    The arguments and results are those of :func:`elementwise_shortcut` (``value`` divides
    by the number of kept samples; ``"none"`` gives ``(n,)`` losses), the options those of
    :class:`~fastloss.backends._jobs.CrossEntropyJob`.
    """
    cdef CEParams p
    cdef CEArrays a
    cdef int divide = _unweighted(reduction)
    if not cnp.PyArray_CheckExact(y_pred) or divide < 0:
        return None
    cdef cnp.ndarray pred = <cnp.ndarray>y_pred
    cdef object dtype = <object>cnp.PyArray_DESCR(pred)
    if ((dtype is not _F32 and dtype is not _F64) or not _plain(y_pred, dtype)
            or cnp.PyArray_NDIM(pred) != 2):
        return None
    cdef Py_ssize_t n = cnp.PyArray_DIM(pred, 0)
    cdef Py_ssize_t C = cnp.PyArray_DIM(pred, 1)
    cdef Py_ssize_t kept = n
    cdef bint ignoring = ignore_index is not None
    cdef bint checked = True
    cdef long long ignore = -1   # (not used unless ignoring)
    if n == 0 or C == 0:
        return None
    p.labels = NULL
    a.target = NULL
    if sparse:
        if (not _plain(y_true, _I64) or cnp.PyArray_NDIM(<cnp.ndarray>y_true) != 1
                or cnp.PyArray_DIM(<cnp.ndarray>y_true, 0) != n):
            return None
        if ignoring:
            ignore = ignore_index
        p.labels = <const long long*>cnp.PyArray_DATA(<cnp.ndarray>y_true)
        # Without ignore_index every label is kept, and a label outside [0, C) stops the
        # kernel's own check (the kernels read no label unchecked) from giving a result.
        # A separate pass over the labels is then needed only where the kernel would write
        # into the caller's memory first (``out`` given: a bad call must change nothing);
        # otherwise it is skipped (at (6553600, 10) float32 it read 52 MB, about an eighth
        # of a value-only call). With ignore_index, the count is the normaliser.
        checked = ignoring or (want_grad and out is not None)
        if checked:
            global _label_passes
            _label_passes += 1
            kept = _count_labels(p.labels, n, C, ignoring, ignore)
            if kept <= 0:   # a bad label (the general path names it), or all ignored
                return None
    else:
        if not _plain(y_true, dtype) or not _same_shape(<cnp.ndarray>y_true, pred):
            return None
        a.target = cnp.PyArray_DATA(<cnp.ndarray>y_true)
    cdef object grad = None, losses = None
    if want_grad:
        grad = _gradient(out, <cnp.ndarray>y_true, pred)
        if grad is None:
            return None
    if want_value and reduction == "none":
        losses = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(pred), cnp.PyArray_TYPE(pred), 0)
    cdef double norm = <double>kept if divide else 1.0
    p.n = n
    p.C = C
    p.ignore_index = ignore
    p.ignoring = ignoring
    p.weight = NULL
    p.smoothing = smoothing
    p.lo = clip_lo
    p.hi = clip_hi
    p.scale = 1.0 / norm
    a.from_logits = from_logits
    a.pred = cnp.PyArray_DATA(pred)
    a.grad = NULL if grad is None else cnp.PyArray_DATA(<cnp.ndarray>grad)
    a.loss_out = NULL if losses is None else cnp.PyArray_DATA(<cnp.ndarray>losses)
    cdef double total
    try:
        total = _ce_call(&p, &a, cnp.PyArray_TYPE(pred), NULL, n_threads)
    except ValueError:
        if checked:
            raise
        return None   # an unchecked label outside [0, C): the general path names it
    return (losses if losses is not None else total / norm), grad


# ---- introspection and test helpers ---------------------------------------------------------

def cpu_level():
    """0: baseline, 1: AVX2+FMA, 2: AVX-512 (F/DQ/VL/BW) — what this CPU can run."""
    return fl_cpu_level()


def label_passes():
    """How many times the cross-entropy shortcut has checked and counted the labels in a pass
    of their own before its kernel, in this process (a test hook: value-only calls and calls
    without ``out`` and ``ignore_index`` must leave the labels to the kernel)."""
    return _label_passes


def mxcsr():
    """The calling thread's SSE control register (-1 where there is none)."""
    return fl_mxcsr()


cdef void _map_math(int op, const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating inv
    if op == 0:
        for i in range(n):
            y[i] = exp_(x[i])
    elif op == 1:
        for i in range(n):
            y[i] = log_(x[i])
    elif op == 3:
        for i in range(n):
            y[i] = exp_nonpos(x[i])
    elif op == 2:
        for i in range(n):
            y[i] = log1p_(x[i])
    elif op == 4:
        for i in range(n):
            y[i] = log1p_unit(x[i], &inv)
    elif op == 5:
        for i in range(n):
            log1p_unit(x[i], &y[i])
    elif op == 6:
        for i in range(n):
            y[i] = log_unit(x[i])
    else:
        for i in range(n):
            y[i] = log1m_unit(x[i])


def math_apply(str name, x):
    """Apply this build's vectorised math elementwise (tests only): ``exp``, ``exp_nonpos``
    (x ≤ 0), ``log``, ``log1p``, for e in [0, 1] ``log1p_unit`` (log1p(e)) and
    ``inv1p_unit`` (1/(1+e)), and for q in [0, 1] ``log_unit`` (log q) and ``log1m_unit``
    (log(1 - q))."""
    cdef int op = {"exp": 0, "log": 1, "log1p": 2, "exp_nonpos": 3, "log1p_unit": 4,
                   "inv1p_unit": 5, "log_unit": 6, "log1m_unit": 7}[name]
    cdef cnp.ndarray xa = np.ascontiguousarray(x)
    if xa.dtype != np.float32 and xa.dtype != np.float64:
        raise ValueError("x must be float32 or float64")
    cdef cnp.ndarray out = np.empty_like(xa)
    cdef Py_ssize_t n = xa.size
    if xa.dtype == np.float32:
        _map_math(op, <const float*>cnp.PyArray_DATA(xa), <float*>cnp.PyArray_DATA(out), n)
    else:
        _map_math(op, <const double*>cnp.PyArray_DATA(xa), <double*>cnp.PyArray_DATA(out), n)
    return out
