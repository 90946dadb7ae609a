"""Direct tests of the solver's model-independent kernels (models/solver_kernels.py).

References are independent of the solver: Butcher's order conditions (rooted trees and
their elementary weights, Hairer, Norsett & Wanner I, II.2), the exponential for the
stability function of ROS34PW2, numpy.linalg.solve, and an ODE with a closed-form
solution integrated with the tableau at fixed steps.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from carthema.models import solver_kernels as k

# --- rooted trees and order conditions ---------------------------------------------------


def _trees(order: int) -> list[tuple]:
    """All rooted trees with ``order`` nodes; a tree is the sorted tuple of its subtrees."""
    if order == 1:
        return [()]
    out = set()
    # A tree of order n is a root with a multiset of subtrees whose orders sum to n - 1.
    for parts in _partitions(order - 1):
        for combo in _combos([_trees(m) for m in parts]):
            out.add(tuple(sorted(combo)))
    return sorted(out)


def _partitions(n: int, largest: int | None = None) -> list[list[int]]:
    largest = n if largest is None else largest
    if n == 0:
        return [[]]
    return [[m, *rest] for m in range(min(n, largest), 0, -1) for rest in _partitions(n - m, m)]


def _combos(choices: list[list[tuple]]) -> list[list[tuple]]:
    if not choices:
        return [[]]
    return [[c, *rest] for c in choices[0] for rest in _combos(choices[1:])]


def _order(tree: tuple) -> int:
    return 1 + sum(_order(t) for t in tree)


def _gamma(tree: tuple) -> int:
    return _order(tree) * math.prod(_gamma(t) for t in tree)


def _weights(tree: tuple, A: np.ndarray) -> np.ndarray:
    """Internal elementary weights: Phi_i(t) = prod over subtrees of (A Phi(s))_i."""
    phi = np.ones(A.shape[0])
    for sub in tree:
        phi = phi * (A @ _weights(sub, A))
    return phi


def test_tree_counts():
    # Number of rooted trees of order 1..6 (OEIS A000081): the generator is right.
    assert [len(_trees(n)) for n in range(1, 7)] == [1, 1, 2, 4, 9, 20]
    assert Fraction(1, _gamma(((),))) == Fraction(1, 2)


def test_tsit5_row_sums_are_the_nodes():
    np.testing.assert_allclose(k.TSIT5_A.sum(axis=1), k.TSIT5_C, atol=1e-14)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_tsit5_solution_weights_satisfy_order_conditions(order):
    # The 5th-order solution uses the first 6 stages.
    A, b = k.TSIT5_A[:6, :6], k.TSIT5_B[:6]
    for tree in _trees(order):
        assert b @ _weights(tree, A) == pytest.approx(1.0 / _gamma(tree), abs=2e-13), tree


def test_tsit5_solution_violates_an_order_6_condition():
    # Tsit5 is exactly order 5: some 6th-order condition must fail (the test can fail).
    A, b = k.TSIT5_A[:6, :6], k.TSIT5_B[:6]
    err = max(abs(b @ _weights(t, A) - 1.0 / _gamma(t)) for t in _trees(6))
    assert err > 1e-4


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_tsit5_embedded_weights_are_order_4(order):
    # b_hat = b - e over the 7 FSAL stages (stage 7 evaluated at the new solution).
    A = k.TSIT5_A
    bhat = k.TSIT5_B - k.TSIT5_E
    for tree in _trees(order):
        assert bhat @ _weights(tree, A) == pytest.approx(1.0 / _gamma(tree), abs=1e-12), tree
    assert abs(k.TSIT5_E.sum()) < 1e-14  # e = b - b_hat: both sum to one


@pytest.mark.parametrize("theta", [0.1, 0.37, 0.8, 1.0])
def test_tsit5_dense_output_is_order_4(theta):
    # Continuous extension: sum_i b_i(theta) Phi_i(t) = theta^rho(t) / gamma(t), rho <= 4.
    powers = theta ** np.arange(1, 5)
    btheta = k.TSIT5_R @ powers
    for order in range(1, 5):
        for tree in _trees(order):
            want = theta**order / _gamma(tree)
            assert btheta @ _weights(tree, k.TSIT5_A) == pytest.approx(want, abs=1e-12)
    if theta == 1.0:
        np.testing.assert_allclose(btheta, k.TSIT5_B, atol=1e-12)


def _tsit5_integrate(f, y0: float, t0: float, t1: float, n: int) -> float:
    """Fixed-step Tsit5 with the kernels' tableau (numpy, independent of the solver)."""
    h = (t1 - t0) / n
    y, t = y0, t0
    for _ in range(n):
        kk = np.zeros(6)
        for i in range(6):
            kk[i] = f(t + k.TSIT5_C[i] * h, y + h * (k.TSIT5_A[i, :i] @ kk[:i]))
        y = y + h * (k.TSIT5_B[:6] @ kk)
        t += h
    return y


def test_tsit5_converges_at_order_5_on_an_analytic_ode():
    # y' = y cos t, y(0) = 1: y = exp(sin t).
    def f(t, y):
        return y * math.cos(t)

    exact = math.exp(math.sin(3.0))
    e1 = abs(_tsit5_integrate(f, 1.0, 0.0, 3.0, 20) - exact)
    e2 = abs(_tsit5_integrate(f, 1.0, 0.0, 3.0, 40) - exact)
    assert e2 < 1e-8
    assert math.log2(e1 / e2) == pytest.approx(5.0, abs=0.4)


# --- ROS34PW2 ----------------------------------------------------------------------------


def _ros_stability(z: complex) -> tuple[complex, complex]:
    """R(z) and R_hat(z) of the transformed form as the solver applies it to y' = lambda y
    with h = 1 and the exact Jacobian (u_i solve (1/gamma - z) u_i = z (1 + sum a_ij u_j)
    + sum c_ij u_j)."""
    u = np.zeros(4, dtype=complex)
    for i in range(4):
        rhs = z * (1.0 + k.ROS_A[i, :i] @ u[:i]) + k.ROS_C[i, :i] @ u[:i]
        u[i] = rhs / (1.0 / k.ROS_GAMMA - z)
    y1 = 1.0 + k.ROS_M @ u
    return y1, y1 - k.ROS_E @ u


def test_ros34pw2_transformed_form_matches_published():
    g, alpha, gam, b, bhat = k.ros34pw2_published()
    ginv = np.linalg.inv(gam)
    np.testing.assert_allclose(k.ROS_A @ gam, alpha, atol=1e-14)
    np.testing.assert_allclose(k.ROS_M @ gam, b, atol=1e-14)
    np.testing.assert_allclose((k.ROS_M - k.ROS_E) @ gam, bhat, atol=1e-14)
    np.testing.assert_allclose(k.ROS_C, np.diag(np.full(4, 1.0 / g)) - ginv, atol=1e-12)
    assert k.ROS_GAMMA == g


def test_ros34pw2_is_order_3_with_order_2_estimate_and_l_stable():
    # R(z) - e^z = O(z^4): halving z divides the error by ~16; R_hat - e^z = O(z^3).
    err = [abs(_ros_stability(z)[0] - np.exp(z)) for z in (-0.02, -0.01)]
    assert math.log2(err[0] / err[1]) == pytest.approx(4.0, abs=0.2)
    errh = [abs(_ros_stability(z)[1] - np.exp(z)) for z in (-0.02, -0.01)]
    assert math.log2(errh[0] / errh[1]) == pytest.approx(3.0, abs=0.2)
    # L-stable (stiffly accurate): R(z) -> 0 as z -> -inf, |R| <= 1 on the imaginary axis.
    assert abs(_ros_stability(-1e10)[0]) < 1e-8
    for w in (0.5, 5.0, 50.0, 500.0):
        assert abs(_ros_stability(1j * w)[0]) <= 1.0 + 1e-12


# --- step control ------------------------------------------------------------------------


def test_accept_and_reject_factors():
    # err = errold = 1: the safety factor alone.
    assert k.accept_factor(1.0, 1.0, 5.0, 10.0) == pytest.approx(0.9)
    # PI formula by hand: 0.9 * 0.01^(-0.14) * 0.5^(0.08).
    assert k.accept_factor(0.01, 0.5, 5.0, 10.0) == pytest.approx(
        0.9 * 0.01 ** (-0.7 / 5) * 0.5 ** (0.4 / 5)
    )
    assert k.accept_factor(0.0, 1.0, 5.0, 10.0) == 10.0  # exact step: grow by facmax
    assert k.accept_factor(1e-30, 1.0, 5.0, 6.0) == 6.0  # clipped above
    assert k.reject_factor(1e6, 5.0) == k.FACMIN  # clipped below
    assert k.reject_factor(2.0, 3.0) == pytest.approx(0.9 * 2.0 ** (-1 / 3))
    assert k.reject_factor(math.nan, 5.0) == 0.25
    assert k.reject_factor(math.inf, 5.0) == 0.25


# --- linear algebra ----------------------------------------------------------------------


def test_all_finite():
    x = np.array([1.0, -2.0, 1e300, 0.0])
    assert k.all_finite(x, 4)
    x[3] = np.nan
    assert not k.all_finite(x, 4)
    assert k.all_finite(x, 3)  # only the first n entries are checked
    x[0] = -np.inf
    assert not k.all_finite(x, 1)


@pytest.mark.parametrize("n", [1, 3, 8, 32])
def test_lu_solve_matches_numpy(n):
    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, n))
    if n > 1:
        A[0, 0] = 0.0  # forces a row exchange
    b = rng.standard_normal(n)
    M = A.copy()
    piv = np.empty(n, dtype=np.int64)
    assert k.lu_factor(M, piv, n)
    x = np.concatenate([[7.0, 7.0], b])  # solve in place at an offset
    k.lu_solve(M, piv, x, 2, n)
    np.testing.assert_allclose(x[2:], np.linalg.solve(A, b), rtol=1e-10, atol=1e-12)
    assert x[0] == x[1] == 7.0
    # Several right-hand sides stored row-major, as the sensitivity columns are.
    m = 4
    B = rng.standard_normal((n, m))
    buf = np.concatenate([[5.0], B.ravel()])
    k.lu_solve_rows(M, piv, buf, 1, n, m)
    np.testing.assert_allclose(buf[1:].reshape(n, m), np.linalg.solve(A, B), rtol=1e-10, atol=1e-12)
    assert buf[0] == 5.0


def test_lu_factor_reports_singular_and_non_finite():
    piv = np.empty(3, dtype=np.int64)
    assert not k.lu_factor(np.array([[1.0, 2, 3], [2, 4, 6], [0, 0, 1]]), piv, 3)
    assert not k.lu_factor(np.array([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]]), piv, 3)


def test_tableaux_are_read_only():
    with pytest.raises(ValueError):
        k.TSIT5_A[1, 0] = 0.0
    with pytest.raises(ValueError):
        k.ROS_M[0] = 0.0


def test_borrow_shares_the_memory_without_taking_a_reference():
    from numba import njit
    from numba.core.unsafe.refcount import get_refcount

    @njit
    def views(borrowed):
        a = np.zeros(6)
        src = k.borrow(a) if borrowed else a
        kept = (src[1:4], src.reshape((2, 3))[1])  # views alive at the count below
        kept[0][0] = 7.0  # writes through to a
        kept[1][2] = 9.0
        return get_refcount(a), a[1], a[5]

    # A plain view holds a reference (numba counts each one); a borrowed one holds none
    # and still reads and writes the same memory.
    assert views(False)[0] > 1
    assert views(True) == (1, 7.0, 9.0)


def test_matrix_is_the_reshaped_slice_and_writes_through():
    from numba import njit

    @njit
    def views(a, start, n, m):
        s = k.matrix(a, start, n, m)
        ref = a[start : start + n * m].reshape((n, m))
        same = s.shape == ref.shape and np.all(s == ref)
        s[n - 1, m - 1] = -1.0
        return same, a[start + n * m - 1]

    a = np.arange(20.0)
    for start, n, m in ((0, 4, 5), (3, 2, 7), (19, 1, 1)):
        assert views(a.copy(), start, n, m) == (True, -1.0)
