"""The few LLVM operations the kernels need and Numba does not spell, and the helpers' options.

Why intrinsics instead of ``fastmath``: the kernels are compiled *without* fast-math flags, so
no optimisation may change how NaN, ±inf and -0.0 behave. The two things fast-math would
have bought are asked for explicitly, on exactly the operations that need them:

* :func:`fma` — ``llvm.fma``: one rounding for ``a·b + c``. The polynomial ``exp``/``log``
  and the Cody–Waite reductions are written for it (this is what the ``contract`` flag would
  have allowed, but only where we choose). On a CPU without FMA LLVM calls libm's ``fma``
  (correct, slower).
* :func:`acc_add` — ``fadd reassoc``: the only reassociable operation in the package, used
  for the running sums of a block (row sum of exponentials, block loss sum). It lets LLVM
  keep one partial sum per SIMD lane and add the lanes at the end of the loop: the order is
  fixed by the compiled code and the loop bounds, never by the thread count, so the
  results stay bitwise reproducible for any ``n_threads`` — provided that the loop is
  not also versioned on addresses. A loop that both stores and sums gets a run-time check
  of the distance between the stored and the read addresses, and where the check fails (a
  scratch row allocated just after a short input row, closer than one unrolled vector
  iteration) LLVM runs a scalar copy that adds in another order: 1 ulp apart between
  calls. Short probability rows therefore take loops that only read for their sums
  (``_probabilities_row`` in ``_cross_entropy.py``), and so does the last, partial chunk
  of an elementwise block (``_fused_block``: a ``loss_out`` right after short predictions
  gave float64 sums 1 ulp apart). The loops that still store and sum were audited in the
  IR (Numba 0.68 / LLVM 22): their checks cannot fail between arrays that do not overlap
  (the logits row path, C ≥ 64: see ``_softmax_pass``; the elementwise full chunks: see
  ``_fused_block``); tests/backends/test_numba_kernels.py,
  test_placement_of_the_arrays_changes_no_bit, lays outputs right after inputs. A new
  loop that stores and sums needs the same argument, or two loops. Reassociating a sum
  cannot turn a NaN into a number, and an infinite term still gives an infinite (or NaN,
  for ``inf - inf``) sum.
* :func:`maxnum` — ``llvm.maxnum``, the IEEE ``maxNum``: the larger operand, or the other
  one if one is NaN. Unlike ``x if x > m else m`` (which LLVM will not vectorise without
  ``nnan``), a ``maxnum`` reduction vectorises (``vmaxps`` plus a NaN fix-up).
  The row maximum of the softmax uses it: NaN entries are skipped by the max but still
  make the row's exponentials, sum, loss and gradient NaN (see ``_cross_entropy.py``);
  ``llvm.maximum`` (NaN-propagating itself) costs twice as much per vector (6 instructions
  instead of 3 with AVX-512; 0.13 vs 0.07 ns per element measured).
* :func:`scale_by_pow2`, :func:`scale_by_pow2_nonpositive`, :func:`split_exponent` — the
  integer bit manipulations of ``exp`` and ``log`` (build ``2^k``, split ``u = 2^k·m``),
  written in the float's own integer width (i32 for float32) so that they vectorise at the
  float's lane count; Numba's own integer arithmetic would widen them to int64.
* :func:`cast_like` — a float conversion to another value's float type.
* :func:`prefer_wide_vectors` — 512-bit vectors for the compute-heavy loops (AVX-512).
* :func:`stream_copy` — non-temporal stores for large separate gradient outputs
  (:func:`stream_copy_unfenced` and :func:`store_fence` to fence once per thread instead);
  :func:`stream_scale` streams a scaled row (one entry replaced) without a copy in scratch.
* :func:`transpose_rows`, :func:`transpose_rows_max` — a block of short rows transposed to
  class-major order with vector gathers (``llvm.masked.gather``), optionally with the row
  maxima folded in, or (:func:`transpose_rows_nonzero`) each row's count of nonzero
  entries and the last one; :func:`row_sums64` — the same gathers giving only the rows'
  float64 sums of ``x_j`` and ``|x_j|`` (nothing transposed is stored), with the entries at
  given classes picked too (:func:`row_sums64_pick`, :func:`row_sum64_pick_at`).
* :func:`gather_labelled` — per row, the entry at the row's label (or the label's class
  weight), by vector gathers with the label clamped into ``[0, c)``.
* :func:`prefetch_lines` — software prefetch of a range of an array (``llvm.prefetch``), so
  that the memory transfer of the next rows or blocks overlaps the arithmetic on the current
  ones.
"""

from __future__ import annotations

from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "HELPER_OPTIONS",
    "acc_add",
    "helper",
    "cast_like",
    "fma",
    "gather_labelled",
    "maxnum",
    "prefer_wide_vectors",
    "prefetch_lines",
    "row_sums64",
    "row_sums64_pick",
    "row_sum64_pick_at",
    "scale_by_pow2",
    "scale_by_pow2_nonpositive",
    "split_exponent",
    "store_fence",
    "stream_copy",
    "stream_scale",
    "stream_copy_unfenced",
    "transpose_rows",
    "transpose_rows_max",
    "transpose_rows_nonzero",
    "transpose_rows_sum64",
]

#: Options of every jitted helper (anything that is not a kernel): NumPy's error model
#: (x/0 is inf or NaN, never ZeroDivisionError); LLVM ``alwaysinline`` (the helpers are
#: small and must end up inside the vectorised loops, and Numba-level inlining would
#: re-type them at every call site); no CPython or C wrapper, which no helper needs and
#: which would cost compile time for each of the ~30 helpers and float types.
HELPER_OPTIONS = {
    "error_model": "numpy",
    "forceinline": True,
    "no_cpython_wrapper": True,
    "no_cfunc_wrapper": True,
}
#: Decorator of the jitted helpers (see :data:`HELPER_OPTIONS`).
helper = njit(**HELPER_OPTIONS)

_F32 = ir.FloatType()
_X86 = llvm.get_process_triple().startswith(("x86_64", "i386", "i686"))
_F64 = ir.DoubleType()


def _declare(builder: ir.IRBuilder, name: str, fty: ir.Type, nargs: int) -> ir.Function:
    suffix = "f32" if fty == _F32 else "f64"
    fnty = ir.FunctionType(fty, [fty] * nargs)
    return cgutils.get_or_insert_function(builder.module, fnty, f"{name}.{suffix}")


def _check_float(*tys) -> bool:
    return all(isinstance(t, types.Float) for t in tys) and len({t for t in tys}) == 1


@intrinsic
def fma(typingctx, a, b, c):
    """``a·b + c`` with a single rounding (``llvm.fma``); all three of one float type."""
    if not _check_float(a, b, c):
        return None

    def codegen(context, builder, signature, args):
        return builder.call(_declare(builder, "llvm.fma", args[0].type, 3), args)

    return a(a, a, a), codegen


@intrinsic
def maxnum(typingctx, a, b):
    """IEEE ``maxNum(a, b)`` (``llvm.maxnum``): NaN operands are ignored unless both are."""
    if not _check_float(a, b):
        return None

    def codegen(context, builder, signature, args):
        return builder.call(_declare(builder, "llvm.maxnum", args[0].type, 2), args)

    return a(a, a), codegen


@intrinsic
def acc_add(typingctx, a, b):
    """``a + b`` marked ``reassoc``, for running sums only (see the module docstring)."""
    if not _check_float(a, b):
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1], flags=("reassoc",))

    return a(a, a), codegen


def _int_of(fty: ir.Type) -> tuple[ir.IntType, int, int]:
    """(integer type, mantissa bits, exponent bias) of a float type."""
    return (ir.IntType(32), 23, 127) if fty == _F32 else (ir.IntType(64), 52, 1023)


@intrinsic
def scale_by_pow2(typingctx, p, t, shifter):
    """``p · 2^k`` for ``k = bits(t) - bits(shifter)`` (``t = y + shifter`` rounded ``y`` to the
    integer ``k`` in its low mantissa bits), valid for any ``k`` an ``exp`` can produce
    (``-150…129`` in float32, ``-1077…1025`` in float64).

    ``2^k`` is applied in two halves, ``p·2^(k>>1)·2^(k-(k>>1))``, so that neither factor
    leaves the normal range: the first product is exact and the second rounds once, which
    gives correctly rounded subnormal results and ``inf`` on overflow.
    """
    if not _check_float(p, t, shifter):
        return None

    def codegen(context, builder, signature, args):
        pv, tv, sv = args
        ity, mant, bias = _int_of(pv.type)
        k = builder.sub(builder.bitcast(tv, ity), builder.bitcast(sv, ity))
        k1 = builder.ashr(k, ir.Constant(ity, 1))
        k2 = builder.sub(k, k1)
        s1 = builder.shl(builder.add(k1, ir.Constant(ity, bias)), ir.Constant(ity, mant))
        s2 = builder.shl(builder.add(k2, ir.Constant(ity, bias)), ir.Constant(ity, mant))
        r = builder.fmul(pv, builder.bitcast(s1, pv.type))
        return builder.fmul(r, builder.bitcast(s2, pv.type))

    return p(p, p, p), codegen


# Extra exponent bias of scale_by_pow2_nonpositive: 2^(k+B) stays normal for every k >= -150
# (float32) / -1077 (float64), and multiplying by the exact constant 2^-B afterwards rounds a
# subnormal result once.
_NONPOS_BIAS = {32: 64, 64: 128}


@intrinsic
def scale_by_pow2_nonpositive(typingctx, p, t, shifter):
    """:func:`scale_by_pow2` for ``k <= 0`` only (arguments of ``exp`` in ``[-inf, 0]``):
    ``(p · 2^(k+B)) · 2^-B`` — one integer add, one shift and two multiplications instead of
    the two-halves split, with the same single rounding of subnormal results."""
    if not _check_float(p, t, shifter):
        return None

    def codegen(context, builder, signature, args):
        pv, tv, sv = args
        ity, mant, bias = _int_of(pv.type)
        extra = _NONPOS_BIAS[ity.width]
        k = builder.sub(builder.bitcast(tv, ity), builder.bitcast(sv, ity))
        s = builder.shl(builder.add(k, ir.Constant(ity, bias + extra)), ir.Constant(ity, mant))
        r = builder.fmul(pv, builder.bitcast(s, pv.type))
        return builder.fmul(r, ir.Constant(pv.type, 2.0**-extra))

    return p(p, p, p), codegen


@intrinsic
def split_exponent(typingctx, u):
    """``(m, k)`` with ``u = 2^k · m``, ``m`` in ``[√½, √2)`` and ``k`` returned as a float, for a
    positive normal finite ``u`` (the caller scales subnormals up and handles 0, negative,
    inf and NaN). Adding ``1 - √½`` in the integer domain before taking the exponent field
    moves the split point from 1 to √½ (the fdlibm/musl ``log`` reduction)."""
    if not isinstance(u, types.Float):
        return None
    ret = types.UniTuple(u, 2)

    def codegen(context, builder, signature, args):
        (uv,) = args
        ity, mant, bias = _int_of(uv.type)
        # bits of sqrt(0.5): float32 0x3f3504f3, float64 0x3fe6a09e667f3bcd
        sqrt_half = 0x3F3504F3 if ity.width == 32 else 0x3FE6A09E667F3BCD
        one = bias << mant
        iu = builder.add(builder.bitcast(uv, ity), ir.Constant(ity, one - sqrt_half))
        k = builder.sub(builder.lshr(iu, ir.Constant(ity, mant)), ir.Constant(ity, bias))
        mbits = builder.add(
            builder.and_(iu, ir.Constant(ity, (1 << mant) - 1)), ir.Constant(ity, sqrt_half)
        )
        m = builder.bitcast(mbits, uv.type)
        kf = builder.sitofp(k, uv.type)
        return context.make_tuple(builder, ret, (m, kf))

    return ret(u), codegen


@intrinsic
def cast_like(typingctx, x, like):
    """``x`` converted to the float type of ``like`` (e.g. a float64 weight to float32)."""
    if not (isinstance(x, types.Float) and isinstance(like, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], x, like)

    return like(x, like), codegen


@intrinsic
def prefer_wide_vectors(typingctx):
    """Ask LLVM for 512-bit vectors in the function being compiled (where the CPU has them).

    LLVM vectorises for 256 bits on AVX-512 CPUs unless a function says
    ``"prefer-vector-width"="512"``; Numba has no option for it, so this marks the function
    under construction. Measured on the development machine (AVX-512, one thread, softmax
    cross-entropy (65536, 1000) float32 value only): 67 → 39 ms. A no-op on CPUs without
    AVX-512 (the attribute only changes a preference); if llvmlite's attribute set ever
    stops being a plain ``set``, nothing is added and the kernels just stay 256-bit.
    """

    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # pragma: no cover - llvmlite internals changed
            pass
        return context.get_dummy_value()

    return types.none(), codegen



def _stream_copy_typer(dst, src, fence):
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.dtype == src.dtype and isinstance(dst.dtype, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        _stream_copy_codegen(context, builder, signature, args)
        if fence:
            _sfence(builder)
        return context.get_dummy_value()

    return types.none(dst, src), codegen


def _sfence(builder):
    if _X86:
        sfence = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
        builder.call(sfence, [])


@intrinsic
def stream_copy(typingctx, dst, src):
    """Copy the 1-D array ``src`` into the start of ``dst`` (same float type, both C
    contiguous) with non-temporal stores.

    A kernel that writes its gradient into a separate, large output with ordinary stores
    first reads every destination cache line from memory (read-for-ownership): a third more
    memory traffic than reading the input and writing the output. The kernels compute a
    block of gradient into L1 scratch and stream it out with this: scalar stores up to a
    64-byte boundary of ``dst``, then 64-byte ``!nontemporal`` vector stores (``vmovntps``/
    ``vmovntpd``, which bypass the cache and need the alignment), then a scalar tail, then
    ``sfence`` so that the streamed data is ordered before whatever the thread does next.
    """
    return _stream_copy_typer(dst, src, True)


@intrinsic
def stream_copy_unfenced(typingctx, dst, src):
    """:func:`stream_copy` without the closing ``sfence``: the caller must execute
    :func:`store_fence` on the same thread before anything else may read ``dst`` (e.g.
    once after a thread's last block, rather than once per block: each fence waits until
    the block's streamed lines have reached memory, ~4% of an elementwise kernel's time)."""
    return _stream_copy_typer(dst, src, False)


@intrinsic
def stream_scale(typingctx, dst, src, a, y, gy):
    """``dst[j] = src[j]·a`` for every ``j`` of the 1-D array ``src`` except ``dst[y] = gy``,
    with the non-temporal stores of :func:`stream_copy` (and its closing ``sfence``): a
    scaled row written straight out, without a pass through scratch. ``y`` outside
    ``[0, n)`` patches nothing. Each product is the one rounding of ``src[j]·a`` (``fmul``, no
    fast-math flags), the same bits as ``dst[j] = a·src[j]`` in a loop; the label's entry is
    replaced in the vector register (a lane compare and a blend) before its store.
    Verified in the asm (float32, AVX-512, Numba 0.68): the body is ``vmulps`` (zmm, memory
    operand), ``vpbroadcastd`` + ``vpcmpeqd`` against the lane indices, a masked
    ``vmovaps`` of the broadcast ``gy`` and ``vmovntps zmm``; no spill, no gather."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.dtype == src.dtype and isinstance(dst.dtype, types.Float)
            and a == dst.dtype and gy == dst.dtype and isinstance(y, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        dty, sty, _, yty, _ = signature.args
        d = cgutils.create_struct_proxy(dty)(context, builder, value=args[0])
        s = cgutils.create_struct_proxy(sty)(context, builder, value=args[1])
        av, gyv = args[2], args[4]
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        yv = context.cast(builder, args[3], yty, types.int64)
        sptr = s.data

        def value_at(i, vty):
            if vty is None:
                prod = builder.fmul(builder.load(builder.gep(sptr, [i])), av)
                return builder.select(builder.icmp_signed("==", i, yv), gyv, prod)
            lanes = vty.count
            v = builder.load(builder.bitcast(builder.gep(sptr, [i]), vty.as_pointer()),
                             align=context.get_abi_sizeof(vty.element))
            ity = ir.VectorType(i32, lanes)
            prod = builder.fmul(v, _splat(builder, av, vty))
            # lane of y in this vector, or -1 (matches no lane)
            rel = builder.sub(yv, i)
            inside = builder.icmp_unsigned("<", rel, ir.Constant(i64, lanes))
            lane = builder.select(inside, builder.trunc(rel, i32), ir.Constant(i32, -1))
            is_y = builder.icmp_signed("==", ir.Constant(ity, list(range(lanes))),
                                       _splat(builder, lane, ity))
            return builder.select(is_y, _splat(builder, gyv, vty), prod)

        _stream_loops(context, builder, dty, d.data, builder.extract_value(s.shape, 0),
                      value_at)
        _sfence(builder)
        return context.get_dummy_value()

    return types.none(dst, src, a, y, gy), codegen


@intrinsic
def store_fence(typingctx):
    """``sfence`` (x86; nothing elsewhere): orders this thread's earlier non-temporal stores
    before its later stores, such as the ones that end a parallel region."""

    def codegen(context, builder, signature, args):
        _sfence(builder)
        return context.get_dummy_value()

    return types.none(), codegen


def _stream_copy_codegen(context, builder, signature, args):
    """The copy loops of :func:`stream_copy`."""
    dty, sty = signature.args
    d = cgutils.create_struct_proxy(dty)(context, builder, value=args[0])
    s = cgutils.create_struct_proxy(sty)(context, builder, value=args[1])
    sptr = s.data

    def value_at(i, vty):
        if vty is None:
            return builder.load(builder.gep(sptr, [i]))
        return builder.load(builder.bitcast(builder.gep(sptr, [i]), vty.as_pointer()),
                            align=context.get_abi_sizeof(vty.element))

    _stream_loops(context, builder, dty, d.data, builder.extract_value(s.shape, 0), value_at)


def _stream_loops(context, builder, dty, dptr, n, value_at):
    """Store ``value_at(i, None)`` (a scalar) at ``dptr[i]`` for ``i`` in ``[0, n)``: scalar stores
    up to the first 64-byte boundary of ``dptr``, then ``value_at(i, vty)`` (the 64-byte vector
    of elements ``i…``) with ``!nontemporal`` aligned vector stores, then a scalar tail."""
    fty = context.get_value_type(dty.dtype)
    esize = context.get_abi_sizeof(fty)
    lanes = 64 // esize
    vty = ir.VectorType(fty, lanes)
    i64 = ir.IntType(64)
    one = ir.Constant(i64, 1)
    addr = builder.ptrtoint(dptr, i64)
    # elements before the first 64-byte boundary of dst (all of them if dst is not even
    # element-aligned, which numpy arrays always are)
    peel = builder.udiv(builder.and_(builder.sub(ir.Constant(i64, 0), addr),
                                     ir.Constant(i64, 63)), ir.Constant(i64, esize))
    element_aligned = builder.icmp_unsigned(
        "==", builder.and_(addr, ir.Constant(i64, esize - 1)), ir.Constant(i64, 0))
    peel = builder.select(element_aligned, peel, n)
    peel = builder.select(builder.icmp_unsigned("<", peel, n), peel, n)
    body = builder.mul(builder.udiv(builder.sub(n, peel), ir.Constant(i64, lanes)),
                       ir.Constant(i64, lanes))
    vec_end = builder.add(peel, body)
    nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])

    def scalar_stores(lo, hi):
        with cgutils.for_range_slice(builder, lo, hi, one, inc=True) as (i, _):
            builder.store(value_at(i, None), builder.gep(dptr, [i]))

    scalar_stores(ir.Constant(i64, 0), peel)
    with cgutils.for_range_slice(builder, peel, vec_end, ir.Constant(i64, lanes),
                                 inc=True) as (i, _):
        st = builder.store(value_at(i, vty),
                           builder.bitcast(builder.gep(dptr, [i]), vty.as_pointer()), align=64)
        st.set_metadata("nontemporal", nontemporal)
    scalar_stores(vec_end, n)


def _prefetch_range(context, builder, aty, a, lo_v, hi_v):
    """The loop of :func:`prefetch_lines` over the array ``a`` (a struct proxy of type ``aty``),
    elements ``lo_v`` to ``hi_v − 1`` (i64), clipped to the array."""
    i64 = ir.IntType(64)
    n = builder.extract_value(a.shape, 0)
    zero = ir.Constant(i64, 0)
    lo_v = builder.select(builder.icmp_signed("<", lo_v, zero), zero, lo_v)
    hi_v = builder.select(builder.icmp_signed(">", hi_v, n), n, hi_v)
    esize = context.get_abi_sizeof(context.get_value_type(aty.dtype))
    step = ir.Constant(i64, max(1, 64 // esize))
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
    with cgutils.for_range_slice(builder, lo_v, hi_v, step, inc=True) as (i, _):
        ptr = builder.bitcast(builder.gep(a.data, [i]), i8p)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])


@intrinsic
def prefetch_lines(typingctx, arr, lo, hi):
    """Prefetch elements ``lo`` to ``hi − 1`` of the 1-D contiguous array ``arr`` into the
    cache (``llvm.prefetch``, read, high locality: ``prefetcht0`` on x86), one instruction per
    64-byte line. The range is clipped to the array; a prefetch never faults and changes no
    result, only when the data arrives."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1
            and isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        a = cgutils.create_struct_proxy(aty)(context, builder, value=args[0])
        _prefetch_range(context, builder, aty, a,
                        context.cast(builder, args[1], signature.args[1], types.int64),
                        context.cast(builder, args[2], signature.args[2], types.int64))
        return context.get_dummy_value()

    return types.none(arr, lo, hi), codegen


def _splat(builder, value, vty):
    """``value`` broadcast to every lane of the vector type ``vty``."""
    lanes = vty.count
    one = builder.insert_element(ir.Constant(vty, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vty, None),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def _vector_kit(context, builder, fty, ptr):
    """What the gather intrinsics share for one 64-byte vector of the float type ``fty``
    (``ptr``: a pointer to it): ``(esize, lanes, vty, ivty, mty, gather, store, load_i64)``,
    the element size, lane count, float / int64 / mask vector types, and the declared
    ``llvm.masked.gather`` / ``llvm.masked.store`` of ``vty`` and ``llvm.masked.load`` of
    ``ivty``."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    esize = context.get_abi_sizeof(fty)
    lanes = 64 // esize
    vty = ir.VectorType(fty, lanes)
    ivty = ir.VectorType(i64, lanes)
    mty = ir.VectorType(ir.IntType(1), lanes)
    suffix = f"v{lanes}{'f32' if fty == _F32 else 'f64'}"
    gather = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [ir.VectorType(ptr, lanes), i32, mty, vty]),
        f"llvm.masked.gather.{suffix}.v{lanes}p0")
    store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vty, ptr, i32, mty]),
        f"llvm.masked.store.{suffix}.p0")
    load_i64 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ivty, [i64.as_pointer(), i32, mty, ivty]),
        f"llvm.masked.load.v{lanes}i64.p0")
    return esize, lanes, vty, ivty, mty, gather, store, load_i64


def _transpose_typer(arrays, n_rows, c, kinds=None):
    """The signature of a gather intrinsic over ``arrays`` (all 1-D, C-contiguous), or
    ``None`` where the types do not fit: per array, its ``kinds`` letter says its dtype,
    ``x`` the float type of ``arrays[0]``, ``d`` float64, ``i`` int64 (default: all ``x``)."""
    fty = arrays[0].dtype if isinstance(arrays[0], types.Array) else None
    want = {"x": fty, "d": types.float64, "i": types.int64}
    kinds = kinds or "x" * len(arrays)
    ok = (isinstance(fty, types.Float)
          and all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                  and a.dtype == want[k] for a, k in zip(arrays, kinds, strict=True))
          and isinstance(n_rows, types.Integer) and isinstance(c, types.Integer))
    return types.none(*arrays, n_rows, c) if ok else None


def _transpose_intrinsic(arrays, n_rows, c, kinds=None, **options):
    """``(signature, codegen)`` of a gather intrinsic (:func:`_transpose_typer`'s types, the
    loops of :func:`_transpose_codegen` with ``options``), or ``None``."""
    signature = _transpose_typer(arrays, n_rows, c, kinds)
    if signature is None:
        return None

    def codegen(context, builder, signature, args):
        return _transpose_codegen(context, builder, signature, args, **options)

    return signature, codegen


def _transpose_codegen(context, builder, signature, args, sums64=False, roles=None):
    """The loops of :func:`transpose_rows` (arrays ``src, dst, ahead``),
    :func:`transpose_rows_max` (``src, dst, rmax, ahead``), with ``sums64``
    :func:`row_sums64` (``src, s64, a64, ahead``), and, named by ``roles`` (one name per
    array argument), :func:`transpose_rows_sum64` (``src, dst, s64, ahead``) and
    :func:`row_sums64_pick` (``src, s64, a64, lab, kappa, xy, ky, ahead``): for each group
    of ``L`` rows (``L`` = one 64-byte vector: 16 float32 or 8 float64), prefetch the same
    span of ``ahead``, then for each class ``j``: gather ``x[r·c + j]`` of the group's rows
    and store the vector at ``dst[j·R + r]`` and/or fold it into the group's running
    ``maxnum``, or extend it to float64 and add it (and, with ``a64``, its ``fabs``) to the
    group's running sums (plain ``fadd``, class by class from ``+0.0``), and/or (``lab``)
    keep it, and ``kappa[j]``, in the lanes whose label is ``j`` (``+0.0`` in a lane whose
    label is never met; ``lab`` int64 or, :func:`row_sum64_pick_at`, in the float type),
    and/or (``count``, :func:`transpose_rows_nonzero`) count the nonzero entries and keep
    the last one and its class; lanes beyond the last row are masked off (no load, no
    store)."""
    if roles is None:
        n_arrays = len(signature.args) - 2
        roles = (("src", "s64", "a64", "ahead") if sums64 else
                 ("src", "dst", "rmax", "ahead") if n_arrays == 4 else ("src", "dst", "ahead"))
    arrays = dict(zip(roles, (cgutils.create_struct_proxy(t)(context, builder, value=v)
                              for t, v in zip(signature.args[:-2], args[:-2], strict=True)),
                      strict=True))
    types_of = dict(zip(roles, signature.args[:-2], strict=True))
    src = arrays["src"]
    dst = arrays.get("dst")
    rmax = arrays.get("rmax")
    s64, a64 = arrays.get("s64"), arrays.get("a64")
    lab, kap = arrays.get("lab"), arrays.get("kappa")
    ahead, ahead_ty = arrays["ahead"], types_of["ahead"]
    i64 = ir.IntType(64)
    i32 = ir.IntType(32)
    n = context.cast(builder, args[-2], signature.args[-2], types.int64)
    c = context.cast(builder, args[-1], signature.args[-1], types.int64)
    fty = context.get_value_type(signature.args[0].dtype)
    ptr = src.data.type
    esize, lanes, vty, ivty, mty, gather, store, lab_load = _vector_kit(context, builder, fty,
                                                                        ptr)
    maxnum_v = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vty, vty]),
        f"llvm.maxnum.v{lanes}{'f32' if fty == _F32 else 'f64'}")
    dvty = ir.VectorType(_F64, lanes)
    dptr = _F64.as_pointer()
    store64 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [dvty, dptr, i32, mty]),
        f"llvm.masked.store.v{lanes}f64.p0")
    fabs64 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(dvty, [dvty]), f"llvm.fabs.v{lanes}f64")
    align = ir.Constant(i32, esize)
    # byte offsets of the group's rows from its first element, r·c·esize, computed in 32 bits
    # and sign-extended (< 2^31: a group spans at most L·c elements, c < 2^26 where used) so
    # that x86 selects the 32-bit-index gather: one vgatherdps per 16 float32, not two
    # vgatherqps of 8
    i32v = ir.VectorType(i32, lanes)
    row_bytes = builder.sext(builder.mul(
        _splat(builder, builder.trunc(builder.mul(c, ir.Constant(i64, esize)), i32), i32v),
        ir.Constant(i32v, list(range(lanes)))), ivty)
    iota = ir.Constant(ivty, list(range(lanes)))
    nan = ir.Constant(vty, [float("nan")] * lanes)
    fzero = ir.Constant(vty, [0.0] * lanes)
    fone = ir.Constant(vty, [1.0] * lanes)
    nonzero = "count" in arrays
    float_labels = lab is not None and isinstance(types_of["lab"].dtype, types.Float)
    if float_labels:
        flab_load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [ptr, i32, mty, vty]),
            f"llvm.masked.load.v{lanes}{'f32' if fty == _F32 else 'f64'}.p0")
    zero = ir.Constant(i64, 0)
    with cgutils.for_range_slice(builder, zero, n, ir.Constant(i64, lanes), inc=True) as (r0, _):
        mask = builder.icmp_signed("<", iota, _splat(builder, builder.sub(n, r0), ivty))
        first = builder.ptrtoint(builder.gep(src.data, [builder.mul(r0, c)]), i64)
        row_ptrs = builder.add(_splat(builder, first, ivty), row_bytes)
        m = cgutils.alloca_once_value(builder, nan)
        s = cgutils.alloca_once_value(builder, ir.Constant(dvty, [0.0] * lanes))
        a = cgutils.alloca_once_value(builder, ir.Constant(dvty, [0.0] * lanes))
        picked = cgutils.alloca_once_value(builder, fzero)
        picked_k = cgutils.alloca_once_value(builder, fzero)
        labels = None
        if lab is not None and float_labels:
            # (masked-off lanes: label -1, never met)
            labels = builder.call(flab_load, [builder.gep(lab.data, [r0]), align, mask,
                                              ir.Constant(vty, [-1.0] * lanes)])
        elif lab is not None:
            labels = builder.call(lab_load, [builder.gep(lab.data, [r0]), ir.Constant(i32, 8),
                                             mask, ir.Constant(ivty, [-1] * lanes)])
        if nonzero:
            count = cgutils.alloca_once_value(builder, fzero)
            nz_class = cgutils.alloca_once_value(builder, fzero)
            nz_value = cgutils.alloca_once_value(builder, fzero)
        span = builder.mul(r0, c)
        _prefetch_range(context, builder, ahead_ty, ahead, span,
                        builder.add(span, builder.mul(c, ir.Constant(i64, lanes))))
        with cgutils.for_range(builder, c) as loop:
            j = loop.index
            ptrs = builder.inttoptr(
                builder.add(row_ptrs, _splat(builder, builder.mul(j, ir.Constant(i64, esize)),
                                             ivty)),
                ir.VectorType(ptr, lanes))
            v = builder.call(gather, [ptrs, align, mask, ir.Constant(vty, None)])
            if dst is not None:
                builder.call(store, [v, builder.gep(dst.data, [builder.add(builder.mul(j, n),
                                                                           r0)]),
                                     align, mask])
            if rmax is not None:
                builder.store(builder.call(maxnum_v, [builder.load(m), v]), m)
            if s64 is not None:
                # (masked-off lanes: the zero pass-through, never stored)
                v64 = v if fty == _F64 else builder.fpext(v, dvty)
                builder.store(builder.fadd(builder.load(s), v64), s)
                if a64 is not None:
                    builder.store(builder.fadd(builder.load(a), builder.call(fabs64, [v64])),
                                  a)
            if nonzero:
                # (NaN is nonzero; masked-off lanes hold any value, never stored)
                nz = builder.fcmp_unordered("!=", v, fzero)
                builder.store(builder.fadd(builder.load(count),
                                           builder.select(nz, fone, fzero)), count)
                builder.store(builder.select(nz, _splat(builder, builder.sitofp(j, fty), vty),
                                             builder.load(nz_class)), nz_class)
                builder.store(builder.select(nz, v, builder.load(nz_value)), nz_value)
            if labels is not None:
                hit = (builder.fcmp_ordered("==", labels,
                                            _splat(builder, builder.sitofp(j, fty), vty))
                       if float_labels else
                       builder.icmp_signed("==", labels, _splat(builder, j, ivty)))
                builder.store(builder.select(hit, v, builder.load(picked)), picked)
                kj = builder.load(builder.gep(kap.data, [j]))
                builder.store(builder.select(hit, _splat(builder, kj, vty),
                                             builder.load(picked_k)), picked_k)
        if rmax is not None:
            builder.call(store, [builder.load(m), builder.gep(rmax.data, [r0]), align, mask])
        if s64 is not None:
            align64 = ir.Constant(i32, 8)
            builder.call(store64, [builder.load(s), builder.gep(s64.data, [r0]), align64, mask])
            if a64 is not None:
                builder.call(store64, [builder.load(a), builder.gep(a64.data, [r0]), align64,
                                       mask])
        if nonzero:
            for role, value in (("count", count), ("kf", nz_class), ("picked", nz_value)):
                builder.call(store, [builder.load(value), builder.gep(arrays[role].data, [r0]),
                                     align, mask])
        if labels is not None:
            builder.call(store, [builder.load(picked), builder.gep(arrays["xy"].data, [r0]),
                                 align, mask])
            builder.call(store, [builder.load(picked_k), builder.gep(arrays["ky"].data, [r0]),
                                 align, mask])
    return context.get_dummy_value()


@intrinsic
def transpose_rows(typingctx, src, dst, ahead, n_rows, c):
    """``dst[j·R + r] = src[r·c + j]`` for the ``R = n_rows`` rows of ``c`` elements of the
    flat array ``src`` (row-major to class-major), by vector gathers: with AVX-512 one
    ``vgatherdps`` per 16 float32 (measured 0.14 vs 0.25 ns per element for the scalar
    loop, C = 10, data in L2); on CPUs without gathers LLVM expands ``llvm.masked.gather``
    into scalar loads (correct, as fast as a scalar loop). Group by group, the same span of
    ``ahead`` (the next rows, or any empty array) is prefetched (:func:`prefetch_lines`,
    clipped to ``ahead``), so that the next call finds them in cache and the prefetches are
    spread over the work rather than issued in one burst that stalls on the line fill
    buffers. The caller guarantees ``src.size ≥ R·c``, ``dst.size ≥ R·c`` and
    ``c·esize·16 < 2^31`` (32-bit gather offsets)."""
    return _transpose_intrinsic((src, dst, ahead), n_rows, c)


@intrinsic
def transpose_rows_max(typingctx, src, dst, rmax, ahead, n_rows, c):
    """:func:`transpose_rows`, and ``rmax[r] = maxnum(…maxnum(x_0, x_1)…, x_{c−1})`` of each
    row ``x`` (the row maximum, NaN entries skipped: see :func:`maxnum`) from the gathered
    vectors while they are in registers. The caller guarantees ``rmax.size ≥ R`` too."""
    return _transpose_intrinsic((src, dst, rmax, ahead), n_rows, c)


@intrinsic
def row_sums64(typingctx, src, s64, a64, ahead, n_rows, c):
    """``s64[r] = ((0 + x_0) + x_1) + … + x_{c−1}`` and ``a64[r]`` likewise of ``|x_j|``, in
    float64 (each entry converted exactly, then added class by class in this fixed order: no
    reassociation), of each of the ``R = n_rows`` rows ``x`` of ``c`` elements of the flat
    array ``src``, from the gathers of :func:`transpose_rows` with the sums kept in
    registers: nothing transposed is written, no scratch is read back. ``ahead`` is
    prefetched as there. The caller guarantees ``src.size ≥ R·c``, ``s64.size ≥ R``,
    ``a64.size ≥ R`` (both float64) and ``c·esize·16 < 2^31``."""
    return _transpose_intrinsic((src, s64, a64, ahead), n_rows, c, "xddx", sums64=True)


@intrinsic
def transpose_rows_sum64(typingctx, src, dst, s64, ahead, n_rows, c):
    """:func:`transpose_rows`, and ``s64[r] = ((0 + x_0) + x_1) + … + x_{c−1}`` of each row
    ``x`` in float64 (the sum of :func:`row_sums64`, in the same order) from the gathered
    vectors while they are in registers. The caller guarantees ``s64.size ≥ R`` (float64)
    too."""
    return _transpose_intrinsic((src, dst, s64, ahead), n_rows, c, "xxdx",
                                roles=("src", "dst", "s64", "ahead"))


@intrinsic
def row_sums64_pick(typingctx, src, s64, a64, lab, kappa, xy, ky, ahead, n_rows, c):
    """:func:`row_sums64`, and from the same gathers each row's entry at its label,
    ``xy[r] = x[lab[r]]``, and ``ky[r] = kappa[lab[r]]``, for a label in ``[0, c)``; ``+0.0``
    for both where ``lab[r]`` is outside (an ignored row: no read at an index out of
    range). ``lab``: int64; ``kappa``, ``xy``, ``ky``: the float type of ``src``. The caller
    guarantees, besides what :func:`row_sums64` needs, ``lab.size``, ``xy.size``,
    ``ky.size ≥ R`` and ``kappa.size ≥ c``."""
    return _transpose_intrinsic((src, s64, a64, lab, kappa, xy, ky, ahead), n_rows, c,
                                "xddixxxx",
                                roles=("src", "s64", "a64", "lab", "kappa", "xy", "ky", "ahead"))


@intrinsic
def transpose_rows_nonzero(typingctx, src, dst, count, kf, picked, ahead, n_rows, c):
    """:func:`transpose_rows`, and from the same gathers, per row ``x``, ``count[r]`` the
    number of its entries ``x_j != 0`` (NaN counts), ``kf[r]`` the class ``j`` of the last
    such entry and ``picked[r]`` its value (``0`` for both where there is none), all three
    in the float type of ``src``. The caller guarantees, besides what
    :func:`transpose_rows` needs, ``count.size``, ``kf.size``, ``picked.size ≥ R``."""
    return _transpose_intrinsic((src, dst, count, kf, picked, ahead), n_rows, c,
                                roles=("src", "dst", "count", "kf", "picked", "ahead"))


@intrinsic
def row_sum64_pick_at(typingctx, src, s64, kf, kappa, xy, ky, ahead, n_rows, c):
    """The row sums ``s64`` of :func:`row_sums64` (no ``Σ|x_j|``), and from the same gathers
    each row's entry at the class ``kf[r]``, ``xy[r] = x[kf[r]]``, and ``ky[r] =
    kappa[kf[r]]`` (``+0.0`` for both where ``kf[r]`` is no class in ``[0, c)``): as
    :func:`row_sums64_pick` with the classes given in the float type of ``src`` (as
    :func:`transpose_rows_nonzero` gives them). The caller guarantees ``s64.size``,
    ``kf.size``, ``xy.size``, ``ky.size ≥ R``, ``kappa.size ≥ c`` and what
    :func:`row_sums64` needs."""
    return _transpose_intrinsic((src, s64, kf, kappa, xy, ky, ahead), n_rows, c, "xdxxxxx",
                                roles=("src", "s64", "lab", "kappa", "xy", "ky", "ahead"))


@intrinsic
def gather_labelled(typingctx, src, lab, stride, c, dst):
    """``dst[r] = src[r·stride + y_r]`` for ``r`` in ``[0, dst.size)``, where ``y_r = lab[r]``
    when ``0 ≤ lab[r] < c`` and 0 otherwise (an ignored or invalid label reads class 0), by
    vector gathers (``llvm.masked.gather`` with 64-bit indices: two ``vgatherqps`` per 16
    float32 with AVX-512; scalar loads on CPUs without gathers): a row's entry at its label
    (``stride = c``) or a class weight per row (``stride = 0``). The same loop written in
    Numba stayed scalar (no gather in its ``inspect_asm``: LLVM's cost model declines them).
    The clamp of ``y_r`` keeps every load inside ``src`` whatever the labels hold. The
    caller guarantees ``src.size ≥ (dst.size − 1)·stride + c`` and ``lab.size ≥ dst.size``;
    ``c ≥ 1``. Lanes past ``dst.size`` are masked off (no load, no store)."""
    ok = (isinstance(src, types.Array) and isinstance(dst, types.Array)
          and isinstance(lab, types.Array)
          and all(a.ndim == 1 and a.layout == "C" for a in (src, lab, dst))
          and isinstance(src.dtype, types.Float) and dst.dtype == src.dtype
          and lab.dtype == types.int64
          and isinstance(stride, types.Integer) and isinstance(c, types.Integer))
    if not ok:
        return None

    def codegen(context, builder, signature, args):
        sty, lty, stry, cty, dty = signature.args
        s = cgutils.create_struct_proxy(sty)(context, builder, value=args[0])
        lb = cgutils.create_struct_proxy(lty)(context, builder, value=args[1])
        d = cgutils.create_struct_proxy(dty)(context, builder, value=args[4])
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        stride_v = context.cast(builder, args[2], stry, types.int64)
        c_v = context.cast(builder, args[3], cty, types.int64)
        fty = context.get_value_type(sty.dtype)
        ptr = s.data.type
        esize, lanes, vty, ivty, _, gather, store, load_i64 = _vector_kit(context, builder,
                                                                          fty, ptr)
        n = builder.extract_value(d.shape, 0)
        iota = ir.Constant(ivty, list(range(lanes)))
        zeros = ir.Constant(ivty, [0] * lanes)
        base = _splat(builder, builder.ptrtoint(s.data, i64), ivty)
        esz = ir.Constant(ivty, [esize] * lanes)
        c_s = _splat(builder, c_v, ivty)
        with cgutils.for_range_slice(builder, ir.Constant(i64, 0), n, ir.Constant(i64, lanes),
                                     inc=True) as (r0, _):
            mask = builder.icmp_signed("<", iota, _splat(builder, builder.sub(n, r0), ivty))
            y = builder.call(load_i64, [builder.gep(lb.data, [r0]), ir.Constant(i32, 8), mask,
                                        zeros])
            # y in [0, c) (unsigned compare: a negative y is large), else 0
            y = builder.select(builder.icmp_unsigned("<", y, c_s), y, zeros)
            rows = builder.add(_splat(builder, r0, ivty), iota)
            idx = builder.add(builder.mul(rows, _splat(builder, stride_v, ivty)), y)
            ptrs = builder.inttoptr(builder.add(base, builder.mul(idx, esz)),
                                    ir.VectorType(ptr, lanes))
            v = builder.call(gather, [ptrs, ir.Constant(i32, esize), mask,
                                      ir.Constant(vty, None)])
            builder.call(store, [v, builder.gep(d.data, [r0]), ir.Constant(i32, esize), mask])
        return context.get_dummy_value()

    return types.none(src, lab, stride, c, dst), codegen
