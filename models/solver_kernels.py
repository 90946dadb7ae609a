"""Model-independent numerics of the numba solver: tableaux, step control, linear algebra.

This is an ordinary module (imported, linted and tested directly, see
``tests/test_solver_kernels.py``). The generated per-model solver module
(``_solver_template.py`` appended to a model's source, see :mod:`.numba_backend`)
imports these ``@njit(cache=True)`` functions and constants. numba caches a function
that calls another module's dispatcher as a module global (it is neither an argument nor
a closure), but it does not notice when the callee's source changes; so the text of this
module is part of the generated file's hash (:func:`.numba_backend.load_numba_module`),
and any edit here gives a new file and a fresh compile.

Contents
--------
- Tsit5 (Tsitouras 2011, Comput. Math. Appl. 62:770): ``TSIT5_C``, ``TSIT5_A``,
  ``TSIT5_B``, ``TSIT5_E`` (``b - b_hat``, 7 stages with FSAL), ``TSIT5_R`` (dense output
  ``b_i(theta) = sum_k R[i, k] theta^(k+1)``);
- ROS34PW2 (Rang & Angermann 2005, BIT 45:761) in its published form
  (:func:`ros34pw2_published`) and in Hairer & Wanner's transformed form used by the
  solver (``ROS_GAMMA``, ``ROS_ALPHA``, ``ROS_A``, ``ROS_C``, ``ROS_M``, ``ROS_E``);
- step-size control constants and factors (:func:`accept_factor`,
  :func:`reject_factor`);
- :func:`all_finite`, and dense LU with partial pivoting (:func:`lu_factor`,
  :func:`lu_solve`, :func:`lu_solve_rows`), allocation-free;
- :func:`borrow`: an array view without numba's reference count (the solver's work
  arrays, see there), and :func:`matrix`: a 2-D view of a 1-D array without a
  reshape.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "FACMAX_ROS",
    "FACMAX_TSIT5",
    "FACMIN",
    "JIT",
    "NONSTIFF_COUNT",
    "ROS_A",
    "ROS_ALPHA",
    "ROS_C",
    "ROS_E",
    "ROS_GAMMA",
    "ROS_M",
    "SAFE",
    "STIFF_COUNT",
    "STIFF_HRHO",
    "TSIT5_A",
    "TSIT5_B",
    "TSIT5_C",
    "TSIT5_E",
    "TSIT5_R",
    "accept_factor",
    "all_finite",
    "borrow",
    "lu_factor",
    "lu_solve",
    "lu_solve_rows",
    "matrix",
    "reject_factor",
    "ros34pw2_published",
    "ros34pw2_transformed",
]

#: numba options of every solver function. ``error_model="numpy"``: a division by zero
#: gives inf/nan (caught by the status logic) instead of raising ZeroDivisionError inside
#: a sampler; ``nogil`` lets callers thread.
JIT = {"cache": True, "error_model": "numpy", "nogil": True}

# ---------------------------------------------------------------------------------
# Step-size control (Hairer & Wanner's usual choices)
# ---------------------------------------------------------------------------------
SAFE = 0.9
FACMIN = 0.2
FACMAX_TSIT5 = 10.0
FACMAX_ROS = 6.0
#: Stiffness detection of the auto method: h * rho above this on STIFF_COUNT accepted
#: steps without NONSTIFF_COUNT non-stiff ones in between. The estimate mixes eigenmodes
#: and undershoots: on Robertson's problem it reads 2.2-2.5 while the step sits on
#: Tsit5's stability boundary (h |lambda| ~ 3.5).
STIFF_HRHO = 2.5
STIFF_COUNT = 15
NONSTIFF_COUNT = 6

# ---------------------------------------------------------------------------------
# Tsit5 Butcher tableau (row i of A holds a_ij, j < i; stage 7 is f(t + h, y_new))
# ---------------------------------------------------------------------------------
TSIT5_C = np.array([0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0])
TSIT5_A = np.zeros((7, 7))
TSIT5_A[1, 0] = 0.161
TSIT5_A[2, :2] = [-0.008480655492356989, 0.335480655492357]
TSIT5_A[3, :3] = [2.8971530571054935, -6.359448489975075, 4.3622954328695815]
TSIT5_A[4, :4] = [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525]
TSIT5_A[5, :5] = [
    5.86145544294642,
    -12.92096931784711,
    8.159367898576159,
    -0.071584973281401,
    -0.028269050394068383,
]
TSIT5_B = np.array(
    [
        0.09646076681806523,
        0.01,
        0.4798896504144996,
        1.379008574103742,
        -3.290069515436081,
        2.324710524099774,
        0.0,
    ]
)
TSIT5_A[6, :] = TSIT5_B  # FSAL: the 7th stage is evaluated at the new solution
#: b - b_hat: weights of the embedded error estimate.
TSIT5_E = np.array(
    [
        0.0017800110522257773,
        0.0008164344596567463,
        -0.007880878010261994,
        0.1447110071732629,
        -0.5823571654525552,
        0.45808210592918686,
        -0.015151515151515152,
    ]
)
#: Dense output y(t + theta h) = y + h sum_i b_i(theta) k_i,
#: b_i(theta) = R[i, 0] theta + R[i, 1] theta^2 + R[i, 2] theta^3 + R[i, 3] theta^4.
TSIT5_R = np.array(
    [
        [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
        [0.0, 0.1317, -0.2234, 0.1017],
        [0.0, 3.930296236894751, -5.941033872131505, 2.490627285651253],
        [0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
        [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
        [0.0, -27.896526289197286, 65.09189467479368, -34.87065786149661],
        [0.0, 1.5, -4.0, 2.5],
    ]
)
for _a in (TSIT5_C, TSIT5_A, TSIT5_B, TSIT5_E, TSIT5_R):
    _a.flags.writeable = False


# ---------------------------------------------------------------------------------
# ROS34PW2, published in the form
#   (I - gamma h J) k_i = h f(t + alpha_i h, y + sum_j alpha_ij k_j) + h J sum_j gamma_ij k_j
# and used in Hairer & Wanner's transformed form (u_i = sum_j Gamma_ij k_j), which needs
# no matrix-vector products with J:
#   (I/(gamma h) - J) u_i = f(t + alpha_i h, y + sum_j a_ij u_j) + sum_j (c_ij / h) u_j
#   y_new = y + sum_j m_j u_j,   error = sum_j (m_j - mhat_j) u_j
# with a = A Gamma^-1, C = diag(1/gamma) - Gamma^-1, m = b Gamma^-1.
# ---------------------------------------------------------------------------------
def ros34pw2_published() -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(gamma, alpha (4, 4), Gamma (4, 4) incl. gamma on the diagonal, b, b_hat)``."""
    g = 0.435866521508459
    alpha = np.zeros((4, 4))
    alpha[1, 0] = 0.87173304301691801
    alpha[2, 0] = 0.84457060015369423
    alpha[2, 1] = -0.11299064236484185
    alpha[3, 2] = 1.0
    gam = np.zeros((4, 4))
    gam[1, 0] = -0.87173304301691801
    gam[2, 0] = -0.90338057013044082
    gam[2, 1] = 0.054180672388095326
    gam[3, 0] = 0.24212380706095346
    gam[3, 1] = -1.2232505839045147
    gam[3, 2] = 0.54526025533510214
    gam += g * np.eye(4)
    b = np.array([0.24212380706095346, -1.2232505839045147, 1.5452602553351020, g])
    bhat = np.array([0.37810903145819369, -0.096042292212423178, 0.5, 0.2179332607542295])
    return g, alpha, gam, b, bhat


def ros34pw2_transformed() -> tuple[
    float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:
    """``(gamma, alpha_i (4,), a (4, 4), c (4, 4), m (4,), m - m_hat (4,))``."""
    g, alpha, gam, b, bhat = ros34pw2_published()
    ginv = np.linalg.inv(gam)
    a = alpha @ ginv
    c = np.diag(1.0 / np.diag(gam)) - ginv
    m = b @ ginv
    mhat = bhat @ ginv
    return g, alpha.sum(axis=1), a, c, m, m - mhat


_g, ROS_ALPHA, ROS_A, ROS_C, ROS_M, ROS_E = ros34pw2_transformed()
ROS_GAMMA = float(_g)
for _a in (ROS_ALPHA, ROS_A, ROS_C, ROS_M, ROS_E):
    _a.flags.writeable = False


# ---------------------------------------------------------------------------------
# Step control
# ---------------------------------------------------------------------------------
@njit(**JIT)
def accept_factor(err: float, errold: float, kexp: float, facmax: float) -> float:
    """Step-size factor after an accepted step: PI controller (Gustafsson; Hairer &
    Wanner IV.2) with ``beta1 = 0.7 / k``, ``beta2 = 0.4 / k``, ``k`` the order of the
    error estimate plus one, clipped to ``[FACMIN, facmax]``."""
    if err > 0.0:
        fac = SAFE * err ** (-0.7 / kexp) * errold ** (0.4 / kexp)
    else:
        fac = facmax
    return min(facmax, max(FACMIN, fac))


@njit(**JIT)
def reject_factor(err: float, kexp: float) -> float:
    """Step-size factor after a rejected step; 0.25 when the error is not finite
    (nan: the attempt produced a non-finite value; inf: singular iteration matrix)."""
    if math.isfinite(err):
        return max(FACMIN, SAFE * err ** (-1.0 / kexp))
    return 0.25


# ---------------------------------------------------------------------------------
# Linear algebra and checks (no allocation)
# ---------------------------------------------------------------------------------
@njit(**JIT)
def all_finite(x, n):
    """True if ``x[:n]`` holds no inf or nan."""
    acc = 0.0
    for i in range(n):
        # x * 0 is nan for inf and nan, 0 otherwise: one branch-free pass.
        acc += x[i] * 0.0
    return acc == 0.0


@njit(**JIT)
def lu_factor(M, piv, n):
    """In-place LU with partial pivoting (LAPACK getrf convention). False if singular."""
    for k in range(n):
        imax = k
        vmax = abs(M[k, k])
        for i in range(k + 1, n):
            v = abs(M[i, k])
            if v > vmax:
                vmax = v
                imax = i
        if not (vmax > 0.0) or not math.isfinite(vmax):
            return False
        piv[k] = imax
        if imax != k:
            for j in range(n):
                tmp = M[k, j]
                M[k, j] = M[imax, j]
                M[imax, j] = tmp
        inv = 1.0 / M[k, k]
        for i in range(k + 1, n):
            lik = M[i, k] * inv
            M[i, k] = lik
            if lik != 0.0:
                for j in range(k + 1, n):
                    M[i, j] -= lik * M[k, j]
    return True


@njit(**JIT)
def lu_solve(M, piv, b, off, n):
    """Solve ``M x = b[off:off+n]`` in place with the factors from :func:`lu_factor`."""
    for k in range(n):
        pk = piv[k]
        if pk != k:
            tmp = b[off + k]
            b[off + k] = b[off + pk]
            b[off + pk] = tmp
    for i in range(1, n):
        s = b[off + i]
        for j in range(i):
            s -= M[i, j] * b[off + j]
        b[off + i] = s
    for i in range(n - 1, -1, -1):
        s = b[off + i]
        for j in range(i + 1, n):
            s -= M[i, j] * b[off + j]
        b[off + i] = s / M[i, i]


@njit(**JIT)
def lu_solve_rows(M, piv, b, off, n, m):
    """Solve ``M X = B`` in place for ``B`` stored row-major at ``b[off:off + n*m]``
    (``B[i, k] = b[off + i*m + k]``), i.e. all sensitivity columns at once."""
    if m == 0:
        return
    # Row views rather than b[off + i*m + q]: indexing with a computed offset makes numba
    # emit a negative-index wraparound branch that blocks vectorisation.
    for k in range(n):
        pk = piv[k]
        if pk != k:
            bk = b[off + k * m : off + (k + 1) * m]
            bp = b[off + pk * m : off + (pk + 1) * m]
            for q in range(m):
                tmp = bk[q]
                bk[q] = bp[q]
                bp[q] = tmp
    for i in range(1, n):
        bi = b[off + i * m : off + (i + 1) * m]
        for j in range(i):
            lij = M[i, j]
            if lij != 0.0:
                bj = b[off + j * m : off + (j + 1) * m]
                for q in range(m):
                    bi[q] -= lij * bj[q]
    for i in range(n - 1, -1, -1):
        bi = b[off + i * m : off + (i + 1) * m]
        for j in range(i + 1, n):
            uij = M[i, j]
            if uij != 0.0:
                bj = b[off + j * m : off + (j + 1) * m]
                for q in range(m):
                    bi[q] -= uij * bj[q]
        d = M[i, i]
        for q in range(m):
            bi[q] /= d


# ---------------------------------------------------------------------------------
# Views without reference counting
# ---------------------------------------------------------------------------------
@intrinsic
def borrow(typingctx, arr):
    """``arr`` itself, but carrying no reference to its memory (``meminfo`` NULL).

    Every view numba makes of an array it allocated (a slice, a row ``K[1]``, a
    reshape) takes and later drops a reference with an atomic add on the memory's
    count, even where the view never outlives a call. In the solver's hot loop that was
    about 15 % of a 10-parameter gradient's time (perf, 2026-12-05: ``lock incq`` /
    ``lock decq`` of ``NRT_incref``/``NRT_decref``). Views of a borrowed array take no
    reference, like those of the ``carray`` arrays a C callback receives.

    The caller must keep ``arr`` itself alive for as long as the borrowed array and its
    views are used (pass it on as an argument, which numba holds for the whole call).
    """
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(arr)(context, builder, value=args[0])
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()

    return arr(arr), codegen


@intrinsic
def matrix(typingctx, arr, start, nrows, ncols):
    """The C-contiguous ``(nrows, ncols)`` matrix stored at ``arr[start : start + nrows *
    ncols]`` of a C-contiguous 1-D array, as a view without reference count and without
    checks (the caller guarantees the bounds), like :func:`borrow`.

    ``arr[a:b].reshape((n, m))`` does the same through numba's general reshape, which
    checks, normalises and calls a C helper on every call: 4 % of a 10-parameter
    gradient's time in ``rhs_sens`` and ``observe_sens``, two or three per call.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        return None
    out_t = types.Array(arr.dtype, 2, "C")

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, value=args[0])
        first, nr, nc = args[1], args[2], args[3]
        out = context.make_array(out_t)(context, builder)
        size = context.get_abi_sizeof(context.get_data_type(arr.dtype))
        itemsize = context.get_constant(types.intp, size)
        context.populate_array(
            out,
            data=builder.gep(a.data, [first]),
            shape=cgutils.pack_array(builder, [nr, nc]),
            strides=cgutils.pack_array(builder, [builder.mul(nc, itemsize), itemsize]),
            itemsize=itemsize,
            meminfo=None,
        )
        return out._getvalue()

    return out_t(arr, types.intp, types.intp, types.intp), codegen
