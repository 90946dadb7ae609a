"""The prior of predict-boost: the calibrated population for the patient's product and
CAR-HEMATOTOX score, as a shrunk Gaussian kernel density in log-parameter space.

The rules (which rows, why a shrunk KDE, the truncation) are stated in
:mod:`carthema.clinical.boost.predict`'s docstring, the one description of the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from carthema.clinical.population.graft import GRAFT_PARAMS, draw_graft
from carthema.clinical.population.natural_history import check_disease, sample_patients
from carthema.clinical.population.virtual import (
    load_population,
    population_params,
    product_factors,
)
from carthema.data.errors import InputError
from carthema.models.model import Model

#: Fewest distinct virtual patients with the exact CAR-HEMATOTOX score for the prior to
#: use that score; else the low / high group.
MIN_EXACT = 60
#: Population columns of laboratory values a prior carries when the CAR-HEMATOTOX values
#: are given (conditioned on as particle dimensions).
LAB_COLUMNS = ("hemoglobin", "crp", "ferritin")


@dataclass
class PopulationPrior:
    """Gaussian KDE over population rows in log space, truncated to plausible ranges."""

    names: list[str]  # particle dimensions (parameters, then laboratory columns)
    rows: np.ndarray  # (m, d) kernel centres: distinct rows shrunk toward their mean, log
    logw: np.ndarray  # (m,) log weights of the distinct rows (duplicates)
    chol: np.ndarray  # kernel covariance Cholesky factor
    low: np.ndarray
    high: np.ndarray
    description: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        return len(self.names)

    def _whiten(self, X: np.ndarray) -> np.ndarray:
        from scipy.linalg import solve_triangular

        return solve_triangular(self.chol, X.T, lower=True).T

    def logpdf(self, X: np.ndarray) -> np.ndarray:
        """Log density up to a constant (the kernels' normalisation is common)."""
        if not hasattr(self, "_V"):  # whitened centres and the inverse factor, once
            self._V = self._whiten(self.rows)
            self._V2 = (self._V**2).sum(1)
            self._Linv_t = np.ascontiguousarray(self._whiten(np.eye(self.d)))  # L^-T
        out = np.full(X.shape[0], -np.inf)
        inside = np.all((X >= self.low) & (X <= self.high), axis=1)
        if not inside.any():
            return out
        U = X[inside] @ self._Linv_t
        # -0.5 x squared Mahalanobis distance to every centre, in place (this is the
        # sampler's largest array: particles x distinct rows), then the log-sum-exp.
        E = U @ self._V.T
        E -= 0.5 * (U**2).sum(1)[:, None]
        E -= 0.5 * self._V2[None, :]
        np.minimum(E, 0.0, out=E)
        E += self.logw[None, :]
        top = E.max(axis=1)
        E -= top[:, None]
        np.exp(E, out=E)
        out[inside] = top + np.log(E.sum(axis=1))
        return out

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, self.d))
        todo = np.arange(n)
        w = np.exp(self.logw - logsumexp(self.logw))
        for _ in range(100):
            j = rng.choice(self.rows.shape[0], todo.size, p=w)
            x = self.rows[j] + rng.standard_normal((todo.size, self.d)) @ self.chol.T
            ok = np.all((x >= self.low) & (x <= self.high), axis=1)
            out[todo[ok]] = x[ok]
            todo = todo[~ok]
            if todo.size == 0:
                return out
        out[todo] = np.clip(out[todo], self.low, self.high)
        return out


def population_prior(
    model: Model,
    pop: pd.DataFrame,
    *,
    product: str | None,
    hematotox: int | str | None,
    disease: str,
    labs: bool,
) -> PopulationPrior:
    """The KDE prior of the rows of ``pop`` for ``product`` and CAR-HEMATOTOX ``hematotox``
    (a score 0-7, or the group "low"/"high"; see the module docstring for the rules)."""
    desc: dict = {"population_rows": int(len(pop))}
    rows = pop
    # One trait distribution shared by every product (the population has no product
    # column); the product acts through its own kinetics (a shift below) and course.
    desc["product_rows"] = "all (one trait distribution shared by every product)" + (
        "" if product is None else f"; {product}'s own CAR-T/CRS kinetics and course"
    )
    # Every parameter column but the graft's (redrawn per particle after the conditioning,
    # see the module docstring).
    pcols = [c for c in rows.columns if c in model.param_names and c not in GRAFT_PARAMS]
    if hematotox in ("low", "high") and "hematotox" in rows:
        # A group given as such (``--hematotox low``): its rows, as natural-history does.
        rows = rows[(rows["hematotox"] >= 2) == (hematotox == "high")]
        group = "high (>= 2)" if hematotox == "high" else "low (0-1)"
        desc["hematotox_rows"] = f"CAR-HEMATOTOX group {group} (given as a group)"
    elif hematotox is not None and "hematotox" in rows:
        exact = rows[rows["hematotox"] == hematotox]
        n_exact = len(exact[pcols].drop_duplicates())
        if n_exact >= MIN_EXACT:
            rows = exact
            desc["hematotox_rows"] = f"exact score {hematotox} ({n_exact} distinct patients)"
        else:
            high = hematotox >= 2
            rows = rows[(rows["hematotox"] >= 2) == high]
            group = "high (>= 2)" if high else "low (0-1)"
            desc["hematotox_rows"] = (
                f"CAR-HEMATOTOX group {group}: only {n_exact} distinct virtual patients have "
                f"score {hematotox} (fewer than {MIN_EXACT})"
            )
    else:
        desc["hematotox_rows"] = "all scores (no CAR-HEMATOTOX given)"
    cols = pcols + ([c for c in LAB_COLUMNS if c in rows] if labs else [])
    X = np.log(rows[cols].to_numpy(float))
    # The refusal of uncalibrated diseases lives in one place (natural_history).
    check_disease(disease, own_population=True)
    if product is not None:
        # The product's kinetics multiply the reference values the population holds
        # (the natural-history simulation's own rule, virtual.product_factors).
        for name, factor in product_factors(model, product).items():
            if name in cols:
                X[:, cols.index(name)] += np.log(factor)
    keep = np.std(X, axis=0) > 1e-9
    names = [c for c, k in zip(cols, keep, strict=True) if k]
    X = X[:, keep]
    uniq, counts = np.unique(X, axis=0, return_counts=True)
    m, d = uniq.shape
    if m < d + 2:
        raise InputError(
            f"only {m} distinct virtual patients match the prior restriction "
            f"({desc['hematotox_rows']})",
            column="hematotox",
            fix="give a CAR-HEMATOTOX group with more patients, or omit --hematotox",
        )
    w = counts / counts.sum()
    mean = w @ uniq
    cov = (uniq - mean).T @ ((uniq - mean) * w[:, None]) / (1.0 - np.sum(w**2))
    n_eff = 1.0 / np.sum(w**2)
    h = (4.0 / (d + 2.0)) ** (1.0 / (d + 4.0)) * n_eff ** (-1.0 / (d + 4.0))
    kern = h**2 * cov + 1e-8 * np.eye(d)
    # Shrunk kernel centres: the mixture keeps the rows' mean and covariance
    # (a^2 cov + h^2 cov = cov) instead of inflating it by 1 + h^2.
    a = np.sqrt(max(1.0 - h**2, 0.0))
    centres = mean + a * (uniq - mean)
    low, high = np.full(d, -np.inf), np.full(d, np.inf)
    for k, name in enumerate(names):
        if name in model.param_names:
            q = model.params[model.index("param", name)]
            low[k], high[k] = np.log(q.low), np.log(q.high)
    low = np.minimum(low, uniq.min(0))
    high = np.maximum(high, uniq.max(0))
    desc.update(
        rows_used=int(len(rows)),
        distinct_patients=int(m),
        dimensions=names,
        density=(
            "Gaussian kernel density over the rows in log space (Silverman bandwidth "
            f"factor {h:.2f}; centres shrunk by {a:.2f} toward the mean, so that it has the "
            "rows' mean and covariance), truncated to the plausible ranges"
        ),
    )
    return PopulationPrior(
        names=names,
        rows=centres,
        logw=np.log(w),
        chol=np.linalg.cholesky(kern),
        low=low,
        high=high,
        description=desc,
    )


def posterior_prior(model: Model, posterior, *, disease: str) -> PopulationPrior:
    """The KDE prior (same density, shrinkage and truncation as :func:`population_prior`)
    over the draws of a :class:`~carthema.models.posterior.Posterior`: a fitted patient's
    posterior or :meth:`~carthema.clinical.population.posterior.VirtualPopulation.sample`.
    Its dimensions are the parameters that vary across the draws (positive, not the graft
    parameters, redrawn per particle); the draws already carry their product's kinetics,
    so none is applied."""
    P = np.asarray(posterior.draws, dtype=float)
    cols = []
    for j, name in enumerate(model.param_names):
        col = P[:, j]
        if name in GRAFT_PARAMS or not np.all(col > 0) or np.ptp(np.log(col)) <= 1e-9:
            continue
        cols.append(name)
    frame = pd.DataFrame({c: P[:, model.index("param", c)] for c in cols})
    prior = population_prior(model, frame, product=None, hematotox=None, disease=disease,
                             labs=False)  # fmt: skip
    prov = getattr(posterior, "provenance", {}) or {}
    prior.description.update(
        population_rows=int(P.shape[0]),
        product_rows=f"the given posterior's draws ({prov or 'no provenance'}), their own kinetics",
        hematotox_rows="the given posterior's draws (no CAR-HEMATOTOX restriction)",
        source="posterior",
        patient=getattr(posterior, "patient", None),
    )
    return prior


def prior_draws(
    model: Model,
    n: int,
    rng: np.random.Generator,
    *,
    product: str | None = None,
    population: str | pd.DataFrame | None = None,
    disease: str = "lbcl",
) -> np.ndarray:
    """``n`` parameter vectors (natural scale) of virtual patients of the calibrated
    population, each with graft and rejection parameters of its own
    (:func:`carthema.clinical.population.graft.draw_graft`); the population of
    ``disease`` unless ``population`` is given. Unconditioned:
    :func:`carthema.clinical.boost.predict.predict_boost` conditions on the patient's state.

    The rows are drawn by the one sampler,
    :func:`carthema.clinical.population.natural_history.sample_patients`: balanced,
    without replacement up to the population's size (the particles then represent the
    population's trait distribution with no row left out or doubled by chance, as
    unbiased as drawing with replacement and with less Monte Carlo variance). With
    ``product`` every row gets that product's CAR-T/CRS kinetics; without one, none:
    the population's reference kinetics, as :func:`population_prior` has without a
    product (a frame with a ``product`` column keeps its rows' own)."""
    if isinstance(population, pd.DataFrame):
        pop = population
    else:
        pop = load_population(population, disease=check_disease(disease, own_population=True))[0]
    rows = sample_patients(pop, int(n), rng, product, disease=disease,
                           assign_product=product is not None)  # fmt: skip
    P = population_params(model, rows)
    return draw_graft(model, P, rng, population=pop)
