# ruff: noqa: F821
"""Generic adaptive ODE solver with forward sensitivities (numba source template).

This file is never imported as a module. :mod:`carthema.models.numba_backend` reads
its text and appends it to the generated source of one model, so that every model gets
its own module in which the solver below calls the model functions (``rhs``,
``jac_y``, ...) as module globals. That is what lets numba's ``cache=True`` work: a
jitted function that receives other jitted functions as arguments, or a closure, is
recompiled in every process, whereas a plain module-level function calling module-level
dispatchers is cached on disk next to the generated file. That file lives in the one
generated-file cache (:mod:`carthema.models.gencache`), whose key covers this text.

Model contract (names the generated source must define before this text)
-----------------------------------------------------------------------
``N_Y, N_P, N_U, N_OBS`` : int
    Number of states, parameters, piecewise-constant inputs and observables.
``JY_ROWS, JY_COLS`` : int64 arrays
    Structural nonzeros of ``df/dy`` (``jac_y`` writes only these entries).
``JP_ROWS, JP_COLS`` : int64 arrays
    Structural nonzeros of ``df/dp`` (``jac_p`` writes only these entries).
``OBS_Y`` : int64 array
    The states the observables depend on (sorted): ``observe_sens`` reads only their
    rows of ``S``, so Tsit5's dense output interpolates only those rows.
``ATOL_SCALE`` : float64 array, shape (N_Y,)
    Typical magnitude of each state; the absolute tolerance of state ``i`` (and of
    every sensitivity of state ``i``) is ``atol * ATOL_SCALE[i]``.
``rhs(t, y, p, u, dy)``, ``jac_y(t, y, p, u, J)``, ``jac_p(t, y, p, u, Jp)``,
``init(p, y)``, ``init_jac_p(p, Y0p)``, ``observe(t, y, p, o)``,
``observe_jac_y(t, y, p, Oy)``, ``observe_jac_p(t, y, p, Op)`` : njit functions
    ``p`` are the natural-scale parameters (N_P,), ``u`` the current inputs (N_U,).
    Compile them with ``error_model="numpy"`` as well: under numba's default
    ("python") a float division by zero raises ZeroDivisionError instead of giving
    inf/nan, which would escape the status logic below. ``init_jac_p`` and the two
    ``observe_jac_*`` fill their whole matrix; the solver itself calls ``jac_y``
    (ROS34PW2's iteration matrix) and the two fused functions below, not ``jac_p`` or
    ``observe_jac_*``.
``rhs_sens(t, z, p, u, pos, ns, fz)`` : njit function
    The augmented right-hand side: ``fz[:N_Y] = rhs(t, z[:N_Y])`` and, with ``S`` the
    (N_Y, ns) row-major matrix at ``z[N_Y:]``, ``fz[N_Y:]`` the same layout of
    ``J_y S + Jp[:, free] * p[free]``; ``pos[c]`` is the column of parameter ``c``
    (-1 when it is not free). ``ns`` is even (see Sensitivities).
``observe_sens(t, z, p, pos, ns, dO)`` : njit function
    ``dO`` (N_OBS, n_free) ``= Oy S + Op[:, free] * p[free]`` at the state ``z``, with
    ``S`` the (N_Y, ns) matrix at ``z[N_Y:]`` (``ns >= n_free``).

Events
------
Five equally long arrays, sorted by time (several events may share a time; they are
applied in array order):

``ev_t`` (float64)
    Event time, same unit as ``t`` (days in carthema); must be ``>= t0``.
``ev_kind`` (int64)
    0 = bolus: ``y[target] += value * (p[scale] if scale >= 0 else 1.0)``;
    1 = set input: ``u[target] = value`` (inputs start at ``u0``).
``ev_target`` (int64), ``ev_value`` (float64), ``ev_scale`` (int64, -1 = none).

Integration stops exactly at every event time and restarts after applying the events:
no step straddles a discontinuity. **An output time equal to an event time reports the
state before that time's events** (a pre-dose sample); to see the post-dose state,
ask for a time just after the event. Events after the last output time are ignored;
an event before ``t0`` is bad input.

Methods
-------
0 = Tsit5
    Tsitouras' explicit 5(4) pair with FSAL and its free 4th-order dense output.
1 = ROS34PW2
    Rang & Angermann's (2005) 4-stage, order-3 (embedded order 2), L-stable and
    stiffly accurate Rosenbrock-W method, with the exact ``J_y`` at the start of each
    step and an in-place dense LU with partial pivoting. Its steps land exactly on the
    output times: a cubic Hermite interpolant was tried and is not reliable for stiff
    components (on Robertson's problem it was off by 4e-3 relative at rtol 1e-6, where
    the step end points were right to 1e-6), because the local error control says
    nothing about the solution between the step's end points.
    Because it is a W-method its order does not rely on the exact Jacobian, which
    makes two simplifications legitimate: ``df/dt`` is omitted (``rhs`` is
    autonomous between events in practice), and the sensitivity columns use the
    block-diagonal matrix ``I - gamma h J_y`` instead of the full Jacobian of the
    augmented system (which would need second derivatives of ``f``).
2 = auto
    Start with Tsit5 and switch to ROS34PW2 for the rest of the solve once Hairer's
    stiffness test fires on 15 accepted steps without 6 non-stiff steps in between:
    ``h * rho > 2.5``, with ``rho = |k7 - k6| / |y_new - g6|`` (the two stages at
    ``c = 1``, in the error-weighted norm over the states). Tsit5's real stability
    boundary is about 3.51; the estimate undershoots it. There is no switch back.

Sensitivities
-------------
``S[i, k] = d y_i / d log p[free[k]]`` is integrated together with the states as one
augmented system ``z = [y, S.ravel()]`` (S row-major, so that loops over the
sensitivity columns are contiguous). ``S`` is stored with ``ns = _stride(n_free)``
columns, ``n_free`` rounded up to an even number; an extra column starts at 0 and
stays 0 (its derivative is ``J_y 0``), and the error norm divides by the number of
components without it, so the padding changes no step. It lets ``rhs_sens`` form
``J_y S`` two columns at a time in vector registers (``codegen._sens_function``; see
"The one compiled entry point" for the vectoriser this needs)::

    dS/dt = J_y S + Jp[:, free] * p[free],   S(t0) = init_jac_p[:, free] * p[free]

and a bolus whose ``scale`` is ``free[k]`` adds ``value * p[scale]`` to
``S[target, k]``. The sensitivities share the step sequence of the states and take
part in the error control with the states' tolerances (absolute ``atol *
ATOL_SCALE[i]`` for row ``i``), so they are as accurate as the states.

Kernels
-------
The model-independent pieces (Tsit5 and ROS34PW2 tableaux as arrays, step-size control
factors, dense LU with partial pivoting, the finiteness check) live in the ordinary
module :mod:`carthema.models.solver_kernels`, imported below and tested directly; the
text of that module is part of the generated file's hash.

Error control
-------------
Hairer's scaled RMS norm over all ``n_z = N_Y * (1 + n_free)`` components,
``sc_i = atol_i + rtol * max(|z_i|, |z_new_i|)``; a PI step-size controller
(``beta1 = 0.7 / k``, ``beta2 = 0.4 / k`` with ``k`` the order of the error estimate
plus one); the initial step of every integration segment by the Hairer-Wanner
heuristic (``HINIT``).

Status codes (never raised as exceptions)
-----------------------------------------
Those of :class:`carthema.models.solver_contract.Status`: 0 ok; 1 ``max_steps``
attempted steps exceeded; 2 non-finite state or derivative; 3 step size underflow;
4 bad input. After a failure, outputs from the failure point on
are NaN.

Calling the driver
------------------
One driver integrates a patient, with the arguments grouped as documented above::

    status, n_steps = _solve_impl(p, free, u0, t0, t_out, events, options, outputs)

It is compiled once, into the C callback ``solve_c`` (``SOLVE_SIGNATURE``: the same
arguments as C pointers and lengths, plus one int64 that receives ``n_steps``), which
the public entry points below (``solve``, ``solve_sens``, ``solve_population``) call by
the symbol ``SOLVE_SYMBOL`` through ``_call``; calling ``_solve_impl`` from each of them
made numba optimise the whole solver once per entry point. The C callback of
``solve_rows`` of :mod:`carthema.fitting.op.native` calls ``solve_c`` by its symbol too.

``events = (ev_t, ev_kind, ev_target, ev_value, ev_scale)`` (see Events), ``options =
(rtol, atol, max_steps, method)`` (float, float, int, int; see Methods and Error
control) and ``outputs = (Y, O, dO)``, the arrays it fills in place: ``Y`` (n_t, N_Y),
``O`` (n_t, N_OBS), ``dO`` (n_t, N_OBS, n_free). ``free`` (int64, n_free) may be
empty (no sensitivities). numba passes these tuples by value, without allocating.

The hot loop allocates nothing: every work array is allocated once at the entry of
``_solve_impl``.

Why one file of about 950 lines: it is not a module but text appended to each model's
generated source (above), so everything the solver calls must be in that text; the
methods' tableaux, the generic step, the error control, the events and the
sensitivities are separate functions within it.
"""

import math

import llvmlite.binding as _llvm
import numba.core.config as _numba_config
import numpy as np
from numba import carray, cfunc, njit, prange, types

from carthema.models import solver_kernels as _k

# Model-independent numerics: an ordinary, tested module (see its docstring for why the
# generated module may call its njit functions without losing numba's disk cache).
_JIT = _k.JIT
# The stage and error loops may be reassociated (the error norm's sum vectorises) and
# contracted to FMAs; never 'nnan'/'ninf': the NaN checks (x * 0.0) must stay.
_FAST = dict(_JIT, fastmath={"reassoc", "contract", "arcp", "nsz"})
_FACMAX_TSIT5 = _k.FACMAX_TSIT5
_FACMAX_ROS = _k.FACMAX_ROS
_STIFF_HRHO = _k.STIFF_HRHO
_STIFF_COUNT = _k.STIFF_COUNT
_NONSTIFF_COUNT = _k.NONSTIFF_COUNT
_accept_factor = _k.accept_factor
_reject_factor = _k.reject_factor
_all_finite = _k.all_finite
_lu_factor = _k.lu_factor
_lu_solve = _k.lu_solve
_lu_solve_rows = _k.lu_solve_rows
_borrow = _k.borrow

STATUS_OK = 0
STATUS_MAX_STEPS = 1
STATUS_NONFINITE = 2
STATUS_STEP_UNDERFLOW = 3
STATUS_BAD_INPUT = 4

METHOD_TSIT5 = 0
METHOD_ROSENBROCK = 1
METHOD_AUTO = 2

# The tableaux live as arrays in solver_kernels (tested there). Python floats here, so
# that numba freezes each coefficient as a compile-time constant in the stage loops.
_T_C2, _T_C3, _T_C4, _T_C5 = (float(c) for c in _k.TSIT5_C[1:5])
_T_A21 = float(_k.TSIT5_A[1, 0])
_T_A31, _T_A32 = (float(a) for a in _k.TSIT5_A[2, :2])
_T_A41, _T_A42, _T_A43 = (float(a) for a in _k.TSIT5_A[3, :3])
_T_A51, _T_A52, _T_A53, _T_A54 = (float(a) for a in _k.TSIT5_A[4, :4])
_T_A61, _T_A62, _T_A63, _T_A64, _T_A65 = (float(a) for a in _k.TSIT5_A[5, :5])
_T_B1, _T_B2, _T_B3, _T_B4, _T_B5, _T_B6 = (float(b) for b in _k.TSIT5_B[:6])
_T_E1, _T_E2, _T_E3, _T_E4, _T_E5, _T_E6, _T_E7 = (float(e) for e in _k.TSIT5_E)
_T_R11, _T_R12, _T_R13, _T_R14 = (float(r) for r in _k.TSIT5_R[0])
_T_R22, _T_R23, _T_R24 = (float(r) for r in _k.TSIT5_R[1, 1:])
_T_R32, _T_R33, _T_R34 = (float(r) for r in _k.TSIT5_R[2, 1:])
_T_R42, _T_R43, _T_R44 = (float(r) for r in _k.TSIT5_R[3, 1:])
_T_R52, _T_R53, _T_R54 = (float(r) for r in _k.TSIT5_R[4, 1:])
_T_R62, _T_R63, _T_R64 = (float(r) for r in _k.TSIT5_R[5, 1:])
_T_R72, _T_R73, _T_R74 = (float(r) for r in _k.TSIT5_R[6, 1:])

_R_GAMMA = float(_k.ROS_GAMMA)
_R_AL2, _R_AL3, _R_AL4 = (float(a) for a in _k.ROS_ALPHA[1:])
_R_A21 = float(_k.ROS_A[1, 0])
_R_A31, _R_A32 = (float(a) for a in _k.ROS_A[2, :2])
_R_A41, _R_A42, _R_A43 = (float(a) for a in _k.ROS_A[3, :3])
_R_C21 = float(_k.ROS_C[1, 0])
_R_C31, _R_C32 = (float(c) for c in _k.ROS_C[2, :2])
_R_C41, _R_C42, _R_C43 = (float(c) for c in _k.ROS_C[3, :3])
_R_M1, _R_M2, _R_M3, _R_M4 = (float(m) for m in _k.ROS_M)
_R_E1, _R_E2, _R_E3, _R_E4 = (float(e) for e in _k.ROS_E)


# ---------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------
@njit(**_JIT)
def _stride(nf):
    """Columns of the stored sensitivity matrix ``S`` for ``nf`` free parameters: ``nf``
    rounded up to an even number, a padding column zero. ``rhs_sens`` computes ``J_y S``
    two columns at a time in vector registers (see the module docstring). Four at a
    time (padding 10 columns to 12) was slower: 1261 against 1194 us for a 10-parameter
    gradient, the padding's extra work in every stage loop and more spilled registers."""
    return (nf + 1) // 2 * 2


@njit(**_JIT)
def _f_aug(t, z, p, u, ns, pos, fz):
    """Right-hand side of the augmented system ``z = [y, S]`` into ``fz``.

    With sensitivities, the generated ``rhs_sens`` computes the states' derivatives and
    ``J_y S + Jp[:, free] * p[free]`` in one pass, the Jacobian entries as scalars (never
    stored in a matrix) and a ``Jp`` entry only for a free parameter.
    """
    if ns == 0:
        rhs(t, z[:N_Y], p, u, fz[:N_Y])
    else:
        rhs_sens(t, z, p, u, pos, ns, fz)


@njit(**_JIT)
def _hinit(t, hmax, z, f0, z1, f1, p, u, ns, pos, az, rtol, nz, nn, order):
    """Initial step size (Hairer, Norsett & Wanner, Solving ODEs I, II.4 ``HINIT``)."""
    d0 = 0.0
    d1 = 0.0
    for i in range(nz):
        sk = az[i] + rtol * abs(z[i])
        d0 += (z[i] / sk) ** 2
        d1 += (f0[i] / sk) ** 2
    d0 = math.sqrt(d0 / nn)
    d1 = math.sqrt(d1 / nn)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    h0 = min(h0, hmax)
    for i in range(nz):
        z1[i] = z[i] + h0 * f0[i]
    _f_aug(t + h0, z1, p, u, ns, pos, f1)
    d2 = 0.0
    for i in range(nz):
        sk = az[i] + rtol * abs(z[i])
        d2 += ((f1[i] - f0[i]) / sk) ** 2
    d2 = math.sqrt(d2 / nn) / h0
    if not math.isfinite(d2):
        # The Euler probe already left the domain: start cautiously, let control grow h.
        return min(0.01 * h0, hmax)
    dm = max(d1, d2)
    if dm <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dm) ** (1.0 / (order + 1))
    return min(100.0 * h0, h1, hmax)


@njit(**_FAST)
def _tsit5_step(t, h, z, znew, zs, K, p, u, ns, pos, az, rtol, nz, nn, want_rho):
    """One Tsit5 attempt from ``(t, z)`` with ``K[0] = f(t, z)``.

    Writes stages to ``K[1:7]`` (``K[6] = f(t + h, znew)``) and the solution to ``znew``.
    Returns ``(err, h*rho)``: the scaled RMS error (nan if non-finite) and, when
    ``want_rho``, Hairer's stiffness estimate ``h * |k7 - k6| / |y_new - g6|``
    on the state components.
    """
    # One 1-D view per stage (free: K is borrowed, see _integrate). Indexed as K[s, i],
    # LLVM vectorised one of the stage loops with gathers and scatters behind a
    # negative-index check (a tenth of a 10-parameter gradient's time in perf); through
    # the row views every loop gets contiguous vector loads (1.10x faster gradient).
    k0 = K[0]
    k1 = K[1]
    k2 = K[2]
    k3 = K[3]
    k4 = K[4]
    k5 = K[5]
    k6 = K[6]
    for i in range(nz):
        zs[i] = z[i] + h * _T_A21 * k0[i]
    _f_aug(t + _T_C2 * h, zs, p, u, ns, pos, k1)
    for i in range(nz):
        zs[i] = z[i] + h * (_T_A31 * k0[i] + _T_A32 * k1[i])
    _f_aug(t + _T_C3 * h, zs, p, u, ns, pos, k2)
    for i in range(nz):
        zs[i] = z[i] + h * (_T_A41 * k0[i] + _T_A42 * k1[i] + _T_A43 * k2[i])
    _f_aug(t + _T_C4 * h, zs, p, u, ns, pos, k3)
    for i in range(nz):
        zs[i] = z[i] + h * (_T_A51 * k0[i] + _T_A52 * k1[i] + _T_A53 * k2[i] + _T_A54 * k3[i])
    _f_aug(t + _T_C5 * h, zs, p, u, ns, pos, k4)
    for i in range(nz):
        zs[i] = z[i] + h * (
            _T_A61 * k0[i] + _T_A62 * k1[i] + _T_A63 * k2[i] + _T_A64 * k3[i] + _T_A65 * k4[i]
        )
    _f_aug(t + h, zs, p, u, ns, pos, k5)
    for i in range(nz):
        znew[i] = z[i] + h * (
            _T_B1 * k0[i]
            + _T_B2 * k1[i]
            + _T_B3 * k2[i]
            + _T_B4 * k3[i]
            + _T_B5 * k4[i]
            + _T_B6 * k5[i]
        )
    _f_aug(t + h, znew, p, u, ns, pos, k6)
    s = 0.0
    chk = 0.0
    for i in range(nz):
        e = h * (
            _T_E1 * k0[i]
            + _T_E2 * k1[i]
            + _T_E3 * k2[i]
            + _T_E4 * k3[i]
            + _T_E5 * k4[i]
            + _T_E6 * k5[i]
            + _T_E7 * k6[i]
        )
        sc = az[i] + rtol * max(abs(z[i]), abs(znew[i]))
        q = e / sc
        s += q * q
        chk += znew[i] * 0.0
    err = math.sqrt(s / nn) + chk
    hrho = 0.0
    if want_rho:
        num = 0.0
        den = 0.0
        # Weighted by the error scales: unweighted, the small but stiff components
        # (e.g. a radical at 1e-5) are drowned by the large slow ones and rho is
        # underestimated.
        for i in range(N_Y):
            w = 1.0 / (az[i] + rtol * abs(znew[i]))
            num += ((k6[i] - k5[i]) * w) ** 2
            den += ((znew[i] - zs[i]) * w) ** 2
        if den > 0.0:
            hrho = h * math.sqrt(num / den)
    return err, hrho


@njit(**_FAST)
def _tsit5_interp(theta, h, z, K, zi, ns):
    """Tsit5's 4th-order continuous extension at ``t + theta h`` into ``zi``: every
    state, and of ``S`` only the rows ``OBS_Y`` that ``observe_sens`` reads (the other
    rows of ``zi`` are left as they were; only :func:`_record` reads ``zi``)."""
    t2 = theta * theta
    b = (
        theta * (_T_R11 + theta * (_T_R12 + theta * (_T_R13 + theta * _T_R14))),
        t2 * (_T_R22 + theta * (_T_R23 + theta * _T_R24)),
        t2 * (_T_R32 + theta * (_T_R33 + theta * _T_R34)),
        t2 * (_T_R42 + theta * (_T_R43 + theta * _T_R44)),
        t2 * (_T_R52 + theta * (_T_R53 + theta * _T_R54)),
        t2 * (_T_R62 + theta * (_T_R63 + theta * _T_R64)),
        t2 * (_T_R72 + theta * (_T_R73 + theta * _T_R74)),
    )
    _interp_range(b, h, z, K, zi, 0, N_Y)
    for j in OBS_Y:
        _interp_range(b, h, z, K, zi, N_Y + j * ns, N_Y + (j + 1) * ns)


@njit(**_FAST)
def _interp_range(b, h, z, K, zi, lo, hi):
    """``zi[lo:hi]`` of the dense output with the weights ``b`` (7,) at one ``theta``."""
    b1, b2, b3, b4, b5, b6, b7 = b
    # Slices indexed from 0 (views of borrowed arrays cost nothing): with ``range(lo,
    # hi)`` every index went through numba's negative-index check and stayed scalar.
    k0, k1, k2, k3 = K[0, lo:hi], K[1, lo:hi], K[2, lo:hi], K[3, lo:hi]
    k4, k5, k6 = K[4, lo:hi], K[5, lo:hi], K[6, lo:hi]
    zz = z[lo:hi]
    out = zi[lo:hi]
    for i in range(hi - lo):
        out[i] = zz[i] + h * (
            b1 * k0[i] + b2 * k1[i] + b3 * k2[i] + b4 * k3[i] + b5 * k4[i] + b6 * k5[i] + b7 * k6[i]
        )


@njit(**_FAST)
def _ros_step(t, h, z, znew, zs, K, M, piv, Jw, p, u, ns, pos, az, rtol, nz, nn):
    """One ROS34PW2 attempt from ``(t, z)`` with ``K[0] = f(t, z)``, ``Jw = J_y(t, y)``.

    Stage increments go to ``K[1:5]``, ``K[5]`` is scratch, and on success
    ``K[7] = f(t + h, znew)`` (the next step's first stage). Returns the scaled RMS
    error, ``inf`` if the iteration matrix is singular, nan if anything is non-finite.
    """
    inv_gh = 1.0 / (_R_GAMMA * h)
    for i in range(N_Y):
        for j in range(N_Y):
            M[i, j] = -Jw[i, j]
        M[i, i] += inv_gh
    if not _lu_factor(M, piv, N_Y):
        return np.inf
    inv_h = 1.0 / h
    # Stage 1
    for i in range(nz):
        K[1, i] = K[0, i]
    _lu_solve(M, piv, K[1], 0, N_Y)
    _lu_solve_rows(M, piv, K[1], N_Y, N_Y, ns)
    # Stage 2
    for i in range(nz):
        zs[i] = z[i] + _R_A21 * K[1, i]
    _f_aug(t + _R_AL2 * h, zs, p, u, ns, pos, K[5])
    for i in range(nz):
        K[2, i] = K[5, i] + inv_h * (_R_C21 * K[1, i])
    _lu_solve(M, piv, K[2], 0, N_Y)
    _lu_solve_rows(M, piv, K[2], N_Y, N_Y, ns)
    # Stage 3
    for i in range(nz):
        zs[i] = z[i] + _R_A31 * K[1, i] + _R_A32 * K[2, i]
    _f_aug(t + _R_AL3 * h, zs, p, u, ns, pos, K[5])
    for i in range(nz):
        K[3, i] = K[5, i] + inv_h * (_R_C31 * K[1, i] + _R_C32 * K[2, i])
    _lu_solve(M, piv, K[3], 0, N_Y)
    _lu_solve_rows(M, piv, K[3], N_Y, N_Y, ns)
    # Stage 4
    for i in range(nz):
        zs[i] = z[i] + _R_A41 * K[1, i] + _R_A42 * K[2, i] + _R_A43 * K[3, i]
    _f_aug(t + _R_AL4 * h, zs, p, u, ns, pos, K[5])
    for i in range(nz):
        K[4, i] = K[5, i] + inv_h * (_R_C41 * K[1, i] + _R_C42 * K[2, i] + _R_C43 * K[3, i])
    _lu_solve(M, piv, K[4], 0, N_Y)
    _lu_solve_rows(M, piv, K[4], N_Y, N_Y, ns)
    s = 0.0
    chk = 0.0
    for i in range(nz):
        znew[i] = z[i] + _R_M1 * K[1, i] + _R_M2 * K[2, i] + _R_M3 * K[3, i] + _R_M4 * K[4, i]
        e = _R_E1 * K[1, i] + _R_E2 * K[2, i] + _R_E3 * K[3, i] + _R_E4 * K[4, i]
        sc = az[i] + rtol * max(abs(z[i]), abs(znew[i]))
        q = e / sc
        s += q * q
        chk += znew[i] * 0.0
    err = math.sqrt(s / nn) + chk
    if err <= 1.0:
        _f_aug(t + h, znew, p, u, ns, pos, K[7])
        if not _all_finite(K[7], nz):
            return np.nan
    return err


@njit(**_JIT)
def _record(i, t, zr, p, pos, ns, Y, O, dO):
    """Store state, observables and (if ``ns``) observable sensitivities at output ``i``:
    ``dO[i] = Oy S + Op[:, free] * p[free]`` by the generated ``observe_sens``, over the
    nonzeros of ``Oy`` and ``Op`` only."""
    y = zr[:N_Y]
    for m in range(N_Y):
        Y[i, m] = y[m]
    observe(t, y, p, O[i])
    if ns == 0:
        return
    observe_sens(t, zr, p, pos, ns, dO[i])


@njit(**_JIT)
def _check_inputs(p, free, u0, t0, t_out, events, options):
    """True if the inputs satisfy the documented contract (else status 4)."""
    ev_t, ev_kind, ev_target, ev_value, ev_scale = events
    rtol, atol, _, method = options
    if p.shape[0] != N_P or u0.shape[0] != N_U:
        return False
    if not math.isfinite(t0):
        return False
    if not (math.isfinite(rtol) and rtol >= 0.0 and math.isfinite(atol) and atol > 0.0):
        return False
    if method < 0 or method > 2:
        return False
    n_t = t_out.shape[0]
    for i in range(n_t):
        if not math.isfinite(t_out[i]) or t_out[i] < t0:
            return False
        if i > 0 and t_out[i] < t_out[i - 1]:
            return False
    n_ev = ev_t.shape[0]
    if (
        ev_kind.shape[0] != n_ev
        or ev_target.shape[0] != n_ev
        or ev_value.shape[0] != n_ev
        or ev_scale.shape[0] != n_ev
    ):
        return False
    for i in range(n_ev):
        if not math.isfinite(ev_t[i]) or ev_t[i] < t0:
            return False
        if i > 0 and ev_t[i] < ev_t[i - 1]:
            return False
        if not math.isfinite(ev_value[i]):
            return False
        k = ev_kind[i]
        tg = ev_target[i]
        if k == 0:
            if tg < 0 or tg >= N_Y:
                return False
        elif k == 1:
            if tg < 0 or tg >= N_U:
                return False
        else:
            return False
        sc = ev_scale[i]
        if sc < -1 or sc >= N_P:
            return False
    for k in range(free.shape[0]):
        if free[k] < 0 or free[k] >= N_P:
            return False
        for j in range(k):
            if free[j] == free[k]:
                return False
    return True


# ---------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------
@njit(**_JIT)
def _solve_impl(p, free, u0, t0, t_out, events, options, outputs):
    """Integrate one patient; fill the output arrays in place; return (status, n_steps).

    ``events`` is ``(ev_t, ev_kind, ev_target, ev_value, ev_scale)``, ``options``
    ``(rtol, atol, max_steps, method)`` and ``outputs`` ``(Y, O, dO)`` (see "Calling
    the driver" in the module docstring). ``Y`` (n_t, N_Y), ``O`` (n_t, N_OBS), ``dO``
    (n_t, N_OBS, len(free)) are set to NaN first, so that whatever a failure leaves
    unwritten reads NaN.
    """
    ev_t, ev_kind, ev_target, ev_value, ev_scale = events
    rtol, atol, max_steps, method = options
    Y, O, dO = outputs
    n_t = t_out.shape[0]
    ns = free.shape[0]
    Y[:, :] = np.nan
    O[:, :] = np.nan
    dO[:, :, :] = np.nan
    if not _check_inputs(p, free, u0, t0, t_out, events, options):
        return STATUS_BAD_INPUT, 0
    if n_t == 0:
        return STATUS_OK, 0

    # ---- work arrays: the only allocations of the solve ----
    nz = N_Y * (1 + _stride(ns))
    fwork = np.empty(13 * nz + 2 * N_Y * N_Y + N_U + N_Y * N_P)
    iwork = np.empty(N_Y + N_P, dtype=np.int64)
    return _integrate(p, free, u0, t0, t_out, events, options, outputs, fwork, iwork)


@njit(**_JIT)
def _integrate(p, free, u0, t0, t_out, events, options, outputs, fwork, iwork):
    """The integration of :func:`_solve_impl` (checked inputs, ``n_t > 0``) in the work
    arrays ``fwork`` (float64) and ``iwork`` (int64) it allocated.

    Every work array is a view of ``fwork`` or ``iwork`` through :func:`_borrow`, which
    takes no reference count: the stage loops make views of them (``K[1]``, ``z[:N_Y]``,
    the reshapes in ``rhs_sens``) thousands of times per solve, and each took and dropped
    a reference with an atomic instruction (15 % of a 10-parameter gradient's time).
    ``fwork`` and ``iwork`` themselves, arguments of this call, keep the memory alive.
    """
    ev_t, ev_kind, ev_target, ev_value, ev_scale = events
    rtol, atol, max_steps, method = options
    Y, O, dO = outputs
    n_t = t_out.shape[0]
    nf = free.shape[0]
    ns = _stride(nf)
    nz = N_Y * (1 + ns)
    nn = N_Y * (1 + nf)  # the components in the error norm: not the zero padding
    fw = _borrow(fwork)
    iw = _borrow(iwork)
    z = fw[0:nz]
    znew = fw[nz : 2 * nz]
    zs = fw[2 * nz : 3 * nz]
    zi = fw[3 * nz : 4 * nz]
    az = fw[4 * nz : 5 * nz]
    K = fw[5 * nz : 13 * nz].reshape((8, nz))
    o = 13 * nz
    Jw = fw[o : o + N_Y * N_Y].reshape((N_Y, N_Y))
    o += N_Y * N_Y
    M = fw[o : o + N_Y * N_Y].reshape((N_Y, N_Y))
    o += N_Y * N_Y
    u = fw[o : o + N_U]
    o += N_U
    Y0p = fw[o : o + N_Y * N_P].reshape((N_Y, N_P))
    piv = iw[0:N_Y]
    pos = iw[N_Y : N_Y + N_P]
    Jw[:, :] = 0.0  # jac_y writes only its structural nonzeros
    for i in range(N_U):
        u[i] = u0[i]
    pos[:] = -1
    for k in range(nf):
        pos[free[k]] = k
    for i in range(N_Y):
        az[i] = atol * ATOL_SCALE[i]
        for k in range(ns):
            az[N_Y + i * ns + k] = atol * ATOL_SCALE[i]

    # ---- initial condition ----
    init(p, z[:N_Y])
    z[N_Y:] = 0.0  # the padding columns stay 0 (their derivatives are J_y 0 = 0)
    if nf > 0:
        init_jac_p(p, Y0p)
        for k in range(nf):
            c = free[k]
            for i in range(N_Y):
                z[N_Y + i * ns + k] = Y0p[i, c] * p[c]
    if not _all_finite(z, nz):
        return STATUS_NONFINITE, 0

    n_ev = ev_t.shape[0]
    t_final = t_out[n_t - 1]
    eps = np.finfo(np.float64).eps
    status = STATUS_OK
    n_steps = 0
    cur = METHOD_ROSENBROCK if method == METHOD_ROSENBROCK else METHOD_TSIT5
    n_stiff = 0
    n_nonstiff = 0
    t = t0
    iout = 0
    iev = 0
    # Outputs at t0 see the state before the events at t0 (pre-dose convention).
    while iout < n_t and t_out[iout] <= t:
        _record(iout, t, z, p, pos, ns, Y, O, dO)
        iout += 1

    while iout < n_t:
        # ---- apply all events at the current time, in array order ----
        while iev < n_ev and ev_t[iev] <= t:
            if ev_kind[iev] == 0:
                tg = ev_target[iev]
                sc = ev_scale[iev]
                if sc >= 0:
                    z[tg] += ev_value[iev] * p[sc]
                    k = pos[sc]
                    if k >= 0:
                        # d(value * p_s)/d log p_s = value * p_s
                        z[N_Y + tg * ns + k] += ev_value[iev] * p[sc]
                else:
                    z[tg] += ev_value[iev]
            else:
                u[ev_target[iev]] = ev_value[iev]
            iev += 1
        if not _all_finite(z, nz):
            status = STATUS_NONFINITE
            break
        t_end = t_final
        if iev < n_ev and ev_t[iev] < t_end:
            t_end = ev_t[iev]

        # ---- restart the integration at t (state or inputs may have jumped) ----
        _f_aug(t, z, p, u, ns, pos, K[0])
        if not _all_finite(K[0], nz):
            status = STATUS_NONFINITE
            break
        order = 5 if cur == METHOD_TSIT5 else 3
        h = _hinit(t, t_end - t, z, K[0], zs, K[1], p, u, ns, pos, az, rtol, nz, nn, order)
        need_jac = True
        errold = 1e-4
        facmax_now = _FACMAX_TSIT5 if cur == METHOD_TSIT5 else _FACMAX_ROS
        last_nonfinite = False

        while True:
            if n_steps >= max_steps:
                status = STATUS_MAX_STEPS
                break
            # Below this, t + h no longer moves t by a meaningful amount.
            hmin = 16.0 * eps * abs(t)
            if not (h > hmin):
                status = STATUS_NONFINITE if last_nonfinite else STATUS_STEP_UNDERFLOW
                break
            # Land exactly on the segment end (and, for ROS34PW2, on the next output
            # time); stretch by up to 1% rather than leave a sliver step behind.
            t_stop = t_end
            if cur == METHOD_ROSENBROCK and t_out[iout] < t_stop:
                t_stop = t_out[iout]
            h_prop = h
            if t + 1.01 * h >= t_stop:
                h_try = t_stop - t
                t_new = t_stop
            else:
                h_try = h
                t_new = t + h
            last = t_new == t_end
            n_steps += 1
            if cur == METHOD_TSIT5:
                err, hrho = _tsit5_step(
                    t, h_try, z, znew, zs, K, p, u, ns, pos, az, rtol, nz, nn,
                    method == METHOD_AUTO,
                )  # fmt: skip
                kexp = 5.0
            else:
                if need_jac:
                    jac_y(t, z[:N_Y], p, u, Jw)
                    need_jac = False
                err = _ros_step(
                    t, h_try, z, znew, zs, K, M, piv, Jw, p, u, ns, pos, az, rtol, nz, nn
                )
                hrho = 0.0
                kexp = 3.0

            if err <= 1.0:
                # ---- accepted: dense output for the outputs inside (t, t_new] ----
                while iout < n_t and t_out[iout] <= t_new:
                    if t_out[iout] == t_new:
                        _record(iout, t_new, znew, p, pos, ns, Y, O, dO)
                    else:
                        # Only Tsit5 gets here (ROS34PW2 lands on output times).
                        theta = (t_out[iout] - t) / h_try
                        _tsit5_interp(theta, h_try, z, K, zi, ns)
                        _record(iout, t_out[iout], zi, p, pos, ns, Y, O, dO)
                    iout += 1
                fsal = 6 if cur == METHOD_TSIT5 else 7
                for i in range(nz):
                    z[i] = znew[i]
                    K[0, i] = K[fsal, i]
                t = t_new
                need_jac = True
                last_nonfinite = False
                h = h_try * _accept_factor(err, errold, kexp, facmax_now)
                if h_try < h_prop and not last:
                    # The step was shortened to hit an output time; the proposal it
                    # replaced is still the controller's best guess.
                    h = max(h, h_prop)
                errold = max(err, 1e-4)
                facmax_now = _FACMAX_TSIT5 if cur == METHOD_TSIT5 else _FACMAX_ROS
                if method == METHOD_AUTO and cur == METHOD_TSIT5:
                    if hrho > _STIFF_HRHO:
                        n_nonstiff = 0
                        n_stiff += 1
                        if n_stiff >= _STIFF_COUNT:
                            cur = METHOD_ROSENBROCK
                            errold = 1e-4
                            facmax_now = _FACMAX_ROS
                    else:
                        n_nonstiff += 1
                        if n_nonstiff >= _NONSTIFF_COUNT:
                            n_stiff = 0
                if last:
                    break
            else:
                # ---- rejected ----
                # nan: the attempt produced a non-finite value; inf: singular matrix.
                last_nonfinite = err != err
                h = h_try * _reject_factor(err, kexp)
                facmax_now = 1.0  # no growth right after a rejection
        if status != STATUS_OK:
            break
    return status, n_steps


# ---------------------------------------------------------------------------------
# The one compiled entry point
# ---------------------------------------------------------------------------------
# numba links a callee's LLVM code into every caller and optimises the whole again, so
# solve, solve_sens and solve_population calling _solve_impl directly each re-optimised
# the whole solver (solve_population alone was a fifth of the cold compile). They call
# this C callback instead, by a symbol name (so that their cached machine code holds no
# process address): the solver is optimised once, and cached on disk like the rest.
_F = types.CPointer(types.float64)
_I = types.CPointer(types.int64)
#: (p, free, n_free, u0, t0, t_out, n_t, ev_t, ev_kind, ev_target, ev_value, ev_scale,
#: n_ev, rtol, atol, max_steps, method, Y, O, dO, n_steps) -> status; arrays as C
#: pointers to contiguous data, ``p`` of length N_P, ``u0`` N_U, ``n_steps`` one int64.
SOLVE_SIGNATURE = types.int64(
    _F, _I, types.int64, _F, types.float64, _F, types.int64,
    _F, _I, _I, _F, _I, types.int64,
    types.float64, types.float64, types.int64, types.int64,
    _F, _F, _F, _I,
)  # fmt: skip


def _cfunc_with_slp(fn):
    """``cfunc(SOLVE_SIGNATURE)(fn)`` compiled with LLVM's SLP vectoriser on, then
    numba's setting as it was.

    numba turns the SLP vectoriser off by default (NUMBA_SLP_VECTORIZE=0); it is what
    packs rhs_sens' pairs of sensitivity columns into vector registers (the loop
    vectoriser cannot: see codegen._sens_function). It is on while solve_c compiles,
    which compiles every function of the solver; numba reads the setting per
    compilation (and holds its compiler lock meanwhile, so at worst another thread's
    compile gets SLP too). solve_c's machine code is cached like the rest. FIT solve +
    gradient, 10 parameters: 1194 against 1355 us (1.13x), 1546 us with the same code
    and SLP off.
    """
    before = _numba_config.SLP_VECTORIZE
    _numba_config.SLP_VECTORIZE = 1
    try:
        return cfunc(SOLVE_SIGNATURE, **_JIT)(fn)
    finally:
        _numba_config.SLP_VECTORIZE = before


@_cfunc_with_slp
def solve_c(
    p_, free_, n_free, u0_, t0, t_out_, n_t, ev_t_, ev_kind_, ev_target_, ev_value_,
    ev_scale_, n_ev, rtol, atol, max_steps, method, Y_, O_, dO_, n_steps_,
):  # fmt: skip
    """:func:`_solve_impl` over C pointers; returns the status, ``n_steps_[0]`` the
    attempted steps."""
    events = (
        carray(ev_t_, (n_ev,)),
        carray(ev_kind_, (n_ev,)),
        carray(ev_target_, (n_ev,)),
        carray(ev_value_, (n_ev,)),
        carray(ev_scale_, (n_ev,)),
    )
    outputs = (
        carray(Y_, (n_t, N_Y)),
        carray(O_, (n_t, N_OBS)),
        carray(dO_, (n_t, N_OBS, n_free)),
    )
    status, n_steps = _solve_impl(
        carray(p_, (N_P,)),
        carray(free_, (n_free,)),
        carray(u0_, (N_U,)),
        t0,
        carray(t_out_, (n_t,)),
        events,
        (rtol, atol, max_steps, method),
        outputs,
    )
    n_steps_[0] = n_steps
    return status


#: One symbol per generated module (its name carries the module's cache key).
SOLVE_SYMBOL = "carthema_solve_" + __name__
_llvm.add_symbol(SOLVE_SYMBOL, solve_c.address)
_solve_c = types.ExternalFunction(SOLVE_SYMBOL, SOLVE_SIGNATURE)


@njit(**_JIT)
def _call(p, free, u0, t0, t_out, events, options, outputs):
    """:func:`_solve_impl` through :func:`solve_c`: ``(status, n_steps)``.

    The C callback sees raw pointers and cannot check their lengths, so the inputs are
    checked here first (bad input: status 4, outputs NaN), and every array is made
    contiguous (a copy only if it is not)."""
    ev_t, ev_kind, ev_target, ev_value, ev_scale = events
    rtol, atol, max_steps, method = options
    Y, O, dO = outputs
    n_ev = ev_t.shape[0]
    if not _check_inputs(p, free, u0, t0, t_out, events, options):
        Y[:, :] = np.nan
        O[:, :] = np.nan
        dO[:, :, :] = np.nan
        return STATUS_BAD_INPUT, 0
    p = np.ascontiguousarray(p)
    free = np.ascontiguousarray(free)
    u0 = np.ascontiguousarray(u0)
    t_out = np.ascontiguousarray(t_out)
    ev_t = np.ascontiguousarray(ev_t)
    ev_kind = np.ascontiguousarray(ev_kind)
    ev_target = np.ascontiguousarray(ev_target)
    ev_value = np.ascontiguousarray(ev_value)
    ev_scale = np.ascontiguousarray(ev_scale)
    n_steps = np.zeros(1, dtype=np.int64)
    status = _solve_c(
        p.ctypes, free.ctypes, free.shape[0], u0.ctypes, t0, t_out.ctypes, t_out.shape[0],
        ev_t.ctypes, ev_kind.ctypes, ev_target.ctypes, ev_value.ctypes, ev_scale.ctypes,
        n_ev, rtol, atol, max_steps, method, Y.ctypes, O.ctypes, dO.ctypes, n_steps.ctypes,
    )  # fmt: skip
    return status, n_steps[0]


# ---------------------------------------------------------------------------------
# Public entry points (each calls the one compiled solver through _call)
# ---------------------------------------------------------------------------------
@njit(**_JIT)
def solve(
    p,
    u0,
    t0,
    t_out,
    ev_t,
    ev_kind,
    ev_target,
    ev_value,
    ev_scale,
    rtol,
    atol,
    max_steps,
    method,
):
    """Solve the model for one parameter vector.

    Parameters
    ----------
    p : float64 array, shape (N_P,)
        Natural-scale parameters.
    u0 : float64 array, shape (N_U,)
        Inputs at ``t0`` (changed by kind-1 events).
    t0 : float
        Initial time; the state at ``t0`` is ``init(p)``.
    t_out : float64 array, shape (n_t,)
        Output times, non-decreasing, ``>= t0``. An output at an event time reports
        the state before that time's events.
    ev_t, ev_kind, ev_target, ev_value, ev_scale : arrays, shape (n_ev,)
        Events sorted by time (see module docstring), all ``>= t0``.
    rtol, atol : float
        Relative tolerance (``>= 0``) and absolute tolerance (``> 0``; state ``i`` uses
        ``atol * ATOL_SCALE[i]``).
    max_steps : int
        Maximum number of attempted (accepted + rejected) steps over the whole solve.
    method : int
        0 Tsit5, 1 ROS34PW2 (stiff), 2 auto (Tsit5, switching to ROS34PW2 on stiffness).

    Returns
    -------
    status : int
        0 ok, 1 max_steps exceeded, 2 non-finite, 3 step underflow, 4 bad input.
    Y : float64 array, shape (n_t, N_Y)
        States at ``t_out`` (NaN from a failure point on).
    O : float64 array, shape (n_t, N_OBS)
        Observables at ``t_out``.
    n_steps : int
        Attempted steps (accepted + rejected).
    """
    n_t = t_out.shape[0]
    free = np.empty(0, dtype=np.int64)
    Y = np.empty((n_t, N_Y))
    O = np.empty((n_t, N_OBS))
    dO = np.empty((n_t, N_OBS, 0))
    events = (ev_t, ev_kind, ev_target, ev_value, ev_scale)
    options = (rtol, atol, max_steps, method)
    status, n_steps = _call(p, free, u0, t0, t_out, events, options, (Y, O, dO))
    return status, Y, O, n_steps


@njit(**_JIT)
def solve_sens(
    p,
    free,
    u0,
    t0,
    t_out,
    ev_t,
    ev_kind,
    ev_target,
    ev_value,
    ev_scale,
    rtol,
    atol,
    max_steps,
    method,
):
    """Solve the model with forward sensitivities w.r.t. ``log p[free]``.

    Parameters are those of :func:`solve`, plus

    free : int64 array, shape (n_free,)
        Distinct indices into ``p`` of the parameters to differentiate.

    Returns
    -------
    status : int
        As in :func:`solve`.
    Y : float64 array, shape (n_t, N_Y)
        States at ``t_out``.
    O : float64 array, shape (n_t, N_OBS)
        Observables at ``t_out``.
    dO : float64 array, shape (n_t, N_OBS, n_free)
        ``dO[i, j, k] = d O[i, j] / d log p[free[k]]
        = (Oy @ S + Op[:, free] * p[free])[j, k]`` at ``t_out[i]``.
    """
    n_t = t_out.shape[0]
    Y = np.empty((n_t, N_Y))
    O = np.empty((n_t, N_OBS))
    dO = np.empty((n_t, N_OBS, free.shape[0]))
    events = (ev_t, ev_kind, ev_target, ev_value, ev_scale)
    options = (rtol, atol, max_steps, method)
    status, _ = _call(p, free, u0, t0, t_out, events, options, (Y, O, dO))
    return status, Y, O, dO


@njit(parallel=True, **_JIT)
def solve_population(
    P,
    u0,
    t0,
    t_out,
    ev_t,
    ev_kind,
    ev_target,
    ev_value,
    ev_scale,
    rtol,
    atol,
    max_steps,
    method,
):
    """Solve many parameter vectors with a shared schedule, in parallel (``prange``).

    Parameters
    ----------
    P : float64 array, shape (n, N_P)
        One natural-scale parameter vector per row (C-contiguous).
    u0, t0, t_out, ev_*, rtol, atol, max_steps, method
        As in :func:`solve`, shared by all rows.

    Returns
    -------
    status : int64 array, shape (n,)
        Per-row status as in :func:`solve`.
    O : float64 array, shape (n, n_t, N_OBS)
        Observables; NaN from a row's failure point on.
    """
    n = P.shape[0]
    n_t = t_out.shape[0]
    status = np.empty(n, dtype=np.int64)
    O = np.empty((n, n_t, N_OBS))
    free = np.empty(0, dtype=np.int64)
    events = (ev_t, ev_kind, ev_target, ev_value, ev_scale)
    options = (rtol, atol, max_steps, method)
    for i in prange(n):
        Y = np.empty((n_t, N_Y))
        dO = np.empty((n_t, N_OBS, 0))
        st, _ = _call(P[i], free, u0, t0, t_out, events, options, (Y, O[i], dO))
        status[i] = st
    return status, O
