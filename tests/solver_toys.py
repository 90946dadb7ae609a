"""Toy models of the solver tests, written once as components and run through both backends.

Each toy is a component (the interface of ``carthema/models/components``: ``STATES``,
``PARAMS``, ``INPUTS``, ``OBSERVABLES``, ``derivatives``, ``initial``, ``observables``)
wrapped in a :class:`~carthema.models.model.Model`. The numba backend gets its module from
the code generator (:func:`carthema.models.compiled.numba_model`: exact Jacobians by
sympy), the JAX backend traces the same equations; the scipy references call
``model.rhs(..., np)``. Parameter, state and observable order is the order below.
"""

from __future__ import annotations

from carthema.models.model import Model
from carthema.models.parameters import Observable, Param, State

_SRC = "test toy"


def _param(name: str, default: float, unit: str, description: str) -> Param:
    return Param(name, default, unit, default * 1e-6, default * 1e6, _SRC, description)


class Linear:
    """Linear two-compartment model: depot (absorbed at ``ka``, fed by the input
    ``infusion``) and central (eliminated at ``ke``). ``s`` only scales a bolus (event
    ``ev_scale``), ``c0`` only enters the initial central amount, ``V`` only the
    concentration observable."""

    STATES = (State("depot", "mg", 1.0, "depot amount"), State("central", "mg", 1.0, "central"))
    PARAMS = (
        _param("ka", 1.2, "1/d", "absorption rate"),
        _param("ke", 0.3, "1/d", "elimination rate"),
        _param("s", 2.0, "-", "bolus scale"),
        _param("c0", 1.5, "mg", "initial central amount"),
        _param("V", 4.0, "L", "volume"),
    )
    INPUTS = ("infusion",)
    OBSERVABLES = (Observable("conc", "mg/L", "central / V"), Observable("depot", "mg", "depot"))

    @staticmethod
    def derivatives(s, p, u, m):
        return {
            "depot": -p["ka"] * s["depot"] + u["infusion"],
            "central": p["ka"] * s["depot"] - p["ke"] * s["central"],
        }

    @staticmethod
    def initial(p, m):
        return {"depot": 0.0, "central": p["c0"]}

    @staticmethod
    def observables(s, p, m):
        return {"conc": s["central"] / p["V"], "depot": s["depot"]}


class TwoCompartment:
    """Depot -> central with bioavailability ``F`` (scales a bolus) and an initial depot
    amount ``A0``; observables: concentration and the log of the total amount."""

    STATES = (
        State("depot", "mg", 100.0, "depot amount"),
        State("central", "mg", 100.0, "central amount"),
    )
    PARAMS = (
        _param("ka", 1.2, "1/d", "absorption rate"),
        _param("ke", 0.3, "1/d", "elimination rate"),
        _param("V", 5.0, "L", "volume"),
        _param("F", 0.7, "-", "bioavailability"),
        _param("A0", 10.0, "mg", "initial depot amount"),
    )
    INPUTS = ("infusion",)
    OBSERVABLES = (
        Observable("conc", "mg/L", "central / V"),
        Observable("log_total", "log mg", "log(depot + central)"),
    )

    @staticmethod
    def derivatives(s, p, u, m):
        return {
            "depot": -p["ka"] * s["depot"] + u["infusion"],
            "central": p["ka"] * s["depot"] - p["ke"] * s["central"],
        }

    @staticmethod
    def initial(p, m):
        return {"depot": p["A0"], "central": 0.0}

    @staticmethod
    def observables(s, p, m):
        return {"conc": s["central"] / p["V"], "log_total": m.log(s["depot"] + s["central"])}


class Robertson:
    """Robertson's chemical kinetics (Hairer & Wanner II, IV.1), the classic stiff test;
    ``k1, k2, k3 = 0.04, 1e4, 3e7``; the observables are the states."""

    STATES = (
        State("a", "-", 1.0, "species A"),
        State("b", "-", 1e-4, "species B (radical, ~1e-5)"),
        State("c", "-", 1.0, "species C"),
    )
    PARAMS = (
        _param("k1", 0.04, "1/d", "A -> B"),
        _param("k2", 1e4, "1/d", "B + C -> A + C"),
        _param("k3", 3e7, "1/d", "2B -> B + C"),
    )
    INPUTS = ()
    OBSERVABLES = (
        Observable("a", "-", "species A"),
        Observable("b", "-", "species B"),
        Observable("c", "-", "species C"),
    )

    @staticmethod
    def derivatives(s, p, u, m):
        fwd = p["k1"] * s["a"]
        back = p["k2"] * s["b"] * s["c"]
        dim = p["k3"] * s["b"] ** 2
        return {"a": -fwd + back, "b": fwd - back - dim, "c": dim}

    @staticmethod
    def initial(p, m):
        return {"a": 1.0, "b": 0.0, "c": 0.0}

    @staticmethod
    def observables(s, p, m):
        return {"a": s["a"], "b": s["b"], "c": s["c"]}


class BlowUp:
    """y' = r y^2, y(0) = 1: finite-time blow-up at t = 1 / r."""

    STATES = (State("y", "-", 1.0, "blows up"),)
    PARAMS = (_param("r", 1.0, "1/d", "rate"),)
    INPUTS = ()
    OBSERVABLES = (Observable("y", "-", "the state"),)

    @staticmethod
    def derivatives(s, p, u, m):
        return {"y": p["r"] * s["y"] ** 2}

    @staticmethod
    def initial(p, m):
        return {"y": 1.0}

    @staticmethod
    def observables(s, p, m):
        return {"y": s["y"]}


LINEAR = Model("toy_linear", (Linear,))
TWO_COMPARTMENT = Model("toy_two_compartment", (TwoCompartment,))
ROBERTSON = Model("toy_robertson", (Robertson,))
BLOWUP = Model("toy_blowup", (BlowUp,))
TOYS = (LINEAR, TWO_COMPARTMENT, ROBERTSON, BLOWUP)
