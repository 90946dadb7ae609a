"""The code generator's shortcuts give what sympy itself gives (issue 21).

``codegen._Preprocess`` remembers the results of cse's "basic" preprocessing, and
``codegen._nonzero_derivatives`` skips variables a row does not contain; both only save
sympy time. The reference here is sympy's own ``cse(..., optimizations="basic")`` and a
derivative for every (row, variable) pair, on the equations of a real component set.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.core import exprtools

from carthema import get_model
from carthema.models import codegen


def _equations(name: str):
    m = get_model(name)
    t, y, p, u = codegen._symbols(m)
    f = [sp.sympify(e) for e in m.rhs(t, y, p, u, sp)]
    return f, y, p


def test_nonzero_derivatives_are_every_derivative_that_is_not_zero():
    f, y, p = _equations("cart_targets")
    for wrt in (y, p):
        every = [(i, j, sp.diff(e, v)) for i, e in enumerate(f) for j, v in enumerate(wrt)]
        expected = [(i, j, d) for i, j, d in every if d != 0]
        assert codegen._nonzero_derivatives(f, wrt) == expected
        assert 0 < len(expected) < len(every)  # both kinds of pair occur


def test_remembered_preprocessing_gives_sympys_basic_cse():
    f, y, p = _equations("cart_targets")
    jac = [d for *_, d in codegen._nonzero_derivatives(f, y)]
    sens = [d * p[j] for _, j, d in codegen._nonzero_derivatives(f, p)]
    own = exprtools.gcd_terms
    with codegen._Preprocess().active() as pre:
        assert exprtools.gcd_terms is not own
        # The right-hand side twice (alone, then with its derivatives), as numba_source
        # does: the second call reuses the first one's results.
        got = [pre.cse(f), pre.cse(f + jac + sens)]
    assert exprtools.gcd_terms is own  # sympy's function is back
    for exprs, (repl, reduced) in zip((f, f + jac + sens), got, strict=True):
        ref_repl, ref_reduced = sp.cse(
            exprs, symbols=sp.numbered_symbols("c_"), optimizations="basic"
        )
        assert repl == ref_repl
        assert reduced == ref_reduced
    assert len(got[1][0]) > 10  # there were common subexpressions to find


def test_one_base_per_symbolic_power():
    """The full model's right-hand side: sympy's own cse evaluates one power to a
    parameter twice (the platelet feedback, whose base the preprocessing writes in two
    forms with signs flipped); the code generator's evaluates it once, and every
    equation keeps its value."""
    m = get_model("full")
    t, y, p, u = codegen._symbols(m)
    f = [sp.sympify(e) for e in m.rhs(t, y, p, u, sp)]

    def powers(repl, reduced):
        found = set()
        for e in [*(e for _, e in repl), *reduced]:
            found |= {q for q in e.atoms(sp.Pow) if not q.exp.is_Number}
        return found

    ref_repl, ref_reduced = sp.cse(f, symbols=sp.numbered_symbols("c_"), optimizations="basic")
    with codegen._Preprocess().active() as pre:
        repl, reduced = pre.cse(f)
    n_ref, n_own = len(powers(ref_repl, ref_reduced)), len(powers(repl, reduced))
    assert n_own == n_ref - 1
    assert {q.exp for q in powers(repl, reduced)} == {q.exp for q in powers(ref_repl, ref_reduced)}

    args = [*y, *p, *u]
    at = [0.5 + 0.1 * i for i in range(m.n_y)] + list(m.default_params()) + [0.0] * m.n_u
    own = sp.lambdify(args, [e.subs(list(reversed(repl))) for e in reduced])(*at)
    want = sp.lambdify(args, f)(*at)
    assert np.allclose(own, want, rtol=1e-12, atol=0.0)
