"""Generate the numba model module from the model equations with sympy.

The equations live once, in the components. Here they are evaluated on sympy symbols,
differentiated exactly (state and parameter Jacobians, initial-state and observable
Jacobians), reduced with common-subexpression elimination and printed as plain Python
with module-level ``@njit(cache=True, error_model="numpy")`` functions: a division by
zero gives inf/nan, which the solver reports as a status instead of raising. The text
follows the contract of ``_solver_template.py`` and is joined to the solver by
:mod:`.numba_backend`.

Every matrix function stores only structural nonzeros: ``jac_y`` and ``jac_p`` into a
matrix the caller zeroed once, ``init_jac_p``, ``observe_jac_y`` and ``observe_jac_p``
after one zero-fill of their output. Storing every entry (1,760 for ``init_jac_p`` of
the full model, 1,708 of them zero) tripled the cold numba compile.

The forward sensitivities go through two fused functions instead of those matrices
(:func:`_sens_function`): ``rhs_sens`` (the right-hand side and ``J_y S + Jp[:, free]
p[free]`` in one pass, one common-subexpression elimination over the right-hand side and
both Jacobians) and ``observe_sens`` (``Oy S + Op[:, free] p[free]``); a parameter's
derivatives are evaluated only when it is free. At 10 free parameters this made the
solve + gradient 1.7x faster for about 10 s more CPU in a cold compile.

sympy's part of a cold compile is mostly the "basic" preprocessing of its common-
subexpression elimination (``factor_terms`` of every expression), repeated over subtrees
that all the derivatives share: :class:`_Preprocess` remembers its results for one
:func:`numba_source` call (the same text; sympy's CPU time for the full model 8.2 ->
3.5 s here, issue 21).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .model import Model

if TYPE_CHECKING:
    import sympy as sp
    from sympy.printing.pycode import PythonCodePrinter

# sympy is imported by the functions that use it, not here: a process that finds the
# generated text in the cache (every run after the first) never needs it, and importing
# it was a tenth of a second of the fast log-density's start-up.


@functools.cache
def _printer_class() -> type[PythonCodePrinter]:
    """The printer's class, defined on first use (it subclasses sympy's printer)."""
    import sympy as sp
    from sympy.printing.pycode import PythonCodePrinter

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
            # x**0.5 as a Float too (the components write ``** 0.5``): math.sqrt is a
            # fraction of the cost of pow; small integer powers as products, likewise.
            if exp == sp.S.Half or (exp.is_Float and float(exp) == 0.5):
                return f"math.sqrt({self._print(base)})"
            if exp.is_Float and float(exp).is_integer() and abs(float(exp)) <= 16:
                exp = sp.Integer(int(exp))  # x**2.0: a static integer power, not pow()
                if abs(int(exp)) > 4:
                    return f"{self.parenthesize(base, 1000)}**{int(exp)}"
            if exp.is_Integer and 2 <= abs(int(exp)) <= 4:
                b = self.parenthesize(base, 1000)
                prod = "(" + "*".join([b] * abs(int(exp))) + ")"
                return prod if int(exp) > 0 else f"(1.0/{prod})"
            # Other half-integer powers (x**-0.5, x**1.5, x**-1.5 from differentiating a
            # square root) as sqrt times an integer power: pow() was a sixth of the gradient's
            # time; LLVM evaluates one sqrt per base for all of them.
            if exp.is_Number and float(2 * exp).is_integer():
                two = int(2 * exp)
                if two % 2 == 1 and abs(two) <= 9:
                    b = self.parenthesize(base, 1000)
                    prod = "*".join(
                        [b] * ((abs(two) - 1) // 2) + [f"math.sqrt({self._print(base)})"]
                    )
                    return f"({prod})" if two > 0 else f"(1.0/({prod}))"
            return f"{self.parenthesize(base, 1000)}**{self.parenthesize(exp, 1000)}"

    return _Printer


class _Preprocess:
    """sympy's ``cse(..., optimizations="basic")`` preprocessing, results remembered.

    "basic" is ``sub_pre`` then ``factor_terms`` before the elimination and ``sub_post``
    after it (``sympy.simplify.cse_main.basic_optimizations``); :meth:`cse` applies the
    same functions in the same order, so the text printed is the same, but remembers

    - each expression's preprocessed form: the right-hand side, ``jac_y`` and the
      observables' derivatives are each reduced twice (their own function and the fused
      sensitivity one);
    - every ``gcd_terms`` call inside ``factor_terms`` (one per sum node of every
      expression): the derivatives share their subtrees, and the full model made 17,151
      such calls with 218 distinct arguments. ``factor_terms`` finds ``gcd_terms`` as a
      global of ``sympy.core.exprtools``, so it is swapped there for the duration of
      :meth:`active` (under a lock; the wrapper returns what sympy's own function
      returns for the same arguments, so another thread calling it meanwhile gets the
      same results).

    Apart from :meth:`_one_base` (which it adds after ``factor_terms``), the generated
    text is the same as with sympy's own ``cse`` (compared for every component set at
    two fixed ``PYTHONHASHSEED`` values; the haematopoiesis set's text depends on the
    hash seed either way). For the full model sympy took 8.2 s CPU here
    (1.9 s on the equations before the marrow neutrophil reserve and megakaryocyte
    progenitors, 33 states and 57 parameters instead of 37 and 65), 3.5 s with this and
    :func:`_nonzero_derivatives`' shortcut.
    """

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._pre: dict[sp.Basic, sp.Basic] = {}
        self._gcd: dict[tuple, sp.Basic] = {}
        self._bases: dict[sp.Basic, list[sp.Basic]] = {}
        self._same: dict[tuple[sp.Basic, sp.Basic], bool] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[_Preprocess]:
        from sympy.core import exprtools

        with self._lock:
            own = exprtools.gcd_terms
            exprtools.gcd_terms = self._gcd_terms(own)
            try:
                yield self
            finally:
                exprtools.gcd_terms = own

    def _gcd_terms(self, gcd_terms: Callable[..., sp.Basic]) -> Callable[..., sp.Basic]:
        memo = self._gcd

        def remembered(terms, isprimitive=False, clear=True, fraction=True):
            key = (terms, isprimitive, clear, fraction)
            if key not in memo:
                memo[key] = gcd_terms(terms, isprimitive, clear, fraction)
            return memo[key]

        return remembered

    def _basic_pre(self, e: sp.Basic) -> sp.Basic:
        from sympy.core import exprtools
        from sympy.simplify import cse_opts

        if e not in self._pre:
            self._pre[e] = self._one_base(exprtools.factor_terms(cse_opts.sub_pre(e)))
        return self._pre[e]

    def _one_base(self, e: sp.Basic) -> sp.Basic:
        """``e`` with every power to a symbolic exponent (a Hill coefficient: ``pow()``,
        the costliest call in the generated code) written over the first base seen for
        that exponent that is the same rational function.

        The preprocessing can write one base in two forms (the platelet feedback
        ``((plt0 * space + e) / (plt + e)) ** plt_gamma`` came out once with the signs
        of a numerator and a denominator flipped), and then common-subexpression
        elimination evaluates the power twice; one power less was 1.05x on a
        10-parameter gradient. The values may differ from before in the last bits only.
        """
        import sympy as sp

        def pick(b: sp.Basic, x: sp.Basic) -> sp.Basic:
            seen = self._bases.setdefault(x, [])
            for r in seen:
                if r == b:
                    return r
                if (b, r) not in self._same:
                    self._same[(b, r)] = sp.cancel(b - r) == 0
                if self._same[(b, r)]:
                    return r
            seen.append(b)
            return b

        return e.replace(
            lambda q: q.is_Pow and not q.exp.is_Number,
            lambda q: sp.Pow(pick(q.base, q.exp), q.exp, evaluate=False),
        )

    def cse(self, exprs: Sequence[sp.Expr]) -> tuple[list, list]:
        """``sp.cse(exprs, symbols=c_0, c_1, ..., optimizations="basic")``, with the
        bases of symbolic powers made one (:meth:`_one_base`)."""
        import sympy as sp
        from sympy.simplify import cse_opts

        return sp.cse(
            exprs,
            symbols=sp.numbered_symbols("c_"),
            optimizations=[(self._basic_pre, cse_opts.sub_post)],
        )


#: Every generated function: cached by numba; float division by zero gives inf/nan, not
#: an exception (the solver's status logic needs that); ``contract``: ``a * b + c`` may
#: be one fused multiply-add (a rounding difference only, 9 % of a 10-parameter
#: gradient's time; none of the assumptions about NaN or infinity that the solver's
#: finiteness checks rely on).
_DECORATOR = '@njit(cache=True, error_model="numpy", fastmath={"contract"})'


def _symbols(model: Model):
    import sympy as sp

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
    printer: PythonCodePrinter,
    pre: _Preprocess,
    prologue: Sequence[str] = (),
) -> str:
    import sympy as sp

    exprs = [sp.sympify(e) for e in exprs]
    repl, reduced = pre.cse(exprs)
    body = _loads(exprs, arrays)
    body += [f"    {line}" for line in prologue]
    body += [f"    {s} = {printer.doprint(e)}" for s, e in repl]
    body += [f"    {tgt} = {printer.doprint(e)}" for tgt, e in zip(targets, reduced, strict=True)]
    if not body:
        body = ["    pass"]
    decorator = _DECORATOR
    return f"{decorator}\ndef {name}({args}):\n" + "\n".join(body) + "\n"


def _nonzero_derivatives(
    rows: Sequence[sp.Expr], wrt: Sequence[sp.Symbol]
) -> list[tuple[int, int, sp.Expr]]:
    """``(i, j, d rows[i] / d wrt[j])`` for every derivative that is not identically 0.

    A variable a row does not contain is skipped without asking sympy (most pairs: a
    quarter of sympy's differentiation time went to derivatives that are 0)."""
    import sympy as sp

    out = []
    for i, e in enumerate(rows):
        has = e.free_symbols
        out += [(i, j, sp.diff(e, v)) for j, v in enumerate(wrt) if v in has]
    return [(i, j, d) for i, j, d in out if d != 0]


def _dense_matrix(
    name: str,
    args: str,
    out: str,
    entries: Sequence[tuple[int, int, sp.Expr]],
    arrays: dict[str, Sequence[sp.Symbol]],
    printer: PythonCodePrinter,
    pre: _Preprocess,
) -> str:
    """``out[i, j] = d`` for ``(i, j, d)`` in ``entries`` (:func:`_nonzero_derivatives`),
    for a caller that reads the whole matrix.

    One zero-fill of ``out``, then only the structural nonzeros: storing every entry
    (1,760 for ``init_jac_p`` of the full model, nearly all of them ``0.0``) gave
    LLVM that many stores to schedule and made the cold compile minutes long. The
    values are the same either way: a structural zero is exactly ``0.0``.
    """
    return _function(
        name,
        args,
        [f"{out}[{i}, {j}]" for i, j, _ in entries],
        [d for *_, d in entries],
        arrays,
        printer,
        pre,
        prologue=[f"{out}[:, :] = 0.0"],
    )


def _sens_function(
    name: str,
    args: str,
    outputs: Sequence[tuple[str, sp.Expr]],
    rows: tuple[str, int, str],
    prod: Sequence[tuple[int, int, sp.Expr]],
    param: Sequence[tuple[int, int, sp.Expr]],
    arrays: dict[str, Sequence[sp.Symbol]],
    p: Sequence[sp.Symbol],
    printer: PythonCodePrinter,
    pre: _Preprocess,
    lanes: int = 0,
) -> str:
    """A forward-sensitivity function with the derivatives as scalars.

    Writes ``outputs`` (plain targets), then, with ``rows = (name of the (n_rows, ns)
    output matrix R, n_rows, a statement defining R or "")``, for every row ``i`` and
    column ``k < ns``::

        R[i, k] = sum over (i, j, d) in prod of d * S[j, k]         (0.0 if none)
        R[i, pos[c]] += d * p[c]   for (i, c, d) in param, where pos[c] >= 0

    ``S`` is stored row-major in ``z[N_Y:]`` (viewed as the (N_Y, ns) matrix ``zS``),
    and ``pos[c]`` is the column of parameter ``c`` (-1: not free), so a parameter
    derivative, and every subexpression only such derivatives use, is evaluated only
    when that parameter is free. One common-subexpression elimination covers the
    outputs and every derivative; nothing goes through a matrix in memory.

    ``lanes`` > 0: ``ns`` is a multiple of ``lanes`` and the product is written for
    ``lanes`` columns at a time, every load of the block before any store, which the
    SLP vectoriser packs into vector registers (one broadcast coefficient times a
    vector of ``lanes`` columns; numba runs that vectoriser only when asked, which the
    solver template does while it compiles). Written as one loop over ``k``, LLVM kept
    it scalar: the output rows lie ``ns`` apart, unknown at compile time, so it could
    not prove that a store leaves the next column's loads alone. ``lanes`` = 0: one column per
    iteration, over the columns of ``R`` (``R.shape[1]``, which may be fewer than
    ``ns``: ``dO`` has no padding).
    """
    import sympy as sp

    out, n_rows, define_out = rows
    exprs = [e for _, e in outputs] + [d for *_, d in prod]
    exprs += [d * p[c] for _, c, d in param]  # d/d log p = p d/dp
    exprs = [sp.sympify(e) for e in exprs]
    repl, reduced = pre.cse(exprs)
    n_out = len(outputs)
    n_main = n_out + len(prod)
    # A subexpression that only parameter derivatives use (a log for a Hill exponent's
    # derivative, say) is evaluated inside the block of each free parameter that needs
    # it, not on every call: at 10 of 55 parameters free most of them are never needed.
    defs = {s: e for s, e in repl}

    def needs(targets: Sequence[sp.Expr]) -> set[sp.Symbol]:
        todo = [s for e in targets for s in e.free_symbols if s in defs]
        seen: set[sp.Symbol] = set()
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo += [q for q in defs[s].free_symbols if q in defs]
        return seen

    main = needs(reduced[:n_main])
    body = _loads(exprs, arrays)
    body += [f"    {s} = {printer.doprint(e)}" for s, e in repl if s in main]
    body += [
        f"    {tgt} = {printer.doprint(e)}"
        for (tgt, _), e in zip(outputs, reduced[:n_out], strict=True)
    ]
    red_prod = reduced[n_out : n_out + len(prod)]
    red_param = reduced[n_out + len(prod) :]
    by_row: dict[int, list[str]] = {i: [] for i in range(n_rows)}
    for e, ((i, j, _), r) in enumerate(zip(prod, red_prod, strict=True)):
        body.append(f"    a_{e} = {printer.doprint(r)}")
        by_row[i].append(f"a_{e} * v_{j}")
    used = sorted({j for _, j, _ in prod})
    # One 2-D view for S and one for the output, not a view per row (a view per row gave
    # LLVM 70 pointers that might alias: every S entry reloaded after every store). The
    # column loop is still scalar (checked in the assembly, 2026-12-05): the output rows
    # lie ns apart, a distance unknown at compile time, so vectorising it would take a
    # run-time overlap check per pair of rows. Forming the rows in a constant-stride
    # matrix on the stack did vectorise it, but spilled its 164 coefficients and was no
    # faster over a whole gradient (1629 vs 1608 us CPU, same process).
    body.append("    zS = _matrix(z, N_Y, N_Y, ns)")
    if define_out:
        body.append(f"    {define_out}")
    if lanes:
        # Unsigned column indices: numba checks a signed index for a negative value
        # (and wraps it), and with those selects between them the SLP vectoriser did
        # not see the columns of a block as adjacent.
        body.append(f"    for kb in range(ns // {lanes}):")
        body.append(f"        k = np.uint64({lanes} * kb)")
        col = ["k"] + [f"k{q}" for q in range(1, lanes)]
        body += [f"        k{q} = k + np.uint64({q})" for q in range(1, lanes)]
        body += [f"        v_{j}_{q} = zS[{j}, {c}]" for j in used for q, c in enumerate(col)]
        for i in range(n_rows):
            for q, c in enumerate(col):
                terms = [f"{a}_{q}" for a in by_row[i]]
                body.append(f"        {out}[{i}, {c}] = " + (" + ".join(terms) or "0.0"))
    else:
        body.append(f"    for k in range({out}.shape[1]):")
        body += [f"        v_{j} = zS[{j}, k]" for j in used]
        for i in range(n_rows):
            body.append(f"        {out}[{i}, k] = " + (" + ".join(by_row[i]) or "0.0"))
    by_param: dict[int, list[tuple[int, sp.Expr]]] = {}
    for (i, c, _), r in zip(param, red_param, strict=True):
        by_param.setdefault(c, []).append((i, r))
    for c in sorted(by_param):
        body.append(f"    k = pos[{c}]")
        body.append("    if k >= 0:")
        own = needs([r for _, r in by_param[c]]) - main
        body += [f"        {s} = {printer.doprint(e)}" for s, e in repl if s in own]
        for i, r in by_param[c]:
            body.append(f"        {out}[{i}, k] += {printer.doprint(r)}")
    decorator = _DECORATOR
    return f"{decorator}\ndef {name}({args}):\n" + "\n".join(body) + "\n"


def _int_array(values: Sequence[int]) -> str:
    return "np.array([" + ", ".join(str(v) for v in values) + "], dtype=np.int64)"


def numba_source(model: Model) -> str:
    """Python source of the numba model module (see ``_solver_template.py`` contract)."""
    with _Preprocess().active() as pre:
        return _numba_source(model, pre)


def _numba_source(model: Model, pre: _Preprocess) -> str:
    import sympy as sp

    pr = _printer_class()()
    t, y, p, u = _symbols(model)
    f = [sp.sympify(e) for e in model.rhs(t, y, p, u, sp)]
    y0 = [sp.sympify(e) for e in model.init(p, sp)]
    obs = [sp.sympify(e) for e in model.observe(t, y, p, sp)]

    jy = _nonzero_derivatives(f, y)
    jp = _nonzero_derivatives(f, p)
    oy = _nonzero_derivatives(obs, y)
    op = _nonzero_derivatives(obs, p)

    arrays_typ = {"y": y, "p": p, "u": u}
    out = [
        f"# Generated by carthema.models.codegen for the '{model.name}' model. Do not edit.",
        "import math",
        "import numpy as np",
        "from numba import njit",
        "",
        "from carthema.models.solver_kernels import matrix as _matrix",
        "",
        f"N_Y = {model.n_y}",
        f"N_P = {model.n_p}",
        f"N_U = {model.n_u}",
        f"N_OBS = {model.n_obs}",
        f"JY_ROWS = {_int_array([i for i, _, _ in jy])}",
        f"JY_COLS = {_int_array([j for _, j, _ in jy])}",
        f"JP_ROWS = {_int_array([i for i, _, _ in jp])}",
        f"JP_COLS = {_int_array([j for _, j, _ in jp])}",
        f"OBS_Y = {_int_array(sorted({j for _, j, _ in oy}))}",
        "ATOL_SCALE = np.array([" + ", ".join(repr(float(s)) for s in model.atol_scale) + "])",
        "",
        "",
    ]
    fns = [
        _function(
            "rhs", "t, y, p, u, dy", [f"dy[{i}]" for i in range(model.n_y)], f, arrays_typ, pr, pre
        ),
        _function(
            "jac_y",
            "t, y, p, u, J",
            [f"J[{i}, {j}]" for i, j, _ in jy],
            [d for *_, d in jy],
            arrays_typ,
            pr,
            pre,
        ),
        _function(
            "jac_p",
            "t, y, p, u, Jp",
            [f"Jp[{i}, {j}]" for i, j, _ in jp],
            [d for *_, d in jp],
            arrays_typ,
            pr,
            pre,
        ),
        _function("init", "p, y", [f"y[{i}]" for i in range(model.n_y)], y0, {"p": p}, pr, pre),
        _dense_matrix(
            "init_jac_p", "p, Y0p", "Y0p", _nonzero_derivatives(y0, p), {"p": p}, pr, pre
        ),
        _function(
            "observe",
            "t, y, p, o",
            [f"o[{i}]" for i in range(model.n_obs)],
            obs,
            {"y": y, "p": p},
            pr,
            pre,
        ),
        _dense_matrix("observe_jac_y", "t, y, p, Oy", "Oy", oy, {"y": y, "p": p}, pr, pre),
        _dense_matrix("observe_jac_p", "t, y, p, Op", "Op", op, {"y": y, "p": p}, pr, pre),
        _sens_function(
            "rhs_sens",
            "t, z, p, u, pos, ns, fz",
            [(f"fz[{i}]", e) for i, e in enumerate(f)],
            ("fS", model.n_y, "fS = _matrix(fz, N_Y, N_Y, ns)"),
            jy,
            jp,
            {"z": y, "p": p, "u": u},
            p,
            pr,
            pre,
            lanes=2,
        ),
        _sens_function(
            "observe_sens",
            "t, z, p, pos, ns, dO",
            [],
            ("dO", model.n_obs, ""),
            oy,
            op,
            {"z": y, "p": p},
            p,
            pr,
            pre,
        ),
    ]
    return "\n".join(out) + "\n\n".join(fns)
