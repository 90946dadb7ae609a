"""Composition of components into a model whose equations are written once.

A :class:`Model` is a tuple of component modules. Its ``rhs``, ``init`` and ``observe``
take a math namespace ``m`` (``jax.numpy`` or ``sympy``; anything with ``exp``,
``log`` and ``sqrt``) and index ``y``, ``p``, ``u`` with integer constants only, so the
same Python code is traced by JAX for diffrax and evaluated on sympy symbols to
generate the numba backend (with its exact Jacobians). Components must not branch on
values, only on which states exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from .components import cart, haematopoiesis, targets
from .parameters import Observable, Param, State

#: Named component sets that can be simulated and fitted.
COMPONENT_SETS: dict[str, tuple[ModuleType, ...]] = {
    "cart": (cart,),
    "cart_targets": (cart, targets),
    "haematopoiesis": (haematopoiesis,),
    "full": (cart, targets, haematopoiesis),
}


def _unique(items, key):
    seen: dict = {}
    for it in items:
        seen.setdefault(key(it), it)
    return tuple(seen.values())


@dataclass(frozen=True)
class Model:
    """A composed model. Build with :func:`get_model`.

    Attributes
    ----------
    name:
        Component-set name (``"full"``, ``"cart"``, ...).
    states, params, inputs, observables:
        Ordered records; arrays ``y``, ``p``, ``u``, ``o`` follow these orders.
    """

    name: str
    components: tuple[ModuleType, ...]
    states: tuple[State, ...] = field(init=False)
    params: tuple[Param, ...] = field(init=False)
    inputs: tuple[str, ...] = field(init=False)
    observables: tuple[Observable, ...] = field(init=False)

    def __post_init__(self) -> None:
        comps = self.components
        object.__setattr__(self, "states", tuple(s for c in comps for s in c.STATES))
        object.__setattr__(
            self, "params", _unique((q for c in comps for q in c.PARAMS), lambda q: q.name)
        )
        object.__setattr__(self, "inputs", tuple(dict.fromkeys(i for c in comps for i in c.INPUTS)))
        object.__setattr__(self, "observables", tuple(o for c in comps for o in c.OBSERVABLES))

    # ---- sizes and lookups
    @property
    def n_y(self) -> int:
        return len(self.states)

    @property
    def n_p(self) -> int:
        return len(self.params)

    @property
    def n_u(self) -> int:
        return len(self.inputs)

    @property
    def n_obs(self) -> int:
        return len(self.observables)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(q.name for q in self.params)

    @property
    def obs_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.observables)

    @property
    def atol_scale(self) -> np.ndarray:
        return np.array([s.scale for s in self.states], dtype=float)

    def default_params(self) -> np.ndarray:
        """Default parameter vector (natural scale, units of each :class:`Param`)."""
        return np.array([q.default for q in self.params], dtype=float)

    def has(self, name: str) -> bool:
        """Whether the model has a state, parameter or input of this name."""
        return name in self.state_names or name in self.param_names or name in self.inputs

    def index(self, kind: str, name: str) -> int:
        """Position of a state (``kind="state"``), parameter, input or observable."""
        names = {
            "state": self.state_names,
            "param": self.param_names,
            "input": self.inputs,
            "obs": self.obs_names,
        }[kind]
        try:
            return names.index(name)
        except ValueError:
            raise KeyError(f"model '{self.name}' has no {kind} named '{name}'") from None

    # ---- the equations (written once; m is jax.numpy or sympy)
    def _named(self, y: Sequence, p: Sequence, u: Sequence) -> tuple[dict, dict, dict]:
        s = {st.name: y[i] for i, st in enumerate(self.states)}
        pd = {q.name: p[i] for i, q in enumerate(self.params)}
        ud = {name: u[i] for i, name in enumerate(self.inputs)}
        return s, pd, ud

    def _with_derived(self, s: dict, p: dict, u: dict, m) -> dict:
        for c in self.components:
            if hasattr(c, "derived"):
                s = {**s, **c.derived(s, p, u, m)}
        return s

    def rhs(self, t, y: Sequence, p: Sequence, u: Sequence, m) -> tuple:
        """Time derivatives of the states, in state order (units of state per day)."""
        s, pd, ud = self._named(y, p, u)
        s = self._with_derived(s, pd, ud, m)
        d: dict = {}
        for c in self.components:
            d.update(c.derivatives(s, pd, ud, m))
        return tuple(d[name] for name in self.state_names)

    def init(self, p: Sequence, m) -> tuple:
        """Initial (untreated steady) state, in state order."""
        pd = {q.name: p[i] for i, q in enumerate(self.params)}
        y: dict = {}
        for c in self.components:
            y.update(c.initial(pd, m))
        return tuple(y[name] for name in self.state_names)

    def observe(self, t, y: Sequence, p: Sequence, m) -> tuple:
        """Observables, in observable order (units of each :class:`Observable`)."""
        s, pd, _ = self._named(y, p, [0.0] * self.n_u)
        o: dict = {}
        for c in self.components:
            o.update(c.observables(s, pd, m))
        return tuple(o[name] for name in self.obs_names)


def get_model(components: str | Sequence[str] = "full") -> Model:
    """The model for a named component set (see :data:`COMPONENT_SETS`).

    ``components`` may also be a list of component names (``["cart", "targets"]``),
    which must match one of the named sets.
    """
    if not isinstance(components, str):
        wanted = set(components)
        for name, mods in COMPONENT_SETS.items():
            if {mod.__name__.rsplit(".", 1)[-1] for mod in mods} == wanted:
                components = name
                break
        else:
            raise ValueError(
                f"no component set made of {sorted(wanted)}; choose one of {sorted(COMPONENT_SETS)}"
            )
    if components not in COMPONENT_SETS:
        raise ValueError(
            f"unknown component set '{components}'; choose one of {sorted(COMPONENT_SETS)}"
        )
    return Model(components, COMPONENT_SETS[components])
