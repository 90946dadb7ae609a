"""Generate the numba model module from the model equations with sympy.

The equations live once, in the components. Here they are evaluated on sympy symbols,
differentiated exactly (state and parameter Jacobians, initial-state and observable
Jacobians), reduced with common-subexpression elimination and printed as plain Python
with module-level ``@njit(cache=True, error_model="numpy")`` functions: a division by
zero gives inf/nan, which the solver reports as a status instead of raising. The text
follows the contract of ``_solver_template.py`` and is joined to the solver by
:mod:`.numba_backend`.

Every matrix function stores only structural nonzeros: ``jac_y`` and ``jac_p`` into
scratch matrices the solver zeroed once, ``init_jac_p``, ``observe_jac_y`` and
``observe_jac_p`` after one zero-fill of their output. Storing every entry (1,760 for
``init_jac_p`` of the full model, 1,708 of them zero) tripled the cold numba compile.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .model import Model


class _Printer(PythonCodePrinter):
    """Prints math.* calls and float literals that numba compiles without objects."""

    def _print_Rational(self, expr):  # 1/2 -> 0.5 (avoid integer division surprises)
        return repr(float(expr))

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.as_base_exp()
        if exp == -1:
            return f"(1.0/{self.parenthesize(base, 1000)})"
        if exp == sp.S.Half:
            return f"math.sqrt({self._print(base)})"
        if exp.is_Integer and 2 <= int(exp) <= 4:
            b = self.parenthesize(base, 1000)
            return "(" + "*".join([b] * int(exp)) + ")"
        return f"{self.parenthesize(base, 1000)}**{self.parenthesize(exp, 1000)}"


def _symbols(model: Model):
    t = sp.Symbol("t", real=True)
    y = sp.symbols(f"y_0:{model.n_y}", real=True)
    p = sp.symbols(f"p_0:{model.n_p}", positive=True)
    u = sp.symbols(f"u_0:{model.n_u}", real=True) if model.n_u else ()
    return t, y, p, u


def _loads(exprs: Sequence[sp.Expr], arrays: dict[str, Sequence[sp.Symbol]]) -> list[str]:
    used = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
    lines = []
    for arr, syms in arrays.items():
        for i, s in enumerate(syms):
            if s in used:
                lines.append(f"    {s.name} = {arr}[{i}]")
    return lines


def _function(
    name: str,
    args: str,
    targets: Sequence[str],
    exprs: Sequence[sp.Expr],
    arrays: dict[str, Sequence[sp.Symbol]],
    printer: _Printer,
    prologue: Sequence[str] = (),
) -> str:
    exprs = [sp.sympify(e) for e in exprs]
    repl, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("c_"), optimizations="basic")
    body = _loads(exprs, arrays)
    body += [f"    {line}" for line in prologue]
    body += [f"    {s} = {printer.doprint(e)}" for s, e in repl]
    body += [f"    {tgt} = {printer.doprint(e)}" for tgt, e in zip(targets, reduced, strict=True)]
    if not body:
        body = ["    pass"]
    decorator = '@njit(cache=True, error_model="numpy")'
    return f"{decorator}\ndef {name}({args}):\n" + "\n".join(body) + "\n"


def _dense_matrix(
    name: str,
    args: str,
    out: str,
    rows: Sequence[sp.Expr],
    wrt: Sequence[sp.Symbol],
    arrays: dict[str, Sequence[sp.Symbol]],
    printer: _Printer,
) -> str:
    """``out[i, j] = d rows[i] / d wrt[j]`` for a caller that reads the whole matrix.

    One zero-fill of ``out``, then only the structural nonzeros: storing every entry
    (1,760 for ``init_jac_p`` of the full model, nearly all of them ``0.0``) gave
    LLVM that many stores to schedule and made the cold compile minutes long. The
    values are the same either way: a structural zero is exactly ``0.0``.
    """
    entries = [(i, j, sp.diff(e, v)) for i, e in enumerate(rows) for j, v in enumerate(wrt)]
    entries = [(i, j, d) for i, j, d in entries if d != 0]
    return _function(
        name,
        args,
        [f"{out}[{i}, {j}]" for i, j, _ in entries],
        [d for *_, d in entries],
        arrays,
        printer,
        prologue=[f"{out}[:, :] = 0.0"],
    )


def _int_array(values: Sequence[int]) -> str:
    return "np.array([" + ", ".join(str(v) for v in values) + "], dtype=np.int64)"


def numba_source(model: Model) -> str:
    """Python source of the numba model module (see ``_solver_template.py`` contract)."""
    pr = _Printer()
    t, y, p, u = _symbols(model)
    f = [sp.sympify(e) for e in model.rhs(t, y, p, u, sp)]
    y0 = [sp.sympify(e) for e in model.init(p, sp)]
    obs = [sp.sympify(e) for e in model.observe(t, y, p, sp)]

    jy = [(i, j, sp.diff(fi, yj)) for i, fi in enumerate(f) for j, yj in enumerate(y)]
    jy = [(i, j, d) for i, j, d in jy if d != 0]
    jp = [(i, j, sp.diff(fi, pj)) for i, fi in enumerate(f) for j, pj in enumerate(p)]
    jp = [(i, j, d) for i, j, d in jp if d != 0]

    arrays_typ = {"y": y, "p": p, "u": u}
    out = [
        f"# Generated by carthema.models.codegen for the '{model.name}' model. Do not edit.",
        "import math",
        "import numpy as np",
        "from numba import njit",
        "",
        f"N_Y = {model.n_y}",
        f"N_P = {model.n_p}",
        f"N_U = {model.n_u}",
        f"N_OBS = {model.n_obs}",
        f"JY_ROWS = {_int_array([i for i, _, _ in jy])}",
        f"JY_COLS = {_int_array([j for _, j, _ in jy])}",
        f"JP_ROWS = {_int_array([i for i, _, _ in jp])}",
        f"JP_COLS = {_int_array([j for _, j, _ in jp])}",
        "ATOL_SCALE = np.array([" + ", ".join(repr(float(s)) for s in model.atol_scale) + "])",
        "",
        "",
    ]
    fns = [
        _function(
            "rhs", "t, y, p, u, dy", [f"dy[{i}]" for i in range(model.n_y)], f, arrays_typ, pr
        ),
        _function(
            "jac_y",
            "t, y, p, u, J",
            [f"J[{i}, {j}]" for i, j, _ in jy],
            [d for *_, d in jy],
            arrays_typ,
            pr,
        ),
        _function(
            "jac_p",
            "t, y, p, u, Jp",
            [f"Jp[{i}, {j}]" for i, j, _ in jp],
            [d for *_, d in jp],
            arrays_typ,
            pr,
        ),
        _function("init", "p, y", [f"y[{i}]" for i in range(model.n_y)], y0, {"p": p}, pr),
        _dense_matrix("init_jac_p", "p, Y0p", "Y0p", y0, p, {"p": p}, pr),
        _function(
            "observe",
            "t, y, p, o",
            [f"o[{i}]" for i in range(model.n_obs)],
            obs,
            {"y": y, "p": p},
            pr,
        ),
        _dense_matrix("observe_jac_y", "t, y, p, Oy", "Oy", obs, y, {"y": y, "p": p}, pr),
        _dense_matrix("observe_jac_p", "t, y, p, Op", "Op", obs, p, {"y": y, "p": p}, pr),
    ]
    return "\n".join(out) + "\n\n".join(fns)
