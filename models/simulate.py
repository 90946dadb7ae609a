"""``simulate``: one patient's trajectory from an events table, with either backend."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.errors import InputError
from .events import SolverEvents, build_events
from .model import Model, get_model
from .solve import Schedule, solve
from .solver_contract import NUMBA_METHODS, SolverOptions, Status

#: ``method`` codes of the numba solver (kept for callers that import them from here).
METHODS = NUMBA_METHODS
#: Status meanings per backend: one enumeration (:class:`Status`) shared by both.
STATUS = {
    "numba": {int(s): s.message for s in Status},
    "jax": {int(s): s.message for s in Status},
}


@dataclass(frozen=True)
class Trajectory:
    """A simulated trajectory.

    Attributes
    ----------
    t:
        Output times, days since the first CAR-T infusion.
    obs:
        Observables, shape (len(t), n_obs), units of ``model.observables``.
    status:
        A :class:`~.solver_contract.Status` code, the same for both backends: 0 when the
        solve succeeded; see ``message``. Values after a failure are NaN (all values,
        for a failed JAX solve).
    """

    model: Model
    t: np.ndarray
    obs: np.ndarray
    status: int
    params: np.ndarray
    events: SolverEvents
    backend: str
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def message(self) -> str:
        return Status.describe(self.status)

    def __getitem__(self, name: str) -> np.ndarray:
        """Time course of one observable (``traj["anc"]``)."""
        return self.obs[:, self.model.index("obs", name)]

    def to_frame(self) -> pd.DataFrame:
        """Long form: day, analyte, value, unit (one row per time and observable)."""
        n_t, n_o = self.obs.shape
        return pd.DataFrame(
            {
                "day": np.repeat(self.t, n_o),
                "analyte": np.tile(self.model.obs_names, n_t),
                "value": self.obs.reshape(-1),
                "unit": np.tile([o.unit for o in self.model.observables], n_t),
            }
        )


def resolve_params(
    model: Model, params: Mapping[str, float] | Sequence[float] | np.ndarray | str | Path | None
) -> np.ndarray:
    """Parameter vector (natural scale) from defaults overridden by ``params``.

    ``params`` may be a mapping ``{name: value}``, a full vector, or a path to a JSON
    file (``{"name": value}``) or CSV file (columns ``name,value``). Unknown names and
    non-positive values are refused.
    """
    p = model.default_params()
    if params is None:
        return p
    source = None
    if isinstance(params, str | Path):
        source = str(params)
        params = _read_param_file(Path(params))
    if isinstance(params, Mapping):
        for i, (name, value) in enumerate(params.items(), start=1):
            row = i if source else None
            if name not in model.param_names:
                close = difflib.get_close_matches(name, model.param_names, n=3)
                hint = f"did you mean {', '.join(close)}?" if close else "see `carthema params`"
                raise InputError(
                    f"unknown parameter '{name}' for the '{model.name}' model",
                    file=source,
                    row=row,
                    column="name",
                    fix=hint,
                )
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise InputError(
                    f"value '{value}' of '{name}' is not a number",
                    file=source,
                    row=row,
                    column="value",
                    fix="give a positive number",
                ) from None
            if not np.isfinite(v) or v <= 0:
                raise InputError(
                    f"parameter '{name}' must be positive and finite, got {value}",
                    file=source,
                    row=row,
                    column="value",
                    fix="parameters are rates, sizes or fractions > 0",
                )
            p[model.index("param", name)] = v
        return p
    arr = np.asarray(params, dtype=float)
    if arr.shape != (model.n_p,):
        raise InputError(
            f"parameter vector has shape {arr.shape}, expected ({model.n_p},)",
            fix="pass a mapping of names to values",
        )
    return arr.copy()


def _read_param_file(path: Path) -> dict[str, float]:
    if not path.exists():
        raise InputError("file not found", file=str(path), fix="check the path")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(), object_pairs_hook=_no_duplicate_names(path))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"not valid JSON ({exc.msg}, line {exc.lineno})",
                file=str(path),
                fix='write {"name": value, ...}',
            ) from None
        if not isinstance(data, dict):
            raise InputError(
                "expected a JSON object of name: value",
                file=str(path),
                fix='write {"name": value, ...}',
            )
        return data
    df = pd.read_csv(path)
    for col in ("name", "value"):
        if col not in df.columns:
            raise InputError(
                "missing required column",
                file=str(path),
                column=col,
                fix="a parameter CSV has columns name,value",
            )
    names = df["name"].astype(str).str.strip()
    dup = names[names.duplicated()]
    if len(dup):
        raise InputError(
            f"parameter '{dup.iloc[0]}' is given twice",
            file=str(path),
            row=int(dup.index[0]) + 1,
            column="name",
            fix="give each parameter once (which of the two values is meant?)",
        )
    return dict(zip(names, df["value"], strict=True))


def _no_duplicate_names(path: Path):
    """A json object_pairs_hook that refuses a name given twice (json keeps the last)."""

    def hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        seen: dict[str, object] = {}
        for name, value in pairs:
            if name in seen:
                raise InputError(
                    f"parameter '{name}' is given twice",
                    file=str(path),
                    fix="give each parameter once (which of the two values is meant?)",
                )
            seen[name] = value
        return seen

    return hook


def output_times(events: SolverEvents, days: float, step: float = 1.0) -> np.ndarray:
    """Daily output grid from the first event (or day 0) to ``days``."""
    start = min(events.first_time if events.first_time is not None else 0.0, 0.0)
    return np.arange(np.floor(start), days + step / 2, step)


def simulate(
    events: pd.DataFrame | None = None,
    *,
    components: str | Sequence[str] = "full",
    params: Mapping[str, float] | np.ndarray | str | Path | None = None,
    days: float = 180.0,
    t_out: np.ndarray | None = None,
    backend: str = "numba",
    method: str = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    patient: str | None = None,
) -> Trajectory:
    """Simulate one patient.

    Parameters
    ----------
    events:
        Events table of the data layer (CAR-T infusions, lymphodepletion, boosts, ...).
        Day 0 is the first CAR-T infusion; the patient is at the untreated steady state
        before the first event.
    components:
        Component set: ``"full"``, ``"cart"``, ``"cart_targets"``, ``"haematopoiesis"``.
    params:
        Overrides of the default parameters (see :func:`resolve_params`).
    days, t_out:
        Output every day up to ``days``, or at the given times (days).
    backend:
        ``"numba"`` (default) or ``"jax"`` (diffrax).
    method:
        numba: ``"tsit5"`` (explicit), ``"rosenbrock"`` (stiff) or ``"auto"``;
        jax: ``"tsit5"``, ``"kvaerno5"`` (stiff) or ``"dopri5"``.
    rtol, atol:
        Relative tolerance; absolute tolerance relative to each state's typical size.

    Returns
    -------
    Trajectory
        Never raises for a numerical failure: check ``.status``.
    """
    model = get_model(components)
    p = resolve_params(model, params)
    ev = build_events(model, events, p, patient=patient)
    t = np.asarray(t_out, dtype=float) if t_out is not None else output_times(ev, days)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) < 0):
        raise InputError("output times must be a non-empty increasing list of days")
    t0 = min(float(t[0]), ev.first_time if ev.first_time is not None else float(t[0]))
    if backend not in ("numba", "jax"):
        raise InputError(f"unknown backend '{backend}'", fix="use 'numba' or 'jax'")
    # The names each backend implements itself (SolverOptions also maps numba's names
    # onto diffrax solvers; a user asking for "rosenbrock" on JAX should hear it has none).
    methods = list(NUMBA_METHODS) if backend == "numba" else ["tsit5", "dopri5", "kvaerno5"]
    if method not in methods:
        raise InputError(f"unknown {backend} method '{method}'", fix=f"use one of {methods}")
    options = SolverOptions(method, rtol=rtol, atol=atol, max_steps=max_steps)
    sol = solve(model, p, Schedule.from_events(model, ev, t, t0=t0), options, backend)
    status, obs = sol.status, sol.obs
    return Trajectory(
        model, t, np.asarray(obs), int(status), p, ev, backend, notes=ev.ignored + ev.notes
    )
