/* Branch-free, vectorisable exp, log and log1p for float and double, and the lane-wise
 * reductions the Cython kernels use.
 *
 * Why this file exists: the kernels are built without -ffast-math (it would delete NaN
 * checks and switch on flush-to-zero for the whole process), and without it GCC neither
 * vectorises calls to libm's expf/logf nor reorders a floating-point sum. So
 *
 *   - exp/log/log1p are written here as straight-line code (selects instead of branches,
 *     integer tricks instead of frexp/ldexp), which GCC inlines into the kernels' loops and
 *     vectorises with whatever vector ISA the translation unit is compiled for;
 *   - sums are lane-wise: FL_LANES independent partial sums, each over a fixed subset of the
 *     elements, combined in a fixed order at the end. The order of every addition is fixed by
 *     this source, not by the compiler or the vector width, so a sum is bitwise the same in
 *     the baseline, AVX2 and AVX-512 builds and for every thread count.
 *
 * Algorithms (range reduction + polynomial, as in Cephes and FreeBSD/musl libm):
 *   exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n*ln2 (Cody-Waite: ln2 split in two
 *            so n*LN2_HI is exact), |r| <= ln2/2; exp(r) by a degree-7 (float, Cephes expf)
 *            or degree-13 (double, Taylor; truncation < 5e-18) polynomial. 2^n is applied as
 *            two factors 2^(n/2) * 2^(n - n/2) built from exponent bits, so results that
 *            overflow become +inf and subnormal results are rounded once, correctly.
 *            x is first clamped to [XMIN, XMAX], beyond which the result is 0 or +inf; the
 *            clamp keeps NaN (comparisons with NaN are false) and NaN propagates through r.
 *   log(x) = k*ln2 + log(m), x = 2^k * m, m in [sqrt(2)/2, sqrt(2)); log(m) = log(1+f) via
 *            s = f/(2+f) and the FreeBSD/musl polynomial in s^2 (4 terms float, 7 double).
 *            Subnormal x are first scaled by 2^25 (float) / 2^54 (double).
 *   log1p(x) = log(u) + c/u with u = 1 + x rounded and c = the rounding error of u
 *            (musl's log1p), which keeps full precision for tiny x.
 *   Special values (0, negative, +-inf, NaN) are fixed up by selects at the end.
 *   The kernels use cheaper variants where the argument's range is known: exp of x <= 0
 *   (softmax, softplus), log1p(e) with 1/(1+e) for e in [0, 1] (softplus, sigmoid), and
 *   log(q), log(1 - q) for q in [0, 1] (binary cross-entropy from probabilities).
 *
 * Measured maximum errors (all < 1.1 ulp, the softplus pieces < 2 ulp) are tabulated in the
 * docstring of fastloss.backends.cython; tests/backends/test_cython_kernels.py checks them.
 */
#ifndef FASTLOSS_FASTMATH_H
#define FASTLOSS_FASTMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define FL_INLINE static inline __attribute__((always_inline))
#else
#define FL_INLINE static inline
#endif

/* ---- bit casts (memcpy compiles to a register move and vectorises) ---- */
FL_INLINE float fl_asfloat(uint32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
FL_INLINE uint32_t fl_asuint(float f) { uint32_t i; memcpy(&i, &f, sizeof i); return i; }
FL_INLINE double fl_asdouble(uint64_t i) { double f; memcpy(&f, &i, sizeof f); return f; }
FL_INLINE uint64_t fl_asuint64(double f) { uint64_t i; memcpy(&i, &f, sizeof i); return i; }

/* ======================================================================================= */
/* exp                                                                                      */
/* ======================================================================================= */

FL_INLINE float fl_expf(float x)
{
    /* exp(88.8) > FLT_MAX and exp(-104) < FLT_TRUE_MIN/2: the clamp changes no result. */
    float xc = x > 88.8f ? 88.8f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    /* n = round(x/ln2): adding 1.5*2^23 rounds to an integer held in the low mantissa bits. */
    const float shifter = 12582912.0f;
    float t = xc * 1.44269504088896341f + shifter;
    float n = t - shifter;
    int32_t ni = (int32_t)(fl_asuint(t) - fl_asuint(shifter));
    float r = xc - n * 0.693359375f;          /* exact: n*LN2_HI has <= 17 bits */
    r = r - n * (-2.12194440e-4f);
    /* Cephes expf: exp(r) = 1 + r + r^2 * P(r), relative error < 1 ulp on |r| <= ln2/2. */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    /* 2^n = 2^n1 * 2^n2 with n1, n2 in [-75, 64]: both factors are normal floats. */
    int32_t n1 = ni >> 1;
    int32_t n2 = ni - n1;
    float s1 = fl_asfloat((uint32_t)(n1 + 127) << 23);
    float s2 = fl_asfloat((uint32_t)(n2 + 127) << 23);
    return p * s1 * s2;
}

FL_INLINE double fl_exp(double x)
{
    /* exp(710) > DBL_MAX and exp(-746) < DBL_TRUE_MIN/2. */
    double xc = x > 710.0 ? 710.0 : x;
    xc = xc < -746.0 ? -746.0 : xc;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    double t = xc * 1.4426950408889634074 + shifter;
    double n = t - shifter;
    /* r = x - n*ln2, Cody-Waite split (Cephes): n*LN2_HI exact for |n| < 2^11. */
    double r = xc - n * 6.93145751953125e-1;
    r = r - n * 1.42860682030941723212e-6;
    /* Taylor series to degree 13: truncation error < 5e-18 on |r| <= ln2/2. */
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    /* 2^n = 2^n1 * 2^n2; n1 = round(n/2) computed with the shifter again, because SSE2 and
     * AVX2 have no 64-bit arithmetic shift; n1, n2 in [-539, 513] are normal exponents. */
    double t1 = n * 0.5 + shifter;
    double n1 = t1 - shifter;
    double t2 = (n - n1) + shifter;
    double s1 = fl_asdouble((fl_asuint64(t1) - fl_asuint64(shifter) + 1023u) << 52);
    double s2 = fl_asdouble((fl_asuint64(t2) - fl_asuint64(shifter) + 1023u) << 52);
    return p * s1 * s2;
}

/* exp(x) for x <= 0 (or NaN), what every kernel needs (softmax: x - max(x); softplus and
 * sigmoid: -|x|). Same polynomial; with n <= 0 the scaling needs one exponent-bits factor
 * 2^(n+64) (normal for n >= -150) and a constant 2^-64, which rounds a subnormal result
 * once: 4 vector operations instead of 9, and no upper clamp. For x > 0 the result is
 * unspecified. */
FL_INLINE float fl_expf_nonpos(float x)
{
    float xc = x < -104.0f ? -104.0f : x;
    const float shifter = 12582912.0f;
    float t = xc * 1.44269504088896341f + shifter;
    float n = t - shifter;
    int32_t ni = (int32_t)(fl_asuint(t) - fl_asuint(shifter));
    float r = xc - n * 0.693359375f;
    r = r - n * (-2.12194440e-4f);
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * fl_asfloat((uint32_t)(ni + (127 + 64)) << 23) * 5.42101086e-20f; /* 2^-64 */
}

FL_INLINE double fl_exp_nonpos(double x)
{
    double xc = x < -746.0 ? -746.0 : x;
    const double shifter = 6755399441055744.0;
    double t = xc * 1.4426950408889634074 + shifter;
    double n = t - shifter;
    double r = xc - n * 6.93145751953125e-1;
    r = r - n * 1.42860682030941723212e-6;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    /* n in [-1076, 0]: 2^(n+600) is normal; times the constant 2^-600. */
    double s = fl_asdouble((fl_asuint64(t) - fl_asuint64(shifter) + (1023u + 600u)) << 52);
    return p * s * 2.4099198651028841e-181; /* 2^-600 */
}

/* x - m, or +0 where x == m (softmax's shift by the row maximum m: a single +inf logit gives
 * 0, not inf - inf = NaN; a NaN x stays NaN). The select is an AND of the difference's bits
 * with a compare mask: written as a conditional, GCC sinks the exp that follows into both
 * arms (exp(0) folded to 1) and if-converts them into masked paths, ~40% more instructions
 * in a fused shift-exp-sum loop; as a mask, it is one compare and one zero-masked subtract
 * ahead of the exp (checked in the AVX-512 build). Bitwise the conditional's result. */
FL_INLINE float fl_shifted_f32(float x, float m)
{
    uint32_t keep = (uint32_t)0 - (uint32_t)(x != m);
    return fl_asfloat(fl_asuint(x - m) & keep);
}

FL_INLINE double fl_shifted_f64(double x, double m)
{
    uint64_t keep = (uint64_t)0 - (uint64_t)(x != m);
    return fl_asdouble(fl_asuint64(x - m) & keep);
}

/* ======================================================================================= */
/* log and log1p                                                                            */
/* ======================================================================================= */

/* log(u) + c for a finite u > 0 whose exponent field is exact (normal), with k_adjust added
 * to the binary exponent (for prescaled subnormals). musl/FreeBSD logf, error < 1 ulp. */
FL_INLINE float fl__logf_core(float u, float k_adjust, float c)
{
    uint32_t iu = fl_asuint(u) + (0x3f800000u - 0x3f3504f3u);
    float k = (float)((int32_t)(iu >> 23) - 127) + k_adjust;
    iu = (iu & 0x007fffffu) + 0x3f3504f3u;
    float f = fl_asfloat(iu) - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float w = z * z;
    float t1 = w * (0.40000972152f + w * 0.24279078841f);
    float t2 = z * (0.66666662693f + w * 0.28498786688f);
    float R = t2 + t1;
    float hfsq = 0.5f * f * f;
    return s * (hfsq + R) + (k * 9.0580006145e-6f + c) - hfsq + f + k * 6.9313812256e-1f;
}

FL_INLINE double fl__log_core(double u, double k_adjust, double c)
{
    uint64_t iu = fl_asuint64(u) + (0x3ff0000000000000ull - 0x3fe6a09e667f3bcdull);
    /* (iu >> 52) - 1023 as a double without int64->double (not in SSE2/AVX2): put the small
     * integer into the mantissa of 2^52 and subtract. */
    double k = fl_asdouble((iu >> 52) | 0x4330000000000000ull) - 4503599627371519.0 + k_adjust;
    iu = (iu & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull;
    double f = fl_asdouble(iu) - 1.0;
    double hfsq = 0.5 * f * f;
    double s = f / (2.0 + f);
    double z = s * s;
    double w = z * z;
    double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
    double t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01
                + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
    double R = t2 + t1;
    return s * (hfsq + R) + (k * 1.90821492927058770002e-10 + c) - hfsq + f
           + k * 6.93147180369123816490e-01;
}

FL_INLINE float fl_logf(float x)
{
    int sub = x < 1.17549435e-38f; /* subnormal (or <= 0: fixed up below) */
    float r = fl__logf_core(sub ? x * 33554432.0f : x, sub ? -25.0f : 0.0f, 0.0f);
    r = x < 0.0f ? NAN : r;
    r = x == 0.0f ? -INFINITY : r;
    r = x == INFINITY ? INFINITY : r;
    return x != x ? x : r;
}

FL_INLINE double fl_log(double x)
{
    int sub = x < 2.2250738585072014e-308;
    double r = fl__log_core(sub ? x * 18014398509481984.0 : x, sub ? -54.0 : 0.0, 0.0);
    r = x < 0.0 ? NAN : r;
    r = x == 0.0 ? -INFINITY : r;
    r = x == INFINITY ? INFINITY : r;
    return x != x ? x : r;
}

FL_INLINE float fl_log1pf(float x)
{
    /* u = 1 + x is 0 or >= 2^-24 for x >= -1, never subnormal. c = (1 + x) - u exactly,
     * divided by u: log(1 + x) = log(u) + c/u to first order. For u >= 2^25, c/u is below
     * an ulp of the result and the formula for c is not exact any more: use 0. */
    float u = 1.0f + x;
    float c = u >= 2.0f ? 1.0f - (u - x) : x - (u - 1.0f);
    c = u >= 33554432.0f ? 0.0f : c / u; /* (NaN x: NaN c, which propagates) */
    float r = fl__logf_core(u, 0.0f, c);
    /* a NaN x propagates through c */
    r = x < -1.0f ? NAN : r;
    r = x == -1.0f ? -INFINITY : r;
    return x == INFINITY ? INFINITY : r;
}

FL_INLINE double fl_log1p(double x)
{
    double u = 1.0 + x;
    double c = u >= 2.0 ? 1.0 - (u - x) : x - (u - 1.0);
    c = u >= 18014398509481984.0 ? 0.0 : c / u;
    double r = fl__log_core(u, 0.0, c);
    r = x < -1.0 ? NAN : r;
    r = x == -1.0 ? -INFINITY : r;
    return x == INFINITY ? INFINITY : r;
}

/* log(q) and log(1 - q) for q in [0, 1] or NaN: the two logarithms of binary cross-entropy
 * from a clipped probability. The special cases that cannot occur (negative, +inf) are not
 * fixed up, and the rest more cheaply than by fl_logf/fl_log1pf:
 *   log(q): a NaN q propagates as the core's c = q - q (0 for every other q);
 *   log(1 - q) = log(u) + c/u, u = 1 - q rounded, c = (1 - u) - q its exact rounding error
 *            (Fast2Sum: |1| >= |q|). c is 0 for q >= 1/2 (Sterbenz) and u > 1/2 otherwise,
 *            where 1/u = 1/(1 - q) is replaced by 1 + q + q^2 (relative error < q^3/(1-q) <=
 *            1/4, on a c/u below one ulp of the result: the division of log1p is saved).
 *            u is 0 or >= 2^-24 (2^-53), never subnormal; a NaN q propagates through c. */
FL_INLINE float fl_log_unitf(float q)
{
    int sub = q < 1.17549435e-38f;
    float r = fl__logf_core(sub ? q * 33554432.0f : q, sub ? -25.0f : 0.0f, q - q);
    return q == 0.0f ? -INFINITY : r;
}

FL_INLINE double fl_log_unit(double q)
{
    int sub = q < 2.2250738585072014e-308;
    double r = fl__log_core(sub ? q * 18014398509481984.0 : q, sub ? -54.0 : 0.0, q - q);
    return q == 0.0 ? -INFINITY : r;
}

FL_INLINE float fl_log1m_unitf(float q)
{
    float u = 1.0f - q;
    float c = (1.0f - u) - q;
    float r = fl__logf_core(u, 0.0f, c + c * (q + q * q));
    return u == 0.0f ? -INFINITY : r;
}

FL_INLINE double fl_log1m_unit(double q)
{
    double u = 1.0 - q;
    double c = (1.0 - u) - q;
    double r = fl__log_core(u, 0.0, c + c * (q + q * q));
    return u == 0.0 ? -INFINITY : r;
}

/* log1p(e) and 1/(1+e) for e in [0, 1] (or NaN): the pieces of softplus and sigmoid of a
 * logit x, with e = exp(-|x|), in two divisions instead of three and without the exponent
 * reduction of a general log.
 *
 * float: log1p(e) = 2 atanh(s) = 2s (1 + s^2/3 + s^4/5 + ...), s = e/(2+e) in [0, 1/3], the
 * series cut after s^12/13 (truncation < 2e-8 relative).
 * double: fl_log1p's algorithm, its division by u = 1 + e shared with 1/(1+e). */
FL_INLINE float fl_log1p_unitf(float e, float *inv)
{
    *inv = 1.0f / (1.0f + e);
    float s = e / (2.0f + e);
    float z = s * s;
    float p = 1.0f / 13.0f;
    p = p * z + 1.0f / 11.0f;
    p = p * z + 1.0f / 9.0f;
    p = p * z + 1.0f / 7.0f;
    p = p * z + 1.0f / 5.0f;
    p = p * z + 1.0f / 3.0f;
    return 2.0f * s + 2.0f * s * (z * p);
}

FL_INLINE double fl_log1p_unit(double e, double *inv)
{
    double u = 1.0 + e;
    double rcp = 1.0 / u;
    *inv = rcp;
    return fl__log_core(u, 0.0, (e - (u - 1.0)) * rcp);
}

/* Cross-entropy from probabilities, the terms of one class (_cross_entropy.pxd, whose module
 * docstring states the formulas): q_hat = clip(q, lo, hi) (NaN stays NaN), the loss term
 * c*log(q_hat), and g = -c/q_hat inside [lo, hi], 0 outside. Here rather than in Cython so
 * that they are always inlined (written as Cython inline functions, GCC left the loss term
 * an out-of-line call, seen in perf). */
FL_INLINE double fl_clip(double q, double lo, double hi)
{
    return q < lo ? lo : (q > hi ? hi : q);
}

FL_INLINE double fl_prob_loss_term(double q, double c, double lo, double hi)
{
    return c * fl_log(fl_clip(q, lo, hi));
}

FL_INLINE double fl_prob_grad_term(double q, double c, double lo, double hi)
{
    return (q < lo || q > hi) ? 0.0 : -c / fl_clip(q, lo, hi);
}

/* ======================================================================================= */
/* Lane-wise reductions                                                                     */
/* ======================================================================================= */

/* Element i goes to partial sum i % FL_LANES of its 16-element group (the tail continues the
 * pattern); the partial sums are combined by a fixed pairwise tree. Every addition happens
 * in an order fixed here, and the lanes are independent, so GCC vectorises the loop without
 * reassociating anything (no -ffast-math needed) and the result does not depend on the
 * vector width or on the alignment of x. Fewer than FL_LANES elements (a short row) are
 * added in two interleaved chains: the order still depends on n only. */
#define FL_LANES 16

#define FL_DEFINE_SUM(NAME, T)                                                              \
    FL_INLINE double NAME(const T *x, ptrdiff_t n)                                          \
    {                                                                                      \
        if (n < FL_LANES) { /* short rows (small C): two chains, no lane set-up */        \
            double s0 = 0, s1 = 0;                                                         \
            ptrdiff_t i = 0;                                                               \
            for (; i + 2 <= n; i += 2) {                                                   \
                s0 += (double)x[i];                                                        \
                s1 += (double)x[i + 1];                                                    \
            }                                                                              \
            if (i < n)                                                                     \
                s0 += (double)x[i];                                                        \
            return s0 + s1;                                                                \
        }                                                                                  \
        double acc[FL_LANES] = {0};                                                        \
        ptrdiff_t i = 0;                                                                   \
        for (; i + FL_LANES <= n; i += FL_LANES)                                           \
            for (int k = 0; k < FL_LANES; k++)                                             \
                acc[k] += (double)x[i + k];                                                \
        for (int k = 0; i < n; i++, k++)                                                   \
            acc[k] += (double)x[i];                                                        \
        for (int w = FL_LANES / 2; w > 0; w /= 2)                                          \
            for (int k = 0; k < w; k++)                                                    \
                acc[k] += acc[k + w];                                                      \
        return acc[0];                                                                     \
    }
FL_DEFINE_SUM(fl_sum_f32, float)
FL_DEFINE_SUM(fl_sum_f64, double)

/* fl_sum_f64, out of line: one copy of the machine code per build, for sums whose NaN sign
 * must agree between the kernels' code paths. GCC takes addition as commutative and may
 * swap the operands of an inlined copy; x86 returns the first operand's NaN when both are
 * NaN, so NaN row losses of either sign could add up to NaNs of different signs in two
 * paths with the same row losses (seen: the block sums of value_and_grad from sparse labels
 * and from their one-hot targets). */
#if defined(__GNUC__)
__attribute__((noinline, unused))
#endif
static double fl_sum_rows_f64(const double *x, ptrdiff_t n) { return fl_sum_f64(x, n); }

/* Maximum of x (-inf for n == 0). A max does not depend on the order of evaluation, so an
 * OpenMP simd reduction (vmaxps, lanes combined by the compiler) is deterministic; with a
 * NaN among x the result is NaN or the max of the others, depending on where the NaN sits.
 * The kernels do not care: a NaN in a row makes its softmax NaN through exp(x - m) either
 * way. (The lane-array formulation used for the sums is not vectorised by GCC 12 for max.) */
#define FL_DEFINE_MAX(NAME, T)                                                              \
    FL_INLINE T NAME(const T *x, ptrdiff_t n)                                               \
    {                                                                                      \
        if (n < 64) { /* short rows (small C) */                                          \
            T m = -INFINITY;                                                               \
            for (ptrdiff_t i = 0; i < n; i++)                                              \
                m = x[i] > m ? x[i] : m;                                                   \
            return m;                                                                      \
        }                                                                                  \
        /* four quarters, four independent vector chains (vmaxps latency) */             \
        ptrdiff_t q = n / 4;                                                               \
        const T *x1 = x + q, *x2 = x + 2 * q, *x3 = x + 3 * q;                             \
        T m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY, m3 = -INFINITY;                  \
        _Pragma("omp simd reduction(max:m0, m1, m2, m3)")                                  \
        for (ptrdiff_t i = 0; i < q; i++) {                                                \
            m0 = x[i] > m0 ? x[i] : m0;                                                    \
            m1 = x1[i] > m1 ? x1[i] : m1;                                                  \
            m2 = x2[i] > m2 ? x2[i] : m2;                                                  \
            m3 = x3[i] > m3 ? x3[i] : m3;                                                  \
        }                                                                                  \
        for (ptrdiff_t i = 4 * q; i < n; i++)                                              \
            m0 = x[i] > m0 ? x[i] : m0;                                                    \
        m0 = m1 > m0 ? m1 : m0;                                                            \
        m2 = m3 > m2 ? m3 : m2;                                                            \
        return m2 > m0 ? m2 : m0;                                                          \
    }
FL_DEFINE_MAX(fl_max_f32, float)
FL_DEFINE_MAX(fl_max_f64, double)

/* Transposes for the small-class softmax (rows in the vector lanes), between a block of R rows
 * of C values, x[r*C + j], and its transpose xt[j*S + r] (row stride S >= R):
 *
 *   fl_transpose_in_max(x, C, R, xt, S, m): xt = x transposed, and m[r] = max_j x[r*C + j]
 *       taken as m = (v > m ? v : m) from -inf in class order (a NaN is never taken; a row
 *       of NaN and -inf gets -inf);
 *   fl_transpose_out(xt, S, C, R, out): out[r*C + j] = xt[j*S + r].
 *
 * With AVX2/AVX-512, G rows at a time with hardware gathers from the L1-resident block:
 * "in" gathers one class of G rows (indices l*C) into one vector; "out" builds each of the
 * C contiguous output vectors of G rows by a gather with a precomputed index table. Measured
 * on the development machine (Sapphire Rapids, C = 10, float32, block in L1), per element:
 * in+max 0.13 ns (scalar loops as GCC vectorises them: 0.21-0.27), out 0.17 ns (scalar
 * 0.3-0.4; AVX-512 scatters 0.24). The remainder rows, and the baseline build, take the
 * scalar loops. A transpose only moves values: the results are bitwise those of the scalar
 * loops. C must be small enough for the index table (C <= FL_TRANSPOSE_MAX_C). */
#define FL_TRANSPOSE_MAX_C 64

#define FL_DEFINE_TRANSPOSE_SCALAR(T)                                                       \
    FL_INLINE void fl__transpose_in_max_rest_##T(const T *x, ptrdiff_t C, ptrdiff_t r0,    \
                                                 ptrdiff_t R, T *xt, ptrdiff_t S, T *m)    \
    {                                                                                      \
        for (ptrdiff_t r = r0; r < R; r++)                                                 \
            m[r] = -INFINITY;                                                              \
        for (ptrdiff_t j = 0; j < C; j++)                                                  \
            for (ptrdiff_t r = r0; r < R; r++) {                                           \
                T v = x[r * C + j];                                                        \
                xt[j * S + r] = v;                                                         \
                m[r] = v > m[r] ? v : m[r];                                                \
            }                                                                              \
    }                                                                                      \
    FL_INLINE void fl__transpose_out_rest_##T(const T *xt, ptrdiff_t S, ptrdiff_t C,       \
                                              ptrdiff_t r0, ptrdiff_t R, T *out)           \
    {                                                                                      \
        for (ptrdiff_t r = r0; r < R; r++)                                                 \
            for (ptrdiff_t j = 0; j < C; j++)                                              \
                out[r * C + j] = xt[j * S + r];                                            \
    }
FL_DEFINE_TRANSPOSE_SCALAR(float)
FL_DEFINE_TRANSPOSE_SCALAR(double)

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#if defined(__AVX512F__)
#define FL_TG_F32 16
#define FL_TG_F64 8
#define FL_VF32 __m512
#define FL_VF64 __m512d
#define FL_IDX_F32 __m512i
#define FL_IDX_F64 __m256i
#define FL_LOADIDX_F32(p) _mm512_loadu_si512((const void *)(p))
#define FL_LOADIDX_F64(p) _mm256_loadu_si256((const __m256i *)(p))
#define FL_GATHER_F32(base, idx) _mm512_i32gather_ps((idx), (base), 4)
#define FL_GATHER_F64(base, idx) _mm512_i32gather_pd((idx), (base), 8)
#define FL_MAX_F32 _mm512_max_ps
#define FL_MAX_F64 _mm512_max_pd
#define FL_STORE_F32 _mm512_storeu_ps
#define FL_STORE_F64 _mm512_storeu_pd
#define FL_SET1_F32 _mm512_set1_ps
#define FL_SET1_F64 _mm512_set1_pd
#else
#define FL_TG_F32 8
#define FL_TG_F64 4
#define FL_VF32 __m256
#define FL_VF64 __m256d
#define FL_IDX_F32 __m256i
#define FL_IDX_F64 __m128i
#define FL_LOADIDX_F32(p) _mm256_loadu_si256((const __m256i *)(p))
#define FL_LOADIDX_F64(p) _mm_loadu_si128((const __m128i *)(p))
#define FL_GATHER_F32(base, idx) _mm256_i32gather_ps((base), (idx), 4)
#define FL_GATHER_F64(base, idx) _mm256_i32gather_pd((base), (idx), 8)
#define FL_MAX_F32 _mm256_max_ps
#define FL_MAX_F64 _mm256_max_pd
#define FL_STORE_F32 _mm256_storeu_ps
#define FL_STORE_F64 _mm256_storeu_pd
#define FL_SET1_F32 _mm256_set1_ps
#define FL_SET1_F64 _mm256_set1_pd
#endif
/* (vmaxps a, b = a > b ? a : b, NaN in either: b, which is the scalar loops' rule.) */
#define FL_DEFINE_TRANSPOSE(NAME_IN, NAME_OUT, T, G, VEC, IDX, LOADIDX, GATHER, MAX, STORE,  \
                            SET1)                                                          \
    FL_INLINE void NAME_IN(const T *x, ptrdiff_t C, ptrdiff_t R, T *xt, ptrdiff_t S, T *m)  \
    {                                                                                      \
        int32_t tab[G];                                                                    \
        for (int l = 0; l < G; l++)                                                        \
            tab[l] = (int32_t)(l * C);                                                     \
        IDX idx = LOADIDX(tab);                                                            \
        ptrdiff_t r = 0;                                                                   \
        for (; r + G <= R; r += G) {                                                       \
            const T *b = x + r * C;                                                        \
            VEC mv = SET1(-INFINITY);                                                      \
            for (ptrdiff_t j = 0; j < C; j++) {                                            \
                VEC v = GATHER(b + j, idx);                                                \
                STORE(xt + j * S + r, v);                                                  \
                mv = MAX(v, mv);                                                           \
            }                                                                              \
            STORE(m + r, mv);                                                              \
        }                                                                                  \
        fl__transpose_in_max_rest_##T(x, C, r, R, xt, S, m);                               \
    }                                                                                      \
    FL_INLINE void NAME_OUT(const T *xt, ptrdiff_t S, ptrdiff_t C, ptrdiff_t R, T *out)     \
    {                                                                                      \
        int32_t tab[G * FL_TRANSPOSE_MAX_C]; /* output k of a group: row k/C, class k%C */ \
        for (ptrdiff_t k = 0, row = 0, j = 0; k < G * C; k++) {                            \
            tab[k] = (int32_t)(j * S + row);                                               \
            j = j + 1 == C ? 0 : j + 1;                                                    \
            row = j == 0 ? row + 1 : row;                                                  \
        }                                                                                  \
        ptrdiff_t r = 0;                                                                   \
        for (; r + G <= R; r += G)                                                         \
            for (ptrdiff_t q = 0; q < C; q++)                                              \
                STORE(out + r * C + q * G, GATHER(xt + r, LOADIDX(tab + q * G)));          \
        fl__transpose_out_rest_##T(xt, S, C, r, R, out);                                   \
    }
FL_DEFINE_TRANSPOSE(fl__transpose_in_max_f32_g, fl_transpose_out_f32, float, FL_TG_F32, FL_VF32,
                    FL_IDX_F32, FL_LOADIDX_F32, FL_GATHER_F32, FL_MAX_F32, FL_STORE_F32,
                    FL_SET1_F32)
#if defined(__AVX512F__)
/* AVX-512, float: two classes per pair of gathers of 64-bit elements (classes j and j + 1 of
 * 8 rows each, 8 loads per gather where a gather of one class of 16 rows makes 16: gathers
 * are bound by their loads), split into the two class vectors of the 16 rows by two
 * VPERMT2PS; an odd C's last class with the 32-bit gather. The same values stored, and the
 * same maxima taken in class order, as fl__transpose_in_max_f32_g. Measured (float32,
 * (6553600, 10), sparse value only, one thread, CPU time): see _cross_entropy.pxd. */
FL_INLINE void fl_transpose_in_max_f32(const float *x, ptrdiff_t C, ptrdiff_t R, float *xt,
                                       ptrdiff_t S, float *m)
{
    int32_t tab[16];
    for (int l = 0; l < 16; l++)
        tab[l] = (int32_t)(l * C);
    const __m512i idx = _mm512_loadu_si512((const void *)tab);
    const __m256i idx8 = _mm512_castsi512_si256(idx);   /* rows 0-7 */
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    ptrdiff_t r = 0;
    for (; r + 16 <= R; r += 16) {
        const float *b = x + r * C;
        const float *b8 = b + 8 * C;   /* rows 8-15 */
        __m512 mv = _mm512_set1_ps(-INFINITY);
        ptrdiff_t j = 0;
        for (; j + 2 <= C; j += 2) {
            __m512 lo = _mm512_castpd_ps(_mm512_i32gather_pd(idx8, (const void *)(b + j), 4));
            __m512 hi = _mm512_castpd_ps(_mm512_i32gather_pd(idx8, (const void *)(b8 + j), 4));
            __m512 v0 = _mm512_permutex2var_ps(lo, even, hi);
            __m512 v1 = _mm512_permutex2var_ps(lo, odd, hi);
            _mm512_storeu_ps(xt + j * S + r, v0);
            _mm512_storeu_ps(xt + (j + 1) * S + r, v1);
            mv = _mm512_max_ps(v0, mv);
            mv = _mm512_max_ps(v1, mv);
        }
        if (j < C) {
            __m512 v = _mm512_i32gather_ps(idx, b + j, 4);
            _mm512_storeu_ps(xt + j * S + r, v);
            mv = _mm512_max_ps(v, mv);
        }
        _mm512_storeu_ps(m + r, mv);
    }
    fl__transpose_in_max_rest_float(x, C, r, R, xt, S, m);
}
#else
FL_INLINE void fl_transpose_in_max_f32(const float *x, ptrdiff_t C, ptrdiff_t R, float *xt,
                                       ptrdiff_t S, float *m)
{ fl__transpose_in_max_f32_g(x, C, R, xt, S, m); }
#endif
FL_DEFINE_TRANSPOSE(fl_transpose_in_max_f64, fl_transpose_out_f64, double, FL_TG_F64, FL_VF64,
                    FL_IDX_F64, FL_LOADIDX_F64, FL_GATHER_F64, FL_MAX_F64, FL_STORE_F64,
                    FL_SET1_F64)
#else
FL_INLINE void fl_transpose_in_max_f32(const float *x, ptrdiff_t C, ptrdiff_t R, float *xt,
                                       ptrdiff_t S, float *m)
{ fl__transpose_in_max_rest_float(x, C, 0, R, xt, S, m); }
FL_INLINE void fl_transpose_in_max_f64(const double *x, ptrdiff_t C, ptrdiff_t R, double *xt,
                                       ptrdiff_t S, double *m)
{ fl__transpose_in_max_rest_double(x, C, 0, R, xt, S, m); }
FL_INLINE void fl_transpose_out_f32(const float *xt, ptrdiff_t S, ptrdiff_t C, ptrdiff_t R,
                                    float *out)
{ fl__transpose_out_rest_float(xt, S, C, 0, R, out); }
FL_INLINE void fl_transpose_out_f64(const double *xt, ptrdiff_t S, ptrdiff_t C, ptrdiff_t R,
                                    double *out)
{ fl__transpose_out_rest_double(xt, S, C, 0, R, out); }
#endif

/* Step 3 of the small-class softmax (ce_logits_small_block) for a group of 16 rows of the
 * transposed block, float32, AVX-512: s[l] = Σ_j e_j in float64 from +0 in class order, with
 * e_j = fl_expf_nonpos(fl_shifted_f32(xt[j*S + l], m[l])), written over xt where store is
 * nonzero. The same additions as the loop GCC vectorises from those functions (Cython,
 * ce_small_group_sums), and the same exp bit for bit: the FMAs are where GCC contracts the
 * scalar source (read in the asm of that loop: t, r twice, the polynomial, p*r^2 + r), and
 * the scaling p*2^(n+64)*2^-64 is one VSCALEFPS p*2^n, the same rounding (the first product
 * is exact: p in [0.7, 1.5], 2^(n+64) normal for n >= -150), which saves three operations a
 * vector; the clamp to -104 is kept (GCC instead zeroes those lanes: exp(-104) rounds to 0
 * either way). A NaN passes every step as in the scalar code (each operation has one NaN
 * operand, or the same NaN twice), and s + e keeps s's NaN (s is the first operand of
 * VADDPD, as in GCC's loop: checked in the asm). tests/backends/test_cython_kernels.py
 * compares it with the portable loop. */
#if defined(__AVX512F__)
#define FL_EXP_GROUP_F32 1
FL_INLINE __m512 fl__expf_nonpos_v16(__m512 x)
{
    const __m512 shifter = _mm512_set1_ps(12582912.0f);
    __m512 xc = _mm512_max_ps(_mm512_set1_ps(-104.0f), x); /* NaN: the second operand, x */
    __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), shifter);
    __m512 n = _mm512_sub_ps(t, shifter);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

FL_INLINE void fl_exp_group_sums_f32(float *xt, ptrdiff_t S, ptrdiff_t C, const float *m,
                                     double *s, int store)
{
    const __m512 mv = _mm512_loadu_ps(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (ptrdiff_t j = 0; j < C; j++) {
        __m512 x = _mm512_loadu_ps(xt + j * S);
        /* fl_shifted_f32: x - m, +0 where x == m (x != m also holds for NaN) */
        __m512 z = _mm512_maskz_sub_ps(_mm512_cmp_ps_mask(x, mv, _CMP_NEQ_UQ), x, mv);
        __m512 e = fl__expf_nonpos_v16(z);
        if (store)
            _mm512_storeu_ps(xt + j * S, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
    _mm512_storeu_pd(s, s0);
    _mm512_storeu_pd(s + 8, s1);
}
#else
#define FL_EXP_GROUP_F32 0
FL_INLINE void fl_exp_group_sums_f32(float *xt, ptrdiff_t S, ptrdiff_t C, const float *m,
                                     double *s, int store)
{ (void)xt; (void)S; (void)C; (void)m; (void)s; (void)store; }   /* not called */
#endif

/* Dense value-only rows of float32 (fl_short_onehot_rows_f32) with an even number of classes
 * C (< FL_LANES), the rows 8 at a time as 64-bit pairs of classes (2p, 2p+1): per pair one
 * hardware gather of 8 qwords (indices l*C/2) from x and one from t. Widened to double, a
 * gather of x holds, lane by lane, each row's even chain next to its odd chain: each is
 * added from +0 in class order, as fl_sum_f32 adds a short row, then S = even + odd (both
 * chains out of the lanes by two permutes): the same additions, so the same bits. From t,
 * per row, over the classes j with t_j != 0 (NaN counts): code = sum of (1 + 16j) (float,
 * exact: below 2^12), and x_j, t_j, kappa_j by masked moves into the pairs' own lanes, then
 * a row's two lanes ORed (one of them is +0 where at most one class has t_j != 0). So the
 * targets are read once, in the same gathers as the sums, and x_k needs no gather of its
 * own. Measured (float32, (6553600, 10) one-hot, one thread, AVX-512, CPU time per row, two
 * runs each, against the transpose of the targets and the loops over it): 13.0 -> 7.4 ns;
 * with 16-element gathers a class at a time instead of pairs, 8.0 ns.
 *
 * Rows 8*floor(R/8) .. R-1 are left to the caller; returns 8*floor(R/8) (0 for odd C and
 * without AVX-512). */
FL_INLINE ptrdiff_t fl__pair_rows_f32(const float *x, const float *t, const float *kappa,
                                      ptrdiff_t C, ptrdiff_t R, double *S, int32_t *code,
                                      float *xk, float *tk, float *kk)
{
    ptrdiff_t r = 0;
#if defined(__AVX512F__)
    if (C & 1)
        return 0;
    const ptrdiff_t P = C / 2;
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32((int32_t)P));
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    for (; r + 8 <= R; r += 8) {
        const float *b = x + r * C;
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        {
            const float *tb = t + r * C;
            __m512 cd = _mm512_setzero_ps(), xv = _mm512_setzero_ps();
            __m512 tv = _mm512_setzero_ps(), kv = _mm512_setzero_ps();
            for (ptrdiff_t p = 0; p < P; p++) {
                __m512 v = _mm512_castsi512_ps(_mm512_i32gather_epi64(idx, b + 2 * p, 8));
                __m512 u = _mm512_castsi512_ps(_mm512_i32gather_epi64(idx, tb + 2 * p, 8));
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
                hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
                __mmask16 m = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                __m512 step = _mm512_setr4_ps((float)(1 + 32 * p), (float)(17 + 32 * p),
                                              (float)(1 + 32 * p), (float)(17 + 32 * p));
                __m512 kp = _mm512_setr4_ps(kappa[2 * p], kappa[2 * p + 1], kappa[2 * p],
                                            kappa[2 * p + 1]);
                cd = _mm512_mask_add_ps(cd, m, cd, step);
                xv = _mm512_mask_mov_ps(xv, m, v);
                tv = _mm512_mask_mov_ps(tv, m, u);
                kv = _mm512_mask_mov_ps(kv, m, kp);
            }
            /* a row's two lanes into its even lane, then the even lanes (the low halves of
             * the qwords) packed */
            cd = _mm512_add_ps(cd, _mm512_permute_ps(cd, 0xB1));
            __m512i ci = _mm512_cvttps_epi32(cd);
            _mm256_storeu_si256((__m256i *)(code + r), _mm512_cvtepi64_epi32(ci));
#define FL__PAIR_OR(V, OUT)                                                                 \
            {                                                                               \
                __m512i w = _mm512_castps_si512(V);                                         \
                w = _mm512_or_si512(w, _mm512_castps_si512(_mm512_permute_ps(V, 0xB1)));   \
                _mm256_storeu_si256((__m256i *)((OUT) + r), _mm512_cvtepi64_epi32(w));      \
            }
            FL__PAIR_OR(xv, xk)
            FL__PAIR_OR(tv, tk)
            FL__PAIR_OR(kv, kk)
#undef FL__PAIR_OR
        }
        __m512d e = _mm512_permutex2var_pd(lo, even, hi);
        __m512d o = _mm512_permutex2var_pd(lo, odd, hi);
        _mm512_storeu_pd(S + r, _mm512_add_pd(e, o));
    }
#else
    (void)x; (void)t; (void)kappa; (void)C; (void)R; (void)S; (void)code; (void)xk; (void)tk;
    (void)kk;
#endif
    return r;
}

/* Dense value-only rows, C < FL_LANES: S[r] = fl_sum_f32(x + r*C, C) and, over the classes
 * j with t_j != 0 (NaN counts), code[r] = sum of (1 + 16j) (its low 4 bits count them) and,
 * where there is one such class k, xk[r] = x_k, tk[r] = t_k, kk[r] = kappa[k] (+0 where there
 * is none; unspecified where there are several). Vector rows by fl__pair_rows_f32, the rest
 * (and every row for odd C or without AVX-512) here, with the same results for every row
 * with at most one such class. FL_ONEHOT_ROWS: whether this build has the vector path (the
 * kernel uses this function only then; otherwise it transposes the targets). */
#if defined(__AVX512F__)
#define FL_ONEHOT_ROWS 1
#else
#define FL_ONEHOT_ROWS 0
#endif
FL_INLINE void fl_short_onehot_rows_f32(const float *x, const float *t, const float *kappa,
                                        ptrdiff_t C, ptrdiff_t R, double *S, int32_t *code,
                                        float *xk, float *tk, float *kk)
{
    ptrdiff_t r = fl__pair_rows_f32(x, t, kappa, C, R, S, code, xk, tk, kk);
    for (; r < R; r++) {
        const float *xr = x + r * C, *tr = t + r * C;
        int32_t c = 0;
        float xv = 0, tv = 0, kv = 0;
        S[r] = fl_sum_f32(xr, C);
        for (ptrdiff_t j = 0; j < C; j++)
            if (tr[j] != 0) {   /* (true for NaN) */
                c += (int32_t)(1 + 16 * j);
                xv = xr[j];
                tv = tr[j];
                kv = kappa[j];
            }
        code[r] = c;
        xk[r] = xv;
        tk[r] = tv;
        kk[r] = kv;
    }
}

/* Row sums of R short rows (fewer than FL_LANES values each; row r is x[r*C .. r*C + C)),
 * S[r] = fl_sum(x + r*C, C) bit for bit: each in fl_sum's two chains, the even classes and
 * the odd ones, each from +0 in class order, then added. With AVX2/AVX-512, G rows at a time
 * (the rows in the vector lanes): one hardware gather per class (indices l*C, as
 * fl_transpose_in_max; only the G rows' own elements are read), widened to double and added
 * to its chain: the same additions in the same order, lane by lane. The remaining rows, and
 * the baseline build, call fl_sum. (GCC's own vectorisation of the strided class-at-a-time
 * loop loads each element with a scalar load and an insert.) */
FL_INLINE void fl_short_row_sums_f32(const float *x, ptrdiff_t C, ptrdiff_t R, double *S)
{
    ptrdiff_t r = 0;
#if defined(__AVX512F__)
    int32_t tab[16];
    for (int l = 0; l < 16; l++)
        tab[l] = (int32_t)(l * C);
    const __m512i idx = _mm512_loadu_si512((const void *)tab);
    for (; r + 16 <= R; r += 16) {
        const float *b = x + r * C;
        __m512d e0 = _mm512_setzero_pd(), e1 = _mm512_setzero_pd();
        __m512d o0 = _mm512_setzero_pd(), o1 = _mm512_setzero_pd();
        ptrdiff_t j = 0;
        for (; j + 2 <= C; j += 2) {
            __m512 v = _mm512_i32gather_ps(idx, b + j, 4);
            __m512 u = _mm512_i32gather_ps(idx, b + j + 1, 4);
            e0 = _mm512_add_pd(e0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
            e1 = _mm512_add_pd(e1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
            o0 = _mm512_add_pd(o0, _mm512_cvtps_pd(_mm512_castps512_ps256(u)));
            o1 = _mm512_add_pd(o1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(u, 1)));
        }
        if (j < C) {
            __m512 v = _mm512_i32gather_ps(idx, b + j, 4);
            e0 = _mm512_add_pd(e0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
            e1 = _mm512_add_pd(e1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
        }
        _mm512_storeu_pd(S + r, _mm512_add_pd(e0, o0));
        _mm512_storeu_pd(S + r + 8, _mm512_add_pd(e1, o1));
    }
#elif defined(__AVX2__)
    int32_t tab[8];
    for (int l = 0; l < 8; l++)
        tab[l] = (int32_t)(l * C);
    const __m256i idx = _mm256_loadu_si256((const __m256i *)tab);
    for (; r + 8 <= R; r += 8) {
        const float *b = x + r * C;
        __m256d e0 = _mm256_setzero_pd(), e1 = _mm256_setzero_pd();
        __m256d o0 = _mm256_setzero_pd(), o1 = _mm256_setzero_pd();
        ptrdiff_t j = 0;
        for (; j + 2 <= C; j += 2) {
            __m256 v = _mm256_i32gather_ps(b + j, idx, 4);
            __m256 u = _mm256_i32gather_ps(b + j + 1, idx, 4);
            e0 = _mm256_add_pd(e0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            e1 = _mm256_add_pd(e1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
            o0 = _mm256_add_pd(o0, _mm256_cvtps_pd(_mm256_castps256_ps128(u)));
            o1 = _mm256_add_pd(o1, _mm256_cvtps_pd(_mm256_extractf128_ps(u, 1)));
        }
        if (j < C) {
            __m256 v = _mm256_i32gather_ps(b + j, idx, 4);
            e0 = _mm256_add_pd(e0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            e1 = _mm256_add_pd(e1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        }
        _mm256_storeu_pd(S + r, _mm256_add_pd(e0, o0));
        _mm256_storeu_pd(S + r + 4, _mm256_add_pd(e1, o1));
    }
#endif
    for (; r < R; r++)
        S[r] = fl_sum_f32(x + r * C, C);
}

/* Reads one byte of every 64 in [p, p + bytes) (as unsigned char: no aliasing question),
 * in address order, and returns their max so that the loads stay: brings a block into the
 * cache with ordinary loads, which the hardware prefetchers follow, before gathers read it.
 * Nothing outside [p, p + bytes) is read. */
FL_INLINE unsigned int fl_touch(const void *p, ptrdiff_t bytes)
{
    const unsigned char *c = (const unsigned char *)p;
    unsigned int m = 0;
    for (ptrdiff_t i = 0; i < bytes; i += 64)
        m = c[i] > m ? c[i] : m;
    return m;
}

/* out[r] = x[r*C + col[r]] for R rows of C values, a column index per row, col[r] in
 * [0, C) (the caller's to check); r*C + C must fit an int32 (a kernel block). With C = 0, a
 * table lookup, out[r] = x[col[r]] (col[r] within the table: the caller's to check). With
 * AVX2/AVX-512 a hardware gather per vector of rows (GCC does not vectorise this loop: its
 * index arithmetic may wrap under -fwrapv, which Python's flags add); the rest scalar. */
#define FL_DEFINE_GATHER_COLS(NAME, T)                                                     \
    FL_INLINE void NAME(const T *x, ptrdiff_t C, ptrdiff_t R, const int32_t *col, T *out)  \
    {                                                                                      \
        ptrdiff_t r = 0;                                                                   \
        FL__GATHER_COLS_##T                                                                \
        for (; r < R; r++)                                                                 \
            out[r] = x[r * C + col[r]];                                                    \
    }
#if defined(__AVX512F__)
#define FL__GATHER_COLS_float                                                              \
    const __m512i step = _mm512_set1_epi32((int32_t)(16 * C));                             \
    __m512i base = _mm512_mullo_epi32(                                                     \
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),          \
        _mm512_set1_epi32((int32_t)C));                                                    \
    for (; r + 16 <= R; r += 16, base = _mm512_add_epi32(base, step)) {                    \
        __m512i idx = _mm512_add_epi32(base, _mm512_loadu_si512((const void *)(col + r))); \
        _mm512_storeu_ps(out + r, _mm512_i32gather_ps(idx, x, 4));                         \
    }
#define FL__GATHER_COLS_double                                                             \
    const __m256i step = _mm256_set1_epi32((int32_t)(8 * C));                              \
    __m256i base = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),           \
                                      _mm256_set1_epi32((int32_t)C));                      \
    for (; r + 8 <= R; r += 8, base = _mm256_add_epi32(base, step)) {                      \
        __m256i idx = _mm256_add_epi32(base, _mm256_loadu_si256((const __m256i *)(col + r))); \
        _mm512_storeu_pd(out + r, _mm512_i32gather_pd(idx, x, 8));                         \
    }
#elif defined(__AVX2__)
#define FL__GATHER_COLS_float                                                              \
    const __m256i step = _mm256_set1_epi32((int32_t)(8 * C));                              \
    __m256i base = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),           \
                                      _mm256_set1_epi32((int32_t)C));                      \
    for (; r + 8 <= R; r += 8, base = _mm256_add_epi32(base, step)) {                      \
        __m256i idx = _mm256_add_epi32(base, _mm256_loadu_si256((const __m256i *)(col + r))); \
        _mm256_storeu_ps(out + r, _mm256_i32gather_ps(x, idx, 4));                         \
    }
#define FL__GATHER_COLS_double                                                             \
    const __m128i step = _mm_set1_epi32((int32_t)(4 * C));                                 \
    __m128i base = _mm_mullo_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32((int32_t)C)); \
    for (; r + 4 <= R; r += 4, base = _mm_add_epi32(base, step)) {                         \
        __m128i idx = _mm_add_epi32(base, _mm_loadu_si128((const __m128i *)(col + r)));    \
        _mm256_storeu_pd(out + r, _mm256_i32gather_pd(x, idx, 8));                         \
    }
#else
#define FL__GATHER_COLS_float
#define FL__GATHER_COLS_double
#endif
FL_DEFINE_GATHER_COLS(fl_gather_cols_f32, float)
FL_DEFINE_GATHER_COLS(fl_gather_cols_f64, double)

FL_INLINE void fl_short_row_sums_f64(const double *x, ptrdiff_t C, ptrdiff_t R, double *S)
{
    ptrdiff_t r = 0;
#if defined(__AVX512F__)
    int32_t tab[8];
    for (int l = 0; l < 8; l++)
        tab[l] = (int32_t)(l * C);
    const __m256i idx = _mm256_loadu_si256((const __m256i *)tab);
    for (; r + 8 <= R; r += 8) {
        const double *b = x + r * C;
        __m512d e = _mm512_setzero_pd(), o = _mm512_setzero_pd();
        ptrdiff_t j = 0;
        for (; j + 2 <= C; j += 2) {
            e = _mm512_add_pd(e, _mm512_i32gather_pd(idx, b + j, 8));
            o = _mm512_add_pd(o, _mm512_i32gather_pd(idx, b + j + 1, 8));
        }
        if (j < C)
            e = _mm512_add_pd(e, _mm512_i32gather_pd(idx, b + j, 8));
        _mm512_storeu_pd(S + r, _mm512_add_pd(e, o));
    }
#elif defined(__AVX2__)
    int32_t tab[4];
    for (int l = 0; l < 4; l++)
        tab[l] = (int32_t)(l * C);
    const __m128i idx = _mm_loadu_si128((const __m128i *)tab);
    for (; r + 4 <= R; r += 4) {
        const double *b = x + r * C;
        __m256d e = _mm256_setzero_pd(), o = _mm256_setzero_pd();
        ptrdiff_t j = 0;
        for (; j + 2 <= C; j += 2) {
            e = _mm256_add_pd(e, _mm256_i32gather_pd(b + j, idx, 8));
            o = _mm256_add_pd(o, _mm256_i32gather_pd(b + j + 1, idx, 8));
        }
        if (j < C)
            e = _mm256_add_pd(e, _mm256_i32gather_pd(b + j, idx, 8));
        _mm256_storeu_pd(S + r, _mm256_add_pd(e, o));
    }
#endif
    for (; r < R; r++)
        S[r] = fl_sum_f64(x + r * C, C);
}

/* Software prefetch of the cache lines of [p, p + bytes) into all cache levels, for
 * reading or (write = 1) for writing (PREFETCHW where the CPU has it). Always inlined, and
 * so must be its callers: GCC models a prefetch as free of side effects, so a call of a
 * non-inlined function that only prefetches is deleted as dead code. */
FL_INLINE void fl_prefetch(const void *p, ptrdiff_t bytes, int write)
{
#if defined(__GNUC__)
    const char *c = (const char *)p;
    if (write)
        for (ptrdiff_t i = 0; i < bytes; i += 64)
            __builtin_prefetch(c + i, 1, 3);
    else
        for (ptrdiff_t i = 0; i < bytes; i += 64)
            __builtin_prefetch(c + i, 0, 3);
#endif
}

/* fl_prefetch of elements [i0, i1) of the array at base (nothing when i1 <= i0). */
FL_INLINE void fl_prefetch_range(const void *base, ptrdiff_t itemsize, ptrdiff_t i0, ptrdiff_t i1)
{
    if (i1 > i0)
        fl_prefetch((const char *)base + i0 * itemsize, (i1 - i0) * itemsize, 0);
}

FL_INLINE void fl_prefetch_range_w(const void *base, ptrdiff_t itemsize, ptrdiff_t i0, ptrdiff_t i1)
{
    if (i1 > i0)
        fl_prefetch((const char *)base + i0 * itemsize, (i1 - i0) * itemsize, 1);
}

/* Copy n values to dst with non-temporal (streaming) stores where the ISA has them: the
 * destination's cache lines are written without being read first (no read-for-ownership),
 * which for an output far larger than the caches saves a third of the memory traffic.
 * Call fl_sfence() before the data is used by another thread. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define FL_STREAM_BYTES 64
#define FL_STREAM_PS(p, v) _mm512_stream_ps((p), _mm512_loadu_ps(v))
#define FL_STREAM_PD(p, v) _mm512_stream_pd((p), _mm512_loadu_pd(v))
#elif defined(__AVX__)
#include <immintrin.h>
#define FL_STREAM_BYTES 32
#define FL_STREAM_PS(p, v) _mm256_stream_ps((p), _mm256_loadu_ps(v))
#define FL_STREAM_PD(p, v) _mm256_stream_pd((p), _mm256_loadu_pd(v))
#elif defined(__SSE2__)
#include <emmintrin.h>
#define FL_STREAM_BYTES 16
#define FL_STREAM_PS(p, v) _mm_stream_ps((p), _mm_loadu_ps(v))
#define FL_STREAM_PD(p, v) _mm_stream_pd((p), _mm_loadu_pd(v))
#endif

#define FL_DEFINE_STREAM(NAME, T, STREAM)                                                   \
    FL_INLINE void NAME(T *dst, const T *src, ptrdiff_t n)                                  \
    {                                                                                      \
        ptrdiff_t i = 0;                                                                   \
        const ptrdiff_t w = FL_STREAM_BYTES / (ptrdiff_t)sizeof(T);                        \
        for (; i < n && ((uintptr_t)(dst + i) % FL_STREAM_BYTES) != 0; i++)                 \
            dst[i] = src[i];                                                               \
        for (; i + w <= n; i += w)                                                         \
            STREAM(dst + i, src + i);                                                      \
        for (; i < n; i++)                                                                 \
            dst[i] = src[i];                                                               \
    }
/* dst[j] = src[j]·a, except dst[y] = src[y]·a - cy, with non-temporal stores (as
 * fl_stream_f32: the unaligned head and tail with ordinary stores); y outside [0, n): no
 * exception. Each vector of products is formed in a local array, the one holding y patched
 * there, then streamed (checked in the AVX-512 build: the loop is a vmulps and a vmovntps
 * of its register, plus a store of it to the array). The product of dst[y] is rounded
 * before the subtraction (volatile: GCC would contract it into an FMA), the same bits as
 * scaling a row and then subtracting. */
#define FL_DEFINE_STREAM_SCALE(NAME, T, STREAM)                                             \
    FL_INLINE void NAME(T *dst, const T *src, T a, ptrdiff_t n, ptrdiff_t y, T cy)         \
    {                                                                                      \
        ptrdiff_t i = 0, k;                                                                \
        volatile T py = (size_t)y < (size_t)n ? src[y] * a : 0;                            \
        const T gy = py - cy;                                                              \
        enum { W = FL_STREAM_BYTES / sizeof(T) };                                          \
        T v[W] __attribute__((aligned(FL_STREAM_BYTES)));                                  \
        for (; i < n && ((uintptr_t)(dst + i) % FL_STREAM_BYTES) != 0; i++)                 \
            dst[i] = i == y ? gy : src[i] * a;                                             \
        for (; i + W <= n; i += W) {                                                       \
            for (k = 0; k < W; k++)                                                        \
                v[k] = src[i + k] * a;                                                     \
            if ((size_t)(y - i) < (size_t)W)                                               \
                v[y - i] = gy;                                                             \
            STREAM(dst + i, v);                                                            \
        }                                                                                  \
        for (; i < n; i++)                                                                 \
            dst[i] = i == y ? gy : src[i] * a;                                             \
    }
#if defined(FL_STREAM_BYTES)
FL_DEFINE_STREAM(fl_stream_f32, float, FL_STREAM_PS)
FL_DEFINE_STREAM_SCALE(fl_stream_scale_f32, float, FL_STREAM_PS)
FL_DEFINE_STREAM_SCALE(fl_stream_scale_f64, double, FL_STREAM_PD)
FL_DEFINE_STREAM(fl_stream_f64, double, FL_STREAM_PD)
FL_INLINE void fl_sfence(void) { _mm_sfence(); }
#else
FL_INLINE void fl_stream_f32(float *dst, const float *src, ptrdiff_t n) { memcpy(dst, src, n * sizeof *dst); }
FL_INLINE void fl_stream_f64(double *dst, const double *src, ptrdiff_t n) { memcpy(dst, src, n * sizeof *dst); }
FL_INLINE void fl_stream_scale_f32(float *dst, const float *src, float a, ptrdiff_t n, ptrdiff_t y, float cy)
{
    volatile float py = (size_t)y < (size_t)n ? src[y] * a : 0;
    const float gy = py - cy;
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = i == y ? gy : src[i] * a;
}
FL_INLINE void fl_stream_scale_f64(double *dst, const double *src, double a, ptrdiff_t n, ptrdiff_t y, double cy)
{
    volatile double py = (size_t)y < (size_t)n ? src[y] * a : 0;
    const double gy = py - cy;
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = i == y ? gy : src[i] * a;
}
FL_INLINE void fl_sfence(void) {}
#endif

/* ======================================================================================= */
/* CPU and floating-point environment                                                      */
/* ======================================================================================= */

/* Which instruction-set build the CPU (and OS, for the AVX register state) can run:
 * 0 = baseline x86-64 / other architectures, 1 = AVX2 + FMA, 2 = AVX-512 F/DQ/VL/BW. */
static int fl_cpu_level(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return 2;
    return 1;
#else
    return 0;
#endif
}

/* The SSE control/status register (flush-to-zero is bit 15, denormals-are-zero bit 6), or
 * -1 where there is none; the tests check that importing the extension leaves it alone. */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
static long fl_mxcsr(void) { return (long)_mm_getcsr(); }
#else
static long fl_mxcsr(void) { return -1; }
#endif

#endif /* FASTLOSS_FASTMATH_H */
