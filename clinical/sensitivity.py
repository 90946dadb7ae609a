"""Global sensitivity analysis of the full model's clinical outputs (Sobol and Morris, SALib).

Two outputs (:data:`OUTPUTS`), both in days:

``"severe_neutropenia"``
    Days of severe neutropenia: the number of whole days ``d`` in 0..60 (61 daily
    values, day 0 = CAR-T infusion) with ANC < 0.5 G/L
    (:func:`carthema.clinical.endpoints.days_below`), after the standard axi-cel
    course of :func:`carthema.clinical.population.virtual.product_events` (fludarabine 30 +
    cyclophosphamide 500 mg/m2 on days -5..-3, 2e6 CAR+ cells/kg on day 0). Range 0-61.
    Nominal point: every parameter at its model default.

``"engraftment"``
    Time to neutrophil engraftment after a stem-cell boost: 5e6 CD34+ cells/kg
    autologous on day 28 (:func:`carthema.models.scenarios.with_boost`) after the same
    axi-cel course, in days from the boost to the first of 3 consecutive days with ANC
    > 0.5 G/L (:func:`carthema.clinical.endpoints.engraftment`, ``reference`` = 28,
    the package's one definition). Followed to day 28 + :data:`ENGRAFT_FOLLOW_UP`:
    a patient not engrafted by then is censored and given the value
    :data:`ENGRAFT_FOLLOW_UP` (60 days); a patient "already engrafted" on the boost day
    (ANC > 0.5 G/L then and for the next 14 days) gets 0. Both fractions are reported.
    Nominal point: the defaults with the poor-reserve overrides
    :data:`carthema.models.scenarios.POOR_RESERVE` (a patient still cytopenic on day 28,
    so that the boost matters).

Parameter ranges. Each parameter varies log-uniformly (the model carries parameters on
the log scale) between ``nominal / factor`` and ``nominal * factor`` (default
``factor`` 3), clipped to the parameter's plausible bounds ``[Param.low, Param.high]``
(``spread="bounds"`` uses the whole plausible range instead). Factor 3 (log 3 = 1.1) is
about two between-patient log-SDs of the typical parameter of the virtual population
(the parameters' ``plausible`` log-SDs run from 0.15, ``cart_rho``, to 1.5,
``niche_supp``, median about 0.5): the analysis describes patients around the nominal
point. The plausible bounds span up to eight decades (``leuk_L0``,
``late_supp``) and across them most runs saturate (61 days neutropenic, or none), so
indices computed there describe the bounds rather than a patient. Defaults, bounds and
overrides are read from the model at run time. Structural parameters (event times,
``Param.structural``) are left out: the shared event schedule of the population solver
is built once from the defaults, so they could not vary per run.

Failures. Runs are solved with the numba population solver; a run with status != 0
(step limit, non-finite state) is a failure. Sobol estimators need complete blocks (the
base rows A and B and the D rows A_B^(j) of one base sample), Morris needs complete
trajectories, so a failure removes its whole block or trajectory; the counts are in
``DataFrame.attrs`` (``n_runs``, ``n_failed_runs``, ``n_blocks_used``,
``n_blocks_dropped``).

The analysis core (:func:`sobol_from_function`, :func:`morris_from_function`) takes any
vectorised function of the sample matrix, so the same code path is tested on the
Ishigami function with known indices. SALib is imported lazily (``pip install
carthema[test]`` or ``pip install SALib``).

It stays one module (about 550 lines): the SALib wrappers and the model set-up (ranges,
outputs) are one analysis, tested together on the Ishigami function and on the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carthema.clinical.endpoints import ANC_ENGRAFT, days_below, engraftment
from carthema.clinical.population.virtual import product_events
from carthema.models.events import build_events
from carthema.models.model import Model, get_model
from carthema.models.scenarios import POOR_RESERVE, with_boost
from carthema.models.solve import Schedule, solve_batch
from carthema.models.solver_contract import SolverOptions

#: Output names (see the module docstring for their definitions).
OUTPUTS = ("severe_neutropenia", "engraftment")
#: Product whose standard course (lymphodepletion days -5..-3, CAR-T day 0) is simulated.
PRODUCT = "axi-cel"
#: Window of the severe-neutropenia count, days after the first CAR-T infusion.
NEUTROPENIA_WINDOW = (0.0, 60.0)
#: The boost of output "engraftment": day, CD34+ cells/kg, origin.
BOOST_DAY = 28.0
BOOST_DOSE = 5e6
BOOST_SOURCE = "autologous"
#: Days followed after the boost; censored engraftment times take this value.
ENGRAFT_FOLLOW_UP = 60.0
# The nominal patient of output "engraftment" is the package's one poor-reserve patient,
# :data:`carthema.models.scenarios.POOR_RESERVE` (small, slowly regenerating stem-cell
# pool; strong, slowly resolving delayed marrow suppression), still cytopenic on the
# boost day; imported above and re-exported here, not redefined.
#: Default spread: nominal x/÷ this factor, clipped to the plausible bounds.
FACTOR = 3.0
#: Solver settings (those of the virtual population, :func:`vpop.simulate_counts`).
RTOL, ATOL, MAX_STEPS = 1e-6, 1e-8, 100_000


def _salib():
    try:
        from SALib.analyze import morris as morris_analyze
        from SALib.analyze import sobol as sobol_analyze
        from SALib.sample import morris as morris_sample
        from SALib.sample import sobol as sobol_sample
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the sensitivity analysis needs SALib: pip install 'SALib>=1.5' "
            "(or pip install -e '.[test]')"
        ) from exc
    return sobol_sample, sobol_analyze, morris_sample, morris_analyze


# --------------------------------------------------------------------------------------
# The analysis core: any vectorised function of the sample matrix


#: A vectorised function: sample matrix (n, D) -> (values (n,), ok (n,) bool).
VectorFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _as_result(out) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(out, tuple):
        y, ok = out
        y = np.asarray(y, dtype=float)
        ok = np.asarray(ok, dtype=bool) & np.isfinite(y)
    else:
        y = np.asarray(out, dtype=float)
        ok = np.isfinite(y)
    return y, ok


def _problem(names: Sequence[str], bounds: Sequence[Sequence[float]]) -> dict:
    return {
        "num_vars": len(names),
        "names": list(names),
        "bounds": [[float(a), float(b)] for a, b in bounds],
    }


def _complete_blocks(y: np.ndarray, ok: np.ndarray, step: int) -> tuple[np.ndarray, dict]:
    """The runs to keep when a failed run removes its whole block of ``step`` runs, and
    the counts of runs, failures and blocks for ``.attrs``."""
    block_ok = ok.reshape(-1, step).all(axis=1)
    counts = {
        "n_runs": int(y.size),
        "n_failed_runs": int((~ok).sum()),
        "n_blocks_used": int(block_ok.sum()),
        "n_blocks_dropped": int((~block_ok).sum()),
    }
    return np.repeat(block_ok, step), counts


def _indices_frame(
    Si, columns: Sequence[str], sort_by: str, names: list[str], attrs: dict
) -> pd.DataFrame:
    """SALib's indices ``columns`` as a frame indexed by parameter, sorted by ``sort_by``
    (largest first), with ``attrs``."""
    df = pd.DataFrame(
        {k: np.asarray(Si[k], dtype=float) for k in columns},
        index=pd.Index(names, name="parameter"),
    )
    df = df.sort_values(sort_by, ascending=False)
    df.attrs.update(attrs)
    return df


def sobol_from_function(
    func: VectorFunction,
    names: Sequence[str],
    bounds: Sequence[Sequence[float]],
    *,
    n: int = 256,
    seed: int = 0,
    num_resamples: int = 200,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """First-order and total Sobol indices of ``func`` over independent uniform inputs.

    ``func`` takes the SALib sample matrix (rows: runs, columns: ``names``, each uniform
    within its ``bounds``) and returns the outputs, or ``(outputs, ok)`` where ``ok``
    marks the runs that succeeded (non-finite outputs count as failures). Saltelli's
    scheme without second-order terms (``n * (D + 2)`` runs; ``n`` a power of 2);
    estimators of Saltelli et al. 2010 / Jansen as implemented in
    :func:`SALib.analyze.sobol.analyze`, bootstrap confidence intervals
    (``conf_level``). A failed run removes its whole block of ``D + 2`` runs.

    Returns a frame indexed by parameter with ``S1``, ``S1_conf``, ``ST``, ``ST_conf``
    (fractions of the output variance; the ``_conf`` columns are half-widths of the
    bootstrap interval), sorted by ``ST``; counts of runs and failures in ``.attrs``.
    """
    sobol_sample, sobol_analyze, _, _ = _salib()
    names = list(names)
    d = len(names)
    problem = _problem(names, bounds)
    with warnings.catch_warnings():
        # SALib warns when n is not a power of 2; the caller chose n.
        warnings.simplefilter("ignore", UserWarning)
        X = sobol_sample.sample(problem, n, calc_second_order=False, scramble=True, seed=seed)
    y, ok = _as_result(func(X))
    keep, counts = _complete_blocks(y, ok, d + 2)
    y_used = y[keep]
    n_used = counts["n_blocks_used"]
    attrs = {
        "method": "sobol",
        "n": int(n),
        **counts,
        "seed": int(seed),
        "conf_level": conf_level,
        "output_mean": float(np.mean(y_used)) if y_used.size else math.nan,
        "output_sd": float(np.std(y_used)) if y_used.size else math.nan,
    }
    if n_used < 2 or not np.std(y_used) > 0:
        # No variance (or nothing solved): no parameter explains anything.
        cols = {c: np.full(d, np.nan if n_used < 2 else 0.0) for c in
                ("S1", "S1_conf", "ST", "ST_conf")}  # fmt: skip
        df = pd.DataFrame(cols, index=pd.Index(names, name="parameter"))
        df.attrs.update(attrs, note="output has no variance over the samples")
        return df
    # A Generator, not the int: SALib's Sobol analysis tests ``if seed:`` and so leaves
    # the bootstrap unseeded for seed 0 (the default), which made reruns' confidence
    # intervals differ.
    rng = np.random.default_rng(seed)
    boot = {"num_resamples": num_resamples, "conf_level": conf_level, "seed": rng}
    Si = sobol_analyze.analyze(problem, y_used, calc_second_order=False, **boot)
    return _indices_frame(Si, ("S1", "S1_conf", "ST", "ST_conf"), "ST", names, attrs)


def morris_from_function(
    func: VectorFunction,
    names: Sequence[str],
    bounds: Sequence[Sequence[float]],
    *,
    trajectories: int = 10,
    num_levels: int = 4,
    seed: int = 0,
    num_resamples: int = 200,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Morris elementary-effects screening of ``func`` (same conventions as
    :func:`sobol_from_function`): ``trajectories * (D + 1)`` runs on a ``num_levels``
    grid; a failed run removes its trajectory.

    Returns a frame indexed by parameter with ``mu``, ``mu_star``, ``sigma``,
    ``mu_star_conf``, sorted by ``mu_star``. Elementary effects are output changes per
    unit of the *scaled* input (each input's range mapped to [0, 1]): for the model,
    days per whole sampling range (which is log-uniform), so they compare across
    parameters.
    """
    _, _, morris_sample, morris_analyze = _salib()
    names = list(names)
    d = len(names)
    problem = _problem(names, bounds)
    X = morris_sample.sample(problem, trajectories, num_levels=num_levels, seed=seed)
    y, ok = _as_result(func(X))
    keep, counts = _complete_blocks(y, ok, d + 1)
    attrs = {
        "method": "morris",
        "trajectories": int(trajectories),
        "num_levels": int(num_levels),
        **counts,
        "seed": int(seed),
        "conf_level": conf_level,
    }
    n_traj = counts["n_blocks_used"]
    if n_traj < 2:
        raise RuntimeError(f"Morris screening: only {n_traj} complete trajectories")
    boot = {"num_resamples": num_resamples, "conf_level": conf_level, "seed": seed}
    Si = morris_analyze.analyze(problem, X[keep], y[keep], num_levels=num_levels, **boot)
    columns = ("mu", "mu_star", "sigma", "mu_star_conf")
    return _indices_frame(Si, columns, "mu_star", names, attrs)


# --------------------------------------------------------------------------------------
# The model outputs


@dataclass
class OutputSetup:
    """One output of the model as a vectorised function of log-parameters.

    ``ranges`` (indexed by parameter): ``nominal``, ``low``, ``high`` (the sampling
    range, natural scale), ``bound_low``, ``bound_high`` (the plausible bounds), ``unit``.
    """

    output: str
    model: Model
    names: list[str]
    ranges: pd.DataFrame
    nominal: np.ndarray  # full parameter vector at the nominal point
    events: pd.DataFrame
    days: np.ndarray
    base: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def log_bounds(self) -> list[list[float]]:
        return [
            [math.log(a), math.log(b)]
            for a, b in zip(self.ranges["low"], self.ranges["high"], strict=True)
        ]

    def params_matrix(self, X: np.ndarray) -> np.ndarray:
        """Full natural-scale parameter matrix for a sample matrix of log-parameters."""
        P = np.tile(self.nominal, (X.shape[0], 1))
        for j, name in enumerate(self.names):
            P[:, self.model.index("param", name)] = np.exp(X[:, j])
        return np.ascontiguousarray(P)

    def simulate(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(status (n,), ANC (n, days) in G/L) of the rows of ``P``."""
        model = self.model
        ev = build_events(model, self.events, model.default_params())
        sched = Schedule.from_events(model, ev, self.days, t0=float(self.days[0]))
        options = SolverOptions("auto", RTOL, ATOL, MAX_STEPS)
        status, obs = solve_batch(model, P, sched, options).astuple()
        return status, obs[:, :, model.index("obs", "anc")]

    def values(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(output in days, ok) for the rows of ``P``; updates :attr:`stats`."""
        status, anc = self.simulate(P)
        ok = status == 0
        y = np.full(P.shape[0], np.nan)
        if self.output == "severe_neutropenia":
            start, end = NEUTROPENIA_WINDOW
            y[ok] = days_below(self.days, anc[ok], ANC_ENGRAFT, start=start, end=end)
        else:
            res = engraftment(self.days, anc[ok], reference=BOOST_DAY, threshold=ANC_ENGRAFT)
            t = np.where(res.censored, ENGRAFT_FOLLOW_UP, res.time)
            t = np.where(res.already, 0.0, t)
            y[ok] = t
            n_ok = max(int(ok.sum()), 1)
            self.stats["fraction_censored"] = float(np.sum(res.censored) / n_ok)
            self.stats["fraction_already_engrafted"] = float(np.sum(res.already) / n_ok)
        self.stats["n_runs"] = int(P.shape[0])
        self.stats["n_failed_runs"] = int((~ok).sum())
        self.stats["fraction_failed"] = float((~ok).mean()) if P.shape[0] else 0.0
        return y, ok

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.values(self.params_matrix(X))

    def nominal_value(self) -> float:
        """The output at the nominal point (NaN if the solve fails)."""
        y, ok = self.values(self.nominal[None, :])
        return float(y[0]) if ok[0] else math.nan


def default_parameters(model: Model | None = None) -> list[str]:
    """Every non-structural parameter of the model (for the full model: CAR-T kinetics,
    the CD19+ targets that drive CAR-T expansion, haematopoiesis and graft)."""
    model = model or get_model("full")
    return [q.name for q in model.params if not q.structural]


def parameter_ranges(
    model: Model,
    params: Sequence[str] | None = None,
    *,
    base: Mapping[str, float] | None = None,
    factor: float = FACTOR,
    spread: str = "factor",
) -> pd.DataFrame:
    """Sampling ranges (natural scale, sampled log-uniformly) around a nominal point.

    ``base`` overrides the model defaults (clipped to the plausible bounds).
    ``spread="factor"``: ``[nominal / factor, nominal * factor]`` clipped to
    ``[Param.low, Param.high]``; ``spread="bounds"``: ``[Param.low, Param.high]``.
    Parameters whose range is empty after clipping are left out.
    """
    if spread not in ("factor", "bounds"):
        raise ValueError("spread must be 'factor' or 'bounds'")
    if factor <= 1.0:
        raise ValueError("factor must be > 1")
    params = default_parameters(model) if params is None else list(params)
    base = dict(base or {})
    for name in list(params) + list(base):
        model.index("param", name)  # KeyError with the model's message
    structural = [n for n in params if model.params[model.index("param", n)].structural]
    if structural:
        raise ValueError(
            f"structural parameters cannot vary in a shared event schedule: {structural}"
        )
    rows = []
    for name in params:
        q = model.params[model.index("param", name)]
        nom = float(np.clip(base.get(name, q.default), q.low, q.high))
        if spread == "bounds":
            lo, hi = q.low, q.high
        else:
            lo, hi = max(nom / factor, q.low), min(nom * factor, q.high)
        if not hi > lo:
            continue
        rows.append(
            {"parameter": name, "nominal": nom, "low": lo, "high": hi, "bound_low": q.low,
             "bound_high": q.high, "unit": q.unit, "description": q.description}
        )  # fmt: skip
    return pd.DataFrame(rows).set_index("parameter")


def setup_output(
    output: str,
    params: Sequence[str] | None = None,
    *,
    model: Model | None = None,
    factor: float = FACTOR,
    spread: str = "factor",
    base: Mapping[str, float] | None = None,
) -> OutputSetup:
    """The vectorised model function of ``output`` (see :data:`OUTPUTS`) with its ranges.

    ``base``: overrides of the nominal point (default: none for "severe_neutropenia",
    :data:`carthema.models.scenarios.POOR_RESERVE` for "engraftment").
    """
    if output not in OUTPUTS:
        raise ValueError(f"unknown output '{output}'; choose one of {', '.join(OUTPUTS)}")
    model = model or get_model("full")
    events = product_events(PRODUCT)
    if output == "severe_neutropenia":
        base = {} if base is None else dict(base)
        horizon = NEUTROPENIA_WINDOW[1]
    else:
        base = dict(POOR_RESERVE) if base is None else dict(base)
        events = with_boost(events, BOOST_DAY, BOOST_DOSE, source=BOOST_SOURCE)
        horizon = BOOST_DAY + ENGRAFT_FOLLOW_UP
    start = min(float(events["day"].min()), 0.0)
    days = np.arange(math.floor(start), horizon + 0.5, 1.0)
    ranges = parameter_ranges(model, params, base=base, factor=factor, spread=spread)
    nominal = model.default_params()
    for name, value in base.items():
        q = model.params[model.index("param", name)]
        nominal[model.index("param", name)] = float(np.clip(value, q.low, q.high))
    base = {k: float(nominal[model.index("param", k)]) for k in base}
    return OutputSetup(output, model, list(ranges.index), ranges, nominal, events, days, base)


def sobol_indices(
    output: str,
    params: list[str] | None = None,
    n: int = 256,
    seed: int = 0,
    *,
    factor: float = FACTOR,
    spread: str = "factor",
    base: Mapping[str, float] | None = None,
    num_resamples: int = 200,
    conf_level: float = 0.95,
    model: Model | None = None,
) -> pd.DataFrame:
    """Sobol indices of a model output (days; see the module docstring).

    Parameters
    ----------
    output:
        ``"severe_neutropenia"`` (days with ANC < 0.5 G/L in days 0-60 after the axi-cel
        course) or ``"engraftment"`` (days from a 5e6 CD34+/kg autologous boost on day 28
        to neutrophil engraftment in a poor-reserve patient; censored = 60, already
        engrafted = 0).
    params:
        Parameters that vary (default: every non-structural parameter of the model);
        the others stay at the nominal point.
    n:
        Base sample size (a power of 2); the model is solved ``n * (D + 2)`` times.
    seed:
        Seed of the scrambled Sobol' sequence and of the bootstrap.
    factor, spread, base:
        Sampling ranges (:func:`parameter_ranges`) and nominal overrides
        (:func:`setup_output`).

    Returns
    -------
    DataFrame indexed by parameter with ``S1``, ``S1_conf``, ``ST``, ``ST_conf``
    (fractions of the output's variance, confidence half-widths at ``conf_level``)
    and the sampling range (``nominal``, ``low``, ``high``, ``unit``), sorted by ``ST``.
    ``.attrs``: run and failure counts, the output's mean and SD over the sample (days),
    its value at the nominal point, and for "engraftment" the censored and
    already-engrafted fractions.
    """
    ranges = {"model": model, "factor": factor, "spread": spread, "base": base}
    boot = {"seed": seed, "num_resamples": num_resamples, "conf_level": conf_level}
    return _on_output(sobol_from_function, output, params, ranges, boot, n=n)


def morris_screening(
    output: str,
    params: list[str] | None = None,
    trajectories: int = 10,
    seed: int = 0,
    *,
    num_levels: int = 4,
    factor: float = FACTOR,
    spread: str = "factor",
    base: Mapping[str, float] | None = None,
    num_resamples: int = 200,
    conf_level: float = 0.95,
    model: Model | None = None,
) -> pd.DataFrame:
    """Morris screening of a model output (same outputs and ranges as
    :func:`sobol_indices`): ``trajectories * (D + 1)`` solves.

    Returns a frame indexed by parameter with ``mu``, ``mu_star``, ``sigma``,
    ``mu_star_conf`` in days per whole (log-uniform) sampling range of the parameter,
    and the sampling range, sorted by ``mu_star``; counts in ``.attrs``.
    """
    ranges = {"model": model, "factor": factor, "spread": spread, "base": base}
    boot = {"seed": seed, "num_resamples": num_resamples, "conf_level": conf_level}
    screen = {"trajectories": trajectories, "num_levels": num_levels}
    return _on_output(morris_from_function, output, params, ranges, boot, **screen)


def _on_output(method, output: str, params, ranges: dict, boot: dict, **kw) -> pd.DataFrame:
    """``method`` (:func:`sobol_from_function` or :func:`morris_from_function`) on the
    model output ``output`` (:func:`setup_output` with ``ranges``), with the sampling
    ranges and the output's statistics joined (:func:`_finish`)."""
    setup = setup_output(output, params, **ranges)
    df = method(setup, setup.names, setup.log_bounds, **boot, **kw)
    return _finish(df, setup, dict(setup.stats))


def _finish(df: pd.DataFrame, setup: OutputSetup, stats: dict) -> pd.DataFrame:
    attrs = dict(df.attrs)
    out = df.join(setup.ranges[["nominal", "low", "high", "unit"]])
    out.attrs.update(attrs)
    for k in ("fraction_censored", "fraction_already_engrafted"):
        if k in stats:
            out.attrs[k] = stats[k]
    out.attrs["output"] = setup.output
    out.attrs["unit"] = "d"
    out.attrs["nominal_value"] = setup.nominal_value()
    out.attrs["nominal_overrides"] = dict(setup.base)
    return out


__all__ = [
    "OUTPUTS",
    "POOR_RESERVE",
    "OutputSetup",
    "default_parameters",
    "morris_from_function",
    "morris_screening",
    "parameter_ranges",
    "setup_output",
    "sobol_from_function",
    "sobol_indices",
]
