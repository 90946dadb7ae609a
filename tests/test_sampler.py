"""The one virtual-patient sampler (natural_history.sample_patients): a balanced draw of
the population's rows (without replacement up to its size), products in the cohort's
fixed shares, used alike by natural history, VirtualPopulation.sample, the virtual
trial, the boost prior's draws and the boost calibration's cases."""

from __future__ import annotations

import numpy as np
import pytest

from carthema.clinical.boost.prior import prior_draws
from carthema.clinical.population.natural_history import product_counts, sample_patients
from carthema.clinical.population.posterior import VirtualPopulation
from carthema.clinical.population.virtual import load_population
from carthema.clinical.trial import posterior_cohort, trial_cohort
from carthema.models.model import get_model

LBCL = {"axi-cel": 159.0, "tisa-cel": 76.0}  # Rejeski et al. 2021's cohort


class _Grid:
    """A generator whose uniform draws run through a fine grid of [0, 1): the mean of
    a count over it is its expectation over a uniform offset, to 1/k."""

    def __init__(self, k: int):
        self.u, self.i = (np.arange(k) + 0.5) / k, -1

    def random(self) -> float:
        self.i += 1
        return float(self.u[self.i])


@pytest.mark.parametrize("n", [1, 2, 7, 235, 2000])
def test_product_counts_are_the_mix_in_expectation_and_sum_to_n(n):
    k = 2000
    grid = _Grid(k)
    counts = [product_counts(n, LBCL, grid) for _ in range(k)]
    axi = np.array([c["axi-cel"] for c in counts])
    assert all(sum(c.values()) == n for c in counts)
    # Each product floor or ceil of its share of n; on average exactly its share.
    assert set(axi) <= {np.floor(n * 159 / 235), np.ceil(n * 159 / 235)}
    assert axi.mean() == pytest.approx(n * 159 / 235, abs=1.0 / k + 1e-12)
    # Half and half of one patient: one of the two, never none (round-half-even would).
    assert sum(product_counts(1, {"a": 1.0, "b": 1.0}, _Grid(1)).values()) == 1
    assert product_counts(5, {"tisa-cel": 1.0}, _Grid(1)) == {"tisa-cel": 5}


def test_draw_is_balanced_without_replacement_and_products_mixed_in_order():
    pop = load_population()[0]
    size = len(pop)
    rng = np.random.default_rng(0)
    # Up to the population's size: distinct patients.
    part = sample_patients(pop, 700, rng)
    assert part["vp"].is_unique and len(part) == 700
    # Beyond it: every patient twice, 300 of them a third time.
    many = sample_patients(pop, 2 * size + 300, rng)
    times = many["vp"].value_counts()
    assert len(times) == size and sorted(set(times)) == [2, 3] and (times == 3).sum() == 300
    # The LBCL cohort's shares exactly (floor or ceil), in a random order: the first
    # tenth already mixes both products near the shares.
    share = (many["product"] == "axi-cel").mean()
    assert abs(share * len(many) - len(many) * 159 / 235) <= 1.0
    head = many["product"].iloc[: len(many) // 10]
    assert abs((head == "axi-cel").mean() - 159 / 235) < 0.05
    # A CAR-HEMATOTOX group draws from its own rows only, without replacement.
    high = sample_patients(pop, 300, rng, "axi-cel", "high")
    assert (high["hematotox"] >= 2).all() and high["vp"].is_unique
    assert set(high["product"]) == {"axi-cel"}


def _at_most_as_often(drawn: np.ndarray, rows: np.ndarray) -> bool:
    """Each value drawn no more often than the rows hold it (a draw without
    replacement; the population has duplicate rows, so values may repeat)."""
    have = dict(zip(*np.unique(rows, return_counts=True), strict=True))
    got = dict(zip(*np.unique(drawn, return_counts=True), strict=True))
    return all(have.get(v, 0) >= c for v, c in got.items())


def test_every_caller_draws_through_the_one_sampler():
    model = get_model("full")
    pop = load_population()[0]
    size = len(pop)
    j = model.index("param", "hsc_mass")  # a trait no product or graft draw changes
    mass = pop["hsc_mass"].to_numpy(float)
    # The virtual trial's cohort: twice the population is every patient twice, in the
    # LBCL cohort's shares.
    cohort = trial_cohort(model, 2 * size, np.random.default_rng(1))
    assert np.array_equal(np.sort(cohort.P[:, j]), np.sort(np.repeat(mass, 2)))
    assert abs((cohort.group == "axi-cel").sum() - 2 * size * 159 / 235) <= 1.0
    # The boost prior's draws: as many as the population, each patient once.
    P = prior_draws(model, size, np.random.default_rng(2), product="tisa-cel")
    assert np.array_equal(np.sort(P[:, j]), np.sort(mass))
    # VirtualPopulation.sample: 400 of the 985 low-group patients, none twice (a draw
    # with replacement would repeat about 80 pairs).
    post = VirtualPopulation.load().sample(400, seed=3, product="axi-cel", hematotox="low")
    low = pop.loc[pop["hematotox"] <= 1, "hsc_mass"].to_numpy(float)
    assert post.draws.shape[0] == 400 and _at_most_as_often(post.draws[:, j], low)
    # A virtual trial from a posterior's draws: the same balanced draw of its draws,
    # 850 of 400: every draw twice and 50 of them a third time.
    cohort = posterior_cohort(post, 850, np.random.default_rng(4))
    values, held = np.unique(post.draws[:, j], return_counts=True)
    got = np.array([(cohort.P[:, j] == v).sum() for v in values])
    extra = got - 2 * held
    assert got.sum() == 850 and (extra >= 0).all() and (extra <= held).all()
    assert extra.sum() == 50
