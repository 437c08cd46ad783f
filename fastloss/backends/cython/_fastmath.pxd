# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Cython declarations of the C helpers in ``_fastmath.h`` (see that file for the algorithms)."""

cdef extern from "_fastmath.h" nogil:
    float fl_expf(float x)
    double fl_exp(double x)
    float fl_expf_nonpos(float x)
    double fl_exp_nonpos(double x)
    float fl_shifted_f32(float x, float m)
    double fl_shifted_f64(double x, double m)
    float fl_logf(float x)
    double fl_log(double x)
    float fl_log1pf(float x)
    double fl_log1p(double x)
    float fl_log_unitf(float q)
    double fl_log_unit(double q)
    float fl_log1m_unitf(float q)
    double fl_log1m_unit(double q)
    float fl_log1p_unitf(float e, float* inv)
    double fl_log1p_unit(double e, double* inv)
    double fl_prob_loss_term(double q, double c, double lo, double hi)
    double fl_prob_grad_term(double q, double c, double lo, double hi)
    double fl_sum_f32(const float* x, Py_ssize_t n)
    double fl_sum_f64(const double* x, Py_ssize_t n)
    double fl_sum_rows_f64(const double* x, Py_ssize_t n)
    float fl_max_f32(const float* x, Py_ssize_t n)
    double fl_max_f64(const double* x, Py_ssize_t n)
    void fl_transpose_in_max_f32(const float* x, Py_ssize_t C, Py_ssize_t R, float* xt,
                                 Py_ssize_t S, float* m)
    void fl_transpose_in_max_f64(const double* x, Py_ssize_t C, Py_ssize_t R, double* xt,
                                 Py_ssize_t S, double* m)
    void fl_transpose_out_f32(const float* xt, Py_ssize_t S, Py_ssize_t C, Py_ssize_t R,
                              float* out)
    void fl_transpose_out_f64(const double* xt, Py_ssize_t S, Py_ssize_t C, Py_ssize_t R,
                              double* out)
    void fl_gather_cols_f32(const float* x, Py_ssize_t C, Py_ssize_t R, const int* col, float* out)
    void fl_gather_cols_f64(const double* x, Py_ssize_t C, Py_ssize_t R, const int* col, double* out)
    unsigned int fl_touch(const void* p, Py_ssize_t nbytes)
    enum: FL_EXP_GROUP_F32   # 1 where fl_exp_group_sums_f32 is the AVX-512 code (else not to call)
    void fl_exp_group_sums_f32(float* xt, Py_ssize_t S, Py_ssize_t C, const float* m, double* s,
                               int store)
    void fl_short_row_sums_f32(const float* x, Py_ssize_t C, Py_ssize_t R, double* S)
    void fl_short_row_sums_f64(const double* x, Py_ssize_t C, Py_ssize_t R, double* S)
    enum: FL_ONEHOT_ROWS
    void fl_short_onehot_rows_f32(const float* x, const float* t, const float* kappa,
                                  Py_ssize_t C, Py_ssize_t R, double* S, int* code, float* xk,
                                  float* tk, float* kk)
    void fl_prefetch(const void* p, Py_ssize_t nbytes, int write)
    void fl_prefetch_range(const void* base, Py_ssize_t itemsize, Py_ssize_t i0, Py_ssize_t i1)
    void fl_prefetch_range_w(const void* base, Py_ssize_t itemsize, Py_ssize_t i0, Py_ssize_t i1)
    void fl_stream_f32(float* dst, const float* src, Py_ssize_t n)
    void fl_stream_f64(double* dst, const double* src, Py_ssize_t n)
    void fl_stream_scale_f32(float* dst, const float* src, float a, Py_ssize_t n, Py_ssize_t y, float cy)
    void fl_stream_scale_f64(double* dst, const double* src, double a, Py_ssize_t n, Py_ssize_t y, double cy)
    void fl_sfence()
    int fl_cpu_level()
    long fl_mxcsr()


# Fused front ends: the precision of the math follows the input dtype.
from cython cimport floating
from libc.math cimport fabs, fabsf


cdef inline floating abs_(floating x) noexcept nogil:
    """|x| (clears the sign bit: one vector AND)."""
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating exp_(floating x) noexcept nogil:
    if floating is float:
        return fl_expf(x)
    else:
        return fl_exp(x)


cdef inline floating shifted(floating x, floating m) noexcept nogil:
    """z = x - m, with z = 0 where x == m (which makes a single +inf logit well defined)."""
    if floating is float:
        return fl_shifted_f32(x, m)
    else:
        return fl_shifted_f64(x, m)


cdef inline floating exp_nonpos(floating x) noexcept nogil:
    """exp(x) for x ≤ 0 or NaN (cheaper; unspecified for x > 0)."""
    if floating is float:
        return fl_expf_nonpos(x)
    else:
        return fl_exp_nonpos(x)


cdef inline floating log_(floating x) noexcept nogil:
    if floating is float:
        return fl_logf(x)
    else:
        return fl_log(x)


cdef inline floating log1p_(floating x) noexcept nogil:
    if floating is float:
        return fl_log1pf(x)
    else:
        return fl_log1p(x)


cdef inline floating log_unit(floating q) noexcept nogil:
    """log(q) for q in [0, 1] or NaN (cheaper; unspecified elsewhere)."""
    if floating is float:
        return fl_log_unitf(q)
    else:
        return fl_log_unit(q)


cdef inline floating log1m_unit(floating q) noexcept nogil:
    """log(1 - q) = log1p(-q) for q in [0, 1] or NaN (cheaper; unspecified elsewhere)."""
    if floating is float:
        return fl_log1m_unitf(q)
    else:
        return fl_log1m_unit(q)


cdef inline floating log1p_unit(floating e, floating* inv) noexcept nogil:
    """log1p(e) for e in [0, 1] (or NaN), and 1/(1+e) into inv[0], with one division."""
    if floating is float:
        return fl_log1p_unitf(e, inv)
    else:
        return fl_log1p_unit(e, inv)


cdef inline double lane_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """Σ x in float64, lane-wise (the order is fixed by the code: see _fastmath.h)."""
    if floating is float:
        return fl_sum_f32(x, n)
    else:
        return fl_sum_f64(x, n)


cdef inline void stream_copy(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n] with non-temporal stores (see fl_stream_f32); needs fl_sfence()."""
    if floating is float:
        fl_stream_f32(dst, src, n)
    else:
        fl_stream_f64(dst, src, n)


cdef inline void stream_scale(floating* dst, const floating* src, floating a, Py_ssize_t n,
                              Py_ssize_t y, floating cy) noexcept nogil:
    """dst[:n] = src[:n]·a, then dst[y] -= cy, with non-temporal stores (see
    fl_stream_scale_f32); needs fl_sfence()."""
    if floating is float:
        fl_stream_scale_f32(dst, src, a, n, y, cy)
    else:
        fl_stream_scale_f64(dst, src, a, n, y, cy)


cdef inline floating lane_max(const floating* x, Py_ssize_t n) noexcept nogil:
    """max x; -inf when empty; NaN or the max of the rest when x holds a NaN."""
    if floating is float:
        return fl_max_f32(x, n)
    else:
        return fl_max_f64(x, n)


cdef inline void transpose_in_max(const floating* x, Py_ssize_t C, Py_ssize_t R, floating* xt,
                                  Py_ssize_t S, floating* m) noexcept nogil:
    """xt[j·S + r] = x[r·C + j] and m[r] = max_j x[r·C + j] (see _fastmath.h)."""
    if floating is float:
        fl_transpose_in_max_f32(x, C, R, xt, S, m)
    else:
        fl_transpose_in_max_f64(x, C, R, xt, S, m)


cdef inline void transpose_out(const floating* xt, Py_ssize_t S, Py_ssize_t C, Py_ssize_t R,
                               floating* out) noexcept nogil:
    """out[r·C + j] = xt[j·S + r]."""
    if floating is float:
        fl_transpose_out_f32(xt, S, C, R, out)
    else:
        fl_transpose_out_f64(xt, S, C, R, out)


cdef inline void short_row_sums(const floating* x, Py_ssize_t C, Py_ssize_t R,
                                double* S) noexcept nogil:
    """S[r] = lane_sum(x + r·C, C) for R rows of C < FL_LANES values (see _fastmath.h)."""
    if floating is float:
        fl_short_row_sums_f32(x, C, R, S)
    else:
        fl_short_row_sums_f64(x, C, R, S)


cdef inline void gather_cols(const floating* x, Py_ssize_t C, Py_ssize_t R, const int* col,
                             floating* out) noexcept nogil:
    """out[r] = x[r·C + col[r]], col[r] in [0, C), R·C + C < 2^31 (see _fastmath.h); with
    C = 0, a table lookup out[r] = x[col[r]] (col[r] within the table)."""
    if floating is float:
        fl_gather_cols_f32(x, C, R, col, out)
    else:
        fl_gather_cols_f64(x, C, R, col, out)
